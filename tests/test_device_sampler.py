"""The device sampler draws the same kind of episodes as the host's EpisodeSampler."""

import dataclasses

import jax
import numpy as np
import pytest

from gpo.data import make_synthetic_survey
from gpo.data.episodes import EpisodeSampler
from gpo.device_sampler import DeviceSampler


@pytest.fixture(scope="module")
def survey():
    survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=60).survey
    answered = survey.answered_GxQ.copy()
    answered[3, ::3] = False  # a sparse group: episodes may only use what it answered
    probs = np.where(answered[..., None], survey.probs_GxQxO, 0.0)
    respondents = np.random.default_rng(0).integers(30, 900, answered.shape).astype(float)
    return dataclasses.replace(survey, answered_GxQ=answered, probs_GxQxO=probs,
                               respondents_GxQ=np.where(answered, respondents, np.nan))


def host_sampler(survey, **overrides):
    settings = dict(batch_size=64, context_range=(2, 20), target_range=(3, 15), seed=1,
                    reference_groups=np.arange(8), usable_references=np.arange(8) != 7)
    settings.update(overrides)
    return EpisodeSampler(survey, np.arange(7), np.arange(5, 60), **settings)


def draw(host, steps=4):
    sampler, arrays = DeviceSampler.like(host)
    sample = jax.jit(sampler.sample)
    batches = [jax.tree.map(np.asarray, sample(arrays, step)) for step in range(steps)]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def episodes(batch, part):
    n = "C" if part == "context" else "T"
    for b in range(len(batch["group_B"])):
        mask = batch[f"{part}_mask_Bx{n}"][b]
        yield (b, batch[f"{part}_question_Bx{n}"][b][mask], batch[f"{part}_option_Bx{n}"][b][mask],
               batch[f"{part}_prob_Bx{n}"][b][mask], batch[f"{part}_respondents_Bx{n}"][b][mask])


def test_episodes_are_valid_points_of_their_group(survey):
    host = host_sampler(survey)
    batch = draw(host)
    O = survey.max_options
    assert batch["context_option_BxC"].shape[1] == host.context_capacity
    assert batch["target_option_BxT"].shape[1] == host.target_capacity
    for part, (lo, hi) in (("context", host.context_range), ("target", host.target_range)):
        for b, q_N, row_N, prob_N, count_N in episodes(batch, part):
            g = batch["group_B"][b]
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
    for b in range(len(batch["group_B"])):
        ctx = set(batch["context_question_BxC"][b]) - {-1}
        tgt = set(batch["target_question_BxT"][b]) - {-1}
        assert not ctx & tgt  # disjoint
        own = host.reference_groups == batch["group_B"][b]
        np.testing.assert_array_equal(batch["reference_mask_BxS"][b],
                                      host.usable_references & ~own)
    assert not batch["hide_target_references_B"].any()


def test_sizes_and_groups_follow_the_host_samplers_distribution(survey):
    for overrides in ({}, {"context_distribution": "log_uniform", "context_range": (1, 30)}):
        host = host_sampler(survey, **overrides)
        device = draw(host, steps=16)
        counts = {part: [] for part in ("context", "target")}
        for step in range(16):
            batch = host.sample(step).arrays()
            for part in counts:
                counts[part] += [len(set(q) - {-1}) for q in batch[
                    f"{part}_question_Bx{'C' if part == 'context' else 'T'}"]]
        for part in counts:
            n = "C" if part == "context" else "T"
            mine = [len(set(q) - {-1}) for q in device[f"{part}_question_Bx{n}"]]
            # 1,024 episodes each: means agree within a few standard errors
            scale = np.std(counts[part]) / np.sqrt(len(mine))
            assert abs(np.mean(mine) - np.mean(counts[part])) < 5 * scale, (overrides, part)
        assert set(np.unique(device["group_B"])) == set(host.groups)


def test_mixup_and_hiding(survey):
    host = host_sampler(survey, mixup=1.0, mixup_groups=3, hide_references=0.5)
    batch = draw(host, steps=8)
    assert 0.35 < batch["hide_target_references_B"].mean() < 0.65
    O = survey.max_options
    mixed = 0
    for b, q_N, row_N, prob_N, count_N in episodes(batch, "target"):
        assert (count_N == 0).all()  # a mix has no respondents of its own
        totals = np.bincount(q_N, weights=prob_N)[np.unique(q_N)]
        np.testing.assert_allclose(totals, 1.0, atol=1e-5)  # a convex mix of distributions
        own = survey.probs_GxQxO[batch["group_B"][b], q_N, row_N % O]
        mixed += not np.allclose(prob_N, own, atol=1e-4)
        # the mix's members are no references of it: at least 3 columns are masked
        assert (~batch["reference_mask_BxS"][b]).sum() >= 3
    assert mixed > 0.9 * len(batch["group_B"])


def test_a_step_always_draws_the_same_episodes(survey):
    host = host_sampler(survey)
    sampler, arrays = DeviceSampler.like(host)
    a, b, c = (sampler.sample(arrays, s) for s in (3, 3, 4))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["context_option_BxC"], c["context_option_BxC"])
