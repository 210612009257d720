"""Property-based checks: random distributions, option counts, ordinals and malformed entries
never give a silent wrong number: a metric stays in range and agrees with an independent
computation, and a bad entry is refused naming its question and group."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import wasserstein_distance

from gpo.data.globalopinionqa import parse_selections
from gpo.data.survey import Question, SurveyDataError, check_answer
from gpo.evaluation.metrics import accuracy, alignment, js_alignment

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def distributions(draw):
    """(pred, true, ordinals) for one question of n options, as [1, 1, n] arrays."""
    n = draw(st.integers(2, 7))
    positive = st.floats(0.0, 1.0, allow_nan=False)
    pred = np.asarray(draw(st.lists(positive, min_size=n, max_size=n)), float) + 1e-9
    true = np.asarray(draw(st.lists(positive, min_size=n, max_size=n)), float) + 1e-9
    ordinals = np.asarray(draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n,
                                        max_size=n, unique=True)), float)
    return ((pred / pred.sum())[None, None], (true / true.sum())[None, None], ordinals[None])


@SETTINGS
@given(distributions())
def test_alignment_is_one_minus_scaled_wasserstein(case):
    pred, true, ordinals = case
    mask, scored = np.ones_like(ordinals, bool), np.ones((1, 1), bool)
    score = alignment(pred, true, ordinals, mask, scored).mean
    span = ordinals.max() - ordinals.min()
    expected = 1 - wasserstein_distance(ordinals[0], ordinals[0], pred[0, 0], true[0, 0]) / span
    assert score == pytest.approx(expected, abs=1e-9)
    assert 0 <= score <= 1
    assert alignment(true, pred, ordinals, mask, scored).mean == pytest.approx(score, abs=1e-12)
    assert alignment(true, true, ordinals, mask, scored).mean == pytest.approx(1.0)


@SETTINGS
@given(distributions(), st.integers(0, 3))
def test_padding_options_change_nothing(case, extra):
    """Padding options (mask False, any value, any ordinal) never move a score."""
    pred, true, ordinals = case
    n = ordinals.shape[1]
    pad = lambda a, v: np.concatenate([a, np.full(a.shape[:-1] + (extra,), v)], -1)  # noqa: E731
    mask = np.arange(n + extra)[None] < n
    scored = np.ones((1, 1), bool)
    plain = alignment(pred, true, ordinals, np.ones_like(ordinals, bool), scored).mean
    padded = alignment(pad(pred, 0.0), pad(true, 0.0), pad(ordinals, 99.0), mask, scored).mean
    assert padded == pytest.approx(plain, abs=1e-12)
    plain_js = js_alignment(pred, true, np.ones_like(ordinals, bool), scored).mean
    padded_js = js_alignment(pad(pred, 0.0), pad(true, 0.0), mask, scored).mean
    assert padded_js == pytest.approx(plain_js, abs=1e-12) and 0 <= plain_js <= 1


@SETTINGS
@given(distributions())
def test_js_and_accuracy_stay_in_range_and_are_exact_at_the_truth(case):
    pred, true, ordinals = case
    mask, scored = np.ones_like(ordinals, bool), np.ones((1, 1), bool)
    assert js_alignment(true, true, mask, scored).mean == pytest.approx(1.0, abs=1e-6)
    js = js_alignment(pred, true, mask, scored).mean
    assert js == pytest.approx(js_alignment(true, pred, mask, scored).mean, abs=1e-12)
    onehot = np.eye(true.shape[-1])[[[int(true.argmax())]]]
    score = accuracy(pred, onehot, mask, scored).mean
    assert 0 <= score <= 1 and accuracy(onehot, onehot, mask, scored).mean == 1.0


@SETTINGS
@given(st.integers(2, 6), st.data())
def test_answers_are_normalised_or_refused_naming_question_and_group(n, data):
    question = Question("Q_W1", "q?", tuple(f"o{i}" for i in range(n)), (False,) * n,
                        tuple(float(i) for i in range(n)))
    length = data.draw(st.integers(1, 8))
    values = data.draw(arrays(np.float64, length, elements=st.floats(
        allow_nan=True, allow_infinity=True, min_value=None, max_value=None, width=32)))
    valid = (length == n and np.all(np.isfinite(values)) and np.all(values >= 0)
             and values.sum() > 0)
    if valid:
        np.testing.assert_array_equal(check_answer(values, question, "G", "f.json"), values)
    else:
        with pytest.raises(SurveyDataError, match=r"file 'f.json', question 'Q_W1', group 'G'"):
            check_answer(values, question, "G", "f.json")


@SETTINGS
@given(st.text(max_size=80))
def test_malformed_selections_are_refused_never_misread(text):
    """Anything but a dict literal of number lists is refused with the culprit named."""
    try:
        parsed = parse_selections(text, "line 2: ")
    except SurveyDataError as err:
        assert str(err).startswith("line 2: ")
        return
    assert isinstance(parsed, dict)
    assert all(isinstance(v, list) and all(isinstance(x, float) for x in v)
               for v in parsed.values())


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       st.lists(st.floats(0, 1, allow_nan=False), max_size=5), max_size=4))
def test_well_formed_selections_round_trip(selections):
    text = f"defaultdict(<class 'list'>, {selections!r})"
    assert parse_selections(text) == {k: [float(x) for x in v] for k, v in selections.items()}


COUNT = st.one_of(st.floats(0, 1000, allow_nan=False), st.floats(-5, -0.01),
                  st.just(float("nan")), st.text(max_size=3), st.none())


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["Favor", "Oppose, strongly", "Refused", "Maybe"]),
                       COUNT, min_size=1, max_size=4))
def test_opinionqa_counts_load_exactly_or_are_refused(tmp_path_factory, counts):
    """A group's counts either load as exactly their renormalised non-refusal share, or the
    loader refuses naming the file, the question and the group."""
    from gpo.data import load_opinionqa
    from tests.helpers import good_group_file, write_wave
    root = tmp_path_factory.mktemp("oqa")
    data = good_group_file()
    data["FAV_W1"]["Male"] = counts
    write_wave(root, per_group=data)
    try:
        survey = load_opinionqa(root)
    except SurveyDataError as err:
        assert "SEX_data.json" in str(err) and "'FAV_W1'" in str(err) and "Male'" in str(err)
        return
    numbers = {k: float(v) for k, v in counts.items()}
    favor, oppose = numbers.get("Favor", 0.0), numbers.get("Oppose, strongly", 0.0)
    if "SEX=Male" not in survey.group_labels:  # only refusals: recorded as skipped
        assert favor + oppose == 0 and "SEX=Male/FAV_W1" in survey.skipped
        return
    g = survey.group_index("SEX=Male")
    np.testing.assert_allclose(survey.probs_GxQxO[g, 0, :2],
                               [favor / (favor + oppose), oppose / (favor + oppose)], rtol=1e-6)


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=12), st.integers(0, 2**31 - 1))
def test_within_question_softmax_by_segments_equals_the_dense_mask(sizes, seed):
    """Segment sums (linear in the points, for predictions of many targets) and the T x T
    same-question mask (training's episodes) give the same softmax and normalisation, with
    a question's options scattered anywhere in the row, packed episodes and padding."""
    import jax.numpy as jnp

    from gpo.models import common
    rng = np.random.default_rng(seed)
    question = np.concatenate([np.full(n, q) for q, n in enumerate(sizes)])
    episode = (question % 2).astype(np.int32)  # two episodes a row share question ids
    question = question // 2
    order = rng.permutation(len(question))
    pad = 64 - len(question)  # one shape for every example: one compilation
    question = np.concatenate([question[order], np.full(pad, -1)])[None].astype(np.int32)
    episode = np.concatenate([episode[order], np.zeros(pad, np.int32)])[None]
    mask = question >= 0
    logits = rng.normal(size=question.shape).astype(np.float32) * 5
    dense = common.softmax_within_questions(logits, question, mask, episode)
    dense_norm = common.normalise_within_questions(np.exp(logits), question, mask)
    old = common.SEGMENTS_FROM_POINTS
    common.SEGMENTS_FROM_POINTS = 1  # every row by segments
    try:
        segments = common.softmax_within_questions(logits, question, mask, episode)
        segments_norm = common.normalise_within_questions(np.exp(logits), question, mask)
    finally:
        common.SEGMENTS_FROM_POINTS = old
    np.testing.assert_allclose(segments, dense, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(segments_norm, dense_norm, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(segments)[~mask] == 0)
    sums = jnp.zeros(64).at[(episode * 32 + question)[mask]].add(np.asarray(segments)[mask])
    np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)
