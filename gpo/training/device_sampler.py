"""Training episodes drawn on the device, inside the jitted step: no host work per step.

The distribution of `gpo.config.SamplingConfig`, as the host sampler
(`gpo.training.sampling.EpisodeSampler`) draws it, but another random stream: episodes come
from `jax.random` keyed by `fold_in(seed, step)`, so a resumed run draws exactly the episodes
an uninterrupted one would.

Shapes are static: every episode is padded to the most points its ranges allow
(`episode_capacities`), so a run compiles once. Shapes: B episodes, G survey groups, P pool
questions, O options, C/T context/target points, S reference groups.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gpo.config import SamplingConfig
from gpo.data.survey import Survey
from gpo.points import EpisodeBatch, PointSlots
from gpo.training.sampling import check_episodes, episode_capacities


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SurveyArrays:
    """What the sampler reads, on the device (replicated)."""

    probs_GxQxO: jax.Array
    answered_GxQ: jax.Array
    respondents_GxQ: jax.Array     # 0 where unknown
    n_options_Q: jax.Array
    groups_G: jax.Array            # the training groups episodes are drawn from
    pool_P: jax.Array              # the questions episodes may use
    reference_groups_S: jax.Array  # the option table's reference columns
    usable_S: jax.Array            # bool: references training may read (not validation groups)


@dataclasses.dataclass(frozen=True)
class DeviceSampler:
    """Static settings of the device sampler: the sampling config and the shapes it fixes."""

    sampling: SamplingConfig
    context_capacity: int
    target_capacity: int
    max_options: int
    seed: int

    @classmethod
    def build(cls, survey: Survey, groups: np.ndarray, questions: np.ndarray,
              sampling: SamplingConfig, seed: int = 0,
              reference_groups: np.ndarray | None = None,
              usable_references: np.ndarray | None = None
              ) -> tuple[DeviceSampler, SurveyArrays]:
        """The sampler of episodes over `groups` x `questions` and the arrays it reads (to be
        put on the devices by the caller), checked as the host sampler checks them."""
        groups, questions = np.asarray(groups, int), np.asarray(questions, int)
        check_episodes(survey, groups, questions, sampling)
        reference_groups = np.zeros(0, int) if reference_groups is None else np.asarray(
            reference_groups, int)
        usable = (np.ones(len(reference_groups), bool) if usable_references is None
                  else np.asarray(usable_references, bool))
        arrays = SurveyArrays(
            probs_GxQxO=jnp.asarray(survey.probs_GxQxO, jnp.float32),
            answered_GxQ=jnp.asarray(survey.answered_GxQ),
            respondents_GxQ=jnp.asarray(np.nan_to_num(survey.respondents_GxQ, nan=0.0),
                                        jnp.float32),
            n_options_Q=jnp.asarray(survey.n_options_Q, jnp.int32),
            groups_G=jnp.asarray(groups, jnp.int32),
            pool_P=jnp.asarray(questions, jnp.int32),
            reference_groups_S=jnp.asarray(reference_groups, jnp.int32),
            usable_S=jnp.asarray(usable, bool))
        capacities = episode_capacities(survey, questions, sampling)
        return cls(sampling, *capacities, int(survey.max_options), int(seed)), arrays

    def sample(self, arrays: SurveyArrays, step: jax.Array) -> EpisodeBatch:
        """One batch, keyed by (seed, step), laid out as the host packer lays it out."""
        B = self.sampling.batch_size
        key = jax.random.fold_in(jax.random.key(self.seed), step)
        batch = jax.vmap(lambda k: self._episode(arrays, k))(jax.random.split(key, B))
        rows = lambda slots: dataclasses.replace(slots, episode_BxN=jnp.broadcast_to(  # noqa: E731
            jnp.arange(B, dtype=jnp.int32)[:, None], slots.mask_BxN.shape))
        return dataclasses.replace(batch, context=rows(batch.context),
                                   target=rows(batch.target))

    def _episode(self, a: SurveyArrays, key: jax.Array) -> EpisodeBatch:
        k_group, k_mix, k_members, k_weights, k_sizes, k_order, k_hide = jax.random.split(key, 7)
        g = jax.random.choice(k_group, a.groups_G)
        probs_PxO = a.probs_GxQxO[g][a.pool_P]
        answered_P = a.answered_GxQ[g][a.pool_P]
        respondents_P = a.respondents_GxQ[g][a.pool_P]
        s = self.sampling
        members_M = g[None]
        if s.group_mixup:
            members_M = jax.random.choice(k_members, a.groups_G, (s.mixup_groups,),
                                          replace=False)
            weights_M = jax.random.dirichlet(k_weights, jnp.ones(s.mixup_groups))
            shared_P = a.answered_GxQ[members_M][:, a.pool_P].all(0)
            mixed = (jax.random.uniform(k_mix) < s.group_mixup) & (shared_P.sum() >= 2)
            mixed_PxO = jnp.einsum("m,mpo->po", weights_M, a.probs_GxQxO[members_M][:, a.pool_P])
            probs_PxO = jnp.where(mixed, mixed_PxO, probs_PxO)
            answered_P = jnp.where(mixed, shared_P, answered_P)
            respondents_P = jnp.where(mixed, 0.0, respondents_P)  # a mix has no respondents
            g = jnp.where(mixed, members_M[jnp.argmax(weights_M)], g)  # names it in errors
            members_M = jnp.where(mixed, members_M, g)
        if s.hide_respondents:  # its own key, so the other draws stay as without hiding
            withheld = jax.random.uniform(jax.random.fold_in(key, 7)) < s.hide_respondents
            respondents_P = jnp.where(withheld, 0.0, respondents_P)
        n_c, n_t = self._sizes(k_sizes, answered_P.sum())
        # Answered questions first, in random order: the first n_c are context, the next n_t
        # targets (without replacement, disjoint).
        order_P = jnp.argsort(jnp.where(answered_P, jax.random.uniform(k_order, answered_P.shape),
                                        2.0))
        context = self._points(a, order_P, 0, n_c, s.context_range[1], self.context_capacity,
                               probs_PxO, respondents_P)
        target = self._points(a, order_P, n_c, n_t, s.target_range[1], self.target_capacity,
                              probs_PxO, respondents_P)
        reference_mask_S = a.usable_S & ~jnp.isin(a.reference_groups_S, members_M)
        hidden = jax.random.uniform(k_hide) < s.hide_references
        return EpisodeBatch(g.astype(jnp.int32), reference_mask_S, hidden, context, target)

    def _sizes(self, key: jax.Array, n_answered: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_c, k_t = jax.random.split(key)
        (c_lo, c_hi), (t_lo, t_hi) = self.sampling.context_range, self.sampling.target_range
        if self.sampling.context_distribution == "uniform":
            n_c = jax.random.randint(k_c, (), c_lo, c_hi + 1)
        else:  # log-uniform, as EpisodeSampler._context_size
            u = jax.random.uniform(k_c, minval=np.log(c_lo), maxval=np.log(c_hi + 1))
            n_c = jnp.clip(jnp.floor(jnp.exp(u)).astype(jnp.int32), c_lo, c_hi)
        n_t = jax.random.randint(k_t, (), t_lo, t_hi + 1)
        n_c = jnp.minimum(n_c, n_answered - 1)
        return n_c, jnp.minimum(n_t, n_answered - n_c)

    def _points(self, a: SurveyArrays, order_P: jax.Array, start: jax.Array,
                count: jax.Array, max_questions: int, capacity: int, probs_PxO: jax.Array,
                respondents_P: jax.Array) -> PointSlots:
        """Every option of questions order_P[start : start + count] as points, packed to the
        front of `capacity` slots in question order (as `pack_points` lays them out); the
        episode index is filled in by `sample`."""
        O = self.max_options
        slot_K = jnp.arange(min(max_questions, order_P.shape[0]))
        p_K = order_P[jnp.minimum(start + slot_K, order_P.shape[0] - 1)]
        q_K = a.pool_P[p_K]
        valid_KxO = ((slot_K < count)[:, None]
                     & (jnp.arange(O)[None, :] < a.n_options_Q[q_K][:, None]))
        # Stable sort puts valid points first, keeping question-then-option order.
        take_N = jnp.argsort(~valid_KxO.reshape(-1), stable=True)[:capacity]
        mask_N = valid_KxO.reshape(-1)[take_N]
        q_N = jnp.repeat(q_K, O)[take_N]
        o_N = jnp.tile(jnp.arange(O), len(slot_K))[take_N]
        p_N = jnp.repeat(p_K, O)[take_N]
        return PointSlots(option_BxN=jnp.where(mask_N, q_N * O + o_N, 0).astype(jnp.int32),
                          prob_BxN=jnp.where(mask_N, probs_PxO[p_N, o_N], 0.0),
                          mask_BxN=mask_N,
                          question_BxN=jnp.where(mask_N, q_N, -1).astype(jnp.int32),
                          respondents_BxN=jnp.where(mask_N, respondents_P[p_N], 0.0),
                          episode_BxN=jnp.zeros(mask_N.shape, jnp.int32))
