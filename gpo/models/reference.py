"""The reference-group head: a group's answers predicted from the answers of reference groups
(the run's training groups), weighted by what its context answers say, in closed form.

Shapes: B episodes, C context points, T target points, S reference groups, E embedding width.

Every point carries the reference groups' probabilities of its option. Their mean p̄ is the
population prior; their deviations D_s = R_s - p̄ span how groups differ. A group is the prior
plus a combination of those deviations, fitted to its context answers by ridge regression
(Bayesian linear regression with the reference groups' empirical covariance as the prior):

    delta = (I + F_c W F_c^T)^-1 F_c W (y_c - p̄_c),    F_s = sqrt(a_s / S) D_s
    prob_t = p̄_t + F_t^T delta                          (floored, renormalised per question)

This is the affine group regression (weights summing to one, ridge toward equal weights) with
what meta-training learns on top, all from the data a pollster has:
- W, the context points' precision: 1 / (ridge + beta p̄(1 - p̄) / n), the ridge a learned
  power of the number of context points, n the group's respondents (a small group's answers
  are noisy, so they move it less; answers given without counts assume the reference
  groups' typical count, `ReferenceConfig.count_free`);
- a_s = 1 / (1 + c nu_s / sigma^2), each reference group's reliability: nu_s its sampling
  noise p̄(1 - p̄) / n_s, sigma^2 the deviations' spread (a reference group of 44 respondents
  is mostly noise);
- a text prior, softmax over a question's options of MLP(x), for questions no reference group
  answered (protocol B, new questions in the API), trained on episodes that hide their
  targets' references.
The predicted std is the posterior's, sqrt(F_t^T (I + F_c W F_c^T)^-1 F_t + ridge + noise_t),
times a scale that the std's own loss (Gaussian NLL) learns.
While meta-training, a group never reads its own answers (the episode's reference mask).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gpo.models.common import MLP, normalise_within_questions, softmax_within_questions
from gpo.models.head import Head
from gpo.models.registry import register_head
from gpo.points import Points

MIN_RIDGE = 1e-6
COUNT_FREE = ("none", "references", "learned")


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    embedding_dim: int
    ridge: float = 3e-3          # initial ridge at one context point (learned)
    ridge_slope: float = 0.0     # initial d log ridge / d log context points (learned)
    sampling_noise: float = 1.0  # initial beta: weight of the group's own sampling noise
    reliability: float = 1.0     # initial c: weight of the reference groups' sampling noise
    prior_hidden: int = 128      # text prior MLP, for questions no reference group answered
    prior_depth: int = 2
    floor: float = 1e-4          # smallest probability before renormalising
    # The four scalars above move this many times faster than the optimiser's learning rate
    # (parametrised as scale * raw), so one learning rate serves them and the text prior.
    scalar_rate: float = 30.0
    # A context answer given without its respondent count: 'references' assumes the
    # reference groups' median count on its question, 'learned' that count times a factor
    # learned from episodes that withhold their counts (train.sampling.hide_respondents),
    # 'none' adds no sampling noise (as before these existed; on OpinionQA that falls below
    # the group regression, docs/results.md).
    count_free: str = "references"

    # What runs saved before a field existed were trained with (RunDir.head_config).
    LEGACY = {"count_free": "none"}

    def __post_init__(self):
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if min(self.ridge, self.sampling_noise, self.reliability, self.floor,
               self.scalar_rate) <= 0:
            raise ValueError("ridge, sampling_noise, reliability, floor and scalar_rate must "
                             f"be positive: {self}")
        if min(self.prior_hidden, self.prior_depth) < 1:
            raise ValueError("prior_hidden and prior_depth must be >= 1")
        if self.count_free not in COUNT_FREE:
            raise ValueError(f"count_free must be one of {COUNT_FREE}, got {self.count_free!r}")

    @classmethod
    def paper(cls, embedding_dim: int) -> ReferenceConfig:
        return cls(embedding_dim=embedding_dim)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ReferenceFit:
    """A group's fit: coefficients on the scaled deviations, their posterior covariance, the
    reference groups' scale sqrt(a_s / S) and the context's ridge."""

    delta_BxS: jax.Array
    covariance_BxSxS: jax.Array
    scale_BxS: jax.Array
    ridge_B: jax.Array
    sampling_B: jax.Array        # beta (the same for every episode; kept with the fit)


def _reference_view(points: Points):
    """(prior p̄, deviations D, known, any reference answered) per point."""
    known = points.reference_known_BxNxS
    n_known = known.sum(-1)
    prior = jnp.where(known, points.reference_BxNxS, 0.0).sum(-1) / jnp.maximum(n_known, 1)
    deviation = jnp.where(known, points.reference_BxNxS - prior[..., None], 0.0)
    return prior, deviation, known, points.mask_BxN & (n_known > 0)


def _sampling_variance(prior_BxN, respondents):
    """p̄(1 - p̄) / n where n is known (> 0), else 0."""
    variance = jnp.clip(prior_BxN * (1 - prior_BxN), 1e-4, None)
    return jnp.where(respondents > 0, variance / jnp.maximum(respondents, 1.0), 0.0)


@register_head("reference")
class ReferenceRegression(Head):
    config_class = ReferenceConfig
    reads_references = True

    @classmethod
    def default_loss(cls, metric: str) -> str:
        """For the probabilities the metric itself where it is a distance on an ordinal scale,
        else KL; for the std, its Gaussian NLL."""
        return ("wasserstein" if metric == "wasserstein" else "kl") + "+nll"

    def __init__(self, config: ReferenceConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        raw = lambda value: nnx.Param(jnp.asarray(value / c.scalar_rate, jnp.float32))  # noqa: E731
        self.log_ridge = raw(math.log(c.ridge))
        self.ridge_slope = raw(c.ridge_slope)
        self.log_sampling = raw(math.log(c.sampling_noise))
        self.log_reliability = raw(math.log(c.reliability))
        self.log_prior_std = raw(math.log(0.1))
        self.log_std_scale = raw(0.0)
        if c.count_free == "learned":
            self.log_count_factor = raw(0.0)
        self.prior = MLP(c.embedding_dim, c.prior_hidden, 1, c.prior_depth, rngs=rngs)

    def _scalar(self, param: nnx.Param) -> jax.Array:
        return self.config.scalar_rate * param[...]

    def encode_context(self, context: Points) -> ReferenceFit:
        return self.posterior(context, self.reference_scale(context))

    def reference_scale(self, points: Points) -> jax.Array:
        """`[B, S]` sqrt(a_s / S): each reference group's reliability a_s, its sampling noise
        against the deviations' spread over these points, spread over the S groups that
        answered any of them (0 for the others)."""
        prior, deviation_BxNxS, known, valid = _reference_view(points)
        reference_noise_BxNxS = jnp.where(known, _sampling_variance(
            prior[..., None], points.reference_respondents_BxNxS), 0.0)
        points_BxS = jnp.maximum((known & valid[..., None]).sum(1), 1)
        noise_BxS = (reference_noise_BxNxS * valid[..., None]).sum(1) / points_BxS
        spread_B = ((deviation_BxNxS ** 2 - reference_noise_BxNxS) * valid[..., None]).sum(
            (1, 2)) / jnp.maximum((known & valid[..., None]).sum((1, 2)), 1)
        reliability_BxS = 1.0 / (1.0 + jnp.exp(self._scalar(self.log_reliability)) * noise_BxS
                                 / jnp.maximum(spread_B, 1e-6)[:, None])
        usable_BxS = (known & valid[..., None]).any(1)
        S = jnp.maximum(usable_BxS.sum(-1), 1)
        return jnp.where(usable_BxS, jnp.sqrt(reliability_BxS / S[:, None]), 0.0)

    def posterior(self, context: Points, scale_BxS: jax.Array) -> ReferenceFit:
        """The Bayesian fit of the context answers on the reference groups' deviations,
        scaled by `scale_BxS` (`reference_scale`; question selection holds it fixed). Its
        covariance depends on which points are in the context and on their respondents,
        never on the answers' values."""
        prior, deviation_BxCxS, _, valid = _reference_view(context)
        # Context precision: a ridge that follows the number of points, plus sampling noise.
        n_points = jnp.maximum(valid.sum(-1), 1).astype(jnp.float32)
        ridge_B = self.ridge(n_points)
        sampling = jnp.exp(self._scalar(self.log_sampling))
        noise_BxC = ridge_B[:, None] + sampling * _sampling_variance(
            prior, self.respondents(context))
        precision_BxC = jnp.where(valid, 1.0 / noise_BxC, 0.0)
        features_BxSxC = scale_BxS[:, :, None] * jnp.swapaxes(deviation_BxCxS, 1, 2)
        S_ = features_BxSxC.shape[1]
        system = jnp.eye(S_) + jnp.einsum("bsc,bc,btc->bst", features_BxSxC, precision_BxC,
                                          features_BxSxC)
        residual_BxC = jnp.where(valid, context.prob_BxN - prior, 0.0)
        covariance = jnp.linalg.inv(system)
        delta = jnp.einsum("bst,btc,bc->bs", covariance, features_BxSxC,
                           precision_BxC * residual_BxC)
        return ReferenceFit(delta, covariance, scale_BxS, ridge_B,
                            jnp.broadcast_to(sampling, ridge_B.shape))

    def respondents(self, points: Points) -> jax.Array:
        """`[B, N]` each point's respondents: the group's count where given, else what
        `count_free` says (0: no sampling noise)."""
        given = points.respondents_BxN
        if self.config.count_free == "none":
            return given
        # the median count of the reference groups that answered the question (0 where no
        # count is known: no sampling noise, as on data without counts)
        counts = points.reference_respondents_BxNxS
        if counts.shape[-1] == 0:  # no reference groups: no count to borrow
            return given
        fill = jnp.nan_to_num(jnp.nanmedian(jnp.where(
            points.reference_known_BxNxS & (counts > 0), counts, jnp.nan), -1), nan=0.0)
        if self.config.count_free == "learned":
            fill = fill * jnp.exp(self._scalar(self.log_count_factor))
        return jnp.where(given > 0, given, fill)

    def ridge(self, n_points: jax.Array) -> jax.Array:
        """The context points' ridge: a learned power of their number. Floored: on
        noise-free data (planted tasks) the learned ridge would go to 0 and the precision to
        infinity."""
        return MIN_RIDGE + jnp.exp(self._scalar(self.log_ridge)
                                   + self._scalar(self.ridge_slope) * jnp.log(n_points))

    def std_scale(self) -> jax.Array:
        """The factor the std's own loss learned for the posterior's std."""
        return jnp.exp(self._scalar(self.log_std_scale))

    @staticmethod
    def features(points: Points, scale_BxS: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(population prior p̄, scaled deviations F = scale * D `[B, N, S]`, whether any
        reference group answered) of each point: what a fit's coefficients multiply."""
        prior, deviation_BxNxS, _, answered = _reference_view(points)
        return prior, deviation_BxNxS * scale_BxS[:, None, :], answered

    def predict(self, group: ReferenceFit, targets: Points):
        prior, features_BxTxS, answered = self.features(targets, group.scale_BxS)
        mean_BxT = prior + jnp.einsum("bts,bs->bt", features_BxTxS, group.delta_BxS)
        text_BxT = softmax_within_questions(self.prior(targets.x_BxNxE)[..., 0],
                                            targets.question_BxN, targets.mask_BxN)
        value = jnp.where(answered, jnp.maximum(mean_BxT, self.config.floor), text_BxT)
        prob = normalise_within_questions(value, targets.question_BxN, targets.mask_BxN)
        posterior = jnp.einsum("bts,bsr,btr->bt", features_BxTxS, group.covariance_BxSxS,
                               features_BxTxS)
        noise = group.ridge_B[:, None] + group.sampling_B[:, None] * _sampling_variance(
            prior, targets.respondents_BxN)
        # The posterior's std, scaled by one factor the std's own loss learns (the ridge and
        # beta serve the mean, not the spread of the errors).
        posterior_std = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(posterior, 0.0) + noise))
        std = jnp.where(answered, self.std_scale() * posterior_std,
                        jnp.exp(self._scalar(self.log_prior_std)))
        return prob, std

    def describe_group(self, group: ReferenceFit) -> dict[str, jax.Array]:
        """The group as an affine combination of the reference groups (weights sum to 1;
        negative weights extrapolate beyond them), where every reference group answered."""
        coefficient_BxS = group.scale_BxS * group.delta_BxS
        usable = group.scale_BxS > 0
        S = jnp.maximum(usable.sum(-1, keepdims=True), 1)
        weights = jnp.where(usable, 1.0 / S + coefficient_BxS
                            - coefficient_BxS.sum(-1, keepdims=True) / S, 0.0)
        return {"reference_weights": weights}
