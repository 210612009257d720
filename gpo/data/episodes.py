"""Meta-learning episodes and evaluation splits.

An episode is one group with some context questions (answers shown to the model) and some
target questions (answers to predict). Every answer option of a chosen question is a point.
Points are padded to fixed capacities with masks, so one jitted step serves every episode.

Shapes: B episodes, C context points, T target points. A point names its option by a flat index
`question * O + option` into the survey's option table (`Survey.max_options` = O), so
embeddings are gathered on the device from one `[Q * O, E]` table rather than copied per batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpo.data.survey import Survey

# ---------------------------------------------------------------------------------------------
# Splits

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
    pool = np.zeros(len(survey.questions), bool)
    pool[split.test_questions] = True
    target = pool[None] & survey.answered_GxQ[split.test_groups] & ~context
    target &= context.any(1, keepdims=True)
    return EvalTask(split.test_groups, context, target)


# ---------------------------------------------------------------------------------------------
# Episodes

@dataclasses.dataclass(frozen=True)
class EpisodeBatch:
    group_B: np.ndarray              # int32 group index
    context_option_BxC: np.ndarray   # int32 flat option index (question * O + option)
    context_prob_BxC: np.ndarray     # float32 the group's probability of that option
    context_mask_BxC: np.ndarray     # bool, False on padding
    context_question_BxC: np.ndarray  # int32 question index; -1 on padding
    target_option_BxT: np.ndarray
    target_prob_BxT: np.ndarray
    target_mask_BxT: np.ndarray
    target_question_BxT: np.ndarray  # int32 question index (softmax groups); -1 on padding

    def arrays(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


POINT_MULTIPLE = 64  # point counts are padded to multiples of this: few compiled shapes


def padded_size(n: int, multiple: int = POINT_MULTIPLE) -> int:
    """n rounded up to a multiple (at least one multiple), so a few shapes serve all batches."""
    return max(multiple, -(-int(n) // multiple) * multiple)


def point_capacity(survey: Survey, questions: np.ndarray, n_questions: int) -> int:
    """Most points n_questions of these questions can have: the sum of the largest option counts."""
    counts = np.sort(survey.n_options_Q[questions])[::-1]
    return int(counts[:n_questions].sum())


def pack_episodes(survey: Survey, groups: Sequence[int], context: Sequence[np.ndarray],
                  target: Sequence[np.ndarray], context_capacity: int,
                  target_capacity: int, probs_BxQxO: np.ndarray | None = None
                  ) -> EpisodeBatch:
    """Lay out given (group, context questions, target questions) triples as padded points.

    probs_BxQxO: each episode's answer distributions, where they are not the survey's own for
    that group (mixed groups); the group index then only names the episode in messages.
    """
    B, O = len(groups), survey.max_options
    if probs_BxQxO is None:
        probs_BxQxO = survey.probs_GxQxO[np.asarray(groups, int)]
    n_options = survey.n_options_Q
    out = {
        "context_option": np.zeros((B, context_capacity), np.int32),
        "context_prob": np.zeros((B, context_capacity), np.float32),
        "context_mask": np.zeros((B, context_capacity), bool),
        "context_question": np.full((B, context_capacity), -1, np.int32),
        "target_option": np.zeros((B, target_capacity), np.int32),
        "target_prob": np.zeros((B, target_capacity), np.float32),
        "target_mask": np.zeros((B, target_capacity), bool),
        "target_question": np.full((B, target_capacity), -1, np.int32),
    }
    for b, (g, ctx_q, tgt_q) in enumerate(zip(groups, context, target)):
        for part, questions, capacity in (("context", ctx_q, context_capacity),
                                          ("target", tgt_q, target_capacity)):
            questions = np.asarray(questions, int)
            if not survey.answered_GxQ[g, questions].all():
                missing = [survey.questions[q].key for q in questions
                           if not survey.answered_GxQ[g, q]]
                raise ValueError(f"group {survey.group_labels[g]!r} did not answer {part} "
                                 f"questions {missing[:5]}")
            q_P = np.repeat(questions, n_options[questions])
            o_P = np.concatenate([np.arange(n_options[q]) for q in questions]) if len(
                questions) else np.zeros(0, int)
            n = len(q_P)
            if n > capacity:
                raise ValueError(f"{part} has {n} points, more than capacity {capacity}")
            out[f"{part}_option"][b, :n] = q_P * O + o_P
            out[f"{part}_prob"][b, :n] = probs_BxQxO[b, q_P, o_P]
            out[f"{part}_mask"][b, :n] = True
            out[f"{part}_question"][b, :n] = q_P
    return EpisodeBatch(np.asarray(groups, np.int32),
                        **{f"{k}_Bx{'C' if k.startswith('context') else 'T'}": v
                           for k, v in out.items()})


@dataclasses.dataclass
class EpisodeSampler:
    """Random training episodes over `groups` x `questions`, reproducible from (seed, step).

    Context and target question counts are drawn uniformly from their ranges (GPO: 10-100
    each), capped by what the group answered; context and target questions are disjoint.
    A batch is padded to its own largest episode (rounded up to `padded_size`), not to the
    worst case the ranges allow: with many-option questions that worst case is several times
    the typical episode, and every padded point costs as much compute as a real one.

    Group mixup: a `mixup` fraction of episodes is drawn from a random convex mix of
    `mixup_groups` training groups (Dirichlet(1) weights) instead of one group. With few
    training groups (OpinionQA protocol A trains on ~10 of 36) the model otherwise meets the
    same handful of groups over and over; mixes fill the space between them, where many
    unseen groups lie.
    """

    survey: Survey
    groups: np.ndarray
    questions: np.ndarray
    batch_size: int = 32
    context_range: tuple[int, int] = (10, 100)
    target_range: tuple[int, int] = (10, 100)
    seed: int = 0
    mixup: float = 0.0
    mixup_groups: int = 3

    def __post_init__(self):
        self.groups = np.asarray(self.groups, int)
        if not 0 <= self.mixup <= 1:
            raise ValueError(f"mixup must be a fraction in [0, 1], got {self.mixup}")
        if self.mixup and not 2 <= self.mixup_groups <= len(self.groups):
            raise ValueError(f"mixup_groups must be in [2, {len(self.groups)}] (the training "
                             f"groups), got {self.mixup_groups}")
        self.questions = np.asarray(self.questions, int)
        for name, (lo, hi) in (("context_range", self.context_range),
                               ("target_range", self.target_range)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 1 <= low <= high, got {(lo, hi)}")
        answered = self.survey.answered_GxQ[np.ix_(self.groups, self.questions)].sum(1)
        if answered.min() < 2:
            bad = self.survey.group_labels[self.groups[answered.argmin()]]
            raise ValueError(f"group {bad!r} answered fewer than 2 of the episode questions")
        n_max = min(self.context_range[1] + self.target_range[1], len(self.questions))
        self.context_capacity = point_capacity(self.survey, self.questions,
                                               min(self.context_range[1], n_max))
        self.target_capacity = point_capacity(self.survey, self.questions,
                                              min(self.target_range[1], n_max))

    def sample(self, step: int) -> EpisodeBatch:
        rng = np.random.default_rng((self.seed, step))
        groups = rng.choice(self.groups, size=self.batch_size)
        probs_BxQxO = self.survey.probs_GxQxO[groups]
        contexts, targets = [], []
        for b, g in enumerate(groups):
            answered_Q = self.survey.answered_GxQ[g, self.questions]
            if self.mixup and rng.random() < self.mixup:
                members = rng.choice(self.groups, size=self.mixup_groups, replace=False)
                weights = rng.dirichlet(np.ones(len(members)))
                shared_Q = self.survey.answered_GxQ[np.ix_(members, self.questions)].all(0)
                if shared_Q.sum() >= 2:  # sparse surveys: members may share too few questions
                    groups[b] = g = members[weights.argmax()]  # names the episode in errors
                    probs_BxQxO[b] = np.einsum("m,mqo->qo", weights,
                                               self.survey.probs_GxQxO[members])
                    answered_Q = shared_Q
            mine = self.questions[answered_Q]
            n_c = int(rng.integers(self.context_range[0], self.context_range[1] + 1))
            n_t = int(rng.integers(self.target_range[0], self.target_range[1] + 1))
            n_c = min(n_c, len(mine) - 1)
            n_t = min(n_t, len(mine) - n_c)
            chosen = rng.choice(mine, size=n_c + n_t, replace=False)
            contexts.append(chosen[:n_c])
            targets.append(chosen[n_c:])
        points = self.survey.n_options_Q
        context_capacity = min(self.context_capacity,
                               padded_size(max(points[c].sum() for c in contexts)))
        target_capacity = min(self.target_capacity,
                              padded_size(max(points[t].sum() for t in targets)))
        return pack_episodes(self.survey, groups, contexts, targets, context_capacity,
                             target_capacity, probs_BxQxO)
