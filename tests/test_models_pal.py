import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gpo
from gpo.models import PAL, PALConfig, Points, head_class
from gpo.models.pal import GroupWeights
from gpo.training import train
from tests.helpers import tiny_config

E = 12


@pytest.fixture(scope="module")
def model():
    return PAL(PALConfig(embedding_dim=E, n_groups=5, prototypes=4, latent=8, hidden=16,
                         inner_steps=300, inner_learning_rate=0.05), rngs=nnx.Rngs(0))


def questions(seed, n_questions=40, n_options=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, n_questions * n_options, E)).astype(np.float32)
    q = np.repeat(np.arange(n_questions), n_options)[None]
    return x, q, q >= 0


def predict(model, weights, x, q, m):
    return model.predict(weights, Points.of(x, q, m))


def test_registered_and_normalised(model):
    assert head_class("pal") is PAL and PAL.config_class is PALConfig
    assert PAL.learns_training_groups and PAL.has_group_space
    x, q, m = questions(0)
    prob, std = predict(model, GroupWeights(jnp.zeros((1, 4))), x, q, m)
    np.testing.assert_allclose(np.asarray(prob).reshape(40, 4).sum(1), 1.0, atol=1e-5)
    assert np.all(np.asarray(std) > 0)


@pytest.mark.parametrize("planted", [[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.5, 0.5]])
def test_adaptation_recovers_planted_mixture_weights(model, planted):
    """Context answers drawn from a known mixture: fitting only the K weights finds it."""
    x, q, m = questions(1, n_questions=60)
    truth = jnp.log(jnp.asarray([planted], jnp.float32) + 1e-6)
    y, _ = predict(model, GroupWeights(truth), x, q, m)
    fitted = model.encode_context(Points.of(x, q, m, y))
    fitted_y, _ = predict(model, fitted, x, q, m)
    np.testing.assert_allclose(np.asarray(fitted_y), np.asarray(y), atol=0.02)
    # Ideal points agree (mixture weights are identifiable up to the prototypes' geometry).
    prototypes = np.asarray(model.prototypes[...])
    np.testing.assert_allclose(np.asarray(fitted.mixture_BxK)[0] @ prototypes,
                               np.asarray(planted) @ prototypes, atol=0.1)


def test_adapting_many_groups_is_one_batched_call(model):
    x, q, m = questions(2)
    y = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 40)).reshape(3, 160)
    fitted = model.encode_context(Points.of(np.repeat(x, 3, 0), np.repeat(q, 3, 0),
                                            np.repeat(m, 3, 0), y.astype(np.float32)))
    assert fitted.logits_BxK.shape == (3, 4)
    assert not np.allclose(fitted.logits_BxK[0], fitted.logits_BxK[1])
    # Each group's weights are what fitting it alone gives: groups do not leak into each other.
    alone = model.encode_context(Points.of(x, q, m, y[1:2].astype(np.float32)))
    np.testing.assert_allclose(fitted.mixture_BxK[1], alone.mixture_BxK[0], atol=1e-5)


def test_pal_trains_with_per_group_weights_and_reloads(tiny, trained_run):
    survey, _ = tiny
    run_dir, result = trained_run("pal")
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    model = gpo.load(run_dir)
    assert model.head_config.n_groups == 12  # filled in from the survey
    learned = np.asarray(model.module.group_logits[...])
    assert learned.shape == (12, 3) and np.abs(learned).sum() > 0  # training groups moved
    q0, q1 = survey.questions[:2]
    group = model.adapt([(q0.key, survey.probs_GxQxO[0, 0, :len(q0.answer_options)])])
    assert group.mixture_weights.shape == (3,)
    np.testing.assert_allclose(group.mixture_weights.sum(), 1.0, atol=1e-5)
    again = gpo.load(run_dir).adapt(
        [(q0.key, survey.probs_GxQxO[0, 0, :len(q0.answer_options)])])
    np.testing.assert_array_equal(group.predict([q1.key])[0].probs,
                                  again.predict([q1.key])[0].probs)
    other = model.adapt([(q0.key, survey.probs_GxQxO[7, 0, :len(q0.answer_options)])])
    halfway = group.interpolate(other, 0.5)
    np.testing.assert_allclose(halfway.mixture_weights,
                               (group.mixture_weights + other.mixture_weights) / 2, atol=1e-5)
    np.testing.assert_allclose(group.interpolate(other, 1.0).predict([q1.key])[0].probs,
                               other.predict([q1.key])[0].probs, atol=1e-5)


def test_pal_refuses_group_mixup(tiny, tmp_path):
    """A mixed training group has no learned weights of its own: say so, do not train."""
    survey, _ = tiny
    config = tiny_config(steps=2, head="pal").override(["train.sampling.group_mixup=0.5"])
    with pytest.raises(ValueError, match="group_mixup.*'pal'"):
        train(config, survey, np.zeros((40, survey.max_options, 8), np.float32),
              tmp_path / "pal", progress=False)
