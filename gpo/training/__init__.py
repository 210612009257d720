"""Meta-training: the samplers, row packing, losses, the jitted steps and the loop."""

from __future__ import annotations

from gpo.training.loop import TrainingDiverged, TrainResult, calibrate_trained_run, train

__all__ = ["TrainResult", "TrainingDiverged", "calibrate_trained_run", "train"]
