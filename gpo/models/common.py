"""Pieces every preference head shares: the MLP, and softmax and normalisation within questions.

Shapes: B episodes, C context points, T target points, E embedding width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_NEG = -1e30  # finite "minus infinity": a fully masked row stays NaN-free


MATMUL_DTYPES = ("float32", "bfloat16")


def linear(d_in: int, d_out: int, matmul_dtype: str = "float32", *, rngs: nnx.Rngs
           ) -> nnx.Linear:
    """A Linear layer with float32 weights whose matmul multiplies in `matmul_dtype` and
    accumulates in float32 (bfloat16: the tensor cores' fast path on accelerators)."""
    if matmul_dtype == "float32":
        return nnx.Linear(d_in, d_out, rngs=rngs)
    return nnx.Linear(d_in, d_out, dtype=jnp.dtype(matmul_dtype),
                      preferred_element_type=jnp.float32, rngs=rngs)


class MLP(nnx.Module):
    """Linear, then (ReLU, Linear) x (depth - 1): GPO's embedder and predictor shape."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, depth: int,
                 matmul_dtype: str = "float32", *, rngs: nnx.Rngs):
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        dims = [d_in] + [d_hidden] * (depth - 1) + [d_out]
        self.layers = nnx.List([linear(a, b, matmul_dtype, rngs=rngs)
                                for a, b in zip(dims, dims[1:])])

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nnx.relu(x)
        return x


def same_question_BxTxT(question_BxT: jax.Array, mask_BxT: jax.Array,
                        episode_BxT: jax.Array | None = None) -> jax.Array:
    """Whether two points are options of one question of one episode (rows may hold several
    episodes, `gpo.training.packing`: then `episode_BxT` tells them apart)."""
    both = mask_BxT[:, :, None] & mask_BxT[:, None, :]
    if episode_BxT is not None:
        both = both & (episode_BxT[:, :, None] == episode_BxT[:, None, :])
    return (question_BxT[:, :, None] == question_BxT[:, None, :]) & both


def softmax_within_questions(logits_BxT: jax.Array, question_BxT: jax.Array,
                             mask_BxT: jax.Array, episode_BxT: jax.Array | None = None
                             ) -> jax.Array:
    """Softmax of each target point's logit over the points of its own question.

    Points of one question share a question id; padding (mask False) gets probability 0.
    """
    same = same_question_BxTxT(question_BxT, mask_BxT, episode_BxT)
    logits_BxT = jnp.where(mask_BxT, logits_BxT, 0.0)
    peak_BxT = jnp.max(jnp.where(same, logits_BxT[:, None, :], _NEG), axis=-1)
    # Padding rows have no peak; shift them by 0 so exp stays finite (inf * 0 is NaN in grads).
    peak_BxT = jax.lax.stop_gradient(jnp.where(mask_BxT, peak_BxT, 0.0))
    exp_BxT = jnp.where(mask_BxT, jnp.exp(logits_BxT - peak_BxT), 0.0)
    total_BxT = jnp.einsum("bts,bs->bt", same.astype(exp_BxT.dtype), exp_BxT)
    return jnp.where(mask_BxT, exp_BxT / jnp.where(mask_BxT, total_BxT, 1.0), 0.0)


def predictive_std(raw_BxT: jax.Array, bounded: bool) -> jax.Array:
    """std from the head's raw output: exp (GPO's default) or 0.05 + 0.95 softplus (bounded)."""
    return 0.05 + 0.95 * jax.nn.softplus(raw_BxT) if bounded else jnp.exp(raw_BxT)


def normalise_within_questions(value_BxT, question_BxT, mask_BxT) -> jax.Array:
    """Non-negative values divided by their question's total; padding gets 0."""
    same = same_question_BxTxT(question_BxT, mask_BxT)
    value_BxT = jnp.where(mask_BxT, value_BxT, 0.0)
    total_BxT = jnp.einsum("bts,bs->bt", same.astype(value_BxT.dtype), value_BxT)
    return jnp.where(mask_BxT, value_BxT / jnp.where(mask_BxT, total_BxT, 1.0), 0.0)
