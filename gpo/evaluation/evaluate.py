"""Evaluation: a trained head and every baseline on unseen groups, one typed result.

A head adapts to each test group's k context answers and predicts its target questions; the
baselines fit the same context answers; all are scored with the dataset's alignment metric.
`Evaluation` holds the scores per method, per k, per split and per group, with the checkpoint
scored; the CLI, the demo and experiments/ only format it.

Shapes: G groups, Q questions, O options, B groups per forward pass, S reference groups.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from flax import nnx

from gpo.data.splits import EvalTask, Split, make_eval_task, task_with_context
from gpo.data.survey import Survey
from gpo.evaluation.baselines import BASELINES, USES_ONLY_CONTEXT
from gpo.evaluation.metrics import Score, paired_difference, score_predictions
from gpo.models import Head, forward
from gpo.points import (
    EmbeddingStats,
    OptionTable,
    References,
    pack_episodes,
    padded_size,
    reference_mask,
    survey_option_table,
)
from gpo.question_selection import QuestionSelector
from gpo.run_dir import RunDir

if TYPE_CHECKING:
    from gpo.evaluation.prompting import PromptingBaselines


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, table: OptionTable, batch):
    return forward(nnx.merge(graphdef, state), table, batch)


def task_capacities(survey: Survey, tasks: Iterable[EvalTask]) -> tuple[int, int]:
    """(context, target) point capacities that hold any group of these tasks: one compiled
    shape for all of them."""
    n_options = survey.n_options_Q
    tasks = list(tasks)
    return tuple(padded_size(max(n_options[row].sum() for task in tasks
                                 for row in getattr(task, part)))
                 for part in ("context_GxQ", "target_GxQ"))


def predict_task(head: Head, table: OptionTable, survey: Survey, task: EvalTask,
                 reference_groups_S: np.ndarray, usable_S: np.ndarray | None = None,
                 groups_per_pass: int = 8, with_counts: bool = True,
                 target_counts: bool = True, capacities: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(probability, std) `[G, Q, O]` for the task's groups on their target questions.

    reference_groups_S: the survey groups behind the table's reference columns; a group never
    reads its own column, and only `usable_S` columns are read (default: all).
    with_counts: False gives the context answers without their respondent counts (what a
    user with percentages only has). target_counts: False predicts the targets without their
    respondent counts, as `predict()` does (it has none).
    capacities: (context, target) points per episode (default: what this task needs)."""
    graphdef, state = nnx.split(head)
    G, Q, O = len(task.groups), len(survey.questions), survey.max_options
    prob_GxQxO, std_GxQxO = np.zeros((G, Q, O), np.float32), np.zeros((G, Q, O), np.float32)
    context_capacity, target_capacity = capacities or task_capacities(survey, [task])
    respondents_GxQ = survey.respondents_GxQ[task.groups].astype(np.float64)
    if not with_counts:
        respondents_GxQ[:] = np.nan
    elif not target_counts:
        respondents_GxQ[~task.context_GxQ] = np.nan
    for start in range(0, G, groups_per_pass):
        rows = np.arange(start, min(start + groups_per_pass, G))
        padded = np.resize(rows, groups_per_pass)  # fixed batch shape; extras are repeats
        groups = task.groups[padded]
        batch = pack_episodes(
            survey, groups, [np.flatnonzero(task.context_GxQ[r]) for r in padded],
            [np.flatnonzero(task.target_GxQ[r]) for r in padded], context_capacity,
            target_capacity, reference_mask(reference_groups_S, usable_S,
                                            [[g] for g in groups]),
            respondents_BxQ=respondents_GxQ[padded])
        prob_BxT, std_BxT = jax.device_get(_forward(graphdef, state, table, batch))
        for b, row in enumerate(rows):
            mask = batch.target.mask_BxN[b]
            option = batch.target.option_BxN[b][mask]
            prob_GxQxO[row, option // O, option % O] = prob_BxT[b][mask]
            std_GxQxO[row, option // O, option % O] = std_BxT[b][mask]
    return prob_GxQxO, std_GxQxO


@dataclasses.dataclass
class GroupEvaluator:
    """A head's alignment on fixed groups after k context answers each (while meta-training:
    the validation groups, reading only the usable references). `run` yields (name, value);
    the training loop records them and keeps the checkpoint that scores best on `name`."""

    name: str
    survey: Survey
    task: EvalTask
    reference_groups_S: np.ndarray
    usable_S: np.ndarray | None
    metric: str
    with_counts: bool = True  # False: the context answers without their respondent counts

    def run(self, head: Head, table: OptionTable) -> Iterator[tuple[str, float]]:
        prob, _ = predict_task(head, table, self.survey, self.task, self.reference_groups_S,
                               self.usable_S, with_counts=self.with_counts)
        yield self.name, score_predictions(self.survey, self.task, prob, self.metric).mean


def validation_evaluator(survey: Survey, split: Split, validation_groups: np.ndarray,
                         k: int, metric: str, usable_S: np.ndarray, with_counts: bool = True
                         ) -> GroupEvaluator | None:
    """The validation groups' evaluator (k context questions drawn with the split's seed),
    or None where no group is held out."""
    if not len(validation_groups):
        return None
    task = make_eval_task(survey, dataclasses.replace(split, test_groups=validation_groups), k,
                          seed=split.seed)
    return GroupEvaluator("validation", survey, task, split.train_groups, usable_S, metric,
                          with_counts)


@dataclasses.dataclass
class SplitResult:
    """One group split: every method's score per k, overall and per test group."""

    seed: int
    groups: list[str]                                   # test group labels
    checkpoint: dict | None                             # {"step", "validation"} of the head
    scores: dict[str, dict[int, dict]] = dataclasses.field(default_factory=dict)
    # scores[method][k] = {"mean": float, "per_group": [float per test group]}

    def add(self, method: str, k: int, score: Score) -> None:
        self.scores.setdefault(method, {})[k] = {
            "mean": float(score.mean), "per_group": [float(v) for v in score.per_group_G]}


@dataclasses.dataclass
class Evaluation:
    """Scores of a head and the baselines over one or more splits (see module docstring)."""

    dataset: str
    protocol: str
    metric: str
    head: str | None = None                             # the head's method name
    splits: list[SplitResult] = dataclasses.field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for s in self.splits for m in s.scores))

    @property
    def ks(self) -> list[int]:
        return sorted({k for s in self.splits for per_k in s.scores.values() for k in per_k})

    def per_split(self, method: str, k: int) -> list[float]:
        """The method's mean score on each split (NaN-free: splits without it are skipped)."""
        return [s.scores[method][k]["mean"] for s in self.splits
                if k in s.scores.get(method, {})]

    def per_group(self, method: str, k: int) -> tuple[list[str], np.ndarray]:
        """(group labels, scores) over all splits' test groups, in split order."""
        labels, values = [], []
        for s in self.splits:
            if k in s.scores.get(method, {}):
                labels += s.groups
                values += s.scores[method][k]["per_group"]
        return labels, np.asarray(values, np.float64)

    def paired(self, a: str, b: str, k: int) -> tuple[float, float, float]:
        """(mean of a - b, 2.5%, 97.5%) over every split's test groups at k, bootstrapped
        over groups (`gpo.evaluation.metrics.paired_difference`)."""
        return paired_difference(self.per_group(a, k)[1], self.per_group(b, k)[1])

    def rows(self, ks: Sequence[int] | None = None, methods: Iterable[str] | None = None,
             rename: dict[str, str] | None = None) -> dict[str, dict[str, list[float]]]:
        """{method: {"k=K": per-split scores}}: what `gpo.evaluation.report.format_table` prints."""
        ks = self.ks if ks is None else ks
        rename = rename or {}
        return {rename.get(m, m): {f"k={k}": self.per_split(m, k) for k in ks}
                for m in (self.methods if methods is None else methods)}

    def extend(self, other: Evaluation) -> Evaluation:
        """Add another evaluation's splits (same dataset, protocol and metric)."""
        if (other.dataset, other.protocol, other.metric) != (self.dataset, self.protocol,
                                                             self.metric):
            raise ValueError(f"cannot combine {other.dataset}/{other.protocol}/{other.metric} "
                             f"with {self.dataset}/{self.protocol}/{self.metric}")
        self.splits += other.splits
        self.head = self.head or other.head
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> Evaluation:
        splits = [SplitResult(s["seed"], s["groups"], s["checkpoint"],
                              {m: {int(k): v for k, v in per_k.items()}
                               for m, per_k in s["scores"].items()}) for s in raw["splits"]]
        return cls(raw["dataset"], raw["protocol"], raw["metric"], raw.get("head"), splits)


def head_label(head_name: str) -> str:
    """A head's name in tables: its registry name in capitals ('gpo' -> 'GPO')."""
    return head_name.upper()


def baseline_predictions(survey: Survey, split: Split, task: EvalTask, metric: str,
                         embeddings_QxOxE: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every baseline that applies to the split's protocol: {name: predictions `[G, Q, O]`}.
    Under protocol B those that read training groups' answers to held-out questions are
    marked *."""
    out = {}
    for name, predict in BASELINES.items():
        if name == "kNN options" and (split.protocol == "A" or embeddings_QxOxE is None):
            continue
        label = name if split.protocol == "A" or name in USES_ONLY_CONTEXT else f"{name} *"
        out[label] = predict(survey, split, task, metric=metric,
                             option_embeddings_QxOxE=embeddings_QxOxE)
    return out


def task_predictions(head: Head, table: OptionTable, survey: Survey, split: Split,
                     task: EvalTask, metric: str, label: str | None = None,
                     baselines: bool = True, embeddings_QxOxE: np.ndarray | None = None,
                     without_counts: bool = False, llm: PromptingBaselines | None = None
                     ) -> dict[str, np.ndarray]:
    """{method: predictions `[G, Q, O]`} of a head (under `label`, default its name in
    capitals) and, unless told not to, the baselines, on one task: the one evaluation path,
    whether the context questions were drawn at random or chosen. without_counts: the head
    also under `<label> without counts`, its context answers given as percentages only.
    llm: also the prompting baselines (`gpo.evaluation.prompting`)."""
    label = label or head_label(head.name)
    prob, _ = predict_task(head, table, survey, task, split.train_groups)
    out = {label: prob}
    if without_counts:
        out[f"{label} without counts"] = predict_task(head, table, survey, task,
                                                      split.train_groups, with_counts=False)[0]
    if baselines:
        out.update(baseline_predictions(survey, split, task, metric, embeddings_QxOxE))
    if llm is not None:
        out.update(llm.predictions(survey, task))
    return out


def evaluate_head(head: Head, table: OptionTable, survey: Survey, split: Split,
                  ks: Sequence[int], metric: str, eval_seed: int,
                  label: str | None = None, checkpoint: dict | None = None,
                  baselines: bool = True, embeddings_QxOxE: np.ndarray | None = None,
                  tasks: dict[int, EvalTask] | None = None, without_counts: bool = False,
                  llm: PromptingBaselines | None = None, scored_Q: np.ndarray | None = None
                  ) -> SplitResult:
    """A head (and, unless told not to, the baselines; with `llm`, the prompting baselines)
    on one split's test groups at each k: context questions drawn with `eval_seed`, or the
    given `tasks` (k -> task). The table's reference columns are the split's training groups.
    scored_Q: only these questions (bool `[Q]`) are scored, for every method alike (prompting
    an LLM with every target costs hours on a CPU)."""
    result = SplitResult(split.seed, [survey.group_labels[g] for g in split.test_groups],
                         checkpoint)
    for k in ks if tasks is None else tasks:
        task = make_eval_task(survey, split, k, seed=eval_seed) if tasks is None else tasks[k]
        if scored_Q is not None:
            task = task.excluding(~np.asarray(scored_Q, bool)[None])
        for method, pred in task_predictions(head, table, survey, split, task, metric, label,
                                             baselines, embeddings_QxOxE, without_counts,
                                             llm).items():
            result.add(method, k, score_predictions(survey, task, pred, metric))
    return result


def chosen_tasks(selector: QuestionSelector, survey: Survey, split: Split, ks: Sequence[int],
                 criterion: str) -> dict[int, EvalTask]:
    """Per k, the task whose context questions `selector` chose for the split's test groups
    (greedy: the first k of the picks for the largest k), the rest of each group's answered
    test questions its targets, as `make_eval_task` lays out random ones. Where the test
    groups answered the same test questions (OpinionQA), one selection serves them all, as
    a random context is shared; on sparse data each group's candidates and targets are its
    own answered test questions, and a group with no more than k of them is not evaluated.
    A selection reads which questions a group answered, never its answers."""
    answered_GxQ = survey.answered_GxQ[split.test_groups]
    common = split.test_questions[answered_GxQ[:, split.test_questions].all(0)]
    shared = len(common) > max(ks)
    selections: dict[bytes, list[int]] = {}  # one per distinct candidate set
    per_group = []
    for row in range(len(split.test_groups)):
        mine = common if shared else split.test_questions[answered_GxQ[
            row, split.test_questions]]
        if mine.tobytes() not in selections:
            selections[mine.tobytes()] = [p.question for p in selector.select(
                min(max(ks), len(mine) - 1), mine, criterion, targets=mine)]
        per_group.append((selections[mine.tobytes()], len(mine)))
    tasks = {}
    for k in ks:
        context = np.zeros(answered_GxQ.shape, bool)
        for row, (chosen, available) in enumerate(per_group):
            if available > k and len(chosen) >= k:
                context[row, chosen[:k]] = True
        tasks[k] = task_with_context(survey, split, context)
    return tasks


def survey_table(stats: EmbeddingStats, survey: Survey, split: Split,
                 embeddings_QxOxE: np.ndarray) -> OptionTable:
    """The device option table a head reads for `survey`: embeddings standardised with the
    run's statistics, the split's training groups as references (on its training questions)."""
    references = References.from_survey(survey, split.train_groups, split.train_questions)
    return jax.device_put(survey_option_table(embeddings_QxOxE, stats, survey, references))


def run_table(run: RunDir, survey: Survey, split: Split,
              embeddings_QxOxE: np.ndarray | None = None) -> OptionTable:
    """A run's option table for `survey` (its own questions unless other embeddings are
    given)."""
    embeddings = run.embeddings() if embeddings_QxOxE is None else embeddings_QxOxE
    return survey_table(run.stats(), survey, split, embeddings)


def run_predictions(run_dir: str | Path | RunDir, survey: Survey, k: int,
                    eval_seed: int | None = None) -> tuple[EvalTask, np.ndarray, np.ndarray]:
    """(task, probability, std `[G, Q, O]`) of a run's head on its own test groups after k
    context questions, for analyses beyond the alignment (calibration, say)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    split, _ = run.require().split.resolve(survey)
    head, _ = run.restore_head()
    task = make_eval_task(survey, split, k, seed=split.seed if eval_seed is None else eval_seed)
    prob, std = predict_task(head, run_table(run, survey, split), survey, task,
                             split.train_groups)
    return task, prob, std


def validation_scores(run_dir: str | Path | RunDir, survey: Survey, ks: Sequence[int],
                      with_counts: bool = True) -> list[float]:
    """A run's head on its validation groups (held out of meta-training; the other training
    groups as references) after each k context questions, drawn with the split's seed: what
    choosing between runs may look at. Test groups are not read."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    split, validation = run.require().split.resolve(survey)
    head, _ = run.restore_head()
    table = run_table(run, survey, split)
    usable = ~np.isin(split.train_groups, validation)
    if not len(validation):
        raise ValueError(f"{run.path}: the run held out no validation groups "
                         "(data.validation_fraction)")
    scores = []
    for k in ks:
        evaluator = validation_evaluator(survey, split, validation, k, run.config.data.metric,
                                         usable, with_counts)
        scores += [value for _, value in evaluator.run(head, table)]
    return scores


def evaluate_run(run_dir: str | Path | RunDir, survey: Survey, ks: Sequence[int] = (20,),
                 eval_seeds: Sequence[int] | None = None,
                 embeddings_QxOxE: np.ndarray | None = None,
                 baselines: bool = True, without_counts: bool = False,
                 llm: PromptingBaselines | None = None, scored_Q: np.ndarray | None = None
                 ) -> Evaluation:
    """A trained run beside the baselines on its own test groups, at each k (and, with
    `without_counts`, the head again given its context answers without respondent counts;
    with `llm`, the prompting baselines; `scored_Q`: see `evaluate_head`).

    `survey` must hold the run's questions in the run's order (`RunDir.select`) unless
    `embeddings_QxOxE` embeds the given survey's questions with the run's embedder. Context
    questions are drawn with each eval seed (default: the run's split seed)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run.require()
    config = run.config
    if embeddings_QxOxE is None and survey.question_keys != run.question_keys:
        raise ValueError(f"{survey.name} is not the run's question set; select it with "
                         "RunDir.select or pass its embeddings")
    split, _ = run.split.resolve(survey)
    head, meta = run.restore_head()
    table = run_table(run, survey, split, embeddings_QxOxE)
    checkpoint = {"step": meta.get("step"), "validation": meta.get("validation")}
    evaluation = Evaluation(config.data.dataset, split.protocol, config.data.metric,
                            head_label(config.head))
    embeddings = run.embeddings() if embeddings_QxOxE is None else embeddings_QxOxE
    for seed in (split.seed,) if eval_seeds is None else eval_seeds:
        evaluation.splits.append(evaluate_head(
            head, table, survey, split, ks, config.data.metric, seed, checkpoint=checkpoint,
            baselines=baselines, embeddings_QxOxE=embeddings, without_counts=without_counts,
            llm=llm, scored_Q=scored_Q))
    return evaluation
