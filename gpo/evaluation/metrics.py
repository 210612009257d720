"""Alignment metrics, vectorised over groups and questions.

Shapes: G groups, Q questions, O answer options (padded). Every metric takes predicted and true
distributions `[G, Q, O]`, the option mask `[Q, O]` and which (group, question) pairs to score
`[G, Q]`, and returns a `Score`: per-group means and their mean over groups (OpinionQA's and
GPO's averaging: first within a group, then across groups).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats

from gpo.data.splits import EvalTask
from gpo.data.survey import Survey


@dataclasses.dataclass(frozen=True)
class Score:
    mean: float                  # mean over groups of the per-group means
    per_group_G: np.ndarray      # NaN for a group with nothing scored
    per_pair_GxQ: np.ndarray     # NaN where not scored
    n_scored: int

    def __float__(self) -> float:
        return self.mean


def _score(values_GxQ: np.ndarray, scored_GxQ: np.ndarray) -> Score:
    values = np.where(scored_GxQ, values_GxQ, np.nan)
    counts = scored_GxQ.sum(1)
    per_group = np.where(counts > 0, np.nansum(values, 1) / np.maximum(counts, 1), np.nan)
    mean = float(np.nanmean(per_group)) if np.any(counts > 0) else float("nan")
    return Score(mean, per_group, values, int(scored_GxQ.sum()))


def wasserstein_distance_GxQ(pred_GxQxO: np.ndarray, true_GxQxO: np.ndarray,
                             ordinals_QxO: np.ndarray, option_mask_QxO: np.ndarray) -> np.ndarray:
    """1-D Wasserstein-1 distance between distributions on each question's ordinal positions.

    W1 = integral |F_pred - F_true| over the sorted support; padded options carry no mass.
    """
    order_QxO = np.argsort(np.where(option_mask_QxO, ordinals_QxO, np.inf), axis=1, kind="stable")
    positions = np.take_along_axis(ordinals_QxO, order_QxO, 1)
    mask = np.take_along_axis(option_mask_QxO, order_QxO, 1)
    # Padding sits after the real options; give it the last real position (zero-width gaps).
    positions = np.where(mask, positions, np.max(np.where(mask, positions, -np.inf), 1,
                                                 keepdims=True))
    gaps_QxO1 = np.diff(positions, axis=1)
    diff = np.where(mask[None], pred_GxQxO - true_GxQxO, 0.0)
    diff = np.take_along_axis(diff, np.broadcast_to(order_QxO, diff.shape), 2)
    cdf_gap = np.cumsum(diff, axis=2)[..., :-1]
    return np.abs(cdf_gap * gaps_QxO1[None]).sum(-1)


def alignment(pred_GxQxO, true_GxQxO, ordinals_QxO, option_mask_QxO, scored_GxQ) -> Score:
    """OpinionQA / GPO alignment: 1 - W1(pred, true) / (max ordinal - min ordinal).

    Refusals are not options here (they were removed at load). Questions whose ordinals are all
    equal (max = min: nominal questions such as ORIENTATIONMOD_W50) have no scale and are skipped.
    """
    pred, true = np.asarray(pred_GxQxO, np.float64), np.asarray(true_GxQxO, np.float64)
    ordinals = np.asarray(ordinals_QxO, np.float64)
    mask = np.asarray(option_mask_QxO, bool)
    span_Q = (np.max(np.where(mask, ordinals, -np.inf), 1)
              - np.min(np.where(mask, ordinals, np.inf), 1))
    scored = np.asarray(scored_GxQ, bool) & (span_Q > 0)[None]
    wd = wasserstein_distance_GxQ(pred, true, ordinals, mask)
    return _score(1.0 - wd / np.where(span_Q > 0, span_Q, 1.0)[None], scored)


def js_alignment(pred_GxQxO, true_GxQxO, option_mask_QxO, scored_GxQ,
                 nan_as_zero_distance: bool = False) -> Score:
    """GlobalOpinionQA alignment: 1 - Jensen-Shannon distance (natural log, as scipy and GPO).

    GPO's evaluation replaced a NaN distance (a distribution with no mass) by 0, i.e. counted it
    as perfect agreement. Our loaders reject all-zero distributions, so NaN only comes from a
    degenerate prediction; by default such pairs are skipped. `nan_as_zero_distance=True`
    reproduces GPO's quirk for comparison with its numbers.
    """
    mask = np.asarray(option_mask_QxO, bool)[None]
    p = np.where(mask, np.asarray(pred_GxQxO, np.float64), 0.0)
    q = np.where(mask, np.asarray(true_GxQxO, np.float64), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(-1, keepdims=True)
        q = q / q.sum(-1, keepdims=True)
        m = 0.5 * (p + q)
        kl_pm = np.sum(np.where(p > 0, p * np.log(p / m), 0.0), -1)
        kl_qm = np.sum(np.where(q > 0, q * np.log(q / m), 0.0), -1)
        distance = np.sqrt(np.maximum(0.5 * (kl_pm + kl_qm), 0.0))
    distance = np.where(np.isfinite(distance), distance, np.nan)
    scored = np.asarray(scored_GxQ, bool)
    if nan_as_zero_distance:
        distance = np.nan_to_num(distance, nan=0.0)
    else:
        scored = scored & np.isfinite(distance)
    return _score(1.0 - distance, scored)


def accuracy(pred_GxQxO, true_GxQxO, option_mask_QxO, scored_GxQ) -> Score:
    """Top-1 agreement for one-hot targets (pairwise or individual preferences).

    Pairs whose target has no unique top option (a tie: no preference) are not scored; a tie
    among the predicted top options earns the share a random pick among them would.
    """
    mask = np.asarray(option_mask_QxO, bool)[None]
    pred = np.where(mask, pred_GxQxO, -np.inf)
    true = np.where(mask, true_GxQxO, -np.inf)
    true_top = true == true.max(-1, keepdims=True)
    pred_top = np.isclose(pred, pred.max(-1, keepdims=True), rtol=0, atol=1e-9)
    credit = (pred_top & true_top).sum(-1) / pred_top.sum(-1)
    scored = np.asarray(scored_GxQ, bool) & (true_top.sum(-1) == 1)
    return _score(credit.astype(np.float64), scored)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How well predicted standard deviations track errors (Gaussian predictive intervals)."""

    levels: np.ndarray           # nominal central-interval coverage levels
    observed: np.ndarray         # fraction of true values inside each interval
    miscalibration_area: float   # mean |observed - nominal|; 0 is perfectly calibrated
    error_std_correlation: float  # Spearman correlation of |error| with predicted std


def calibration(mean_N: np.ndarray, std_N: np.ndarray, true_N: np.ndarray,
                levels: Sequence[float] = tuple(np.linspace(0.05, 0.95, 19))) -> Calibration:
    """Coverage of central Gaussian intervals mean ± z·std at each nominal level.

    Inputs are flat arrays over the scored (group, question, option) points.
    """
    mean_N, std_N, true_N = (np.asarray(a, np.float64).ravel() for a in (mean_N, std_N, true_N))
    if not (mean_N.shape == std_N.shape == true_N.shape):
        raise ValueError(f"calibration: shapes differ {mean_N.shape}, {std_N.shape}, "
                         f"{true_N.shape}")
    if np.any(std_N <= 0) or not np.all(np.isfinite(std_N)):
        raise ValueError("calibration: predicted std must be positive and finite")
    levels = np.asarray(levels, np.float64)
    z_L = stats.norm.ppf(0.5 + levels / 2)
    inside = np.abs(true_N - mean_N)[None] <= z_L[:, None] * std_N[None]
    observed = inside.mean(1)
    corr = stats.spearmanr(np.abs(true_N - mean_N), std_N).statistic if mean_N.size > 2 else np.nan
    return Calibration(levels, observed, float(np.mean(np.abs(observed - levels))), float(corr))


METRICS = ("wasserstein", "js", "accuracy")


def metric_function(name: str):
    """(survey, pred_GxQxO, true_GxQxO, scored_GxQ) -> Score for a dataset's metric name."""
    if name == "wasserstein":
        return lambda s, pred, true, scored: alignment(pred, true, s.ordinals_QxO,
                                                       s.option_mask_QxO, scored)
    if name == "js":
        return lambda s, pred, true, scored: js_alignment(pred, true, s.option_mask_QxO, scored)
    if name == "accuracy":
        return lambda s, pred, true, scored: accuracy(pred, true, s.option_mask_QxO, scored)
    raise ValueError(f"unknown metric {name!r}; use one of {METRICS}")


def score_predictions(survey: Survey, task: EvalTask, pred_GxQxO: np.ndarray,
                      metric: str = "wasserstein") -> Score:
    """Score predictions for the task's groups on their target questions."""
    return metric_function(metric)(survey, pred_GxQxO, survey.probs_GxQxO[task.groups],
                                   task.target_GxQ)


def noise_ceiling(survey: Survey, task: EvalTask, metric: str = "wasserstein",
                  resamples: int = 5, seed: int = 0) -> Score:
    """How well the observed data can be predicted at all: each group's observed distribution
    scored against multinomial resamples of itself at its own respondent counts, on the task's
    target questions (mean over resamples). Pairs without a respondent count are skipped."""
    rng = np.random.default_rng(seed)
    observed = survey.probs_GxQxO[task.groups].astype(np.float64)
    counts = survey.respondents_GxQ[task.groups]
    scored = task.target_GxQ & np.isfinite(counts) & (np.nan_to_num(counts) >= 1)
    n = np.where(scored, np.nan_to_num(counts), 1).astype(np.int64)
    total = np.zeros(observed.shape[:2])
    for _ in range(resamples):
        resampled = np.zeros_like(observed)
        for g, q in zip(*np.nonzero(scored)):
            p = observed[g, q] / observed[g, q].sum()
            resampled[g, q] = rng.multinomial(n[g, q], p) / n[g, q]
        pairs = metric_function(metric)(survey, resampled, observed, scored).per_pair_GxQ
        total += np.nan_to_num(pairs)
    return _score(total / resamples, scored & np.isfinite(
        metric_function(metric)(survey, observed, observed, scored).per_pair_GxQ))


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - b, 2.5%, 97.5% bootstrap percentiles): a and b are paired per-group
    scores (the same groups, tasks and splits); groups are resampled with replacement."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    diff = diff[np.isfinite(diff)]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)
