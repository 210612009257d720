"""The protocol every preference head follows.

Shapes: B episodes, T target points.

A head reads `gpo.points.Points`: answer options of questions, gathered on the device from an
`OptionTable` (one row per option: its embedding, the reference groups' answers, its ordinal
position) by the indices a packer wrote (`gpo.points.pack_points`), so every caller
(training, evaluation, the API) hands a head the same `Points`.

A head is an `nnx.Module` subclass of `Head`, registered by name (`gpo.models.registry`) and
built from its config and the data's sizes (`embedding_dim`, and `n_groups` for heads with
per-group state), which the registry fills in:

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
  row (`gpo.training.packing`; GPO).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
from flax import nnx

from gpo.points import EpisodeBatch, OptionTable, Points, gather_points


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


def forward(head: Head, table: OptionTable, batch: EpisodeBatch,
            training: bool = False) -> tuple[jax.Array, jax.Array]:
    """(probability, std) of a batch's target points: the one forward pass training and
    evaluation share."""
    if training and head.learns_training_groups:
        group = head.encode_training_groups(batch.group_B)
    else:
        group = head.encode_context(gather_points(table, batch, "context"))
    return head.predict(group, gather_points(table, batch, "target"))
