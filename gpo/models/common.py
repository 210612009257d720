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


# Below this many points a row, within-question sums use a T x T mask of same-question pairs
# (one fused matmul, the fast path for training's episodes on any device); from it on, segment
# sums over dense question ids (memory and time linear in T, for predictions of many targets).
SEGMENTS_FROM_POINTS = 2048


def same_question_BxTxT(question_BxT: jax.Array, mask_BxT: jax.Array,
                        episode_BxT: jax.Array | None = None) -> jax.Array:
    """Whether two points are options of one question of one episode (rows may hold several
    episodes, `gpo.training.packing`: then `episode_BxT` tells them apart)."""
    both = mask_BxT[:, :, None] & mask_BxT[:, None, :]
    if episode_BxT is not None:
        both = both & (episode_BxT[:, :, None] == episode_BxT[:, None, :])
    return (question_BxT[:, :, None] == question_BxT[:, None, :]) & both


def question_segments_BxT(question_BxT: jax.Array, mask_BxT: jax.Array,
                          episode_BxT: jax.Array | None = None) -> jax.Array:
    """Each point's (episode, question) as a dense id in [0, T), wherever its options lie in
    the row; padding gets T, a segment every sum leaves out."""
    T = question_BxT.shape[-1]
    episode_BxT = jnp.zeros_like(question_BxT) if episode_BxT is None else episode_BxT

    def row(question_T, mask_T, episode_T):
        order_T = jnp.lexsort((question_T, episode_T, ~mask_T))  # real points first, grouped
        q_T, e_T = question_T[order_T], episode_T[order_T]
        starts_T = jnp.concatenate([jnp.ones(1, bool), (q_T[1:] != q_T[:-1])
                                    | (e_T[1:] != e_T[:-1])])
        ids_T = jnp.zeros(T, jnp.int32).at[order_T].set(jnp.cumsum(starts_T) - 1)
        return jnp.where(mask_T, ids_T, T)

    return jax.vmap(row)(question_BxT, mask_BxT, episode_BxT)


def _within_questions(values_BxT, question_BxT, mask_BxT, episode_BxT, reduce: str):
    """Each point's max or sum over the points of its question (padding: unspecified)."""
    T = values_BxT.shape[-1]
    if T < SEGMENTS_FROM_POINTS:
        same = same_question_BxTxT(question_BxT, mask_BxT, episode_BxT)
        if reduce == "max":
            return jnp.max(jnp.where(same, values_BxT[:, None, :], _NEG), axis=-1)
        return jnp.einsum("bts,bs->bt", same.astype(values_BxT.dtype), values_BxT)
    segments_BxT = question_segments_BxT(question_BxT, mask_BxT, episode_BxT)
    segment_op = jax.ops.segment_max if reduce == "max" else jax.ops.segment_sum
    per_segment = jax.vmap(lambda v, s: segment_op(v, s, num_segments=T + 1))(
        values_BxT, segments_BxT)
    return jnp.take_along_axis(per_segment, segments_BxT, axis=-1)


def softmax_within_questions(logits_BxT: jax.Array, question_BxT: jax.Array,
                             mask_BxT: jax.Array, episode_BxT: jax.Array | None = None
                             ) -> jax.Array:
    """Softmax of each target point's logit over the points of its own question.

    Points of one question share a question id; padding (mask False) gets probability 0.
    """
    logits_BxT = jnp.where(mask_BxT, logits_BxT, 0.0)
    peak_BxT = _within_questions(logits_BxT, question_BxT, mask_BxT, episode_BxT, "max")
    # Padding rows have no peak; shift them by 0 so exp stays finite (inf * 0 is NaN in grads).
    peak_BxT = jax.lax.stop_gradient(jnp.where(mask_BxT, peak_BxT, 0.0))
    exp_BxT = jnp.where(mask_BxT, jnp.exp(logits_BxT - peak_BxT), 0.0)
    total_BxT = _within_questions(exp_BxT, question_BxT, mask_BxT, episode_BxT, "sum")
    return jnp.where(mask_BxT, exp_BxT / jnp.where(mask_BxT, total_BxT, 1.0), 0.0)


def predictive_std(raw_BxT: jax.Array, bounded: bool) -> jax.Array:
    """std from the head's raw output: exp (GPO's default) or 0.05 + 0.95 softplus (bounded)."""
    return 0.05 + 0.95 * jax.nn.softplus(raw_BxT) if bounded else jnp.exp(raw_BxT)


def normalise_within_questions(value_BxT, question_BxT, mask_BxT) -> jax.Array:
    """Non-negative values divided by their question's total; padding gets 0."""
    value_BxT = jnp.where(mask_BxT, value_BxT, 0.0)
    total_BxT = _within_questions(value_BxT, question_BxT, mask_BxT, None, "sum")
    return jnp.where(mask_BxT, value_BxT / jnp.where(mask_BxT, total_BxT, 1.0), 0.0)
