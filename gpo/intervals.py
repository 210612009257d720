"""Prediction intervals with stated coverage: split-conformal quantiles of normalised
residuals, fitted on a run's validation groups (`gpo.evaluation.conformal`; with
`data.calibration_folds` > 1 on every training group, each scored by a model trained without
it), stored in the run folder and applied by `predict()`.

An option's interval is p ± q·f·σ, clipped to [0, 1], with

    σ = sqrt(std² + λ · p(1 - p) / n)

std the head's predictive std, n the group's respondents (the median count of its context
answers, where they were given), λ ≥ 0 the weight of that sampling noise, chosen on the
calibration answers for the narrowest intervals; f the group's own factor, how far its
context answers fell from what the head predicts for each of them from the others
(f² = (1 + Σ z²) / (1 + m) over m ≤ 20 left-out context questions, z² the mean squared
|y - p| / σ of a question's options: groups the training groups explain well get narrower
intervals, groups they explain badly wider ones, where one scale would be wrong for both);
and q the conformal quantile of |y - p| / (f·σ) over the validation groups' held-out answers,
per number of context questions k (between calibrated k, interpolated in log k) and per class
of questions by their number of options (2, 3-4, 5+: Mondrian conformal, so that coverage
holds within each class, not only on average over them). A question's
mean ordinal position m = Σ p_o x_o gets m ± q'·f·σ_m, σ_m = sqrt(Σ_o σ_o² (x_o - m)²), with its
own quantiles. Answers given with and without respondent counts are calibrated apart, as the
heads predict them apart.

The guarantee is split conformal's: if a new group is exchangeable with the validation groups
(drawn from the same population of groups, its context and target questions drawn as theirs
were), the interval at level α holds the group's observed answer (which includes its own
sampling noise) for at least a fraction α of its options, in expectation over groups and
questions, up to the pooling of several answers per group. It is marginal, not per group.

Shapes: O options, K calibrated k, L levels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

FORMAT = 1
LEFT_OUT_QUESTIONS = 20  # context questions predicted from the others for the group's factor
FACTOR_PRIOR = 1.0       # pseudo-questions at factor 1 (at k = 1 nothing can be left out)
# The levels at which quantiles are stored; a level between two is interpolated.
LEVELS = tuple(round(0.01 * i, 2) for i in range(1, 100))
DEFAULT_LEVEL = 0.9
UNBOUNDED = 1e6      # stands for an infinite quantile (fewer scores than a level needs)
SCALE_FLOOR = 1e-4   # σ below this (a head certain of an option) would make the score infinite
VARIANCE_FLOOR = 1e-4  # p(1 - p) floor, as the reference head's sampling noise has
# The conditions a calibration tells apart: context answers given with or without counts.
WITH_COUNTS, WITHOUT_COUNTS = "with counts", "without counts"
# Questions calibrated apart by their number of options (a binary question's two residuals
# are one, and its σ fits it less well than a scale's): {class: (fewest, most) options}
OPTION_CLASSES = {"2": (2, 2), "3-4": (3, 4), "5+": (5, 1 << 30)}
MIN_CLASS_SCORES = 200  # a class with fewer scores at a k uses every question's quantiles


def option_classes(n_options) -> dict[str, np.ndarray]:
    """{class: mask} of questions (or their options) by their number of options."""
    n = np.asarray(n_options)
    return {name: (n >= low) & (n <= high) for name, (low, high) in OPTION_CLASSES.items()}


def check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not (
            LEVELS[0] <= level <= LEVELS[-1]):
        raise ValueError(f"level must be a coverage between {LEVELS[0]} and {LEVELS[-1]} "
                         f"(e.g. 0.9), got {level!r}")
    return float(level)


def option_scale(std_O: np.ndarray, prob_O: np.ndarray, respondents, sampling_weight: float
                 ) -> np.ndarray:
    """σ per option: the head's std, widened by the group's own sampling noise where its
    respondents are known (respondents: None, one count, or one per option; NaN or 0 where
    unknown)."""
    variance = np.asarray(std_O, np.float64) ** 2
    if respondents is not None:
        n = np.broadcast_to(np.asarray(respondents, np.float64), variance.shape)
        known = np.isfinite(n) & (n > 0)
        p = np.asarray(prob_O, np.float64)
        noise = np.maximum(p * (1 - p), VARIANCE_FLOOR) / np.where(known, n, 1.0)
        variance = variance + np.where(known, sampling_weight * noise, 0.0)
    return np.maximum(np.sqrt(variance), SCALE_FLOOR)


def bounds(centre, half, lowest=0.0, highest=1.0):
    """(low, high) of centre ± half, kept within [lowest, highest] (elementwise)."""
    return np.maximum(centre - half, lowest), np.minimum(centre + half, highest)


def left_out(n_context: int) -> np.ndarray:
    """Which of n context questions (in their order) are each predicted from the others for
    the group's factor: all of them up to LEFT_OUT_QUESTIONS, else that many evenly spaced;
    none of a single one."""
    if n_context < 2:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, n_context - 1, min(n_context, LEFT_OUT_QUESTIONS))
                     .round().astype(int))


def squared_score(truth_O: np.ndarray, prob_O: np.ndarray, scale_O: np.ndarray) -> float:
    """z² of one left-out question: the mean over its options of ((y - p) / σ)²."""
    return float(np.mean(((np.asarray(truth_O) - prob_O) / scale_O) ** 2))


def group_factor(sum_squared_scores, n_questions):
    """f = sqrt((FACTOR_PRIOR + Σ z²) / (FACTOR_PRIOR + m)) over m left-out questions (works
    elementwise on arrays)."""
    return np.sqrt((FACTOR_PRIOR + np.asarray(sum_squared_scores, np.float64))
                   / (FACTOR_PRIOR + np.asarray(n_questions, np.float64)))


def mean_position(prob_O: np.ndarray, ordinals_O: np.ndarray) -> float:
    return float(np.dot(prob_O, ordinals_O))


def mean_scales(scale_N: np.ndarray, prob_N: np.ndarray, ordinals_N: np.ndarray,
                question_N: np.ndarray, n_questions: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean ordinal position, its σ_m) per question of options from several questions
    (question_N: each option's question). σ_m carries the options' σ through the mean's
    sensitivity to each option, its distance from the mean."""
    mean_M = np.bincount(question_N, prob_N * ordinals_N, n_questions)
    deviation = np.asarray(ordinals_N, np.float64) - mean_M[question_N]
    spread = np.bincount(question_N, (scale_N * deviation) ** 2, n_questions)
    return mean_M, np.maximum(np.sqrt(spread), SCALE_FLOOR)


def mean_scale(scale_O: np.ndarray, prob_O: np.ndarray, ordinals_O: np.ndarray) -> float:
    """σ_m of one question's mean ordinal position (`mean_scales`)."""
    one_question = np.zeros(len(prob_O), np.int64)
    return float(mean_scales(scale_O, prob_O, ordinals_O, one_question, 1)[1][0])


def conformal_quantiles(scores: np.ndarray, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Per level α, the ⌈(n + 1)α⌉-th smallest of n scores (inf where that exceeds n): the
    split-conformal quantile, covering a new exchangeable score with probability ≥ α."""
    scores = np.sort(np.asarray(scores, np.float64))
    n = len(scores)
    ranks = np.ceil((n + 1) * np.asarray(levels)).astype(int)
    return np.where(ranks <= n, scores[np.minimum(ranks, n) - 1] if n else np.inf, np.inf)


@dataclasses.dataclass(frozen=True)
class QuantileTable:
    """Conformal quantiles of one normalised residual, per calibrated k and per level."""

    ks: tuple[int, ...]
    quantiles_KxL: np.ndarray
    counts_K: tuple[int, ...]        # the scores behind each k's quantiles

    def at(self, k: int, level: float) -> float:
        """The quantile at `level` after k context questions: interpolated in log k between
        calibrated k, the nearest calibrated k outside their range."""
        # too few scores for a level: an unbounded quantile, the whole [0, 1] once clipped
        finite_KxL = np.minimum(self.quantiles_KxL, UNBOUNDED)
        per_k = np.array([np.interp(level, LEVELS, row) for row in finite_KxL])
        if len(self.ks) == 1:
            return float(per_k[0])
        return float(np.interp(math.log(max(k, 1)), np.log(self.ks), per_k))

    def to_json(self) -> dict:
        return {"ks": list(self.ks), "scores": list(self.counts_K),
                "quantiles": [[round(float(q), 6) for q in row] for row in self.quantiles_KxL]}

    @classmethod
    def from_json(cls, raw: dict) -> QuantileTable:
        return cls(tuple(int(k) for k in raw["ks"]),
                   np.asarray(raw["quantiles"], np.float64).reshape(len(raw["ks"]), len(LEVELS)),
                   tuple(int(n) for n in raw["scores"]))


@dataclasses.dataclass(frozen=True)
class ConditionCalibration:
    """The calibration of answers given one way (with or without respondent counts): the
    quantiles of every question, and those of each class of questions by number of options
    (`OPTION_CLASSES`) that had enough scores to have its own."""

    sampling_weight: float           # λ
    options: QuantileTable           # |y - p| / σ per option
    means: QuantileTable | None      # |m_true - m| / σ_m per question (None: no scale)
    options_by_class: dict[str, QuantileTable] = dataclasses.field(default_factory=dict)
    means_by_class: dict[str, QuantileTable] = dataclasses.field(default_factory=dict)

    def option_quantiles(self, k: int, level: float, n_options) -> np.ndarray:
        """The options' quantile at `level` after k context questions, per option (or
        question) with `n_options` options: its class's, else every question's."""
        return _by_class(self.options, self.options_by_class, k, level, n_options)

    def mean_quantiles(self, k: int, level: float, n_options) -> np.ndarray | None:
        """The same for question means (None where the calibration has none)."""
        if self.means is None:
            return None
        return _by_class(self.means, self.means_by_class, k, level, n_options)

    def to_json(self) -> dict:
        return {"sampling_weight": self.sampling_weight, "options": self.options.to_json(),
                "means": None if self.means is None else self.means.to_json(),
                "by_options": {name: {"options": self.options_by_class[name].to_json(),
                                      "means": (self.means_by_class[name].to_json()
                                                if name in self.means_by_class else None)}
                               for name in self.options_by_class}}

    @classmethod
    def from_json(cls, raw: dict) -> ConditionCalibration:
        # a calibration saved before questions were calibrated by class has no by_options
        by_class = {name: c for name, c in raw.get("by_options", {}).items()
                    if name in OPTION_CLASSES}
        return cls(float(raw["sampling_weight"]), QuantileTable.from_json(raw["options"]),
                   None if raw.get("means") is None else QuantileTable.from_json(raw["means"]),
                   {name: QuantileTable.from_json(c["options"]) for name, c in by_class.items()},
                   {name: QuantileTable.from_json(c["means"]) for name, c in by_class.items()
                    if c.get("means") is not None})


def _by_class(pooled: QuantileTable, by_class: dict[str, QuantileTable], k: int,
              level: float, n_options) -> np.ndarray:
    quantiles = np.full(np.shape(n_options), pooled.at(k, level))
    for name, mask in option_classes(n_options).items():
        if name in by_class:
            quantiles[mask] = by_class[name].at(k, level)
    return quantiles


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A run's interval calibration: per condition (`WITH_COUNTS`, `WITHOUT_COUNTS`), and
    what it was fitted on."""

    conditions: dict[str, ConditionCalibration]
    fitted_on: dict                  # {"groups": [...], "draws": int, "step": int, ...}

    def condition(self, with_counts: bool) -> ConditionCalibration:
        """The calibration of answers given with (or without) counts; answers with counts
        fall back to the other where the data had none."""
        name = WITH_COUNTS if with_counts else WITHOUT_COUNTS
        return self.conditions.get(name) or self.conditions[WITHOUT_COUNTS]

    def bands(self, k: int, respondents: float | None, factor: float = 1.0) -> Bands:
        """What widens one group's predictions: its k, respondents and factor."""
        with_counts = respondents is not None and respondents > 0
        return Bands(self.condition(with_counts), k, respondents if with_counts else None,
                     factor)

    def to_json(self) -> dict:
        return {"format": FORMAT, "method": "split conformal, normalised residuals",
                "levels": list(LEVELS), "fitted_on": self.fitted_on,
                "conditions": {name: c.to_json() for name, c in self.conditions.items()}}

    @classmethod
    def from_json(cls, raw: dict, where: str = "calibration") -> Calibration:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"{where}: not a gpo interval calibration of format {FORMAT}")
        if [round(x, 2) for x in raw.get("levels", [])] != list(LEVELS):
            raise ValueError(f"{where}: calibrated at other levels than this gpo reads")
        try:
            conditions = {name: ConditionCalibration.from_json(c)
                          for name, c in raw["conditions"].items()}
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: malformed ({err!r}); calibrate the run again "
                             "(gpo calibrate)") from err
        if WITHOUT_COUNTS not in conditions:
            raise ValueError(f"{where}: holds no {WITHOUT_COUNTS!r} calibration")
        return cls(conditions, raw.get("fitted_on", {}))


@dataclasses.dataclass(frozen=True)
class Bands:
    """One group's interval rule: a condition's calibration at its k and respondents."""

    calibration: ConditionCalibration
    k: int
    respondents: float | None
    factor: float = 1.0              # the group's own factor f (see the module docstring)

    def scale(self, prob_O: np.ndarray, std_O: np.ndarray) -> np.ndarray:
        """σ per option, before the group's factor."""
        return option_scale(std_O, prob_O, self.respondents, self.calibration.sampling_weight)

    def option_intervals(self, prob_O: np.ndarray, std_O: np.ndarray, level: float
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per option at `level`, clipped to [0, 1]."""
        scale = self.factor * self.scale(prob_O, std_O)
        q = self.calibration.option_quantiles(self.k, check_level(level), len(prob_O))
        return bounds(prob_O, q * scale)

    def mean_interval(self, prob_O: np.ndarray, std_O: np.ndarray, ordinals_O: np.ndarray,
                      level: float) -> tuple[float, float] | None:
        """(low, high) of the question's mean ordinal position, within its ordinal range
        (None where the calibration has no question means)."""
        if self.calibration.means is None:
            return None
        scale = self.factor * self.scale(prob_O, std_O)
        mean = mean_position(prob_O, ordinals_O)
        half = self.calibration.mean_quantiles(self.k, check_level(level), len(prob_O)
                                               ) * mean_scale(scale, prob_O, ordinals_O)
        low, high = bounds(mean, half, np.min(ordinals_O), np.max(ordinals_O))
        return float(low), float(high)
