"""PPD head (after Dang et al., arXiv 2501.06655): a group embedding computed from the context
points conditions the predictor through cross-attention.

Shapes: B episodes, C context points, T target points, E embedding width, D model width,
M group-embedding tokens.

A set encoder (self-attention over the context points, no positions) is pooled by M learned
queries into the group embedding z `[B, M, D]`. Each target option attends to z only, so
adapting to a group is one forward pass, z can be stored and interpolated between groups, and
targets never see each other.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gpo.models.common import MLP, predictive_std, softmax_within_questions
from gpo.models.gpo import ContextAttentionLayer
from gpo.models.head import Head
from gpo.models.registry import register_head
from gpo.points import Points


@dataclasses.dataclass(frozen=True)
class PPDConfig:
    embedding_dim: int
    width: int = 128
    heads: int = 4
    feedforward: int = 128
    embed_depth: int = 3
    set_layers: int = 3          # self-attention layers of the set encoder
    group_tokens: int = 4        # M: tokens of the group embedding z
    predictor_layers: int = 3    # cross-attention layers from options to z
    bound_std: bool = True

    def __post_init__(self):
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if min(self.set_layers, self.group_tokens, self.predictor_layers) < 1:
            raise ValueError("set_layers, group_tokens and predictor_layers must be >= 1")

    @classmethod
    def paper(cls, embedding_dim: int) -> PPDConfig:
        return cls(embedding_dim=embedding_dim)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GroupEmbedding:
    z_BxMxD: jax.Array


@register_head("ppd")
class PPD(Head):
    config_class = PPDConfig
    has_group_space = True

    def __init__(self, config: PPDConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        self.point_embedder = MLP(c.embedding_dim + 1, c.width, c.width, c.embed_depth, rngs=rngs)
        self.set_layers = nnx.List([ContextAttentionLayer(c.width, c.heads, c.feedforward,
                                                          rngs=rngs)
                                    for _ in range(c.set_layers)])
        self.queries = nnx.Param(jax.random.normal(rngs.params(), (c.group_tokens, c.width))
                                 * 0.02)
        self.pool = ContextAttentionLayer(c.width, c.heads, c.feedforward, rngs=rngs)
        self.option_embedder = MLP(c.embedding_dim, c.width, c.width, c.embed_depth, rngs=rngs)
        self.predictor_layers = nnx.List([ContextAttentionLayer(c.width, c.heads, c.feedforward,
                                                                rngs=rngs)
                                          for _ in range(c.predictor_layers)])
        self.head = MLP(c.width, c.feedforward, 2, 2, rngs=rngs)

    def encode_context(self, context: Points) -> GroupEmbedding:
        tokens = self.point_embedder(jnp.concatenate([context.x_BxNxE,
                                                      context.prob_BxN[..., None]], -1))
        for layer in self.set_layers:
            tokens = layer(tokens, tokens, context.mask_BxN)
        queries = jnp.broadcast_to(self.queries[...], (tokens.shape[0], *self.queries.shape))
        return GroupEmbedding(self.pool(queries, tokens, context.mask_BxN))

    def describe_group(self, group: GroupEmbedding) -> dict[str, jax.Array]:
        return {"group_embedding": group.z_BxMxD}

    def interpolate_groups(self, a: GroupEmbedding, b: GroupEmbedding, t: float
                           ) -> GroupEmbedding:
        """(1 - t) z_a + t z_b: a group between two others (PPD interpolates users this way)."""
        return GroupEmbedding((1 - t) * a.z_BxMxD + t * b.z_BxMxD)

    def predict(self, group: GroupEmbedding, targets: Points):
        tokens = self.option_embedder(targets.x_BxNxE)
        z_mask = jnp.ones(group.z_BxMxD.shape[:2], bool)
        for layer in self.predictor_layers:
            tokens = layer(tokens, group.z_BxMxD, z_mask)
        out_BxTx2 = self.head(tokens)
        prob = softmax_within_questions(out_BxTx2[..., 0], targets.question_BxN,
                                        targets.mask_BxN)
        return prob, predictive_std(out_BxTx2[..., 1], self.config.bound_std)
