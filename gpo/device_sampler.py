"""Training episodes drawn on the device, inside the jitted step: no host work per step.

The same distribution as `gpo.data.episodes.EpisodeSampler` (groups uniform over the training
groups, context and target question counts from their ranges, capped by what the group
answered, disjoint questions drawn without replacement, every option of a chosen question a
point; group mixup, reference hiding, log-uniform context sizes), but a different random
stream: episodes come from `jax.random` keyed by `fold_in(seed, step)`, so a resumed run draws
exactly the episodes an uninterrupted one would.

Shapes are static: every episode is padded to the most points its ranges allow
(`EpisodeSampler.context_capacity`), so a run compiles once. Shapes: B episodes, G survey
groups, P pool questions, O options, C/T context/target points, S reference groups.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gpo.data.episodes import EpisodeSampler


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
    """Static settings of the device sampler, taken from a host `EpisodeSampler` so that both
    are configured (and validated) in one place."""

    batch_size: int
    context_range: tuple[int, int]
    target_range: tuple[int, int]
    mixup: float
    mixup_groups: int
    hide_references: float
    context_distribution: str
    context_capacity: int
    target_capacity: int
    max_options: int
    seed: int

    @classmethod
    def like(cls, host: EpisodeSampler) -> tuple[DeviceSampler, SurveyArrays]:
        survey = host.survey
        arrays = SurveyArrays(
            probs_GxQxO=jnp.asarray(survey.probs_GxQxO, jnp.float32),
            answered_GxQ=jnp.asarray(survey.answered_GxQ),
            respondents_GxQ=jnp.asarray(np.nan_to_num(survey.respondents_GxQ, nan=0.0),
                                        jnp.float32),
            n_options_Q=jnp.asarray(survey.n_options_Q, jnp.int32),
            groups_G=jnp.asarray(host.groups, jnp.int32),
            pool_P=jnp.asarray(host.questions, jnp.int32),
            reference_groups_S=jnp.asarray(host.reference_groups, jnp.int32),
            usable_S=jnp.asarray(host.usable_references, bool))
        sampler = cls(host.batch_size, tuple(host.context_range), tuple(host.target_range),
                      float(host.mixup), int(host.mixup_groups), float(host.hide_references),
                      host.context_distribution, int(host.context_capacity),
                      int(host.target_capacity), int(survey.max_options), int(host.seed))
        return sampler, arrays

    def sample(self, arrays: SurveyArrays, step: jax.Array) -> dict[str, jax.Array]:
        """One batch, keyed by (seed, step), laid out as `EpisodeBatch.arrays()`."""
        key = jax.random.fold_in(jax.random.key(self.seed), step)
        keys = jax.random.split(key, self.batch_size)
        return jax.vmap(lambda k: self._episode(arrays, k))(keys)

    def _episode(self, a: SurveyArrays, key: jax.Array) -> dict[str, jax.Array]:
        k_group, k_mix, k_members, k_weights, k_sizes, k_order, k_hide = jax.random.split(key, 7)
        g = jax.random.choice(k_group, a.groups_G)
        probs_PxO = a.probs_GxQxO[g][a.pool_P]
        answered_P = a.answered_GxQ[g][a.pool_P]
        respondents_P = a.respondents_GxQ[g][a.pool_P]
        members_M = g[None]
        if self.mixup:
            members_M = jax.random.choice(k_members, a.groups_G, (self.mixup_groups,),
                                          replace=False)
            weights_M = jax.random.dirichlet(k_weights, jnp.ones(self.mixup_groups))
            shared_P = a.answered_GxQ[members_M][:, a.pool_P].all(0)
            mixed = (jax.random.uniform(k_mix) < self.mixup) & (shared_P.sum() >= 2)
            mixed_PxO = jnp.einsum("m,mpo->po", weights_M, a.probs_GxQxO[members_M][:, a.pool_P])
            probs_PxO = jnp.where(mixed, mixed_PxO, probs_PxO)
            answered_P = jnp.where(mixed, shared_P, answered_P)
            respondents_P = jnp.where(mixed, 0.0, respondents_P)  # a mix has no respondents
            g = jnp.where(mixed, members_M[jnp.argmax(weights_M)], g)  # names it in errors
            members_M = jnp.where(mixed, members_M, g)
        n_c, n_t = self._sizes(k_sizes, answered_P.sum())
        # Answered questions first, in random order: the first n_c are context, the next n_t
        # targets (without replacement, disjoint).
        order_P = jnp.argsort(jnp.where(answered_P, jax.random.uniform(k_order, answered_P.shape),
                                        2.0))
        context = self._points("context", a, order_P, 0, n_c, self.context_range[1],
                               self.context_capacity, probs_PxO, respondents_P)
        target = self._points("target", a, order_P, n_c, n_t, self.target_range[1],
                              self.target_capacity, probs_PxO, respondents_P)
        reference_mask_S = a.usable_S & ~jnp.isin(a.reference_groups_S, members_M)
        hidden = jax.random.uniform(k_hide) < self.hide_references
        return {"group_B": g.astype(jnp.int32), "reference_mask_BxS": reference_mask_S,
                "hide_target_references_B": hidden, **context, **target}

    def _sizes(self, key: jax.Array, n_answered: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_c, k_t = jax.random.split(key)
        (c_lo, c_hi), (t_lo, t_hi) = self.context_range, self.target_range
        if self.context_distribution == "uniform":
            n_c = jax.random.randint(k_c, (), c_lo, c_hi + 1)
        else:  # log-uniform, as EpisodeSampler._context_size
            u = jax.random.uniform(k_c, minval=np.log(c_lo), maxval=np.log(c_hi + 1))
            n_c = jnp.clip(jnp.floor(jnp.exp(u)).astype(jnp.int32), c_lo, c_hi)
        n_t = jax.random.randint(k_t, (), t_lo, t_hi + 1)
        n_c = jnp.minimum(n_c, n_answered - 1)
        return n_c, jnp.minimum(n_t, n_answered - n_c)

    def _points(self, part: str, a: SurveyArrays, order_P: jax.Array, start: jax.Array,
                count: jax.Array, max_questions: int, capacity: int, probs_PxO: jax.Array,
                respondents_P: jax.Array) -> dict[str, jax.Array]:
        """Every option of questions order_P[start : start + count] as points, packed to the
        front of `capacity` slots in question order (as `pack_points` lays them out)."""
        O, n = self.max_options, "C" if part == "context" else "T"
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
        return {f"{part}_option_Bx{n}": jnp.where(mask_N, q_N * O + o_N, 0).astype(jnp.int32),
                f"{part}_prob_Bx{n}": jnp.where(mask_N, probs_PxO[p_N, o_N], 0.0),
                f"{part}_mask_Bx{n}": mask_N,
                f"{part}_question_Bx{n}": jnp.where(mask_N, q_N, -1).astype(jnp.int32),
                f"{part}_respondents_Bx{n}": jnp.where(mask_N, respondents_P[p_N], 0.0)}
