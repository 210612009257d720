import numpy as np
import pytest

from gpo.data import make_synthetic_survey


def test_seeded_and_structured():
    a = make_synthetic_survey(seed=5, n_groups=6, n_questions=40, n_types=2)
    b = make_synthetic_survey(seed=5, n_groups=6, n_questions=40, n_types=2)
    np.testing.assert_array_equal(a.survey.probs_GxQxO, b.survey.probs_GxQxO)
    assert a.survey.questions == b.survey.questions
    c = make_synthetic_survey(seed=6, n_groups=6, n_questions=40, n_types=2)
    assert not np.array_equal(a.survey.probs_GxQxO, c.survey.probs_GxQxO)
    # Every group is exactly its mixture of the latent types' distributions.
    expected = np.einsum("gt,tqo->gqo", a.mixtures_GxT, a.type_probs_TxQxO)
    np.testing.assert_allclose(a.survey.probs_GxQxO, expected, atol=1e-6)
    np.testing.assert_allclose(a.mixtures_GxT.sum(1), 1.0)
    # Option texts state the stance the features encode.
    q = a.survey.questions[0]
    for o, text in enumerate(q.answer_options):
        sign = a.features_QxOxF[0, o][a.features_QxOxF[0, o] != 0][0]
        assert (("less" in text or "Cut" in text or "low priority" in text) == (sign < 0))


def test_finite_respondents_add_sampling_noise():
    exact = make_synthetic_survey(seed=0, n_groups=3, n_questions=20)
    noisy = make_synthetic_survey(seed=0, n_groups=3, n_questions=20, respondents=200)
    diff = np.abs(exact.survey.probs_GxQxO - noisy.survey.probs_GxQxO).max()
    assert 0 < diff < 0.2
    assert np.all(noisy.survey.respondents_GxQ == 200)
    with pytest.raises(ValueError, match="options_range"):
        make_synthetic_survey(options_range=(1, 3))
