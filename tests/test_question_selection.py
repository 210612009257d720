"""Question selection: it asks what tells groups apart, beats random questions where the truth
is known, reads no answer of the group it chooses for, is deterministic with ties to the
earlier candidate, and works through the API and the CLI for every head."""

from __future__ import annotations

import dataclasses
import html
import json

import jax
import numpy as np
import pytest
from flax import nnx

import gpo
from gpo.cli import main as cli_main
from gpo.data.splits import make_eval_task, make_split
from gpo.data.survey import Group, Question, survey_from_distributions
from gpo.evaluation.baselines import group_regression
from gpo.evaluation.evaluate import chosen_tasks
from gpo.evaluation.metrics import score_predictions
from gpo.models import ReferenceConfig, ReferenceRegression
from gpo.points import EmbeddingStats, References, gather_points, survey_option_table
from gpo.question_selection import CRITERIA, QuestionSelector


def planted_survey(seed=0, n_groups=24, n_questions=60, informative=12):
    """Groups differ along two latent traits; only the first `informative` questions show
    them (each group answers the others exactly as every other group does)."""
    rng = np.random.default_rng(seed)
    traits = rng.normal(size=(n_groups, 2))
    questions = [Question(f"Q{q:02d}", f"question {q}", ("yes", "no", "maybe"),
                          (False, False, False), (1.0, 2.0, 3.0)) for q in range(n_questions)]
    loadings = rng.normal(size=(n_questions, 2, 3))
    base = rng.normal(size=(n_questions, 3))
    answers = {}
    for g in range(n_groups):
        logits = base + np.where(np.arange(n_questions)[:, None] < informative,
                                 np.einsum("t,qto->qo", traits[g], loadings), 0.0)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        answers[Group(f"g{g:02d}")] = {q.key: probs[i] for i, q in enumerate(questions)}
    return survey_from_distributions("planted", questions, answers)


@pytest.fixture(scope="module")
def planted():
    survey = planted_survey()
    split = make_split(survey, "A", seed=0, train_fraction=0.5)
    embeddings = np.random.default_rng(1).normal(size=survey.option_mask_QxO.shape + (8,))
    table = survey_option_table(embeddings.astype(np.float32),
                                EmbeddingStats.fit(embeddings, survey.option_mask_QxO), survey,
                                References.from_survey(survey, split.train_groups,
                                                       split.train_questions))
    head = ReferenceRegression(ReferenceConfig(embedding_dim=8), rngs=nnx.Rngs(0))
    return survey, split, table, head


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_asks_what_tells_groups_apart(planted, criterion):
    survey, split, table, head = planted
    selector = QuestionSelector(head, table, survey.option_mask_QxO)
    picks = selector.select(6, np.arange(60), criterion)
    assert [p.question < 12 for p in picks] == [True] * 6
    assert all(p.gain > 0 for p in picks)
    assert picks[0].gain >= picks[-1].gain  # diminishing returns


def test_chosen_questions_beat_random_ones_where_the_truth_is_known(planted):
    survey, split, table, head = planted
    selector = QuestionSelector(head, table, survey.option_mask_QxO)
    uninformative = np.arange(60) >= 12  # every method predicts these exactly
    for k in (2, 4):
        chosen = chosen_tasks(selector, survey, split, (k,), "metric")[k]
        errors = []
        for task in [chosen] + [make_eval_task(survey, split, k, seed=s) for s in range(5)]:
            scored = task.excluding(np.broadcast_to(uninformative, task.target_GxQ.shape))
            errors.append(1 - score_predictions(survey, scored, group_regression(
                survey, split, task), "wasserstein").mean)
        assert errors[0] < 0.7 * np.mean(errors[1:]), (k, errors)


def test_a_selection_reads_no_answer_of_the_groups_it_chooses_for(planted):
    """Test groups' answers rewritten at random: the same picks (only training groups'
    answers, and which questions a group answered, are read)."""
    survey, split, table, head = planted
    selector = QuestionSelector(head, table, survey.option_mask_QxO)
    before = chosen_tasks(selector, survey, split, (5,), "metric")[5].context_GxQ
    rng = np.random.default_rng(7)
    probs = survey.probs_GxQxO.copy()
    probs[split.test_groups] = rng.dirichlet(np.ones(3), size=probs[split.test_groups].shape[:2])
    shuffled = dataclasses.replace(survey, probs_GxQxO=probs.astype(np.float32))
    after = chosen_tasks(selector, shuffled, split, (5,), "metric")[5].context_GxQ
    np.testing.assert_array_equal(before, after)


def test_picks_are_deterministic_and_ties_go_to_the_earlier_candidate(planted):
    survey, split, table, head = planted
    O = survey.max_options
    # question 59 becomes a copy of question 3: every reference answered both alike
    copied = jax.tree.map(np.array, table)
    for field in ("reference_RxS", "reference_known_RxS", "reference_respondents_RxS"):
        getattr(copied, field)[59 * O:60 * O] = getattr(copied, field)[3 * O:4 * O]
    selector = QuestionSelector(head, copied, survey.option_mask_QxO)
    first = [p.question for p in selector.select(4, np.arange(60), "posterior")]
    assert first == [p.question for p in selector.select(4, np.arange(60), "posterior")]
    both = [p.question for p in selector.select(1, [3, 59], "posterior")]
    reversed_ = [p.question for p in selector.select(1, [59, 3], "posterior")]
    assert both == [3] and reversed_ == [59]


def test_the_posterior_is_the_heads_own(planted):
    """The selector's covariance of a context is the head's posterior at the selector's
    fixed reliabilities, and encode_context's where the reliabilities are the context's."""
    survey, split, table, head = planted
    selector = QuestionSelector(head, table, survey.option_mask_QxO)
    prepared = selector._prepare("posterior", np.arange(60))
    batch = selector._batch([[0, 5, 7]], [[0.0, 0.0, 0.0]])
    covariance, _ = prepared.posteriors(selector, [[0, 5, 7]], [[0.0] * 3])
    points = gather_points(jax.device_put(table), batch, "context")
    fixed = head.posterior(points, np.asarray(prepared.scale_S)[None])
    np.testing.assert_allclose(covariance[0], np.asarray(fixed.covariance_BxSxS[0]),
                               atol=1e-5)
    own = head.encode_context(points)
    refit = head.posterior(points, head.reference_scale(points))
    np.testing.assert_allclose(np.asarray(own.covariance_BxSxS),
                               np.asarray(refit.covariance_BxSxS), atol=1e-6)


def test_the_api_suggests_first_and_next_questions(tiny, trained_run):
    survey, _ = tiny
    model = gpo.load(trained_run("reference")[0])
    first = model.suggest_questions(5)
    assert first.criterion == model.default_criterion and len(first) == 5
    assert len(set(first.keys)) == 5 and all(k in model.question_keys for k in first.keys)
    assert [s.expected_gain for s in first] == sorted((s.expected_gain for s in first),
                                                      reverse=True)
    text = str(first)
    assert text.startswith("Questions to ask, best first") and first[0].question in text
    page = first._repr_html_()  # in a notebook: a table, a row per question, escaped text
    assert page.startswith("<table><caption>Questions to ask") and page.count("<tr>") == 1 + 5
    assert html.escape(first[0].question) in page and "<script" not in page
    rows = first.records()
    assert rows[0]["rank"] == 1 and rows[0]["key"] == first[0].key
    # after answering the first two, the next ones continue the same greedy design
    g = 11
    context = [(key, survey.probs_GxQxO[g, survey.question_index(key),
                                        :len(model.options(key))]) for key in first.keys[:2]]
    group = model.adapt(context)
    assert group.suggest_questions(3).keys == first.keys[2:5]
    # the answers' values do not move the next questions (a linear-Gaussian posterior)
    other = [(key, np.roll(p, 1)) for key, p in context]
    assert model.adapt(other).suggest_questions(3).keys == first.keys[2:5]


def test_candidates_are_restricted_new_ones_come_last_and_all_answered_is_refused(
        tiny, trained_run):
    survey, _ = tiny
    model = gpo.load(trained_run("reference")[0])
    keys = model.question_keys[:6]
    picks = model.suggest_questions(8, keys + [("Is tea good?", ["Yes", "No"])])
    assert set(picks.keys[:6]) == set(keys) and picks.keys[6] is None and len(picks) == 7
    assert picks[6].expected_gain == 0 and "new to the run" in picks[6].note
    answered = model.adapt([(k, [1.0] * len(model.options(k))) for k in keys])
    with pytest.raises(ValueError, match="already answered every candidate"):
        answered.suggest_questions(2, keys)
    for bad, message in ((["NOPE"], "candidates item 0: unknown question key 'NOPE'"),
                         ("Q1", "must be a list"), ([3], "a candidate is a survey key")):
        with pytest.raises(ValueError, match=message):
            model.suggest_questions(2, bad)
    with pytest.raises(ValueError, match="n must be a positive"):
        model.suggest_questions(0)


def test_heads_without_a_posterior_use_the_design(trained_run):
    model = gpo.load(trained_run("gpo")[0])
    assert model.default_criterion == "design"
    assert len(model.suggest_questions(3)) == 3
    with pytest.raises(ValueError, match="reads the reference head's posterior.*'gpo'"):
        model.suggest_questions(3, criterion="metric")
    with pytest.raises(ValueError, match="criterion must be one of"):  # a typo is named so
        model.suggest_questions(3, criterion="best")


def test_cli_suggest_prints_the_questions_and_json(tiny, trained_run, tmp_path, capsys):
    survey, _ = tiny
    run_dir = trained_run("reference")[0]
    cli_main(["suggest", "--run-dir", str(run_dir), "--n", "3"])
    out = capsys.readouterr().out
    assert out.startswith("Questions to ask") and out.count("\n") == 4
    q = survey.questions[0]
    (tmp_path / "context.json").write_text(json.dumps(
        [{"question": q.key, "distribution": [1.0] * len(q.answer_options)}]))
    cli_main(["suggest", "--run-dir", str(run_dir), "--n", "2", "--context",
              str(tmp_path / "context.json"), "--json"])
    records = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in records] == [1, 2] and q.key not in [r["key"] for r in records]
    with pytest.raises(SystemExit) as exit_:
        cli_main(["suggest", "--run-dir", str(run_dir), "--criterion", "best"])
    assert exit_.value.code == 2
