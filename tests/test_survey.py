import numpy as np
import pytest

from gpo.data import Group, Question, Survey, SurveyBuilder, SurveyDataError
from gpo.data.survey import survey_from_distributions


def question(key="Q1", n=3, refusal=True):
    options = tuple(f"opt{i}" for i in range(n)) + (("Refused",) if refusal else ())
    return Question(key, f"text of {key}", options, (False,) * n + ((True,) if refusal else ()),
                    tuple(float(i + 1) for i in range(n)))


def test_builder_renormalises_and_masks_missing():
    b = SurveyBuilder("t")
    b.add_question(question("Q1", 3))
    b.add_question(question("Q2", 2))
    b.add_answer(Group("a", "X"), "Q1", [1, 1, 2], respondents=5)
    b.add_answer(Group("b", "X"), "Q2", [3, 1])
    s = b.build()
    assert s.probs_GxQxO.shape == (2, 2, 3)
    np.testing.assert_allclose(s.probs_GxQxO[0, 0], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(s.probs_GxQxO[1, 1], [0.75, 0.25, 0.0])
    assert s.answered_GxQ.tolist() == [[True, False], [False, True]]
    assert s.respondents_GxQ[0, 0] == 5 and np.isnan(s.respondents_GxQ[1, 1])
    assert s.option_mask_QxO.tolist() == [[True, True, True], [True, True, False]]
    assert s.ordinals_QxO[1].tolist() == [1.0, 2.0, 2.0]


@pytest.mark.parametrize("values, message", [
    ([1, np.nan, 1], "non-finite"),
    ([1, -1, 1], "negative"),
    ([0, 0, 0], "all-zero"),
    ([1, 1], "2 values for 3 answer options"),
])
def test_bad_answers_name_question_and_group(values, message):
    b = SurveyBuilder("t")
    b.add_question(question("Q7", 3), source="wave.json")
    with pytest.raises(SurveyDataError, match=message) as err:
        b.add_answer(Group("Women", "SEX"), "Q7", values, source="wave.json")
    assert "'Q7'" in str(err.value) and "SEX=Women" in str(err.value)
    assert "wave.json" in str(err.value)


def test_unknown_key_duplicate_answers_and_empty():
    b = SurveyBuilder("t")
    with pytest.raises(SurveyDataError, match="unknown question key"):
        b.add_answer(Group("a"), "NOPE", [1, 2])
    with pytest.raises(SurveyDataError, match="empty dataset"):
        b.build()
    b.add_question(question())
    b.add_answer(Group("a"), "Q1", [1, 2, 3])
    with pytest.raises(SurveyDataError, match="duplicate answers"):
        b.add_answer(Group("a"), "Q1", [1, 2, 3])


def test_duplicate_groups_and_keys_rejected():
    q = question()
    probs = np.full((2, 1, 3), 1 / 3, np.float32)
    ok = np.ones((2, 1), bool)
    with pytest.raises(SurveyDataError, match="duplicate group 'X=a'"):
        Survey((q,), (Group("a", "X"), Group("a", "X")), probs, ok, np.ones((2, 1)))
    with pytest.raises(SurveyDataError, match="duplicate question key 'Q1'"):
        Survey((q, q), (Group("a"),), np.ones((1, 2, 3)), np.ones((1, 2), bool),
               np.ones((1, 2)))
    with pytest.raises(SurveyDataError, match="empty dataset"):
        Survey((), (Group("a"),), np.zeros((1, 0, 0)), np.zeros((1, 0), bool), np.zeros((1, 0)))
    # Same name in two attributes is two groups (OpinionQA has 'Other' in RACE and POLPARTY).
    s = Survey((q,), (Group("Other", "RACE"), Group("Other", "POLPARTY")), probs, ok,
               np.ones((2, 1)))
    assert s.group_index("RACE=Other") == 0
    with pytest.raises(KeyError, match="ambiguous"):
        s.group_index("Other")


def test_question_validation():
    with pytest.raises(SurveyDataError, match="2 answer options .* but 3 ordinals"):
        Question("Q", "t", ("a", "b", "R"), (False, False, True), (1.0, 2.0, 3.0))
    with pytest.raises(SurveyDataError, match="no answer options"):
        Question("Q", "t", ("R",), (True,), ())
    with pytest.raises(SurveyDataError, match="conflicting definitions"):
        b = SurveyBuilder("t")
        b.add_question(question("Q", 3))
        b.add_question(question("Q", 2))


def test_pairwise_preference_is_a_two_option_question_for_a_group_of_one():
    pair = Question("pair0", "Which response is better?", ("response A", "response B"),
                    (False, False), (1.0, 2.0))
    s = survey_from_distributions("pairs", [pair], {Group("user7", "user"): {"pair0": [0, 1]}})
    assert s.probs_GxQxO[0, 0].tolist() == [0.0, 1.0]


def test_select_and_complete_questions():
    b = SurveyBuilder("t")
    for key, n in (("Q1", 2), ("Q2", 4)):
        b.add_question(question(key, n))
    b.add_answer(Group("a"), "Q1", [1, 1])
    b.add_answer(Group("a"), "Q2", [1, 1, 1, 1])
    b.add_answer(Group("b"), "Q1", [1, 3])
    s = b.build()
    c = s.complete_questions()
    assert c.question_keys == ["Q1"] and c.max_options == 2
    assert c.probs_GxQxO.shape == (2, 1, 2)
    assert s.select(groups=[1]).group_labels == ["b"]
    assert s.drop_sparse(2).group_labels == ["a"]
