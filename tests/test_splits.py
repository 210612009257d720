"""Group splits (protocols A and B), validation groups and evaluation tasks."""

import numpy as np
import pytest

from gpo.data import make_synthetic_survey
from gpo.data.splits import make_eval_task, make_split, validation_split


@pytest.fixture(scope="module")
def survey():
    return make_synthetic_survey(seed=1, n_groups=10, n_questions=60).survey


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


def test_validation_groups_are_training_groups_and_never_test_groups(survey):
    split = make_split(make_synthetic_survey(seed=1, n_groups=30, n_questions=10).survey, "A")
    train, validation = validation_split(split, 0.25, seed=0)
    assert len(validation) == 3 and set(validation) <= set(split.train_groups)
    assert not set(validation) & set(train) and not set(validation) & set(split.test_groups)
    assert np.array_equal(validation_split(split, 0.25, seed=0)[1], validation)  # seeded
    assert len(validation_split(split, 0.0, seed=0)[1]) == 0
