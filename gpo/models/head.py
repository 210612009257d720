"""The protocol every preference head follows, and the points it reads.

Shapes: B episodes, N points of an episode (C context, T target), E embedding width, S reference
groups (the run's training groups), R rows of the option table.

A point is one answer option of one question. Points are gathered on the device from an
`OptionTable` (one row per option: its embedding, the reference groups' answers, its ordinal
position) by the indices a packer wrote (`gpo.data.episodes.pack_points`), so every caller
(training, evaluation, the API) hands a head the same `Points`.

A head is an `nnx.Module` subclass of `Head`, registered by name (`gpo.models.registry`):

    group = head.encode_context(context_points)     # once per group
    prob_BxT, std_BxT = head.predict(group, target_points)

Capabilities are declared as class attributes, never discovered with hasattr:
- `learns_training_groups`: meta-training uses one learned state per training group
  (`encode_training_groups`) instead of encoding the episode's context (PAL).
- `has_group_space`: `interpolate_groups` gives a group between two others (PAL, PPD).
- `reads_references`: the head reads the reference groups' answers in `Points`; a run keeps
  them so `gpo.load` needs no data folder (the reference head).
- `packs_episodes`: the head keeps points of different episodes apart by `Points.episode_BxN`
  (attention, softmax within questions), so meta-training may pack several episodes into one
  row (`gpo.packing`; GPO).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OptionTable:
    """Device-side option rows every point indexes.

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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Points:
    """Padded points of B episodes, gathered from an OptionTable.

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
        return cls(x, prob, question, mask, zeros, no_reference, no_reference.astype(bool),
                   no_reference, zeros, zeros, _row_episodes(question))


def gather_points(table: OptionTable, batch: dict[str, jax.Array], part: str) -> Points:
    """The `part` ('context' or 'target') points of a packed batch, gathered on the device."""
    n = "C" if part == "context" else "T"
    rows = batch[f"{part}_option_Bx{n}"]
    episode = batch.get(f"{part}_episode_Bx{n}")  # present when rows are packed
    episode = _row_episodes(rows) if episode is None else episode
    of_episode = jnp.maximum(episode, 0)  # padding reads episode 0's flags, masked anyway
    known = table.reference_known_RxS[rows] & batch["reference_mask_BxS"][of_episode]
    if part == "target":
        known = known & ~batch["hide_target_references_B"][of_episode][..., None]
    return Points(x_BxNxE=table.x_RxE[rows], prob_BxN=batch[f"{part}_prob_Bx{n}"],
                  question_BxN=batch[f"{part}_question_Bx{n}"],
                  mask_BxN=batch[f"{part}_mask_Bx{n}"],
                  respondents_BxN=batch[f"{part}_respondents_Bx{n}"],
                  reference_BxNxS=jnp.where(known, table.reference_RxS[rows], 0.0),
                  reference_known_BxNxS=known,
                  reference_respondents_BxNxS=table.reference_respondents_RxS[rows],
                  ordinal_BxN=table.ordinal_R[rows],
                  gap_BxN=table.gap_R[rows],
                  episode_BxN=episode)


def _row_episodes(like_BxN: jax.Array) -> jax.Array:
    """One episode a row: each point's episode is its row."""
    B, N = like_BxN.shape
    return jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, N))


class Head(nnx.Module):
    """Base class of preference heads; see the module docstring for the contract."""

    name: ClassVar[str] = ""          # set by `register_head`
    config_class: ClassVar[type] = type(None)
    learns_training_groups: ClassVar[bool] = False
    has_group_space: ClassVar[bool] = False
    reads_references: ClassVar[bool] = False
    packs_episodes: ClassVar[bool] = False

    @classmethod
    def default_loss(cls, metric: str) -> str:
        """The training loss when the config says 'default', given the dataset's metric."""
        return "gaussian_nll"

    @classmethod
    def config_for_data(cls, config: Any, embedding_dim: int, n_groups: int) -> Any:
        """The head's config with the fields the data decides filled in (by default the input
        width; `n_groups` is the survey's group count, for heads with per-group state)."""
        config = config if config is not None else cls.config_class.paper(embedding_dim)
        return dataclasses.replace(config, embedding_dim=embedding_dim)

    def encode_context(self, context: Points) -> Any:
        """A group's state from its context points (a pytree, batched over B)."""
        raise NotImplementedError

    def predict(self, group: Any, targets: Points) -> tuple[jax.Array, jax.Array]:
        """(probability, std) per target point; probabilities sum to 1 within a question."""
        raise NotImplementedError

    def encode_training_groups(self, group_B: jax.Array) -> Any:
        """Meta-training state of training groups by index (heads that learn one per group)."""
        raise NotImplementedError(f"head {self.name!r} keeps no state per training group")

    def interpolate_groups(self, a: Any, b: Any, t: float) -> Any:
        """A group between a (t = 0) and b (t = 1) in the head's group space."""
        raise NotImplementedError(f"head {self.name!r} has no group space")

    def describe_group(self, group: Any) -> dict[str, jax.Array]:
        """Named, interpretable parts of a group's state, batched over B (may be empty)."""
        return {}


def forward(head: Head, table: OptionTable, batch: dict[str, jax.Array],
            training: bool = False) -> tuple[jax.Array, jax.Array]:
    """(probability, std) of a packed batch's target points: the one forward pass training and
    evaluation share."""
    if training and head.learns_training_groups:
        group = head.encode_training_groups(batch["group_B"])
    else:
        group = head.encode_context(gather_points(table, batch, "context"))
    return head.predict(group, gather_points(table, batch, "target"))
