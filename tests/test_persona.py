import json

import numpy as np
import pytest

from gpo.data import SurveyDataError
from gpo.data.persona import make_persona_preferences, read_persona_statements
from gpo.evaluation.metrics import accuracy


def write_traits(folder, n_traits=6, n_statements=20):
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n_traits):
        with open(folder / f"trait-{t}.jsonl", "w") as f:
            for i in range(n_statements):
                f.write(json.dumps({"statement": f"trait {t} statement {i}",
                                    "answer_matching_behavior": " Yes" if i % 2 else " No"})
                        + "\n")


def test_types_prefer_statements_that_match_their_traits(tmp_path):
    write_traits(tmp_path / "persona")
    data = make_persona_preferences(tmp_path, seed=1, n_types=3, traits_per_type=2, n_users=9,
                                    n_pairs=50)
    s = data.survey
    assert s.probs_GxQxO.shape == (9, 50, 2)
    again = make_persona_preferences(tmp_path, seed=1, n_types=3, traits_per_type=2, n_users=9,
                                     n_pairs=50)
    np.testing.assert_array_equal(s.probs_GxQxO, again.survey.probs_GxQxO)
    for u in range(9):
        t = int(data.user_mixtures_UxT[u].argmax())
        for q in range(50):
            score = data.scores_TxQxO[t, q]
            p = s.probs_GxQxO[u, q]
            if score[0] != score[1]:
                assert p[int(score.argmax())] == 1.0  # one-hot on the preferred statement
            else:
                np.testing.assert_allclose(p, [0.5, 0.5])
    # Users of the same type answer identically; the type is recoverable from answers.
    same = [u for u in range(9) if data.user_mixtures_UxT[u].argmax() == 0]
    if len(same) > 1:
        np.testing.assert_array_equal(s.probs_GxQxO[same[0]], s.probs_GxQxO[same[1]])
    # Predicting a user by another user of the same type is exact; by a user of another type
    # it is not; a uniform prediction earns half credit where a preference exists.
    types = data.user_mixtures_UxT.argmax(1)
    a, b = next((u, v) for u in range(9) for v in range(u + 1, 9) if types[u] == types[v])
    c = next(v for v in range(9) if types[v] != types[a])
    scored = s.answered_GxQ[[a]]
    same_type = accuracy(s.probs_GxQxO[[b]], s.probs_GxQxO[[a]], s.option_mask_QxO, scored)
    other_type = accuracy(s.probs_GxQxO[[c]], s.probs_GxQxO[[a]], s.option_mask_QxO, scored)
    uniform = accuracy(np.full_like(s.probs_GxQxO[[a]], 0.5), s.probs_GxQxO[[a]],
                       s.option_mask_QxO, scored)
    assert same_type.mean == 1.0 and other_type.mean < 1.0 and uniform.mean == 0.5


def test_mixtures_give_soft_targets(tmp_path):
    write_traits(tmp_path)
    data = make_persona_preferences(tmp_path, n_types=2, traits_per_type=1, n_users=4,
                                    n_pairs=30, mixture_concentration=1.0)
    np.testing.assert_allclose(data.survey.probs_GxQxO.sum(-1), 1.0, atol=1e-6)
    assert ((data.survey.probs_GxQxO > 0) & (data.survey.probs_GxQxO < 1)).any()


def test_bad_persona_files(tmp_path):
    write_traits(tmp_path, n_traits=2)
    with pytest.raises(SurveyDataError, match="2 persona traits, need 8"):
        make_persona_preferences(tmp_path, n_types=4, traits_per_type=2)
    (tmp_path / "broken.jsonl").write_text('{"statement": "x"}\n')
    with pytest.raises(SurveyDataError, match="broken.jsonl', line 1"):
        read_persona_statements(tmp_path, "broken")


def test_real_persona_statements(data_root):
    folder = data_root / "anthropic_persona"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    data = make_persona_preferences(folder, seed=0, n_types=4, n_users=20, n_pairs=100)
    assert len(data.type_traits) == 4 and all(len(t) == 2 for t in data.type_traits)
    s = data.survey
    assert s.probs_GxQxO.shape == (20, 100, 2)
    assert 0.2 < (s.probs_GxQxO[..., 0] == 0.5).mean() < 0.9  # many pairs are ties per type
