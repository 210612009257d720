import csv

import numpy as np
import pytest

from gpo.data import SurveyDataError, load_globalopinionqa
from gpo.data.globalopinionqa import parse_selections


def test_real_subset(globalopinionqa):
    s = globalopinionqa
    assert len(s.questions) == 1270 and len(s.groups) == 130
    np.testing.assert_allclose(s.probs_GxQxO.sum(-1)[s.answered_GxQ], 1.0, atol=1e-5)
    # 'DK/Refused' is an option of the question but not of the distribution.
    q = next(q for q in s.questions if "DK/Refused" in q.options)
    assert "DK/Refused" not in q.answer_options
    assert s.answered_GxQ[s.group_index("United States")].sum() >= 150
    assert len({q.key for q in s.questions}) == 1270  # one text appears with two option sets


def test_parse_selections_is_literal_only():
    text = "defaultdict(<class 'list'>, {'Belgium': [0.21, 0.07, 0.72], 'Greece': [1, 0, 0]})"
    assert parse_selections(text) == {"Belgium": [0.21, 0.07, 0.72], "Greece": [1.0, 0.0, 0.0]}
    assert parse_selections("{'A': [0.5, 0.5]}") == {"A": [0.5, 0.5]}
    for evil in ("defaultdict(<class 'list'>, {'A': __import__('os').getcwd()})",
                 "__import__('os').system('echo pwned')",
                 "defaultdict(<class 'list'>, {'A': [1, 2]}) or exit()"):
        with pytest.raises(SurveyDataError, match="not a defaultdict/dict literal"):
            parse_selections(evil)
    with pytest.raises(SurveyDataError, match="must map country names to lists"):
        parse_selections("{'A': 0.5}")
    with pytest.raises(SurveyDataError, match="group 'A': non-numeric"):
        parse_selections("{'A': ['x', 0.5]}")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "selections", "options", "source"])
        w.writerows(rows)
    return path


def test_refusals_dropped_and_renormalised(tmp_path):
    path = write_csv(tmp_path / "g.csv", [[
        "Is it good?", "defaultdict(<class 'list'>, {'France': [0.3, 0.5, 0.2], "
        "'Chad': [0.0, 0.0, 1.0]})", "['Yes', 'No', 'DK/Refused']", "GAS"]])
    s = load_globalopinionqa(path)
    assert s.group_labels == ["country=France"]
    np.testing.assert_allclose(s.probs_GxQxO[0, 0], [0.375, 0.625])
    assert len(s.skipped) == 1 and s.skipped[0].startswith("Chad/")


@pytest.mark.parametrize("selections, options, message", [
    ("{'France': [0.5, 0.5]}", "['Yes', 'No', 'Maybe']", "2 values for 3 options"),
    ("{'France': [0.5, -0.5]}", "['Yes', 'No']", "negative"),
    ("{'France': [0.0, 0.0]}", "['Yes', 'No']", "all-zero"),
    ("{'France': [0.5, 0.5]}", "['Yes', 'No'", "options is not a literal list"),
])
def test_bad_rows_name_line_question_country(tmp_path, selections, options, message):
    path = write_csv(tmp_path / "g.csv", [["Q?", selections, options, ""]])
    with pytest.raises(SurveyDataError, match=message) as err:
        load_globalopinionqa(path)
    assert "g.csv" in str(err.value)
