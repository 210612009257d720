"""Calibrating a head's prediction intervals on held-out groups (`gpo.intervals` applies them),
and scoring intervals on other groups: coverage and width.

A run is calibrated on its validation groups, held out of meta-training: each is given k
context questions (several draws per k), its other answered questions are predicted as
`predict()` predicts them (targets without respondent counts; every training group but
itself as a reference), and the normalised residuals of its observed answers make the
conformal quantiles. Test groups are never read.

Shapes: G groups, Q questions, O options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpo.data.splits import EvalTask, Split, make_eval_task
from gpo.data.survey import Survey
from gpo.evaluation.evaluate import predict_task, run_table, task_capacities
from gpo.intervals import (
    MIN_CLASS_SCORES,
    OPTION_CLASSES,
    WITH_COUNTS,
    WITHOUT_COUNTS,
    Calibration,
    ConditionCalibration,
    QuantileTable,
    bounds,
    conformal_quantiles,
    group_factor,
    left_out,
    mean_scales,
    option_classes,
    option_scale,
)
from gpo.models import Head
from gpo.points import OptionTable, padded_size
from gpo.run_dir import FOLDS, RunDir

CALIBRATION_KS = (1, 2, 5, 10, 20, 50, 100)
CALIBRATION_DRAWS = 3        # context draws per k (each a different seed)
# λ, the weight of the group's own sampling noise in σ, is chosen from these for the
# narrowest intervals at WIDTH_LEVEL (coverage is the quantiles' job, whatever λ is).
SAMPLING_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
WIDTH_LEVEL = 0.8
GROUPS_PER_PASS = 16  # episodes a forward pass (fewer where there are fewer)


@dataclasses.dataclass(frozen=True)
class Residuals:
    """Held-out answers of some groups after k context questions, with their predictions:
    per scored option, per scored question, and the left-out context answers behind each
    group's factor (`gpo.intervals`)."""

    k: int
    truth_N: np.ndarray          # the group's observed probability of each scored option
    prob_N: np.ndarray
    std_N: np.ndarray
    respondents_N: np.ndarray    # the group's typical respondents (NaN: not given)
    group_N: np.ndarray          # which of the task's groups (row) each option belongs to
    question_N: np.ndarray       # which scored question (0..M-1) each option belongs to
    ordinal_N: np.ndarray        # the option's ordinal position
    true_mean_M: np.ndarray      # each scored question's observed mean ordinal position
    n_groups: int
    left_out: Residuals | None = None  # each left-out context question, from the others

    def base_scales(self, sampling_weight: float) -> np.ndarray:
        """σ per option before the group's factor."""
        return option_scale(self.std_N, self.prob_N, self.respondents_N, sampling_weight)

    def group_factors(self, sampling_weight: float) -> np.ndarray:
        """f per group (1 where nothing was left out)."""
        found = self.left_out
        if found is None:
            return np.ones(self.n_groups)
        z2_N = ((found.truth_N - found.prob_N) / found.base_scales(sampling_weight)) ** 2
        M = len(found.true_mean_M)
        z2_M = np.bincount(found.question_N, z2_N, M) / np.maximum(
            np.bincount(found.question_N, None, M), 1)
        group_M = np.zeros(M, int)
        group_M[found.question_N] = found.group_N
        return group_factor(np.bincount(group_M, z2_M, self.n_groups),
                            np.bincount(group_M, None, self.n_groups))

    def scales(self, sampling_weight: float) -> np.ndarray:
        """f·σ per option."""
        return (self.base_scales(sampling_weight)
                * self.group_factors(sampling_weight)[self.group_N])

    def option_scores(self, sampling_weight: float) -> np.ndarray:
        return np.abs(self.truth_N - self.prob_N) / self.scales(sampling_weight)

    def means(self, sampling_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """(predicted mean ordinal position, its f·σ_m) per scored question."""
        return mean_scales(self.scales(sampling_weight), self.prob_N, self.ordinal_N,
                           self.question_N, len(self.true_mean_M))

    def ordinal_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) ordinal position of each scored question (its options are
        contiguous in the residuals)."""
        starts = np.flatnonzero(np.r_[True, np.diff(self.question_N) != 0])
        if not len(starts):
            return np.zeros(0), np.zeros(0)
        return (np.minimum.reduceat(self.ordinal_N, starts),
                np.maximum.reduceat(self.ordinal_N, starts))

    def rows(self, chosen: np.ndarray, k: int) -> Residuals:
        """The residuals of some group rows only (renumbered from 0, in order), after k
        context questions."""
        keep_N = np.isin(self.group_N, chosen)
        group = np.full(self.n_groups, -1)
        group[chosen] = np.arange(len(chosen))
        kept_M = np.unique(self.question_N[keep_N])
        question = np.full(len(self.true_mean_M), -1)
        question[kept_M] = np.arange(len(kept_M))
        inner = None if self.left_out is None else self.left_out.rows(chosen, k - 1)
        return Residuals(k, self.truth_N[keep_N], self.prob_N[keep_N], self.std_N[keep_N],
                         self.respondents_N[keep_N], group[self.group_N[keep_N]],
                         question[self.question_N[keep_N]], self.ordinal_N[keep_N],
                         self.true_mean_M[kept_M], len(chosen), inner)

    def options_M(self) -> np.ndarray:
        """Each scored question's number of options."""
        return np.bincount(self.question_N, minlength=len(self.true_mean_M))

    def options_N(self) -> np.ndarray:
        """Each scored option's question's number of options."""
        return self.options_M()[self.question_N]

    def mean_scores(self, sampling_weight: float) -> np.ndarray:
        mean_M, scale_M = self.means(sampling_weight)
        return np.abs(self.true_mean_M - mean_M) / scale_M


def residuals(head: Head, table: OptionTable, survey: Survey, split: Split, task: EvalTask,
              k: int, with_counts: bool, capacities: tuple[int, int] | None = None,
              target_counts: bool = False, factors: bool = True) -> Residuals:
    """The task's scored answers and the head's predictions of them, made as `predict()`
    makes them: targets without respondent counts (unless `target_counts`: as evaluation
    predicts them), context answers with or without theirs; with `factors`, also each
    group's left-out context answers (`gpo.intervals.left_out`) predicted from the rest."""
    prob, std = predict_task(head, table, survey, task, split.train_groups,
                             groups_per_pass=min(GROUPS_PER_PASS, len(task.groups)),
                             with_counts=with_counts, target_counts=target_counts,
                             capacities=capacities)
    g, q = np.nonzero(task.target_GxQ)
    n_options = survey.n_options_Q[q]
    question_N = np.repeat(np.arange(len(q)), n_options)
    g_N, q_N = g[question_N], q[question_N]
    o_N = np.concatenate([np.arange(n) for n in n_options]) if len(q) else np.zeros(0, int)
    truth_N = survey.probs_GxQxO[task.groups[g_N], q_N, o_N].astype(np.float64)
    ordinal_N = survey.ordinals_QxO[q_N, o_N].astype(np.float64)
    typical = np.full(len(task.groups), np.nan)
    if with_counts:
        counts = np.where(task.context_GxQ, survey.respondents_GxQ[task.groups], np.nan)
        given = np.isfinite(counts) & (counts > 0)
        typical = np.array([np.median(c[m]) if m.any() else np.nan
                            for c, m in zip(counts, given)])
    found = None
    if factors:
        loo_task, loo_group = left_out_task(task)
        if len(loo_group):
            loo_capacities = None if capacities is None else (
                capacities[0], padded_size(survey.max_options))
            inner = residuals(head, table, survey, split, loo_task, k - 1, with_counts,
                              loo_capacities, target_counts, factors=False)
            found = dataclasses.replace(inner, group_N=loo_group[inner.group_N],
                                        respondents_N=typical[loo_group[inner.group_N]],
                                        n_groups=len(task.groups))
    return Residuals(k, truth_N, prob[g_N, q_N, o_N].astype(np.float64),
                     std[g_N, q_N, o_N].astype(np.float64), typical[g_N], g_N, question_N,
                     ordinal_N, np.bincount(question_N, truth_N * ordinal_N, len(q)),
                     len(task.groups), found)


def concatenate(tasks: Sequence[EvalTask]) -> EvalTask:
    """Several tasks as one, their group rows one after another."""
    return EvalTask(np.concatenate([t.groups for t in tasks]),
                    np.concatenate([t.context_GxQ for t in tasks]),
                    np.concatenate([t.target_GxQ for t in tasks]))


def left_out_task(task: EvalTask) -> tuple[EvalTask, np.ndarray]:
    """(task, group row of each of its rows): per group, each left-out context question as
    the one target of a row whose context is the group's other context questions."""
    groups, contexts, targets, rows = [], [], [], []
    for row, context in enumerate(task.context_GxQ):
        questions = np.flatnonzero(context)
        for q in questions[left_out(len(questions))]:
            rest, target = context.copy(), np.zeros_like(context)
            rest[q], target[q] = False, True
            groups.append(task.groups[row])
            contexts.append(rest)
            targets.append(target)
            rows.append(row)
    Q = task.context_GxQ.shape[1]
    return (EvalTask(np.asarray(groups, int), np.asarray(contexts, bool).reshape(-1, Q),
                     np.asarray(targets, bool).reshape(-1, Q)), np.asarray(rows, int))


def calibration_tasks(survey: Survey, split: Split, groups: np.ndarray, seed: int,
                      ks: Sequence[int] = CALIBRATION_KS, draws: int = CALIBRATION_DRAWS
                      ) -> dict[int, list[EvalTask]]:
    """Per k, `draws` tasks over `groups` (k context questions each, drawn with seeds from
    `seed`), for the k that leave every group something to predict."""
    held_out = dataclasses.replace(split, test_groups=np.asarray(groups))
    answered = survey.answered_GxQ[held_out.test_groups][:, split.test_questions].sum(1)
    usable = [k for k in ks if k < answered.max()] or [max(1, int(answered.max()) - 1)]
    return {k: [make_eval_task(survey, held_out, k, seed=seed * 1000 + 17 * k + d)
                for d in range(draws)] for k in usable}


def calibration_residuals(head: Head, table: OptionTable, survey: Survey, split: Split,
                          groups: np.ndarray, seed: int, ks: Sequence[int] = CALIBRATION_KS,
                          draws: int = CALIBRATION_DRAWS
                          ) -> dict[str, dict[int, list[Residuals]]]:
    """Per condition (context answers with counts, where the survey has them, and without)
    and per k, the residuals of `groups` (held out of the head's meta-training) after `draws`
    contexts of k questions."""
    tasks = calibration_tasks(survey, split, groups, seed, ks, draws)
    capacities = task_capacities(survey, [t for per_k in tasks.values() for t in per_k])
    has_counts = bool(np.any(np.nan_to_num(survey.respondents_GxQ[groups]) > 0))
    # every (k, draw) task in one batch of rows: two predictions a condition (held-out
    # answers, left-out context answers) instead of two a task
    ordered = [(k, task) for k, draws_k in tasks.items() for task in draws_k]
    together = concatenate([task for _, task in ordered])
    found = {}
    for name, with_counts in ((WITH_COUNTS, True), (WITHOUT_COUNTS, False)):
        if with_counts and not has_counts:
            continue
        everything = residuals(head, table, survey, split, together, 0, with_counts,
                               capacities)
        rows, per_k = 0, {}
        for k, task in ordered:
            mine = np.arange(rows, rows + len(task.groups))
            per_k.setdefault(k, []).append(everything.rows(mine, k))
            rows += len(task.groups)
        found[name] = per_k
    return found


def fit(found: Sequence[dict[str, dict[int, list[Residuals]]]], fitted_on: dict
        ) -> Calibration:
    """One calibration from the residuals of one or more models' held-out groups, pooled
    per condition and k (a condition and k every model has)."""
    conditions = {}
    for name in found[0]:
        ks = [k for k in found[0][name] if all(k in f.get(name, {}) for f in found)]
        conditions[name] = fit_condition({k: [r for f in found for r in f[name][k]]
                                          for k in ks})
    return Calibration(conditions, fitted_on)


def calibrate(head: Head, table: OptionTable, survey: Survey, split: Split,
              groups: np.ndarray, seed: int, fitted_on: dict | None = None,
              ks: Sequence[int] = CALIBRATION_KS, draws: int = CALIBRATION_DRAWS
              ) -> Calibration:
    """A head's interval calibration on `groups` (a run's validation groups), for context
    answers with respondent counts (where the survey has them) and without."""
    if not len(groups):
        raise ValueError("calibration needs held-out groups (data.validation_fraction > 0)")
    found = calibration_residuals(head, table, survey, split, groups, seed, ks, draws)
    return fit([found], {"groups": [survey.group_labels[g] for g in groups], "draws": draws,
                         **(fitted_on or {})})


def fit_condition(per_k: dict[int, list[Residuals]]) -> ConditionCalibration:
    """Conformal quantiles per k, at the sampling weight λ that gives the narrowest intervals
    at WIDTH_LEVEL over all k."""
    weights = SAMPLING_WEIGHTS if any(np.isfinite(r.respondents_N).any()
                                      for rs in per_k.values() for r in rs) else (0.0,)

    def width(weight: float) -> float:
        total, count = 0.0, 0
        for rs in per_k.values():
            q = conformal_quantiles(np.concatenate([r.option_scores(weight) for r in rs]),
                                    [WIDTH_LEVEL])[0]
            for r in rs:
                low, high = bounds(r.prob_N, q * r.scales(weight))
                total += float(np.sum(high - low))
                count += len(r.prob_N)
        return total / max(count, 1)

    weight = min(weights, key=width)
    # per k, each score with its question's number of options: options', question means'
    options = {k: (np.concatenate([r.option_scores(weight) for r in rs]),
                   np.concatenate([r.options_N() for r in rs])) for k, rs in per_k.items()}
    means = {k: (np.concatenate([r.mean_scores(weight) for r in rs]),
                 np.concatenate([r.options_M() for r in rs])) for k, rs in per_k.items()}
    by_class = [{name: table for name in OPTION_CLASSES  # where a class has enough scores
                 if (table := _table(scored, name)) is not None} for scored in (options, means)]
    return ConditionCalibration(weight, _table(options), _table(means), *by_class)


def _table(scored_per_k: dict[int, tuple[np.ndarray, np.ndarray]],
           option_class: str | None = None) -> QuantileTable | None:
    """Quantiles per k of the scores (those of one class of questions by number of options,
    at the k where it has MIN_CLASS_SCORES of them), from {k: (scores, options per score)};
    None where no k has enough."""
    values = {k: scores if option_class is None else scores[option_classes(n)[option_class]]
              for k, (scores, n) in scored_per_k.items()}
    fewest = 1 if option_class is None else MIN_CLASS_SCORES
    values = {k: v for k, v in values.items() if len(v) >= fewest}
    if not values:
        return None
    return QuantileTable(tuple(values), np.stack([conformal_quantiles(v) for v in
                                                  values.values()]),
                         tuple(len(v) for v in values.values()))


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How intervals did on held-out answers: per level, the fraction holding the observed
    answer and the mean width (options; question means in ordinal units)."""

    levels: tuple[float, ...]
    option_coverage: tuple[float, ...]
    option_width: tuple[float, ...]
    mean_coverage: tuple[float, ...]
    mean_width: tuple[float, ...]


def coverage(calibration: Calibration, found: Sequence[Residuals], with_counts: bool,
             levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95)) -> Coverage:
    """Coverage and width of a calibration's intervals on residuals of other groups."""
    condition = calibration.condition(with_counts)
    weight = condition.sampling_weight
    out = {name: [] for name in ("oc", "ow", "mc", "mw")}
    for level in levels:
        hits = widths = n = mean_hits = mean_widths = m = 0.0
        for r in found:
            half = condition.option_quantiles(r.k, level, r.options_N()) * r.scales(weight)
            low, high = bounds(r.prob_N, half)
            hits += np.sum((r.truth_N >= low) & (r.truth_N <= high))
            widths += np.sum(high - low)
            n += len(r.prob_N)
            if condition.means is not None:
                mean_M, scale_M = r.means(weight)
                half_M = condition.mean_quantiles(r.k, level, r.options_M()) * scale_M
                low_M, high_M = bounds(mean_M, half_M, *r.ordinal_range())
                mean_hits += np.sum((r.true_mean_M >= low_M) & (r.true_mean_M <= high_M))
                mean_widths += np.sum(high_M - low_M)
                m += len(mean_M)
        out["oc"].append(hits / n)
        out["ow"].append(widths / n)
        out["mc"].append(mean_hits / m if m else float("nan"))
        out["mw"].append(mean_widths / m if m else float("nan"))
    return Coverage(tuple(levels), *(tuple(float(v) for v in out[k])
                                     for k in ("oc", "ow", "mc", "mw")))


def calibrate_run(run: RunDir, survey: Survey, table: OptionTable | None = None
                  ) -> Calibration:
    """Calibrate a trained run's intervals on its validation groups (and, with
    `data.calibration_folds` > 1, on its other training groups, each scored by the fold
    model trained without it) and save them in the run folder. `survey` holds the run's
    questions in the run's order; `table`, the run's option table of it, if already built."""
    split, validation = run.require().split.resolve(survey)
    if not len(validation):
        raise ValueError(f"{run.path}: the run held out no validation groups "
                         "(data.validation_fraction), so its intervals cannot be calibrated")
    head, meta = run.restore_head()
    table = run_table(run, survey, split) if table is None else table
    found = [calibration_residuals(head, table, survey, split, validation, split.seed)]
    groups = [survey.group_labels[g] for g in validation]
    folds = run.config.data.calibration_folds
    fold_runs = run.fold_runs()
    if folds > 1:
        if len(fold_runs) < folds - 1 or not all(f.has_checkpoints() for f in fold_runs):
            raise ValueError(f"{run.path}: data.calibration_folds={folds}, but the models of "
                             f"its folds ({run.path / FOLDS}) are not all trained; run the "
                             "training again (it resumes) to train them")
        for fold_run in fold_runs[:folds - 1]:
            fold_split, held_out = fold_run.split.resolve(survey)
            fold_head, _ = fold_run.restore_head()
            found.append(calibration_residuals(fold_head, run_table(fold_run, survey,
                                                                    fold_split),
                                               survey, fold_split, held_out, split.seed))
            groups += [survey.group_labels[g] for g in held_out]
    calibration = fit(found, {"groups": groups, "draws": CALIBRATION_DRAWS,
                              "folds": len(found), "step": meta.get("step")})
    run.save_calibration(calibration)
    return calibration
