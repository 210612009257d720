"""GPO: an in-context transformer over a group's (option embedding, probability) points.

Shapes: B episodes, C context points, T target points, E embedding width, D model width,
H heads, K = D / H head width, L layers.

Context token = MLP([x; y]), target token = MLP([x; 0]). Every token attends to the context
tokens only, so targets never see each other and no position is encoded (a set, not a
sequence). Computed as context self-attention plus target->context cross-attention with the
same layer weights: O(C^2 + C T) instead of attention over all C + T tokens. A token sees only
its own episode's context, so several episodes may share a row (`gpo.training.packing`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gpo.models.common import (
    _NEG,
    MATMUL_DTYPES,
    MLP,
    linear,
    predictive_std,
    softmax_within_questions,
)
from gpo.models.head import Head
from gpo.models.registry import register_head
from gpo.points import Points


@dataclasses.dataclass(frozen=True)
class GPOConfig:
    embedding_dim: int
    width: int = 128
    heads: int = 4
    layers: int = 6
    feedforward: int = 128
    embed_depth: int = 4
    bound_std: bool = False  # std = 0.05 + 0.95 softplus(.) instead of exp(.)
    matmul_dtype: str = "float32"  # or 'bfloat16': matmuls multiply in bf16, accumulate
    #                                in f32; weights, layer norms and softmax stay f32

    def __post_init__(self):
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, "
                             f"got {self.matmul_dtype!r}")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if min(self.layers, self.feedforward, self.embed_depth) < 1:
            raise ValueError("layers, feedforward and embed_depth must be >= 1")

    @classmethod
    def paper(cls, embedding_dim: int) -> GPOConfig:
        """The GPO paper's configs/gpo.yaml: 6 layers, width 128, 4 heads, feed-forward 128."""
        return cls(embedding_dim=embedding_dim)


class ContextAttentionLayer(nnx.Module):
    """A post-norm transformer layer whose keys and values are the context tokens only."""

    def __init__(self, width: int, heads: int, feedforward: int,
                 matmul_dtype: str = "float32", *, rngs: nnx.Rngs):
        self.heads = heads
        self.matmul_dtype = matmul_dtype
        self.query = linear(width, width, matmul_dtype, rngs=rngs)
        self.key = linear(width, width, matmul_dtype, rngs=rngs)
        self.value = linear(width, width, matmul_dtype, rngs=rngs)
        self.out = linear(width, width, matmul_dtype, rngs=rngs)
        self.norm_attention = nnx.LayerNorm(width, rngs=rngs)
        self.ff_in = linear(width, feedforward, matmul_dtype, rngs=rngs)
        self.ff_out = linear(feedforward, width, matmul_dtype, rngs=rngs)
        self.norm_ff = nnx.LayerNorm(width, rngs=rngs)

    def __call__(self, tokens_BxNxD, context_BxCxD, visible):
        """visible: which context tokens each token attends to, [B, N, C] (GPO: its own
        episode's), or [B, C] when every token sees the same."""
        visible_BxNxC = visible[:, None, :] if visible.ndim == 2 else visible
        B, N, D = tokens_BxNxD.shape
        H, K = self.heads, D // self.heads
        q_BxNxHxK = self.query(tokens_BxNxD).reshape(B, N, H, K)
        k_BxCxHxK = self.key(context_BxCxD).reshape(B, -1, H, K)
        v_BxCxHxK = self.value(context_BxCxD).reshape(B, -1, H, K)
        attended = attend(q_BxNxHxK, k_BxCxHxK, v_BxCxHxK, visible_BxNxC,
                          self.matmul_dtype).reshape(B, N, D)
        x = self.norm_attention(tokens_BxNxD + self.out(attended))
        return self.norm_ff(x + self.ff_out(nnx.relu(self.ff_in(x))))


def _attention(q_BxNxHxK, k_BxCxHxK, v_BxCxHxK, visible_BxNxC, matmul_dtype="float32"):
    low = lambda x: x.astype(matmul_dtype)  # noqa: E731  # the softmax stays float32
    logits_BxHxNxC = jnp.einsum("bnhk,bchk->bhnc", low(q_BxNxHxK), low(k_BxCxHxK),
                                preferred_element_type=jnp.float32)
    logits_BxHxNxC = jnp.where(visible_BxNxC[:, None, :, :],
                               logits_BxHxNxC / math.sqrt(q_BxNxHxK.shape[-1]), _NEG)
    weights = jax.nn.softmax(logits_BxHxNxC, axis=-1)
    return jnp.einsum("bhnc,bchk->bnhk", low(weights), low(v_BxCxHxK),
                      preferred_element_type=jnp.float32)


CPU_EPISODES_AT_ONCE = 2


def attend(q_BxNxHxK, k_BxCxHxK, v_BxCxHxK, visible_BxNxC, matmul_dtype="float32"):
    """Multi-head attention of the tokens over the context tokens each may see.

    On a CPU, two episodes at a time (`lax.map`), their logits recomputed in the backward pass:
    the [H, N, C] logits of two episodes stay in cache, where one batched pass streams all B
    of them through memory several times (at the paper's config on 2 cores: 30 ms against
    132 ms forward, 62 ms against 232 ms with the gradient, per call). Accelerators, and
    several CPU devices (episodes split over devices, which pairs would cut across), take the
    batched pass."""
    B, chunk = q_BxNxHxK.shape[0], CPU_EPISODES_AT_ONCE
    if jax.default_backend() != "cpu" or jax.device_count() > 1 or B <= chunk:
        return _attention(q_BxNxHxK, k_BxCxHxK, v_BxCxHxK, visible_BxNxC, matmul_dtype)
    pad = -B % chunk  # an odd batch gets one empty episode (nothing visible: finite zeros)
    split = lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(  # noqa: E731
        (-1, chunk) + x.shape[1:])
    out = jax.lax.map(lambda args: jax.checkpoint(_attention, static_argnums=4)(
        *args, matmul_dtype),
                      (split(q_BxNxHxK), split(k_BxCxHxK), split(v_BxCxHxK),
                       split(visible_BxNxC)))
    return out.reshape((B + pad,) + q_BxNxHxK.shape[1:])[:B]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ContextState:
    """A group's encoded context: each layer's input context tokens, reused for any targets."""

    tokens_LxBxCxD: jax.Array
    mask_BxC: jax.Array
    episode_BxC: jax.Array

    def visible_to(self, episode_BxN: jax.Array) -> jax.Array:
        return visible_context(self.mask_BxC, self.episode_BxC, episode_BxN)


def visible_context(mask_BxC, episode_BxC, episode_BxN) -> jax.Array:
    """[B, N, C]: the (unmasked) context tokens of each token's own episode."""
    return mask_BxC[:, None, :] & (episode_BxN[:, :, None] == episode_BxC[:, None, :])


@register_head("gpo")
class GPO(Head):
    config_class = GPOConfig
    packs_episodes = True

    def __init__(self, config: GPOConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        self.embedder = MLP(c.embedding_dim + 1, c.width, c.width, c.embed_depth,
                            c.matmul_dtype, rngs=rngs)
        self.layers = nnx.List([ContextAttentionLayer(c.width, c.heads, c.feedforward,
                                                      c.matmul_dtype, rngs=rngs)
                                for _ in range(c.layers)])
        self.predictor = MLP(c.width, c.feedforward, 2, 2, c.matmul_dtype, rngs=rngs)

    def encode_context(self, context: Points) -> ContextState:
        tokens = self.embedder(jnp.concatenate([context.x_BxNxE, context.prob_BxN[..., None]],
                                               axis=-1))
        per_layer = []
        visible = visible_context(context.mask_BxN, context.episode_BxN, context.episode_BxN)
        for layer in self.layers:
            per_layer.append(tokens)
            tokens = layer(tokens, tokens, visible)
        return ContextState(jnp.stack(per_layer), context.mask_BxN, context.episode_BxN)

    def predict(self, group: ContextState, targets: Points):
        x_BxTxE = targets.x_BxNxE
        zeros = jnp.zeros(x_BxTxE.shape[:-1] + (1,), x_BxTxE.dtype)
        tokens = self.embedder(jnp.concatenate([x_BxTxE, zeros], axis=-1))
        visible = group.visible_to(targets.episode_BxN)
        for layer, context_tokens in zip(self.layers, group.tokens_LxBxCxD):
            tokens = layer(tokens, context_tokens, visible)
        out_BxTx2 = self.predictor(tokens)
        prob_BxT = softmax_within_questions(out_BxTx2[..., 0], targets.question_BxN,
                                            targets.mask_BxN, targets.episode_BxN)
        return prob_BxT, predictive_std(out_BxTx2[..., 1], self.config.bound_std)
