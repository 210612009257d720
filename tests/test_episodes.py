import numpy as np
import pytest

from gpo.data import make_synthetic_survey
from gpo.data.episodes import (
    POINT_MULTIPLE,
    EpisodeSampler,
    make_eval_task,
    make_split,
    pack_episodes,
    padded_size,
)


@pytest.fixture(scope="module")
def survey():
    return make_synthetic_survey(seed=1, n_groups=10, n_questions=60).survey


def test_sampler_shapes_masks_and_determinism(survey):
    sampler = EpisodeSampler(survey, np.arange(6), np.arange(60), batch_size=5,
                             context_range=(3, 10), target_range=(2, 8), seed=7)
    a, b = sampler.sample(3), sampler.sample(3)
    for key, value in a.arrays().items():
        np.testing.assert_array_equal(value, b.arrays()[key])
    assert not np.array_equal(a.context_option_BxC, sampler.sample(4).context_option_BxC)
    # A fresh sampler with the same seed resumes the same stream.
    again = EpisodeSampler(survey, np.arange(6), np.arange(60), batch_size=5,
                           context_range=(3, 10), target_range=(2, 8), seed=7).sample(3)
    np.testing.assert_array_equal(a.target_prob_BxT, again.target_prob_BxT)
    # Padded to the batch's largest episode, rounded up, never past the worst case (the 10
    # (8) questions with the most options).
    for part, most in (("context", 10), ("target", 8)):
        mask = getattr(a, f"{part}_mask_Bx{part[0].upper()}")
        worst = np.sort(survey.n_options_Q)[::-1][:most].sum()
        assert mask.shape[1] == min(worst, padded_size(mask.sum(1).max()))
    wide = EpisodeSampler(survey, np.arange(6), np.arange(60), batch_size=1,
                          context_range=(2, 50), target_range=(2, 5), seed=0)
    widths = {wide.sample(step).context_mask_BxC.shape[1] for step in range(20)}
    assert min(widths) == POINT_MULTIPLE < wide.context_capacity  # small batches stay small
    O = survey.max_options
    for bi in range(5):
        g = a.group_B[bi]
        assert g < 6
        ctx_q = np.unique(a.context_option_BxC[bi][a.context_mask_BxC[bi]] // O)
        tgt_q = np.unique(a.target_question_BxT[bi][a.target_mask_BxT[bi]])
        assert 3 <= len(ctx_q) <= 10 and 2 <= len(tgt_q) <= 8
        assert not set(ctx_q) & set(tgt_q)
        # Every option of a chosen question is a point; probabilities are the group's.
        assert a.target_mask_BxT[bi].sum() == survey.n_options_Q[tgt_q].sum()
        opt = a.target_option_BxT[bi][a.target_mask_BxT[bi]]
        np.testing.assert_allclose(a.target_prob_BxT[bi][a.target_mask_BxT[bi]],
                                   survey.probs_GxQxO[g, opt // O, opt % O])
        assert np.all(a.target_question_BxT[bi][~a.target_mask_BxT[bi]] == -1)
        assert np.all(a.context_prob_BxC[bi][~a.context_mask_BxC[bi]] == 0)



def test_group_mixup_draws_convex_mixes_of_training_groups(survey):
    kwargs = dict(batch_size=8, context_range=(3, 10), target_range=(2, 8), seed=7)
    plain = EpisodeSampler(survey, np.arange(2), np.arange(60), **kwargs)
    off = EpisodeSampler(survey, np.arange(2), np.arange(60), mixup=0.0, **kwargs)
    np.testing.assert_array_equal(plain.sample(3).target_prob_BxT,
                                  off.sample(3).target_prob_BxT)  # same stream when off
    mixed = EpisodeSampler(survey, np.arange(2), np.arange(60), mixup=1.0, mixup_groups=2,
                           **kwargs).sample(3)
    O = survey.max_options
    for part in ("context", "target"):
        mask = getattr(mixed, f"{part}_mask_Bx{part[0].upper()}")
        opt = getattr(mixed, f"{part}_option_Bx{part[0].upper()}")[mask]
        prob = getattr(mixed, f"{part}_prob_Bx{part[0].upper()}")[mask]
        a, b = (survey.probs_GxQxO[g, opt // O, opt % O] for g in (0, 1))
        # Each point lies between the two groups' probabilities (a convex mix of them) ...
        assert np.all(prob >= np.minimum(a, b) - 1e-6) and np.all(prob <= np.maximum(a, b) + 1e-6)
        # ... one mix per episode (not per point), so every question still sums to 1.
        question = opt // O
        episode = np.nonzero(mask)[0]
        for e, q in set(zip(episode, question)):
            np.testing.assert_allclose(prob[(episode == e) & (question == q)].sum(), 1, atol=1e-5)
    assert not np.allclose(mixed.target_prob_BxT, plain.sample(3).target_prob_BxT)
    with pytest.raises(ValueError, match="mixup_groups"):
        EpisodeSampler(survey, np.arange(2), np.arange(60), mixup=0.5, mixup_groups=3, **kwargs)

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
    sampler = EpisodeSampler(survey, np.arange(5), np.arange(60), batch_size=16, seed=3,
                             context_range=(2, 4), target_range=(2, 4), mixup=0.5,
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
        assert (batch.context_respondents_BxC[mixed] == 0).all()


def test_split_protocols(survey):
    a = make_split(survey, "A", seed=0)
    assert len(a.train_groups) == 4 and len(a.test_groups) == 6  # GPO: int(40%)
    assert not set(a.train_groups) & set(a.test_groups)
    np.testing.assert_array_equal(a.train_questions, a.test_questions)
    b = make_split(survey, "B", seed=0)
    assert not set(b.train_questions) & set(b.test_questions)
    assert len(b.train_questions) + len(b.test_questions) == 60
    explicit = make_split(survey, "A", train_groups=["group00", "synthetic=group03"])
    assert explicit.train_groups.tolist() == [0, 3]
    with pytest.raises(ValueError, match="protocol"):
        make_split(survey, "C")


def test_eval_task_shares_context_across_groups(survey):
    split = make_split(survey, "B", seed=2)
    task = make_eval_task(survey, split, k=5, seed=0)
    assert np.all(task.context_GxQ.sum(1) == 5)
    assert np.all(task.context_GxQ == task.context_GxQ[0])  # same k questions for every group
    assert not np.any(task.context_GxQ & task.target_GxQ)
    in_test = np.isin(np.arange(60), split.test_questions)
    assert np.all(in_test[task.context_GxQ.any(0)]) and np.all(in_test[task.target_GxQ.any(0)])
    assert task.target_GxQ.sum(1).tolist() == [len(split.test_questions) - 5] * 6


def test_eval_task_on_sparse_groups():
    s = make_synthetic_survey(seed=0, n_groups=4, n_questions=30).survey
    answered = s.answered_GxQ.copy()
    answered[0, :20] = False  # group 0 answered only the last 10 questions
    sparse = type(s)(s.questions, s.groups, s.probs_GxQxO * answered[..., None], answered,
                     s.respondents_GxQ, "sparse")
    split = make_split(sparse, "A", train_groups=["group03"])
    task = make_eval_task(sparse, split, k=12)  # common answered: 10 < k
    assert task.context_GxQ[0].sum() == 0 and task.target_GxQ[0].sum() == 0  # too few
    assert task.context_GxQ[1].sum() == 12
    assert np.all(sparse.answered_GxQ[split.test_groups][task.context_GxQ])
