import numpy as np
import pytest
from scipy.optimize import nnls

from gpo.data import Survey, make_synthetic_survey
from gpo.data.splits import make_eval_task, make_split
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.evaluation.baselines import (
    BASELINES,
    group_mixture,
    group_regression,
    knn_options,
    nearest_group,
    population_prior,
    run_baselines,
    uniform,
)
from gpo.evaluation.metrics import score_predictions


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_survey(seed=3, n_groups=20, n_questions=200, n_types=3)


def with_groups(survey: Survey, probs_GxQxO: np.ndarray) -> Survey:
    """The survey with some groups' distributions replaced."""
    return Survey(survey.questions, survey.groups, probs_GxQxO.astype(np.float32),
                  survey.answered_GxQ, survey.respondents_GxQ, survey.name)


def test_population_prior_is_training_mean(synthetic):
    s = synthetic.survey
    split = make_split(s, "A", seed=0)
    task = make_eval_task(s, split, k=10)
    pred = population_prior(s, split, task)
    np.testing.assert_allclose(pred[0], s.probs_GxQxO[split.train_groups].mean(0), atol=1e-6)


def test_nearest_group_finds_an_identical_group(synthetic):
    s = synthetic.survey
    split = make_split(s, "A", seed=0)
    probs = s.probs_GxQxO.copy()
    twin = split.train_groups[2]
    probs[split.test_groups[0]] = probs[twin]  # a test group that answers exactly like one
    s2 = with_groups(s, probs)
    task = make_eval_task(s2, split, k=10)
    pred = nearest_group(s2, split, task)
    score = score_predictions(s2, task, pred)
    assert score.per_group_G[0] == pytest.approx(1.0)
    assert np.all(score.per_group_G[1:] < 1.0)


def test_group_mixture_recovers_a_planted_mixture(synthetic):
    s = synthetic.survey
    split = make_split(s, "A", seed=1)
    probs = s.probs_GxQxO.copy()
    a, b = split.train_groups[:2]
    probs[split.test_groups[0]] = 0.3 * probs[a] + 0.7 * probs[b]
    s2 = with_groups(s, probs)
    task = make_eval_task(s2, split, k=30)
    pred = group_mixture(s2, split, task, n_iter=2000)
    np.testing.assert_allclose(pred[0], probs[split.test_groups[0]], atol=0.02)
    assert score_predictions(s2, task, pred).per_group_G[0] > 0.995



def test_group_regression_reaches_a_group_outside_the_convex_hull(synthetic):
    """A test group more extreme than any training group (an affine combination with a
    negative weight): the regression recovers it, the convex mixture cannot."""
    s = synthetic.survey
    split = make_split(s, "A", seed=1)
    probs = s.probs_GxQxO.copy()
    a, b = split.train_groups[:2]
    step = probs[a] - probs[b]  # planted = a + t (a - b), t as large as keeps it a distribution
    falling = s.option_mask_QxO & (step < 0)
    t = min(0.5, 0.9 * np.min(probs[a][falling] / -step[falling]))
    assert t > 0.1
    planted = probs[a] + t * step
    probs[split.test_groups[0]] = planted
    s2 = with_groups(s, probs)
    task = make_eval_task(s2, split, k=30)
    regression = score_predictions(s2, task, group_regression(s2, split, task)).per_group_G[0]
    mixture = score_predictions(s2, task, group_mixture(s2, split, task)).per_group_G[0]
    assert regression > 0.995 and regression > mixture + 0.005


def test_group_regression_reads_only_the_context(synthetic):
    """The penalty is chosen on training groups: the test groups' target answers are unused."""
    s = synthetic.survey
    split = make_split(s, "A", seed=0)
    task = make_eval_task(s, split, k=20)
    probs = s.probs_GxQxO.copy()
    rng = np.random.default_rng(0)
    hidden = task.target_GxQ[:, :, None] & s.option_mask_QxO[None]
    shuffled = probs[split.test_groups]
    shuffled[hidden] = rng.permutation(shuffled[hidden])
    probs[split.test_groups] = shuffled
    np.testing.assert_array_equal(group_regression(s, split, task),
                                  group_regression(with_groups(s, probs), split, task))

def in_convex_hull(point_T: np.ndarray, vertices_SxT: np.ndarray) -> bool:
    """Whether a point is a convex combination of the vertices (NNLS with a sum-to-one row)."""
    A = np.vstack([vertices_SxT.T, 100 * np.ones(len(vertices_SxT))])
    _, residual = nnls(A, np.append(point_T, 100.0))
    return residual < 1e-6


def test_ranking_on_latent_mixtures(synthetic):
    """Groups are convex mixtures of 3 latent types. A test group whose type weights lie in the
    convex hull of the training groups' is a mixture of training groups, so the mixture baseline
    should predict it almost exactly; groups outside the hull are out of its reach."""
    s = synthetic.survey
    split = make_split(s, "A", seed=0)
    task = make_eval_task(s, split, k=20, seed=0)
    score = score_predictions(s, task, group_mixture(s, split, task)).per_group_G
    inside = np.array([in_convex_hull(synthetic.mixtures_GxT[g],
                                      synthetic.mixtures_GxT[split.train_groups])
                       for g in split.test_groups])
    assert inside.any() and (~inside).any()
    assert np.all(score[inside] > 0.99)
    assert score[~inside].mean() < score[inside].mean()

    embeddings = embed_survey(s, LexicalEmbedder())
    results = {name: np.mean(v) for name, v in run_baselines(
        s, "A", seeds=(0, 1), k=20, option_embeddings_QxOxE=embeddings).items()}
    assert results["group mixture"] > results["nearest group"] > results["population prior"]
    assert results["population prior"] > results["uniform"]
    # Option texts name the theme each stance is about: the group's own context transfers.
    assert results["kNN options"] > results["uniform"] + 0.005


def test_predictions_are_distributions_over_real_options(synthetic):
    s = synthetic.survey
    split = make_split(s, "B", seed=0)
    task = make_eval_task(s, split, k=5)
    for name, predict in BASELINES.items():
        pred = predict(s, split, task, option_embeddings_QxOxE=embed_survey(s, LexicalEmbedder()))
        assert pred.shape == (len(split.test_groups), *s.option_mask_QxO.shape), name
        np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-6, err_msg=name)
        assert np.all(pred[:, ~s.option_mask_QxO] == 0), name


def test_knn_needs_embeddings_of_the_right_shape(synthetic):
    s = synthetic.survey
    split = make_split(s, "B")
    task = make_eval_task(s, split, k=5)
    with pytest.raises(ValueError, match="needs option_embeddings"):
        knn_options(s, split, task)
    with pytest.raises(ValueError, match="expected"):
        knn_options(s, split, task, option_embeddings_QxOxE=np.zeros((3, 2, 4)))
    assert uniform(s, split, task).shape[0] == len(split.test_groups)


def test_real_opinionqa_baselines_land_near_the_independent_check(opinionqa):
    """Independent check (620 questions, three 40/60 splits, k=20): uniform 0.81, prior 0.95,
    nearest group 0.96, mixture 0.97; the affine regression on training groups ~0.977."""
    results = {n: np.mean(v) for n, v in run_baselines(opinionqa.complete_questions(), "A",
                                                       seeds=(0, 1, 2), k=20).items()}
    assert results["uniform"] == pytest.approx(0.81, abs=0.01)
    assert results["population prior"] == pytest.approx(0.95, abs=0.01)
    assert results["nearest group"] == pytest.approx(0.96, abs=0.01)
    assert results["group mixture"] == pytest.approx(0.97, abs=0.01)
    assert results["group mixture"] < results["group regression"] < 0.99
