"""PAL head (after Chen et al., arXiv 2406.08469, PAL-A): an ideal-point mixture.

Shapes: B episodes, C context points, T target points, E embedding width, L latent width,
K prototypes, G groups the run was trained on.

A projector f maps each option embedding to a latent point; K learned prototypes p_k span
preferences; a group's ideal point is u = sum_k w_k p_k with w = softmax(group logits). An
option scores -scale * ||f(x) - u||^2 and options are softmaxed within their question.
Meta-training learns f, the prototypes and one logit vector per training group. A new group
fits only its K logits to its context answers: a fixed number of Adam steps, jitted and batched
over groups, so adapting many groups is one compiled call.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gpo.models.common import MLP, softmax_within_questions
from gpo.models.head import Head
from gpo.models.registry import register_head
from gpo.points import Points


@dataclasses.dataclass(frozen=True)
class PALConfig:
    embedding_dim: int
    n_groups: int = 1           # the survey's groups (filled in by the registry)
    prototypes: int = 4         # K
    latent: int = 64            # L
    hidden: int = 128
    depth: int = 2
    inner_steps: int = 100      # adaptation: Adam steps on a new group's K logits
    inner_learning_rate: float = 0.1

    def __post_init__(self):
        if min(self.embedding_dim, self.n_groups, self.prototypes, self.latent, self.depth,
               self.inner_steps) < 1:
            raise ValueError(f"PALConfig fields must be positive: {self}")

    @classmethod
    def paper(cls, embedding_dim: int) -> PALConfig:
        return cls(embedding_dim=embedding_dim)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GroupWeights:
    logits_BxK: jax.Array

    @property
    def mixture_BxK(self) -> jax.Array:
        return jax.nn.softmax(self.logits_BxK, -1)


@register_head("pal")
class PAL(Head):
    config_class = PALConfig
    learns_training_groups = True
    has_group_space = True

    def __init__(self, config: PALConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        self.projector = MLP(c.embedding_dim, c.hidden, c.latent, c.depth, rngs=rngs)
        self.prototypes = nnx.Param(jax.random.normal(rngs.params(), (c.prototypes, c.latent)))
        self.group_logits = nnx.Param(jnp.zeros((c.n_groups, c.prototypes)))
        self.log_scale = nnx.Param(jnp.zeros(()))
        self.log_std = nnx.Param(jnp.full((), -2.0))

    def _scores(self, x_BxNxE, logits_BxK, projector_out=None):
        f_BxNxL = self.projector(x_BxNxE) if projector_out is None else projector_out
        u_BxL = jax.nn.softmax(logits_BxK, -1) @ self.prototypes[...]
        return -jnp.exp(self.log_scale[...]) * jnp.sum((f_BxNxL - u_BxL[:, None]) ** 2, -1)

    def encode_training_groups(self, group_B) -> GroupWeights:
        """Training: each episode's group uses its own learned logits."""
        return GroupWeights(self.group_logits[...][group_B])

    def encode_context(self, context: Points) -> GroupWeights:
        """Adaptation: fit a new group's K logits to its context (the rest stays frozen)."""
        x_BxCxE, y_BxC = context.x_BxNxE, context.prob_BxN
        mask_BxC, question_BxC = context.mask_BxN, context.question_BxN
        f_BxCxL = jax.lax.stop_gradient(self.projector(x_BxCxE))
        frozen = jax.lax.stop_gradient

        def nll(logits_BxK):
            u_BxL = jax.nn.softmax(logits_BxK, -1) @ frozen(self.prototypes[...])
            scores = -jnp.exp(frozen(self.log_scale[...])) * jnp.sum(
                (f_BxCxL - u_BxL[:, None]) ** 2, -1)
            prob = softmax_within_questions(scores, question_BxC, mask_BxC)
            return -jnp.sum(jnp.where(mask_BxC, y_BxC * jnp.log(prob + 1e-9), 0.0))

        optimizer = optax.adam(self.config.inner_learning_rate)
        logits = jnp.zeros((x_BxCxE.shape[0], self.config.prototypes))

        def step(carry, _):
            logits, state = carry
            updates, state = optimizer.update(jax.grad(nll)(logits), state)
            return (logits + updates, state), None

        (logits, _), _ = jax.lax.scan(step, (logits, optimizer.init(logits)), None,
                                      length=self.config.inner_steps)
        return GroupWeights(logits)

    def interpolate_groups(self, a: GroupWeights, b: GroupWeights, t: float) -> GroupWeights:
        """The group whose mixture weights are (1 - t) w_a + t w_b (its ideal point lies on the
        segment between theirs)."""
        w_BxK = (1 - t) * a.mixture_BxK + t * b.mixture_BxK
        return GroupWeights(jnp.log(jnp.maximum(w_BxK, 1e-30)))

    def describe_group(self, group: GroupWeights) -> dict[str, jax.Array]:
        return {"mixture_weights": group.mixture_BxK}

    def predict(self, group: GroupWeights, targets: Points):
        prob = softmax_within_questions(self._scores(targets.x_BxNxE, group.logits_BxK),
                                        targets.question_BxN, targets.mask_BxN)
        return prob, jnp.broadcast_to(jnp.exp(self.log_std[...]), prob.shape)
