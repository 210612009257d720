"""The device sampler draws the same kind of episodes as the host's EpisodeSampler."""

import dataclasses

import jax
import numpy as np
import pytest

from gpo.config import SamplingConfig
from gpo.data import make_synthetic_survey
from gpo.training.device_sampler import DeviceSampler
from gpo.training.sampling import EpisodeSampler


@pytest.fixture(scope="module")
def survey():
    survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=60).survey
    answered = survey.answered_GxQ.copy()
    answered[3, ::3] = False  # a sparse group: episodes may only use what it answered
    probs = np.where(answered[..., None], survey.probs_GxQxO, 0.0)
    respondents = np.random.default_rng(0).integers(30, 900, answered.shape).astype(float)
    return dataclasses.replace(survey, answered_GxQ=answered, probs_GxQxO=probs,
                               respondents_GxQ=np.where(answered, respondents, np.nan))


def host_sampler(survey, **sampling):
    """A host sampler over 7 groups and questions 5-59, references 0-7 (7 not usable)."""
    sampling = SamplingConfig(**{"batch_size": 64, "context_range": (2, 20),
                                 "target_range": (3, 15), "hide_references": 0.0, **sampling})
    return EpisodeSampler(survey, np.arange(7), np.arange(5, 60), sampling, seed=1,
                          reference_groups=np.arange(8), usable_references=np.arange(8) != 7)


def device_twin(host):
    """The device sampler of the same settings (built without the host sampler)."""
    return DeviceSampler.build(host.survey, host.groups, host.questions, host.sampling,
                               host.seed, host.reference_groups, host.usable_references)


def draw(host, steps=4):
    sampler, arrays = device_twin(host)
    sample = jax.jit(sampler.sample)
    batches = [jax.tree.map(np.asarray, sample(arrays, step)) for step in range(steps)]
    return jax.tree.map(lambda *parts: np.concatenate(parts), *batches)


def episodes(batch, part):
    slots = getattr(batch, part)
    for b in range(len(batch.group_B)):
        mask = slots.mask_BxN[b]
        yield (b, slots.question_BxN[b][mask], slots.option_BxN[b][mask],
               slots.prob_BxN[b][mask], slots.respondents_BxN[b][mask])


def test_episodes_are_valid_points_of_their_group(survey):
    host = host_sampler(survey)
    batch = draw(host)
    O = survey.max_options
    assert batch.context.option_BxN.shape[1] == host.context_capacity
    assert batch.target.option_BxN.shape[1] == host.target_capacity
    for part, (lo, hi) in (("context", host.sampling.context_range),
                           ("target", host.sampling.target_range)):
        for b, q_N, row_N, prob_N, count_N in episodes(batch, part):
            g = batch.group_B[b]
            assert g in host.groups
            questions = np.unique(q_N)
            assert lo <= len(questions) <= hi
            assert np.isin(questions, host.questions).all()
            assert survey.answered_GxQ[g, questions].all()  # only what the group answered
            for q in questions:  # every option of a chosen question, in order, once
                np.testing.assert_array_equal(row_N[q_N == q] - q * O,
                                              np.arange(survey.n_options_Q[q]))
            np.testing.assert_allclose(prob_N, survey.probs_GxQxO[g, q_N, row_N % O], atol=1e-6)
            np.testing.assert_allclose(count_N, survey.respondents_GxQ[g, q_N], rtol=1e-6)
    for b in range(len(batch.group_B)):
        ctx = set(batch.context.question_BxN[b]) - {-1}
        tgt = set(batch.target.question_BxN[b]) - {-1}
        assert not ctx & tgt  # disjoint
        own = host.reference_groups == batch.group_B[b]
        np.testing.assert_array_equal(batch.reference_mask_BxS[b],
                                      host.usable_references & ~own)
        assert (batch.context.episode_BxN[b % 64] == b % 64).all()  # one episode a row
    assert not batch.hide_target_references_B.any()


def test_sizes_and_groups_follow_the_host_samplers_distribution(survey):
    for overrides in ({}, {"context_distribution": "log_uniform", "context_range": (1, 30)}):
        host = host_sampler(survey, **overrides)
        device = draw(host, steps=16)
        counts = {part: [] for part in ("context", "target")}
        for step in range(16):
            batch = host.sample(step)
            for part in counts:
                counts[part] += [len(set(q) - {-1})
                                 for q in getattr(batch, part).question_BxN]
        for part in counts:
            mine = [len(set(q) - {-1}) for q in getattr(device, part).question_BxN]
            # 1,024 episodes each: means agree within a few standard errors
            scale = np.std(counts[part]) / np.sqrt(len(mine))
            assert abs(np.mean(mine) - np.mean(counts[part])) < 5 * scale, (overrides, part)
        assert set(np.unique(device.group_B)) == set(host.groups)


def test_mixup_and_hiding(survey):
    host = host_sampler(survey, group_mixup=1.0, mixup_groups=3, hide_references=0.5)
    batch = draw(host, steps=8)
    assert 0.35 < batch.hide_target_references_B.mean() < 0.65
    O = survey.max_options
    mixed = 0
    for b, q_N, row_N, prob_N, count_N in episodes(batch, "target"):
        assert (count_N == 0).all()  # a mix has no respondents of its own
        totals = np.bincount(q_N, weights=prob_N)[np.unique(q_N)]
        np.testing.assert_allclose(totals, 1.0, atol=1e-5)  # a convex mix of distributions
        own = survey.probs_GxQxO[batch.group_B[b], q_N, row_N % O]
        mixed += not np.allclose(prob_N, own, atol=1e-4)
        # the mix's members are no references of it: at least 3 columns are masked
        assert (~batch.reference_mask_BxS[b]).sum() >= 3
    assert mixed > 0.9 * len(batch.group_B)


def test_a_step_always_draws_the_same_episodes(survey):
    host = host_sampler(survey)
    sampler, arrays = device_twin(host)
    a, b, c = (sampler.sample(arrays, s) for s in (3, 3, 4))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.context.option_BxN, c.context.option_BxN)


def test_the_device_sampler_refuses_what_the_host_sampler_refuses(survey):
    with pytest.raises(ValueError, match="mixup_groups must be in"):
        DeviceSampler.build(survey, np.arange(2), np.arange(60),
                            SamplingConfig(group_mixup=0.5, mixup_groups=3))


def test_a_fraction_of_device_episodes_come_without_respondent_counts(survey):
    host = host_sampler(survey, hide_respondents=0.5)
    batch = draw(host, steps=2)
    counts = [count_N for _, _, _, _, count_N in episodes(batch, "context")]
    withheld = np.array([(c == 0).all() for c in counts])
    assert 0.35 < withheld.mean() < 0.65 and all((c > 0).all() for c in np.array(
        counts, dtype=object)[~withheld])
    plain = draw(host_sampler(survey), steps=2)  # the same episodes, counts aside
    np.testing.assert_array_equal(batch.context.option_BxN, plain.context.option_BxN)
