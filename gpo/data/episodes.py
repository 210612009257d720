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
    reference_mask_BxS: np.ndarray   # bool: which reference groups an episode may read
    hide_target_references_B: np.ndarray  # bool: targets read as if no reference answered
    context_option_BxC: np.ndarray   # int32 option-table row (question * O + option)
    context_prob_BxC: np.ndarray     # float32 the group's probability of that option
    context_mask_BxC: np.ndarray     # bool, False on padding
    context_question_BxC: np.ndarray  # int32 question index; -1 on padding
    context_respondents_BxC: np.ndarray  # float32 the group's respondents; 0 when unknown
    target_option_BxT: np.ndarray
    target_prob_BxT: np.ndarray
    target_mask_BxT: np.ndarray
    target_question_BxT: np.ndarray  # int32 question index (softmax groups); -1 on padding
    target_respondents_BxT: np.ndarray

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


def pack_points(part: str, rows: Sequence[np.ndarray], questions: Sequence[np.ndarray],
                probs: Sequence[np.ndarray], respondents: Sequence[np.ndarray],
                capacity: int) -> dict[str, np.ndarray]:
    """The one point packer: each episode's points (option-table row, question id, the group's
    probability and respondent count) laid out in rows padded to `capacity`, with a mask.
    Training, evaluation and the API all pack through here."""
    B, n = len(rows), "C" if part == "context" else "T"
    out = {f"{part}_option_Bx{n}": np.zeros((B, capacity), np.int32),
           f"{part}_prob_Bx{n}": np.zeros((B, capacity), np.float32),
           f"{part}_mask_Bx{n}": np.zeros((B, capacity), bool),
           f"{part}_question_Bx{n}": np.full((B, capacity), -1, np.int32),
           f"{part}_respondents_Bx{n}": np.zeros((B, capacity), np.float32)}
    for b, (row, question, prob, count) in enumerate(zip(rows, questions, probs, respondents)):
        size = len(row)
        if size > capacity:
            raise ValueError(f"{part} has {size} points, more than capacity {capacity}")
        out[f"{part}_option_Bx{n}"][b, :size] = row
        out[f"{part}_prob_Bx{n}"][b, :size] = prob
        out[f"{part}_mask_Bx{n}"][b, :size] = True
        out[f"{part}_question_Bx{n}"][b, :size] = question
        out[f"{part}_respondents_Bx{n}"][b, :size] = np.nan_to_num(count, nan=0.0)
    return out


def reference_mask(reference_groups_S: np.ndarray, usable_S: np.ndarray | None,
                   excluded: Sequence[Sequence[int]]) -> np.ndarray:
    """`[B, S]`: the reference groups each episode may read: the usable ones, minus the groups
    an episode is made of (a group never reads its own answers as a reference)."""
    reference_groups_S = np.asarray(reference_groups_S, int)
    usable = np.ones(len(reference_groups_S), bool) if usable_S is None else np.asarray(
        usable_S, bool)
    return np.stack([usable & ~np.isin(reference_groups_S, list(members))
                     for members in excluded]) if len(excluded) else np.zeros(
        (0, len(reference_groups_S)), bool)


def pack_episodes(survey: Survey, groups: Sequence[int], context: Sequence[np.ndarray],
                  target: Sequence[np.ndarray], context_capacity: int,
                  target_capacity: int, reference_mask_BxS: np.ndarray,
                  probs_BxQxO: np.ndarray | None = None,
                  respondents_BxQ: np.ndarray | None = None,
                  hide_target_references_B: np.ndarray | None = None) -> EpisodeBatch:
    """Lay out given (group, context questions, target questions) triples as padded points.

    probs_BxQxO, respondents_BxQ: each episode's answer distributions and respondent counts,
    where they are not the survey's own for that group (mixed groups: the group index then
    only names the episode in messages).
    """
    groups = np.asarray(groups, int)
    O, n_options = survey.max_options, survey.n_options_Q
    if probs_BxQxO is None:
        probs_BxQxO = survey.probs_GxQxO[groups]
    if respondents_BxQ is None:
        respondents_BxQ = survey.respondents_GxQ[groups]
    parts = {}
    for part, chosen, capacity in (("context", context, context_capacity),
                                   ("target", target, target_capacity)):
        rows, questions, probs, counts = [], [], [], []
        for b, (g, qs) in enumerate(zip(groups, chosen)):
            qs = np.asarray(qs, int)
            if not survey.answered_GxQ[g, qs].all():
                missing = [survey.questions[q].key for q in qs if not survey.answered_GxQ[g, q]]
                raise ValueError(f"group {survey.group_labels[g]!r} did not answer {part} "
                                 f"questions {missing[:5]}")
            q_P = np.repeat(qs, n_options[qs])
            o_P = np.concatenate([np.arange(n_options[q]) for q in qs]) if len(qs) else \
                np.zeros(0, int)
            rows.append(q_P * O + o_P)
            questions.append(q_P)
            probs.append(probs_BxQxO[b, q_P, o_P])
            counts.append(respondents_BxQ[b, q_P])
        parts.update(pack_points(part, rows, questions, probs, counts, capacity))
    hidden = np.zeros(len(groups), bool) if hide_target_references_B is None else np.asarray(
        hide_target_references_B, bool)
    return EpisodeBatch(groups.astype(np.int32), np.asarray(reference_mask_BxS, bool), hidden,
                        **parts)


CONTEXT_DISTRIBUTIONS = ("uniform", "log_uniform")


def check_sampling(mixup: float, hide_references: float, context_distribution: str) -> None:
    """The sampler's options, checked where they are set (TrainConfig) and where they are
    used (EpisodeSampler)."""
    for name, value in (("group_mixup", mixup), ("hide_references", hide_references)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")
    if context_distribution not in CONTEXT_DISTRIBUTIONS:
        raise ValueError(f"context_distribution must be one of {CONTEXT_DISTRIBUTIONS}, got "
                         f"{context_distribution!r}")


@dataclasses.dataclass
class EpisodeSampler:
    """Random training episodes over `groups` x `questions`, reproducible from (seed, step).

    Context and target question counts are drawn uniformly from their ranges (GPO: 10-100
    each), capped by what the group answered; context and target questions are disjoint.
    A batch is padded to its own largest episode (rounded up to `padded_size`), not to the
    worst case the ranges allow: with many-option questions that worst case is several times
    the typical episode, and every padded point costs as much compute as a real one.

    Reference hiding: a `hide_references` fraction of episodes read their targets as if no
    reference group had answered them (protocol B's held-out questions, new questions in the
    API), so heads that read references learn the text-only fallback too.

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
    reference_groups: np.ndarray | None = None  # the option table's reference columns
    usable_references: np.ndarray | None = None  # bool per column (default: all)
    hide_references: float = 0.0  # fraction of episodes whose targets hide their references
    context_distribution: str = "uniform"  # or "log_uniform" over context_range

    def __post_init__(self):
        self.groups = np.asarray(self.groups, int)
        if self.reference_groups is None:
            self.reference_groups = np.zeros(0, int)
        if self.usable_references is None:
            self.usable_references = np.ones(len(self.reference_groups), bool)
        check_sampling(self.mixup, self.hide_references, self.context_distribution)
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
        respondents_BxQ = self.survey.respondents_GxQ[groups]
        contexts, targets, members_B = [], [], [[g] for g in groups]
        for b, g in enumerate(groups):
            answered_Q = self.survey.answered_GxQ[g, self.questions]
            if self.mixup and rng.random() < self.mixup:
                members = rng.choice(self.groups, size=self.mixup_groups, replace=False)
                weights = rng.dirichlet(np.ones(len(members)))
                shared_Q = self.survey.answered_GxQ[np.ix_(members, self.questions)].all(0)
                if shared_Q.sum() >= 2:  # sparse surveys: members may share too few questions
                    groups[b] = g = members[weights.argmax()]  # names the episode in errors
                    members_B[b] = list(members)
                    respondents_BxQ[b] = np.nan  # a mix has no respondents of its own
                    probs_BxQxO[b] = np.einsum("m,mqo->qo", weights,
                                               self.survey.probs_GxQxO[members])
                    answered_Q = shared_Q
            mine = self.questions[answered_Q]
            n_c = self._context_size(rng)
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
        references = reference_mask(self.reference_groups, self.usable_references, members_B)
        hidden = (rng.random(self.batch_size) < self.hide_references if self.hide_references
                  else None)  # drawn last: without hiding, the stream is unchanged
        return pack_episodes(self.survey, groups, contexts, targets, context_capacity,
                             target_capacity, references, probs_BxQxO, respondents_BxQ, hidden)

    def _context_size(self, rng: np.random.Generator) -> int:
        low, high = self.context_range
        if self.context_distribution == "uniform":
            return int(rng.integers(low, high + 1))
        # Log-uniform: as many episodes with 1-10 context questions as with 10-100, so a head
        # learns the few-answer regime as well as the many-answer one.
        return int(np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1)))))
