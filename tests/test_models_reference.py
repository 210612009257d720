"""The reference-group head: the affine group regression in closed form, plus what it learns;
it never reads a meta-training group's own answers, reads a planted context, falls back to its
text prior where no reference group answered, and keeps its reference answers in the run."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

import gpo
from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data.splits import make_eval_task, make_split
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.evaluation.baselines import group_regression
from gpo.evaluation.evaluate import evaluate_run, predict_task
from gpo.evaluation.metrics import score_predictions
from gpo.models import Points, ReferenceConfig, ReferenceRegression, forward, head_class
from gpo.points import EmbeddingStats, References, survey_option_table
from gpo.training import train
from gpo.training.sampling import EpisodeSampler
from tests.helpers import tiny_sampling


@pytest.fixture
def data(tiny):
    return tiny


def table_for(survey, embeddings, split):
    references = References.from_survey(survey, split.train_groups, split.train_questions)
    return jax.device_put(survey_option_table(
        embeddings, EmbeddingStats.fit(embeddings, survey.option_mask_QxO), survey,
        references))


def test_registered_as_the_default_head():
    assert head_class("reference") is ReferenceRegression
    assert ReferenceRegression.reads_references and not ReferenceRegression.has_group_space
    assert RunConfig().head == "reference"
    assert ReferenceRegression.default_loss("wasserstein") == "wasserstein+nll"
    assert ReferenceRegression.default_loss("js") == "kl+nll"


@pytest.mark.parametrize("penalty", [3e-3, 3e-2])
def test_untrained_head_is_the_group_regression(data, penalty):
    """With a fixed ridge and no respondent counts the closed form is the library's affine
    group regression (penalty = S x ridge): the head starts where the baseline is."""
    survey, embeddings = data
    split = make_split(survey, "A", seed=0)
    S = len(split.train_groups)
    head = ReferenceRegression(ReferenceConfig(embedding_dim=32, ridge=penalty / S),
                               rngs=nnx.Rngs(0))
    for k in (3, 10):
        task = make_eval_task(survey, split, k, seed=1)
        prob, std = predict_task(head, table_for(survey, embeddings, split), survey, task,
                                 split.train_groups)
        expected = group_regression(survey, split, task, penalty=penalty)
        scored = task.target_GxQ[..., None] & survey.option_mask_QxO[None]
        np.testing.assert_allclose(prob[scored], expected[scored], atol=2e-5)
        assert np.all(std[scored] > 0)


def test_a_training_group_never_reads_its_own_answers(data):
    """While meta-training, each episode's predictions do not change however its own group's
    reference column is rewritten: the column is masked before the head sees it."""
    survey, embeddings = data
    split = make_split(survey, "A", seed=0)
    table = table_for(survey, embeddings, split)
    sampler = EpisodeSampler(survey, split.train_groups, split.train_questions,
                             tiny_sampling(batch_size=6, context_range=(3, 8),
                                           target_range=(3, 8)),
                             reference_groups=split.train_groups)
    batch = sampler.sample(0)
    head = ReferenceRegression(ReferenceConfig(embedding_dim=32), rngs=nnx.Rngs(0))
    base = np.asarray(forward(head, table, batch, training=True)[0])
    column = {g: s for s, g in enumerate(split.train_groups)}
    for b, g in enumerate(batch.group_B):
        rewritten = np.array(table.reference_RxS)
        rewritten[:, column[g]] = np.random.default_rng(b).uniform(size=rewritten.shape[0])
        changed = dataclasses.replace(table, reference_RxS=rewritten)
        out = np.asarray(forward(head, changed, batch, training=True)[0])
        np.testing.assert_array_equal(out[b], base[b])
        others = [c for c, h in enumerate(batch.group_B) if h != g]
        assert not np.allclose(out[others], base[others])  # others do read that column


def test_reads_a_planted_context(tmp_path):
    """Every group agrees with every statement at its own rate: the prior is useless, the
    context says everything; a short run is near perfect on unseen groups."""
    survey, embeddings = make_planted_agreement_survey()
    config = RunConfig(data=DataConfig(eval_k=10), embed=EmbedConfig(model="lexical"),
                       train=TrainConfig.reference(30))
    train(config, survey, embeddings, tmp_path, progress=False)
    evaluation = evaluate_run(tmp_path, survey, (2, 10))
    for k in (2, 10):
        scores = {m: evaluation.per_split(m, k)[0] for m in evaluation.methods}
        assert scores["population prior"] < 0.8 and scores["REFERENCE"] > 0.97, scores


def test_text_prior_where_no_reference_answered(data):
    """Points no reference group answered get the text prior (protocol B, new questions):
    finite, normalised, and the same whatever the context says."""
    survey, embeddings = data
    head = ReferenceRegression(ReferenceConfig(embedding_dim=32), rngs=nnx.Rngs(0))
    x = np.asarray(embeddings[:6, :survey.max_options].reshape(1, -1, 32))
    q = np.repeat(np.arange(6), survey.max_options)[None]
    mask = np.tile(survey.option_mask_QxO[:6].reshape(1, -1), (1, 1))
    q = np.where(mask, q, -1)
    targets = Points.of(x, q, mask)
    probs = []
    for y in (np.full(mask.shape, 0.5), np.where(mask, 1.0, 0.0)):
        group = head.encode_context(Points.of(x, q, mask, y.astype(np.float32)))
        prob, std = head.predict(group, targets)
        probs.append(np.asarray(prob))
        assert np.all(np.isfinite(prob)) and np.all(np.asarray(std)[mask] > 0)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
    per_question = np.bincount(q[mask], probs[0][mask])
    np.testing.assert_allclose(per_question, 1.0, atol=1e-5)


def test_api_weights_respondents_and_new_questions(data, trained_run):
    survey, embeddings = data
    model = gpo.load(trained_run("reference")[0])
    assert model.n_references == len(make_split(survey, "A", seed=0).train_groups)
    g = 11  # a test group of split 0
    context = [(q.key, survey.probs_GxQxO[g, i, :len(q.answer_options)])
               for i, q in enumerate(survey.questions[:8])]
    group = model.adapt(context)
    weights = group.features["reference_weights"]
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-5)
    # Named by the training groups they weigh, printed largest first.
    train_labels = [survey.group_labels[i] for i in make_split(survey, "A", seed=0).train_groups]
    assert sorted(weights.labels) == sorted(train_labels)
    heaviest = max(weights.items(), key=lambda item: item[1])
    assert str(weights.round(2)).splitlines()[0].split() == [heaviest[0],
                                                             f"{round(heaviest[1], 2):+.4f}"]
    assert weights[heaviest[0]] == heaviest[1]
    target = survey.questions[20]
    fitted = group.predict([target.key])[0]
    # Few respondents: noisy answers, so the fit moves less from the population prior.
    split = make_split(survey, "A", seed=0)
    prior = survey.probs_GxQxO[split.train_groups, 20, :len(target.answer_options)].mean(0)
    small = model.adapt(context, respondents=[2] * 8).predict([target.key])[0]
    assert np.abs(small.probs - prior).sum() < np.abs(fitted.probs - prior).sum()
    # A question new to the run: no reference answered it; the text prior answers.
    new = group.predict([("Should the town build a new library?", ["Yes", "No"])])[0]
    np.testing.assert_allclose(new.probs.sum(), 1.0, atol=1e-5)
    assert str(fitted).startswith(target.text)


def test_a_context_without_counts_is_not_worse_than_the_untrained_head(tmp_path):
    """A planted survey with the real data's noise: groups mix latent types, deviate from
    the mix on every question (logit noise), and answer through 100 to 3,000 respondents
    (multinomial noise). Given contexts without counts, the meta-trained head (which then
    assumes the reference groups' typical count) predicts the true distributions at least
    as well as the untrained head (the affine regression) on the same contexts."""
    from gpo.data import make_synthetic_survey
    from gpo.embed import LexicalEmbedder, embed_survey
    mixed = make_synthetic_survey(seed=5, n_groups=30, n_questions=80).survey
    rng = np.random.default_rng(0)
    sizes = np.round(np.exp(rng.uniform(np.log(100), np.log(3000), len(mixed.groups))))
    true, observed = np.zeros_like(mixed.probs_GxQxO), np.zeros_like(mixed.probs_GxQxO)
    for g, n in enumerate(sizes):
        for q, k in enumerate(mixed.n_options_Q):
            logit = np.log(mixed.probs_GxQxO[g, q, :k] + 1e-6) + 0.3 * rng.normal(size=k)
            true[g, q, :k] = np.exp(logit) / np.exp(logit).sum()
            observed[g, q, :k] = rng.multinomial(int(n), true[g, q, :k] / true[g, q, :k].sum(
                )) / n
    truth = dataclasses.replace(mixed, probs_GxQxO=true)
    survey = dataclasses.replace(mixed, probs_GxQxO=observed, respondents_GxQ=np.repeat(
        sizes[:, None], len(mixed.questions), 1).astype(np.float32))
    embeddings = embed_survey(survey, LexicalEmbedder(dim=32))
    config = RunConfig(data=DataConfig(eval_k=5), embed=EmbedConfig(model="lexical", dim=32),
                       train=TrainConfig.reference(150, batch_size=8))
    train(config, survey, embeddings, tmp_path, progress=False)
    model = gpo.load(tmp_path)
    assert model.head_config.count_free == "references"  # the default
    split = make_split(survey, "A", seed=0)
    untrained = ReferenceRegression(ReferenceConfig(embedding_dim=32), rngs=nnx.Rngs(0))
    table = table_for(survey, embeddings, split)
    scores = {"trained": [], "untrained": []}
    for k in (3, 5, 10, 20):
        task = make_eval_task(survey, split, k, seed=1)
        for name, head in (("trained", model.module), ("untrained", untrained)):
            prob, _ = predict_task(head, table, survey, task, split.train_groups,
                                   with_counts=False)
            scores[name].append(score_predictions(truth, task, prob).mean)
    assert np.mean(scores["trained"]) >= np.mean(scores["untrained"]), scores
