import json

import numpy as np
import pytest

from gpo.data import SurveyDataError, load_dataset, load_opinionqa
from tests.helpers import good_group_file, write_wave

# -- the real files ---------------------------------------------------------------------------


def test_real_opinionqa_shape(opinionqa):
    assert len(opinionqa.groups) == 36
    assert len(opinionqa.questions) == 684
    assert len(opinionqa.complete_questions().questions) == 624
    attributes = {g.attribute for g in opinionqa.groups}
    assert attributes == {"AGE", "CREGION", "EDUCATION", "INCOME", "POLIDEOLOGY", "POLPARTY",
                          "RACE", "SEX"}
    names = {g.name for g in opinionqa.groups}
    assert "Refused" not in names and "nan" not in names  # pseudo-groups are not groups
    assert {"RACE=Other", "POLPARTY=Other"} <= set(opinionqa.group_labels)


def test_real_opinionqa_distributions(opinionqa):
    probs, answered = opinionqa.probs_GxQxO, opinionqa.answered_GxQ
    np.testing.assert_allclose(probs.sum(-1)[answered], 1.0, atol=1e-5)
    assert np.all(probs[~answered] == 0)
    assert np.all(probs[:, ~opinionqa.option_mask_QxO] == 0)
    # Refusals are options of the question but not of its distribution.
    q = opinionqa.questions[opinionqa.question_index("SAFECRIME_W26")]
    assert q.options[-1] == "Refused" and q.refusals[-1]
    assert q.answer_options == ("Very safe", "Somewhat safe", "Not too safe", "Not at all safe")
    # Hand check from AGE_data.json: 18-29 counts 119/263/67/14 (no refusals).
    g = opinionqa.group_index("AGE=18-29")
    qi = opinionqa.question_index("SAFECRIME_W26")
    np.testing.assert_allclose(probs[g, qi, :4], np.array([119, 263, 67, 14]) / 463, rtol=1e-6)
    # 30-49 has 2 refusals among 1195 respondents: dropped and renormalised.
    g = opinionqa.group_index("AGE=30-49")
    np.testing.assert_allclose(probs[g, qi, :4], np.array([364, 682, 145, 27]) / 1218, rtol=1e-6)
    assert opinionqa.respondents_GxQ[g, qi] == 1220


def test_real_fractional_ordinals_and_comma_options(opinionqa):
    q = opinionqa.questions[opinionqa.question_index("WORLDDANGER_W26")]
    assert q.ordinals == (1.0, 2.0, 1.5)
    # Options with commas survive intact (MC_options split them upstream).
    with_commas = [o for q in opinionqa.questions for o in q.answer_options if "," in o]
    assert "Yes, I own a gun" in with_commas


def test_real_option_typo_is_matched_case_insensitively(opinionqa):
    # POLICY3_W42's per-group files say 'noR' where info.csv says 'nor'.
    qi = opinionqa.question_index("POLICY3_W42")
    assert opinionqa.answered_GxQ[:, qi].all()
    assert np.all(opinionqa.probs_GxQxO[:, qi, 2] > 0)


def test_attribute_and_wave_filters(data_root):
    s = load_opinionqa(data_root / "opinionqa", attributes=["SEX"], waves=[26, 27])
    assert s.group_labels == ["SEX=Male", "SEX=Female"]
    assert {k.rsplit("_", 1)[1] for k in s.question_keys} == {"W26", "W27"}
    with pytest.raises(SurveyDataError, match=r"waves \[99\] not found"):
        load_opinionqa(data_root / "opinionqa", waves=[99])
    with pytest.raises(SurveyDataError, match=r"attributes \['RELIG'\]"):
        load_opinionqa(data_root / "opinionqa", attributes=["RELIG"], waves=[26])


def test_load_dataset_detects_layout(data_root):
    assert load_dataset(data_root / "opinionqa").name == "opinionqa"
    assert load_dataset(data_root / "globalopinionqa").name == "globalopinionqa"


def test_small_tree_loads(tmp_path):
    write_wave(tmp_path, per_group=good_group_file())
    s = load_opinionqa(tmp_path)
    assert s.group_labels == ["SEX=Male", "SEX=Female"]
    assert s.questions[0].answer_options == ("Favor", "Oppose, strongly")
    np.testing.assert_allclose(s.probs_GxQxO[:, 0], [[0.75, 0.25], [0.5, 0.5]])
    assert s.respondents_GxQ[0, 0] == 8


def test_only_refusals_is_a_missing_entry(tmp_path):
    data = good_group_file()
    data["FAV_W1"]["Female"] = {"Refused": 5.0}
    write_wave(tmp_path, per_group=data)
    s = load_opinionqa(tmp_path)
    assert s.group_labels == ["SEX=Male"]
    assert s.skipped == ("SEX=Female/FAV_W1",)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update({"GHOST_W1": {"Male": {"Favor": 1}}}), "question 'GHOST_W1': unknown"),
    (lambda d: d["FAV_W1"]["Male"].update({"Maybe": 2}), "option 'Maybe' is not one of"),
    (lambda d: d["FAV_W1"]["Male"].update({"Favor": -2}), "negative"),
    (lambda d: d["FAV_W1"]["Male"].update({"Favor": float("nan")}), "non-finite"),
    (lambda d: d["FAV_W1"]["Male"].update({"Favor": "many"}), "not a number"),
    (lambda d: d["FAV_W1"].update({"Female": {"Favor": 0, "Oppose, strongly": 0}}), "all-zero"),
])
def test_bad_group_file_names_file_question_group(tmp_path, mutate, message):
    data = good_group_file()
    mutate(data)
    write_wave(tmp_path, per_group=data)
    with pytest.raises(SurveyDataError, match=message) as err:
        load_opinionqa(tmp_path)
    assert "SEX_data.json" in str(err.value)


def test_bad_info_and_json(tmp_path):
    d = write_wave(tmp_path, per_group=good_group_file(),
                   info_rows=[["0", "FAV_W1", "{}", "q", "['Favor', 'Oppose'", "[1.0]"]])
    with pytest.raises(SurveyDataError, match="'FAV_W1': column 'references'"):
        load_opinionqa(tmp_path)
    write_wave(tmp_path, per_group=good_group_file())
    (d / "SEX_data.json").write_text("{not json")
    with pytest.raises(SurveyDataError, match="not valid JSON"):
        load_opinionqa(tmp_path)
    with pytest.raises(FileNotFoundError, match="no OpinionQA"):
        load_opinionqa(tmp_path / "human_resp" / "American_Trends_Panel_W1")


def test_group_distributions_from_weighted_responses(tmp_path):
    """RELIG has no per-group file: it is computed from responses.csv with survey weights."""
    rows = [["QKEY", "FAV_W3", "SCALE_W3", "RELIG", "SEX", "WEIGHT_W3"],
            ["1", "Favor", "A lot", "Catholic", "Male", "2.0"],
            ["2", "Oppose, strongly", "Some", "Catholic", "Female", "0.5"],
            ["3", "Refused", "None", "Catholic", "Male", "1.0"],
            ["4", "Favor", "", "Jewish", "Female", "1.5"],
            ["5", "Oppose, strongly", "Some", "Refused", "Male", "9.0"]]
    write_wave(tmp_path, wave=3, responses=rows,
               metadata=[["0", "SEX", "['Male', 'Female']"],
                         ["1", "RELIG", "['Catholic', 'Jewish', 'Muslim']"]])
    s = load_opinionqa(tmp_path, attributes=["RELIG"])
    assert s.group_labels == ["RELIG=Catholic", "RELIG=Jewish"]  # Muslim answered nothing
    fav, scale = s.question_index("FAV_W3"), s.question_index("SCALE_W3")
    cath, jew = s.group_index("Catholic"), s.group_index("Jewish")
    np.testing.assert_allclose(s.probs_GxQxO[cath, fav, :2], [2.0 / 2.5, 0.5 / 2.5])
    assert s.respondents_GxQ[cath, fav] == pytest.approx(3.5)  # the refusal's weight counts
    np.testing.assert_allclose(s.probs_GxQxO[cath, scale, :3], [2 / 3.5, 0.5 / 3.5, 1 / 3.5])
    np.testing.assert_allclose(s.probs_GxQxO[jew, fav, :2], [1.0, 0.0])
    assert not s.answered_GxQ[jew, scale]  # blank answer: not asked


def test_bad_responses_csv(tmp_path):
    rows = [["FAV_W3", "RELIG", "WEIGHT_W3"], ["Perhaps", "Catholic", "1.0"]]
    write_wave(tmp_path, wave=3, responses=rows,
               metadata=[["1", "RELIG", "['Catholic']"]])
    with pytest.raises(SurveyDataError, match="line 2, question 'FAV_W3': answer 'Perhaps'"):
        load_opinionqa(tmp_path, attributes=["RELIG"])
    write_wave(tmp_path, wave=3, responses=[["FAV_W3", "RELIG"], ["Favor", "Catholic"]],
               metadata=[["1", "RELIG", "['Catholic']"]])
    with pytest.raises(SurveyDataError, match="no column 'WEIGHT_W3'"):
        load_opinionqa(tmp_path, attributes=["RELIG"])


def intersection_file(wave=1):
    """An intersection file in the official nested layout (POLPARTY_SEX)."""
    return {f"FAV_W{wave}": {
        "MC_options": ["Favor", "Oppose", " strongly", "Refused"],
        "question_text": "Do you favor it?",
        "Democrat": {"Male": {"Favor": 3.0, "Oppose, strongly": 1.0},
                     "Female": {"Favor": 2.0, "Refused": 1.0},  # lacks an option, a refusal
                     "Refused": {"Favor": 7.0}},
        "Republican": {"Male": {"Oppose, strongly": 4.0}, "nan": {"Favor": 1.0}},
        "Refused": {"Male": {"Favor": 1.0}},
        "marginals": {"Democrat": {"Favor": 5.0, "Oppose, strongly": 1.0}}}}


def test_flat_and_nested_files_load_together(tmp_path):
    d = write_wave(tmp_path, per_group=good_group_file(),
                   metadata=[["0", "SEX", "['Male', 'Female']"],
                             ["1", "POLPARTY", "['Republican', 'Democrat']"]])
    (d / "POLPARTY_SEX_data.json").write_text(json.dumps(intersection_file()))
    (d / "NONE_data.json").write_text(json.dumps(good_group_file()))
    s = load_opinionqa(tmp_path)
    assert s.group_labels == ["SEX=Male", "SEX=Female", "POLPARTY_SEX=Democrat & Male",
                              "POLPARTY_SEX=Democrat & Female",
                              "POLPARTY_SEX=Republican & Male"]
    g = s.group_index("POLPARTY_SEX=Democrat & Female")
    np.testing.assert_allclose(s.probs_GxQxO[g, 0], [1.0, 0.0])  # refusal dropped
    assert s.respondents_GxQ[g, 0] == 3
    np.testing.assert_allclose(s.probs_GxQxO[s.group_index("Republican & Male"), 0], [0, 1])
    assert any("NONE_data.json: not a demographic attribute" in x for x in s.skipped)
    # attributes= still filters, and an intersection can be asked for alone.
    only = load_opinionqa(tmp_path, attributes=["POLPARTY_SEX"])
    assert [g.attribute for g in only.groups] == ["POLPARTY_SEX"] * 3


def test_bad_nested_entry_names_file_question_and_group(tmp_path):
    data = intersection_file()
    data["FAV_W1"]["Democrat"]["Male"] = {"Maybe": 1.0}
    d = write_wave(tmp_path, per_group=good_group_file())
    (d / "POLPARTY_SEX_data.json").write_text(json.dumps(data))
    with pytest.raises(SurveyDataError, match=r"POLPARTY_SEX_data.json.*question 'FAV_W1', "
                                              r"group 'Democrat & Male': option 'Maybe'"):
        load_opinionqa(tmp_path)
