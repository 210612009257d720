"""The option table every point indexes: one row per answer option with its standardised
embedding, the reference groups' answers and its ordinal position; and its one builder, used
by training, evaluation and the API alike.

Shapes: Q questions, O options (padded), E embedding width, S reference groups, R = Q * O rows
(row `q * O + o` is option o of question q).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from gpo.data.survey import Survey


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OptionTable:
    """Option rows every point indexes (host arrays, or device arrays once `device_put`).

    `reference_known_RxS` is False where a reference group did not answer (sparse surveys,
    protocol B's held-out questions, questions new to the run). `ordinal_R` is the option's
    position on its question's scale in [0, 1] and `gap_R` the distance to the next position
    (0 for the last option and for nominal questions): the Wasserstein loss reads them.
    """

    x_RxE: jax.Array
    reference_RxS: jax.Array
    reference_known_RxS: jax.Array
    reference_respondents_RxS: jax.Array   # 0 where unknown
    ordinal_R: jax.Array
    gap_R: jax.Array


@dataclasses.dataclass(frozen=True)
class EmbeddingStats:
    """Per-dimension standardisation of option embeddings, fitted on a run's training survey.

    Frozen-LLM embeddings share large constant components; standardising keeps inputs on a
    unit scale. The statistics are saved with the run and applied to every new embedding.
    """

    mean_E: np.ndarray
    scale_E: np.ndarray

    @classmethod
    def fit(cls, embeddings_QxOxE: np.ndarray, option_mask_QxO: np.ndarray,
            question_keys: Sequence[str] | None = None) -> EmbeddingStats:
        check_finite(embeddings_QxOxE, option_mask_QxO, question_keys)
        valid = np.asarray(embeddings_QxOxE, np.float64)[option_mask_QxO]
        return cls(valid.mean(0).astype(np.float32), (valid.std(0) + 1e-6).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean_E) / self.scale_E).astype(np.float32)


def check_finite(embeddings_QxOxE: np.ndarray, option_mask_QxO: np.ndarray,
                 question_keys: Sequence[str] | None = None) -> None:
    """Refuse non-finite embeddings of real options, naming the first question at fault."""
    bad = ~np.isfinite(np.asarray(embeddings_QxOxE, np.float64)).all(-1) & option_mask_QxO
    if bad.any():
        q, o = np.argwhere(bad)[0]
        name = question_keys[q] if question_keys is not None else f"question {q}"
        raise ValueError(f"embeddings of {int(bad.sum())} options are not finite, first "
                         f"{name!r} option {o}")


@dataclasses.dataclass(frozen=True)
class References:
    """The reference groups' answers on a run's questions (the run's training groups).

    `answered_SxQ` is False where a group did not answer, and on every question a run may not
    read (protocol B's held-out questions), so no head ever sees those answers.
    """

    labels: tuple[str, ...]
    probs_SxQxO: np.ndarray
    answered_SxQ: np.ndarray
    respondents_SxQ: np.ndarray

    @classmethod
    def from_survey(cls, survey: Survey, groups: np.ndarray, questions: np.ndarray
                    ) -> References:
        readable_Q = np.zeros(len(survey.questions), bool)
        readable_Q[questions] = True
        groups = np.asarray(groups, int)
        return cls(tuple(survey.group_labels[g] for g in groups),
                   survey.probs_GxQxO[groups].astype(np.float32),
                   survey.answered_GxQ[groups] & readable_Q[None],
                   survey.respondents_GxQ[groups].astype(np.float32))

    def take(self, questions: Sequence[int | None], max_options: int) -> References:
        """The references of these question indices, in order, padded to `max_options`; None
        is a question no reference group answered (new to the run)."""
        S, _, O = self.probs_SxQxO.shape
        O = min(O, max_options)
        n = len(questions)
        probs = np.zeros((S, n, max_options), np.float32)
        answered = np.zeros((S, n), bool)
        respondents = np.full((S, n), np.nan, np.float32)
        for i, q in enumerate(questions):
            if q is not None:
                probs[:, i, :O] = self.probs_SxQxO[:, q, :O]
                answered[:, i] = self.answered_SxQ[:, q]
                respondents[:, i] = self.respondents_SxQ[:, q]
        return References(self.labels, probs, answered, respondents)


def ordinal_positions(ordinals_QxO: np.ndarray, option_mask_QxO: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(position in [0, 1], gap to the next position) per option, as the alignment metric
    integrates: positions scaled by the question's span; the gap is 0 for the last option of
    the scale, tied options but one, padding and nominal questions (a span of 0)."""
    ordinals = np.where(option_mask_QxO, ordinals_QxO, np.inf)
    empty = ~option_mask_QxO.any(1, keepdims=True)  # padding questions (API tables)
    low = np.where(empty, 0.0, np.min(ordinals, 1, keepdims=True))
    high = np.where(empty, 0.0, np.max(np.where(option_mask_QxO, ordinals_QxO, -np.inf), 1,
                                       keepdims=True))
    span = np.where(high > low, high - low, 1.0)
    position = np.where(option_mask_QxO, (ordinals - low) / span, 0.0)
    order = np.argsort(np.where(option_mask_QxO, position, np.inf), 1, kind="stable")
    sorted_position = np.take_along_axis(position, order, 1)
    sorted_mask = np.take_along_axis(option_mask_QxO, order, 1)
    next_position = np.concatenate([sorted_position[:, 1:], sorted_position[:, -1:]], 1)
    next_mask = np.concatenate([sorted_mask[:, 1:], np.zeros_like(sorted_mask[:, :1])], 1)
    sorted_gap = np.where(sorted_mask & next_mask, next_position - sorted_position, 0.0)
    gap = np.zeros_like(sorted_gap)
    np.put_along_axis(gap, order, sorted_gap, 1)
    gap = np.where((high > low) & option_mask_QxO, gap, 0.0)
    return position.astype(np.float32), gap.astype(np.float32)


def build_option_table(embeddings_QxOxE: np.ndarray, stats: EmbeddingStats,
                       option_mask_QxO: np.ndarray, ordinals_QxO: np.ndarray,
                       references: References, name: str = "the questions") -> OptionTable:
    """The host arrays of an option table over Q questions (device_put by the caller):
    a survey's (`survey_option_table`) or the questions of one API call."""
    Q, O = option_mask_QxO.shape
    if embeddings_QxOxE.shape[:2] != (Q, O):
        raise ValueError(f"embeddings have shape {embeddings_QxOxE.shape}, expected "
                         f"{(Q, O)} + (E,) for {name}")
    if references.probs_SxQxO.shape[1:] != (Q, O):
        raise ValueError(f"references cover {references.probs_SxQxO.shape[1:]} (questions, "
                         f"options), {name} {(Q, O)}")
    position, gap = ordinal_positions(ordinals_QxO, option_mask_QxO)
    known_SxQxO = references.answered_SxQ[..., None] & option_mask_QxO[None]
    S = len(references.labels)
    return OptionTable(
        x_RxE=stats.apply(embeddings_QxOxE).reshape(Q * O, -1),
        reference_RxS=np.where(known_SxQxO, references.probs_SxQxO, 0.0).reshape(
            S, Q * O).T.astype(np.float32),
        reference_known_RxS=known_SxQxO.reshape(S, Q * O).T.copy(),
        reference_respondents_RxS=np.where(
            known_SxQxO, np.nan_to_num(references.respondents_SxQ, nan=0.0)[..., None],
            0.0).reshape(S, Q * O).T.astype(np.float32),
        ordinal_R=position.reshape(-1), gap_R=gap.reshape(-1))


def survey_option_table(embeddings_QxOxE: np.ndarray, stats: EmbeddingStats, survey: Survey,
                        references: References) -> OptionTable:
    """A survey's option table: its questions' embeddings, masks and ordinal scales."""
    return build_option_table(embeddings_QxOxE, stats, survey.option_mask_QxO,
                              survey.ordinals_QxO, references, str(survey))
