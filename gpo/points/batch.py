"""Episodes as points: the typed batch every stage builds and every head reads.

An episode is one group with some context questions (answers shown to the model) and some
target questions (answers to predict). Every answer option of a chosen question is a point.
Points are padded to fixed capacities with masks, so one jitted step serves every episode.
A point names its option by a row `question * O + option` of an `OptionTable`, so embeddings
and reference answers are gathered on the device (`gather_points`) rather than copied per
batch.

Training (both samplers and row packing), evaluation and the API all build an `EpisodeBatch`
through `pack_points`, or lay it out the same way on the device.

Shapes: B episodes (rows), N point slots of a row (C context, T target), S reference groups,
E embedding width, R option-table rows, O options of the widest question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpo.data.survey import Survey
from gpo.points.table import OptionTable

POINT_MULTIPLE = 64  # point counts are padded to multiples of this: few compiled shapes


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PointSlots:
    """One part (the context or the targets) of B episodes: N padded point slots a row.

    Host (NumPy) or device arrays alike. A row holds one episode, unless rows are packed
    (`gpo.training.packing`): then `episode_BxN` tells the episodes of a row apart."""

    option_BxN: jax.Array       # int32 option-table row (question * O + option); 0 on padding
    prob_BxN: jax.Array         # float32 the group's probability of the option; 0 if unknown
    mask_BxN: jax.Array         # bool, False on padding
    question_BxN: jax.Array     # int32 question index (softmax groups); -1 on padding
    respondents_BxN: jax.Array  # float32 the group's respondents; 0 when unknown
    episode_BxN: jax.Array      # int32 the point's episode (its row unless packed)


# What a padding slot holds, per field (packed rows mark padding with episode -1).
PADDING = {"option_BxN": 0, "prob_BxN": 0.0, "mask_BxN": False, "question_BxN": -1,
           "respondents_BxN": 0.0, "episode_BxN": -1}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EpisodeBatch:
    """B episodes: per episode its group and the reference groups it may read, and its
    context and target points."""

    group_B: jax.Array                   # int32 survey group index (names it in messages)
    reference_mask_BxS: jax.Array        # bool: reference groups the episode may read
    hide_target_references_B: jax.Array  # bool: targets read as if no reference answered
    context: PointSlots
    target: PointSlots


def padded_size(n: int, multiple: int = POINT_MULTIPLE) -> int:
    """n rounded up to a multiple (at least one multiple), so a few shapes serve all batches."""
    return max(multiple, -(-int(n) // multiple) * multiple)


def point_capacity(survey: Survey, questions: np.ndarray, n_questions: int) -> int:
    """Most points n_questions of these questions can have: the sum of the largest option counts."""
    counts = np.sort(survey.n_options_Q[questions])[::-1]
    return int(counts[:n_questions].sum())


def pack_points(part: str, rows: Sequence[np.ndarray], questions: Sequence[np.ndarray],
                probs: Sequence[np.ndarray], respondents: Sequence[np.ndarray],
                capacity: int) -> PointSlots:
    """The one point packer: each episode's points (option-table row, question id, the group's
    probability and respondent count) laid out in a row padded to `capacity`, with a mask.
    `part` ('context' or 'target') names it in messages."""
    B = len(rows)
    option = np.zeros((B, capacity), np.int32)
    prob = np.zeros((B, capacity), np.float32)
    mask = np.zeros((B, capacity), bool)
    question_id = np.full((B, capacity), -1, np.int32)
    count = np.zeros((B, capacity), np.float32)
    for b, (row, question, p, n) in enumerate(zip(rows, questions, probs, respondents)):
        size = len(row)
        if size > capacity:
            raise ValueError(f"{part} has {size} points, more than capacity {capacity}")
        option[b, :size] = row
        prob[b, :size] = p
        mask[b, :size] = True
        question_id[b, :size] = question
        count[b, :size] = np.nan_to_num(n, nan=0.0)
    episode = np.broadcast_to(np.arange(B, dtype=np.int32)[:, None], (B, capacity)).copy()
    return PointSlots(option, prob, mask, question_id, count, episode)


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
    """Lay out given (group, context questions, target questions) triples of a survey as
    padded points over the survey's option table.

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
        parts[part] = pack_points(part, rows, questions, probs, counts, capacity)
    hidden = np.zeros(len(groups), bool) if hide_target_references_B is None else np.asarray(
        hide_target_references_B, bool)
    return EpisodeBatch(groups.astype(np.int32), np.asarray(reference_mask_BxS, bool), hidden,
                        **parts)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Points:
    """Points of B episodes as a head reads them, gathered from an OptionTable.

    `prob_BxN` is the group's probability of each option (zeros where unknown: targets at
    prediction time). `respondents_BxN` counts the group's respondents to the point's
    question, 0 where unknown (and so do `reference_respondents_BxNxS` for the reference
    groups). `reference_known_BxNxS` already excludes the reference groups an episode may not
    read (its own group while meta-training) and, in the episodes that hide them, the target
    points' references (`hide_target_references_B`: how a head learns questions no reference
    group answered).
    """

    x_BxNxE: jax.Array
    prob_BxN: jax.Array
    question_BxN: jax.Array
    mask_BxN: jax.Array
    respondents_BxN: jax.Array
    reference_BxNxS: jax.Array
    reference_known_BxNxS: jax.Array
    reference_respondents_BxNxS: jax.Array
    ordinal_BxN: jax.Array
    gap_BxN: jax.Array
    episode_BxN: jax.Array  # the episode a point belongs to: its row, unless rows are packed

    @classmethod
    def of(cls, x_BxNxE, question_BxN, mask_BxN=None, prob_BxN=None) -> Points:
        """Points from embeddings alone (no reference answers, no respondent counts): for
        tests and direct use of a head."""
        x = jnp.asarray(x_BxNxE, jnp.float32)
        question = jnp.asarray(question_BxN, jnp.int32)
        mask = question >= 0 if mask_BxN is None else jnp.asarray(mask_BxN, bool)
        zeros = jnp.zeros(question.shape, jnp.float32)
        prob = zeros if prob_BxN is None else jnp.asarray(prob_BxN, jnp.float32)
        no_reference = jnp.zeros(question.shape + (0,), jnp.float32)
        B, N = question.shape
        episode = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, N))
        return cls(x, prob, question, mask, zeros, no_reference, no_reference.astype(bool),
                   no_reference, zeros, zeros, episode)


def gather_points(table: OptionTable, batch: EpisodeBatch, part: str) -> Points:
    """The `part` ('context' or 'target') points of a batch, gathered on the device."""
    slots: PointSlots = getattr(batch, part)
    rows = slots.option_BxN
    of_episode = jnp.maximum(slots.episode_BxN, 0)  # padding reads episode 0's flags, masked
    known = table.reference_known_RxS[rows] & batch.reference_mask_BxS[of_episode]
    if part == "target":
        known = known & ~batch.hide_target_references_B[of_episode][..., None]
    return Points(x_BxNxE=table.x_RxE[rows], prob_BxN=slots.prob_BxN,
                  question_BxN=slots.question_BxN, mask_BxN=slots.mask_BxN,
                  respondents_BxN=slots.respondents_BxN,
                  reference_BxNxS=jnp.where(known, table.reference_RxS[rows], 0.0),
                  reference_known_BxNxS=known,
                  reference_respondents_BxNxS=table.reference_respondents_RxS[rows],
                  ordinal_BxN=table.ordinal_R[rows], gap_BxN=table.gap_R[rows],
                  episode_BxN=slots.episode_BxN)
