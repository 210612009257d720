"""Calibrated prediction intervals: the conformal quantiles reach their nominal coverage where
the true noise is known, a trained run carries its calibration and applies it the same way
every time, and a run made before intervals existed still loads and says it has none."""

import json
import subprocess
import sys

import numpy as np
import pytest

import gpo
from gpo.cli import main as cli_main
from gpo.evaluation.conformal import Residuals, coverage, fit_condition
from gpo.intervals import (
    LEFT_OUT_QUESTIONS,
    WITHOUT_COUNTS,
    Bands,
    Calibration,
    ConditionCalibration,
    QuantileTable,
    conformal_quantiles,
    group_factor,
    left_out,
    mean_scale,
    mean_scales,
)
from gpo.intervals import LEVELS as STORED_LEVELS

LEVELS = (0.5, 0.8, 0.9, 0.95)


def _known_noise(rng, groups: int, k: int, questions: int = 30, options: int = 4,
                 loudness: float = 1.0) -> Residuals:
    """Residuals of groups whose answers are the prediction plus heavy-tailed noise (Student t,
    3 degrees of freedom) at a group-specific spread the head's std does not know, and whose
    left-out context answers carry the same noise (the scored answers `loudness` times
    louder)."""
    def part(spread_G, n_questions, loudness=1.0):
        G = len(spread_G)
        group_N = np.repeat(np.arange(G), n_questions * options)
        question_N = np.repeat(np.arange(G * n_questions), options)
        prob_N = np.full(len(group_N), 1 / options)
        std_N = np.full(len(group_N), 0.02)
        noise = (loudness * spread_G[group_N] * std_N * rng.standard_t(3, len(group_N))).reshape(
            -1, options)
        # a distribution per question: noise summing to zero, kept inside [0, 1]
        truth = np.clip(prob_N.reshape(-1, options) + noise - noise.mean(1, keepdims=True),
                        0.001, 0.999)
        truth_N = (truth / truth.sum(1, keepdims=True)).ravel()
        ordinal_N = np.tile(np.arange(options, dtype=float), G * n_questions)
        return dict(truth_N=truth_N, prob_N=prob_N, std_N=std_N,
                    respondents_N=np.full(len(group_N), np.nan), group_N=group_N,
                    question_N=question_N, ordinal_N=ordinal_N,
                    true_mean_M=np.bincount(question_N, truth_N * ordinal_N),
                    n_groups=G)

    spread = rng.lognormal(0.0, 0.5, groups)
    inner = Residuals(k - 1, **part(spread, len(left_out(k))))
    return Residuals(k, **part(spread, questions, loudness), left_out=inner)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 10.0)  # 9 scores: level 0.5 takes the ceil(10 * 0.5) = 5th
    assert conformal_quantiles(scores, [0.5, 0.9, 0.95]).tolist() == [5.0, 9.0, np.inf]


def test_a_mean_scale_is_the_options_scale_through_their_distance_from_the_mean():
    # two options at 0 and 1, half each: the mean is 0.5, each option 0.5 from it
    assert mean_scale(np.array([0.2, 0.2]), np.array([0.5, 0.5]), np.array([0.0, 1.0])
                      ) == pytest.approx(0.2 * np.sqrt(0.5))
    # calibration scores many questions at once with the same formula
    scale_N, prob_N = np.array([0.2, 0.2, 0.1, 0.3, 0.1]), np.array([0.5, 0.5, 0.2, 0.5, 0.3])
    ordinal_N, question_N = np.array([0.0, 1, 0, 1, 2]), np.array([0, 0, 1, 1, 1])
    mean_M, scale_M = mean_scales(scale_N, prob_N, ordinal_N, question_N, 2)
    assert mean_M == pytest.approx([0.5, 1.1])
    assert scale_M == pytest.approx([mean_scale(scale_N[q == question_N], prob_N[q == question_N],
                                                ordinal_N[q == question_N]) for q in (0, 1)])


def test_group_factor_shrinks_toward_one_and_follows_the_left_out_scores():
    assert group_factor(0.0, 0) == 1.0
    assert group_factor(4 * 10, 10) > group_factor(4 * 2, 2) > 1  # z² = 4 each: f -> 2
    assert group_factor(0.0, 10) < 1
    assert left_out(1).size == 0 and left_out(3).tolist() == [0, 1, 2]
    assert len(left_out(100)) == LEFT_OUT_QUESTIONS


@pytest.mark.parametrize("k", [2, 10])
def test_known_noise_gets_the_nominal_coverage(k):
    """Calibrated on 400 groups, checked on 400 others of the same population: coverage within
    0.02 of nominal at every level, where mean ± z·std (std unaware of the groups' spread
    and of the tails) is far off."""
    rng = np.random.default_rng(k)
    calibration = Calibration({WITHOUT_COUNTS: fit_condition({k: [_known_noise(rng, 400, k)]})},
                              {})
    fresh = _known_noise(rng, 400, k)
    result = coverage(calibration, [fresh], with_counts=False, levels=LEVELS)
    assert np.allclose(result.option_coverage, LEVELS, atol=0.02), result
    assert np.allclose(result.mean_coverage, LEVELS, atol=0.03), result
    gaussian_80 = np.mean(np.abs(fresh.truth_N - fresh.prob_N) <= 1.2816 * fresh.std_N)
    assert abs(gaussian_80 - 0.8) > 0.05


def test_questions_are_calibrated_by_their_number_of_options():
    """Binary questions twice as noisy as their groups' context answers and 4-option
    questions, for the same std: quantiles
    pooled over both would cover the binary ones too little and the others too much; each
    class's own reach the nominal coverage. A calibration saved without classes still loads
    and applies its pooled quantiles."""
    rng = np.random.default_rng(0)

    def both():
        return [_known_noise(rng, 300, 10, options=2, loudness=2.0),
                _known_noise(rng, 300, 10, options=4)]

    condition = fit_condition({10: both()})
    assert set(condition.options_by_class) == set(condition.means_by_class) == {"2", "3-4"}
    calibration = Calibration({WITHOUT_COUNTS: condition}, {})
    binary, four = both()
    for found in (binary, four):
        result = coverage(calibration, [found], with_counts=False, levels=LEVELS)
        assert np.allclose(result.option_coverage, LEVELS, atol=0.02), result
        assert np.allclose(result.mean_coverage, LEVELS, atol=0.03), result
    raw = calibration.to_json()
    del raw["conditions"][WITHOUT_COUNTS]["by_options"]
    pooled = Calibration.from_json(json.loads(json.dumps(raw)))
    assert not pooled.condition(False).options_by_class
    binary_80 = coverage(pooled, [binary], with_counts=False, levels=[0.8]).option_coverage[0]
    assert binary_80 < 0.7  # 0.63 here


@pytest.fixture
def reference_run(trained_run):
    return trained_run("reference")[0]


def test_a_trained_run_is_calibrated_and_its_intervals_are_deterministic(reference_run, tiny):
    survey, _ = tiny
    saved = json.loads((reference_run / "calibration.json").read_text())
    assert saved["fitted_on"]["groups"]  # the validation groups, by name
    q = survey.questions
    context = [(q[i].key, survey.probs_GxQxO[0, i, :len(q[i].answer_options)])
               for i in range(6)]
    intervals = []
    for _ in range(2):
        predictions = gpo.load(reference_run).adapt(context).predict([q[10].key, q[11].key])
        assert predictions.calibrated
        intervals.append([p.interval(0.8) for p in predictions])
        for p in predictions:
            low, high = p.interval(0.8)
            narrow_low, narrow_high = p.interval(0.5)
            assert np.all((0 <= low) & (low <= p.probs) & (p.probs <= high) & (high <= 1))
            assert np.all(high - low >= narrow_high - narrow_low)
            mean_low, mean_high = p.mean_interval(0.8)
            assert min(p.ordinals) <= mean_low <= p.mean_position <= mean_high <= max(
                p.ordinals)
        assert "80% interval" in str(predictions.intervals(0.8))
        record = predictions.intervals(0.8).records()[0]
        assert record["level"] == 0.8 and record["low"] <= record["prob"] <= record["high"]
    np.testing.assert_array_equal(np.array(intervals[0], dtype=object).tolist(),
                                  np.array(intervals[1], dtype=object).tolist())


def test_a_group_far_from_its_predictions_gets_wider_intervals(reference_run, tiny):
    """The group's factor: context answers the head predicts well from one another narrow the
    intervals; answers it cannot predict widen them."""
    survey, _ = tiny
    model = gpo.load(reference_run)
    q = survey.questions
    keys = [q[i].key for i in range(8)]
    predicted = model.adapt([(keys[0], survey.probs_GxQxO[0, 0, :len(q[0].answer_options)])]
                            ).predict(keys)
    agreeable = model.adapt([(k, p.probs) for k, p in zip(keys, predicted)])
    contrary = model.adapt([(k, np.eye(len(p.probs))[np.argmin(p.probs)])
                            for k, p in zip(keys, predicted)])
    assert contrary.bands.factor > 1 > agreeable.bands.factor


def test_levels_outside_the_calibrated_range_are_refused(reference_run, tiny):
    survey, _ = tiny
    q = survey.questions[0]
    predictions = gpo.load(reference_run).adapt([(q.key, [1.0] * len(q.answer_options))]
                                                ).predict([survey.questions[1].key])
    for level in (0, 1, 1.5, "0.9"):
        with pytest.raises(ValueError, match="level must be a coverage"):
            predictions[0].interval(level)


def test_a_run_made_before_intervals_loads_says_so_and_can_be_calibrated(copied_run, tiny,
                                                                          tmp_path):
    survey, _ = tiny
    run_dir = copied_run("reference")
    (run_dir / "calibration.json").unlink()
    q0, q1 = survey.questions[:2]
    predictions = gpo.load(run_dir).adapt([(q0.key, [1.0] * len(q0.answer_options))]
                                          ).predict([q1.key])
    assert not predictions.calibrated
    assert "no intervals" in str(predictions) and "gpo calibrate" in str(predictions)
    assert "interval" not in predictions[0].as_dict()
    with pytest.raises(ValueError, match="gpo calibrate"):
        predictions[0].interval()
    cli_main(["calibrate", "--run-dir", str(run_dir)])
    assert gpo.load(run_dir).adapt([(q0.key, [1.0] * len(q0.answer_options))]
                                   ).predict([q1.key]).calibrated


def test_cli_predict_prints_intervals(reference_run, tiny, tmp_path, capsys):
    survey, _ = tiny
    q0, q1 = survey.questions[:2]
    (tmp_path / "context.json").write_text(json.dumps(
        [{"question": q0.key, "distribution": [1.0] * len(q0.answer_options)}]))
    (tmp_path / "questions.json").write_text(json.dumps([q1.key]))
    args = ["predict", "--run-dir", str(reference_run), "--context",
            str(tmp_path / "context.json"), "--questions", str(tmp_path / "questions.json")]
    cli_main(args + ["--level", "0.8"])
    out = json.loads(capsys.readouterr().out)
    assert out[0]["interval"]["level"] == 0.8 and len(out[0]["interval"]["low"]) == len(
        q1.answer_options)
    cli_main(args + ["--format", "table"])
    assert "90% interval" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "gpo.cli", *args, "--level", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "level must be a coverage" in result.stderr
    assert "Traceback" not in result.stderr


def test_too_few_scores_for_a_level_give_the_whole_range():
    quantiles = conformal_quantiles(np.linspace(0.1, 2.0, 20), STORED_LEVELS)  # inf > 95%
    table = QuantileTable((5,), quantiles[None], (20,))
    bands = Bands(ConditionCalibration(0.0, table, None), 5, None)
    low, high = bands.option_intervals(np.array([0.3, 0.7]), np.array([0.05, 0.05]), 0.985)
    assert low.tolist() == [0.0, 0.0] and high.tolist() == [1.0, 1.0]
    low, high = bands.option_intervals(np.array([0.3, 0.7]), np.array([0.05, 0.05]), 0.5)
    assert np.all(np.isfinite(low)) and np.all(high < 1)


def test_calibration_folds_cover_every_training_group_once(tiny):
    from gpo.data.splits import calibration_folds, make_split, validation_split
    survey, _ = tiny
    split = make_split(survey, "A", seed=3)
    _, validation = validation_split(split, 0.25, 3)
    folds = calibration_folds(split, validation, 3, 3)
    assert len(folds) == 2
    held_out = np.concatenate([validation, *folds])
    np.testing.assert_array_equal(np.sort(held_out), np.sort(split.train_groups))
    for fold, again in zip(folds, calibration_folds(split, validation, 3, 3)):
        np.testing.assert_array_equal(fold, again)  # deterministic for a split


def test_a_run_with_calibration_folds_calibrates_on_every_training_group(tiny, tmp_path):
    """Each fold's model is trained without the fold's groups, and the run's intervals pool
    the residuals of the validation groups and of every fold."""
    import dataclasses

    from gpo.run_dir import RunDir
    from gpo.training import train
    from tests.helpers import tiny_config
    survey, embeddings = tiny
    config = tiny_config(10, head="reference")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  calibration_folds=3))
    train(config, survey, embeddings, tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    split, validation = run.split.resolve(survey)
    folds = run.fold_runs()
    assert len(folds) == 2
    for fold in folds:
        fold_split, held_out = fold.split.resolve(survey)
        assert not np.isin(held_out, validation).any()
        np.testing.assert_array_equal(fold_split.train_groups, split.train_groups)
    fitted = run.calibration().fitted_on
    assert sorted(fitted["groups"]) == sorted(survey.group_labels[g]
                                              for g in split.train_groups)
    assert fitted["folds"] == 3
    q = survey.questions
    context = [(q[i].key, survey.probs_GxQxO[0, i, :len(q[i].answer_options)])
               for i in range(4)]
    (prediction,) = gpo.load(tmp_path / "run").adapt(context).predict([q[10].key])
    low, high = prediction.interval(0.8)
    assert np.all((low <= prediction.probs) & (prediction.probs <= high))


def test_too_many_calibration_folds_are_refused_naming_the_field(tiny, tmp_path):
    import dataclasses

    from gpo.training import train
    from tests.helpers import tiny_config
    survey, embeddings = tiny
    config = tiny_config(2, head="reference")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  calibration_folds=99))
    with pytest.raises(ValueError, match="data.calibration_folds=99"):
        train(config, survey, embeddings, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made

