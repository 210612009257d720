"""The host sampler: episodes of the sampling config's distribution, laid out by the one
point packer, reproducible from (seed, step), never reading their own group."""

import dataclasses

import jax
import numpy as np
import pytest

from gpo.config import SamplingConfig
from gpo.data import make_synthetic_survey
from gpo.points.batch import POINT_MULTIPLE, pack_episodes, padded_size
from gpo.training.sampling import EpisodeSampler


@pytest.fixture(scope="module")
def survey():
    return make_synthetic_survey(seed=1, n_groups=10, n_questions=60).survey


def sampler_of(survey, groups, seed=0, **sampling):
    """A host sampler over `groups` x all 60 questions, no reference hiding by default."""
    return EpisodeSampler(survey, groups, np.arange(60),
                          SamplingConfig(**{"hide_references": 0.0, **sampling}), seed=seed)


def test_sampler_shapes_masks_and_determinism(survey):
    settings = dict(batch_size=5, context_range=(3, 10), target_range=(2, 8))
    sampler = sampler_of(survey, np.arange(6), seed=7, **settings)
    a, b = sampler.sample(3), sampler.sample(3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.context.option_BxN, sampler.sample(4).context.option_BxN)
    # A fresh sampler with the same seed resumes the same stream.
    again = sampler_of(survey, np.arange(6), seed=7, **settings).sample(3)
    np.testing.assert_array_equal(a.target.prob_BxN, again.target.prob_BxN)
    # Padded to the batch's largest episode, rounded up, never past the worst case (the 10
    # (8) questions with the most options).
    for part, most in (("context", 10), ("target", 8)):
        mask = getattr(a, part).mask_BxN
        worst = np.sort(survey.n_options_Q)[::-1][:most].sum()
        assert mask.shape[1] == min(worst, padded_size(mask.sum(1).max()))
    wide = sampler_of(survey, np.arange(6), batch_size=1, context_range=(2, 50),
                      target_range=(2, 5))
    widths = {wide.sample(step).context.mask_BxN.shape[1] for step in range(20)}
    assert min(widths) == POINT_MULTIPLE < wide.context_capacity  # small batches stay small
    O = survey.max_options
    c, t = a.context, a.target
    for bi in range(5):
        g = a.group_B[bi]
        assert g < 6
        ctx_q = np.unique(c.option_BxN[bi][c.mask_BxN[bi]] // O)
        tgt_q = np.unique(t.question_BxN[bi][t.mask_BxN[bi]])
        assert 3 <= len(ctx_q) <= 10 and 2 <= len(tgt_q) <= 8
        assert not set(ctx_q) & set(tgt_q)
        # Every option of a chosen question is a point; probabilities are the group's.
        assert t.mask_BxN[bi].sum() == survey.n_options_Q[tgt_q].sum()
        opt = t.option_BxN[bi][t.mask_BxN[bi]]
        np.testing.assert_allclose(t.prob_BxN[bi][t.mask_BxN[bi]],
                                   survey.probs_GxQxO[g, opt // O, opt % O])
        assert np.all(t.question_BxN[bi][~t.mask_BxN[bi]] == -1)
        assert np.all(c.prob_BxN[bi][~c.mask_BxN[bi]] == 0)
        assert np.all(t.episode_BxN[bi] == bi)  # one episode a row


def test_group_mixup_draws_convex_mixes_of_training_groups(survey):
    kwargs = dict(batch_size=8, context_range=(3, 10), target_range=(2, 8))
    plain = sampler_of(survey, np.arange(2), seed=7, **kwargs)
    off = sampler_of(survey, np.arange(2), seed=7, group_mixup=0.0, **kwargs)
    np.testing.assert_array_equal(plain.sample(3).target.prob_BxN,
                                  off.sample(3).target.prob_BxN)  # same stream when off
    mixed = sampler_of(survey, np.arange(2), seed=7, group_mixup=1.0, mixup_groups=2,
                       **kwargs).sample(3)
    O = survey.max_options
    for part in ("context", "target"):
        slots = getattr(mixed, part)
        mask = slots.mask_BxN
        opt = slots.option_BxN[mask]
        prob = slots.prob_BxN[mask]
        a, b = (survey.probs_GxQxO[g, opt // O, opt % O] for g in (0, 1))
        # Each point lies between the two groups' probabilities (a convex mix of them) ...
        assert np.all(prob >= np.minimum(a, b) - 1e-6) and np.all(prob <= np.maximum(a, b) + 1e-6)
        # ... one mix per episode (not per point), so every question still sums to 1.
        question = opt // O
        episode = np.nonzero(mask)[0]
        for e, q in set(zip(episode, question)):
            np.testing.assert_allclose(prob[(episode == e) & (question == q)].sum(), 1, atol=1e-5)
    assert not np.allclose(mixed.target.prob_BxN, plain.sample(3).target.prob_BxN)
    with pytest.raises(ValueError, match="mixup_groups must be in \\[2, 2\\]"):
        sampler_of(survey, np.arange(2), group_mixup=0.5, mixup_groups=3, **kwargs)

def test_pack_rejects_unanswered_and_overflow(survey):
    no_references = np.zeros((1, 0), bool)
    with pytest.raises(ValueError, match="more than capacity"):
        pack_episodes(survey, [0], [np.arange(10)], [np.arange(10, 12)], 3, 20, no_references)
    answered = survey.answered_GxQ.copy()
    answered[0, 4] = False
    sparse = type(survey)(survey.questions, survey.groups, survey.probs_GxQxO, answered,
                          survey.respondents_GxQ, "sparse")
    with pytest.raises(ValueError, match=r"group 'synthetic=group00' did not answer context "
                                         r"questions \['SYN0004'\]"):
        pack_episodes(sparse, [0], [np.arange(10)], [np.arange(10, 12)], 64, 64, no_references)


def test_episodes_never_read_their_own_group_as_a_reference(survey):
    """The reference mask of an episode excludes its own group (every member of a mix) and
    the columns that are not usable (validation groups while training)."""
    references = np.arange(6)
    usable = np.array([True, True, True, True, True, False])
    sampler = dataclasses.replace(
        sampler_of(survey, np.arange(5), seed=3, batch_size=16, context_range=(2, 4),
                   target_range=(2, 4), group_mixup=0.5),
        reference_groups=references, usable_references=usable)
    for step in range(5):
        batch = sampler.sample(step)
        assert batch.reference_mask_BxS.shape == (16, 6)
        assert not batch.reference_mask_BxS[:, 5].any()  # never a validation column
        for b, g in enumerate(batch.group_B):
            assert not batch.reference_mask_BxS[b, g]  # never its own (or a member's)
        mixed = batch.reference_mask_BxS.sum(1) < 4
        assert mixed.any() and (batch.reference_mask_BxS.sum(1)[mixed] == 2).all()
        # A mix has no respondent count of its own; a plain group's count is the survey's.
        assert (batch.context.respondents_BxN[mixed] == 0).all()


def test_a_fraction_of_episodes_come_without_respondent_counts(survey):
    counted = dataclasses.replace(survey, respondents_GxQ=np.full(
        survey.answered_GxQ.shape, 500.0, np.float32))
    settings = dict(batch_size=64, context_range=(2, 5), target_range=(2, 5))
    sampler = EpisodeSampler(counted, np.arange(6), np.arange(60), SamplingConfig(
        **settings, hide_references=0.0, hide_respondents=0.5), seed=1)
    batch = sampler.sample(0)
    withheld = (batch.context.respondents_BxN == 0).all(1)
    assert 0.3 < withheld.mean() < 0.7
    assert (batch.context.respondents_BxN[~withheld][batch.context.mask_BxN[~withheld]]
            == 500).all()
    plain = EpisodeSampler(counted, np.arange(6), np.arange(60), SamplingConfig(
        **settings, hide_references=0.0), seed=1).sample(0)
    np.testing.assert_array_equal(batch.context.option_BxN, plain.context.option_BxN)
