import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from gpo.evaluation.metrics import accuracy, alignment, calibration, js_alignment


def one_question(pred, true, ordinals):
    """Alignment of a single (group, question) pair."""
    mask = np.ones((1, len(ordinals)), bool)
    return alignment(np.array([[pred]]), np.array([[true]]), np.array([ordinals], float), mask,
                     np.ones((1, 1), bool)).mean


@pytest.mark.parametrize("pred, true, ordinals, expected", [
    ([1, 0, 0], [0, 0, 1], [1, 2, 3], 0.0),          # opposite ends: W1 = 2 = span
    ([0.5, 0.5, 0], [0, 0.5, 0.5], [1, 2, 3], 0.5),  # W1 = 0.5 + 0.5 = 1, span 2
    ([0.3, 0.7], [0.3, 0.7], [1, 2], 1.0),
    # Fractional ordinals: option C is the neutral middle at 1.5 (WORLDDANGER_W26's layout).
    ([1, 0, 0], [0, 0, 1], [1, 2, 1.5], 0.5),        # A (1) vs C (1.5): W1 = 0.5, span 1
    ([1, 0, 0], [0, 1, 0], [1, 2, 1.5], 0.0),        # A (1) vs B (2): W1 = 1
    # Sorted support 1, 1.5, 2: CDFs (0.2, 0.7) vs (0.6, 0.8) -> 0.4*0.5 + 0.1*0.5 = 0.25
    ([0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1, 2, 1.5], 0.75),
    ([0.5, 0.5], [0, 1], [0, 1], 0.5),               # EAT3E-style 0/1 ordinals
])
def test_alignment_hand_cases(pred, true, ordinals, expected):
    assert one_question(pred, true, ordinals) == pytest.approx(expected, abs=1e-12)


def test_alignment_averages_within_groups_first_and_skips_flat_questions():
    # Group 0: questions scoring 1.0 and 0.5; group 1: one question scoring 0.0.
    pred = np.array([[[0.5, 0.5, 0], [0.5, 0.5, 0], [1, 0, 0]],
                     [[1, 0, 0], [1, 0, 0], [0, 1, 0]]], float)
    true = np.array([[[0.5, 0.5, 0], [0, 0.5, 0.5], [0, 1, 0]],
                     [[0, 0, 1], [0, 0, 1], [0, 0, 1]]], float)
    ordinals = np.array([[1, 2, 3], [1, 2, 3], [1, 1, 1]], float)  # question 2: no scale
    scored = np.array([[True, True, True], [True, False, True]])
    score = alignment(pred, true, ordinals, np.ones((3, 3), bool), scored)
    np.testing.assert_allclose(score.per_group_G, [0.75, 0.0])
    assert score.mean == pytest.approx(0.375)  # not the pooled mean 0.5
    assert score.n_scored == 3


def test_alignment_matches_scipy_with_padding():
    rng = np.random.default_rng(0)
    G, Q, O = 4, 30, 6
    n_Q = rng.integers(2, O + 1, size=Q)
    mask = np.arange(O)[None] < n_Q[:, None]
    ordinals = np.where(mask, rng.permutation(np.tile(np.arange(1.0, O + 1), (Q, 1)).T).T, 0.0)
    ordinals[0, :3] = [1.0, 2.0, 1.5]
    mask[0] = [True, True, True, False, False, False]
    pred = rng.dirichlet(np.ones(O), size=(G, Q)) * mask
    true = rng.dirichlet(np.ones(O), size=(G, Q)) * mask
    pred /= pred.sum(-1, keepdims=True)
    true /= true.sum(-1, keepdims=True)
    score = alignment(pred, true, ordinals, mask, np.ones((G, Q), bool))
    for g in range(G):
        for q in range(Q):
            m = mask[q]
            ords = ordinals[q, m]
            expected = 1 - wasserstein_distance(ords, ords, pred[g, q, m], true[g, q, m]) / (
                ords.max() - ords.min())
            assert score.per_pair_GxQ[g, q] == pytest.approx(expected, abs=1e-9)


def test_js_alignment_matches_scipy_and_gpo_nan_quirk():
    pred = np.array([[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 0.0]]])
    true = np.array([[[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4]]])
    mask = np.ones((3, 3), bool)
    score = js_alignment(pred, true, mask, np.ones((1, 3), bool))
    assert score.per_pair_GxQ[0, 0] == pytest.approx(1 - np.sqrt(np.log(2)))
    assert score.per_pair_GxQ[0, 1] == pytest.approx(1 - jensenshannon(pred[0, 1], true[0, 1]))
    # A prediction with no mass has no JS distance: skipped by default ...
    assert np.isnan(score.per_pair_GxQ[0, 2]) and score.n_scored == 2
    # ... while GPO's evaluation counted it as distance 0 (perfect agreement).
    quirk = js_alignment(pred, true, mask, np.ones((1, 3), bool), nan_as_zero_distance=True)
    assert quirk.per_pair_GxQ[0, 2] == 1.0 and quirk.mean > score.mean


def test_accuracy_on_one_hot_pairs():
    pred = np.array([[[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]],
                     [[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]]])
    true = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                     [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]])
    scored = np.array([[True, True, True], [True, False, True]])
    score = accuracy(pred, true, np.ones((3, 2), bool), scored)
    # Group 0: right, wrong, a predicted tie (half credit); group 1: right, unscored, and a
    # target tie (no preference: not scored).
    np.testing.assert_allclose(score.per_group_G, [0.5, 1.0])
    assert score.n_scored == 4


def test_calibration_of_gaussian_predictions():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.05, 0.3, 20000)
    mean = rng.uniform(0, 1, 20000)
    true = mean + std * rng.normal(size=std.size)
    good = calibration(mean, std, true)
    assert good.miscalibration_area < 0.01
    assert good.error_std_correlation > 0.3
    overconfident = calibration(mean, std / 4, true)
    assert overconfident.miscalibration_area > 0.2
    assert np.all(overconfident.observed < overconfident.levels)
    with pytest.raises(ValueError, match="positive"):
        calibration(mean, np.zeros_like(std), true)
