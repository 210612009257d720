"""Evaluation: metrics, baselines, scoring a head beside them, and the reports and plots."""

from __future__ import annotations

from gpo.evaluation.evaluate import Evaluation, SplitResult, evaluate_run

__all__ = ["Evaluation", "SplitResult", "evaluate_run"]
