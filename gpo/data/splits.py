"""Which groups and questions each stage may see: group splits (protocols A and B), the
validation groups held out of meta-training, and evaluation tasks (per test group, which
questions are its context and which its targets).

Shapes: G groups, Q questions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpo.data.survey import Survey


@dataclasses.dataclass(frozen=True)
class Split:
    """Which groups and questions training sees.

    Protocol A (GPO's): test groups are unseen; questions are shared with training groups.
    Protocol B: test groups are unseen and evaluated on questions no training episode used.
    """

    protocol: str
    train_groups: np.ndarray
    test_groups: np.ndarray
    train_questions: np.ndarray
    test_questions: np.ndarray
    seed: int


def make_split(survey: Survey, protocol: str = "A", seed: int = 0,
               train_fraction: float = 0.4, question_train_fraction: float = 0.5,
               train_groups: Sequence[str] | None = None) -> Split:
    """Split groups (by fraction, GPO: 40% train, or by explicit labels) and, for B, questions."""
    if protocol not in ("A", "B"):
        raise ValueError(f"protocol must be 'A' or 'B', got {protocol!r}")
    rng = np.random.default_rng(seed)
    G, Q = len(survey.groups), len(survey.questions)
    if train_groups is not None:
        train = np.array(sorted({survey.group_index(label) for label in train_groups}))
    else:
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        train = np.sort(rng.choice(G, size=max(1, int(G * train_fraction)), replace=False))
    test = np.setdiff1d(np.arange(G), train)
    if len(test) == 0:
        raise ValueError("split leaves no test groups")
    if protocol == "A":
        train_q = test_q = np.arange(Q)
    else:
        if not 0 < question_train_fraction < 1:
            raise ValueError(f"question_train_fraction must be in (0, 1), got "
                             f"{question_train_fraction}")
        perm = rng.permutation(Q)
        cut = int(Q * question_train_fraction)
        train_q, test_q = np.sort(perm[:cut]), np.sort(perm[cut:])
    return Split(protocol, train, test, train_q, test_q, seed)


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """Evaluation of unseen groups: per group, which questions are context and which targets."""

    groups: np.ndarray          # [G'] indices into the survey's groups
    context_GxQ: np.ndarray     # bool over all survey questions
    target_GxQ: np.ndarray      # bool, disjoint from context

    def excluding(self, questions_GxQ: np.ndarray) -> EvalTask:
        """The same task with fewer targets: these (group, question) pairs are not scored
        (to compare two tasks on the targets they share)."""
        return dataclasses.replace(self, target_GxQ=self.target_GxQ & ~np.asarray(
            questions_GxQ, bool))


def task_with_context(survey: Survey, split: Split, context_GxQ: np.ndarray) -> EvalTask:
    """The task whose context questions are given (drawn at random, or chosen): each test
    group's targets are all its other answered test questions; a group with no context is
    not evaluated."""
    context = np.asarray(context_GxQ, bool)
    pool = np.zeros(len(survey.questions), bool)
    pool[split.test_questions] = True
    target = pool[None] & survey.answered_GxQ[split.test_groups] & ~context
    target &= context.any(1, keepdims=True)
    return EvalTask(split.test_groups, context, target)


def make_eval_task(survey: Survey, split: Split, k: int, seed: int = 0) -> EvalTask:
    """k context questions for each test group, the rest of the test questions as targets.

    Where all test groups answered at least k common test questions (OpinionQA), every group
    gets the same k context questions (GPO's protocol). On sparse data (GlobalOpinionQA) each
    group gets k of the questions it answered.
    """
    if k < 1:
        raise ValueError(f"k (context questions) must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    answered = survey.answered_GxQ[split.test_groups][:, split.test_questions]
    common = split.test_questions[answered.all(0)]
    context = np.zeros((len(split.test_groups), len(survey.questions)), bool)
    if len(common) > k:
        context[:, rng.choice(common, size=k, replace=False)] = True
    else:
        for row, g in enumerate(split.test_groups):
            mine = split.test_questions[survey.answered_GxQ[g, split.test_questions]]
            if len(mine) <= k:
                continue  # nothing would be left to predict; group is not evaluated
            context[row, rng.choice(mine, size=k, replace=False)] = True
    if not context.any():
        most = int(survey.answered_GxQ[split.test_groups][:, split.test_questions].sum(1).max(
            initial=0))
        raise ValueError(f"k = {k} context questions leave none to predict: each group "
                         f"answered at most {most} of the {len(split.test_questions)} test "
                         f"questions, so k must be below {most}")
    return task_with_context(survey, split, context)


def calibration_folds(split: Split, validation: np.ndarray, folds: int, seed: int
                      ) -> list[np.ndarray]:
    """The training groups outside the validation groups, in `folds - 1` near-equal folds:
    each is held out of a further model whose residuals on it calibrate the run's intervals
    beside the validation groups' (`gpo.evaluation.conformal`)."""
    rest = np.setdiff1d(split.train_groups, validation)
    order = np.random.default_rng((seed, 2)).permutation(rest)
    return [np.sort(fold) for fold in np.array_split(order, folds - 1) if len(fold)]


def validation_split(split: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(meta-training groups, validation groups): some training groups held out to pick
    checkpoints and recipes; test groups are never looked at."""
    if fraction == 0 or len(split.train_groups) < 3:
        return split.train_groups, np.zeros(0, int)
    rng = np.random.default_rng((seed, 1))
    n_val = max(1, int(round(len(split.train_groups) * fraction)))
    val = np.sort(rng.choice(split.train_groups, size=n_val, replace=False))
    return np.setdiff1d(split.train_groups, val), val
