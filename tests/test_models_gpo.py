import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gpo.models import GPO, GPOConfig, Points, head_class
from gpo.models.common import softmax_within_questions
from gpo.training.losses import cross_entropy, gaussian_nll, wasserstein
from tests.helpers import HEAD_E as E
from tests.helpers import encode_and_predict as run
from tests.helpers import hand_made_episodes as episode


@pytest.fixture(scope="module")
def model():
    return GPO(GPOConfig(embedding_dim=E, width=32, heads=4, layers=2, feedforward=32),
               rngs=nnx.Rngs(0))


def test_registered_and_paper_preset():
    assert head_class("gpo") is GPO and GPO.config_class is GPOConfig
    assert not (GPO.learns_training_groups or GPO.has_group_space or GPO.reads_references)
    c = GPOConfig.paper(4096)
    assert (c.layers, c.width, c.heads, c.feedforward, c.embed_depth) == (6, 128, 4, 128, 4)
    with pytest.raises(ValueError, match="divisible"):
        GPOConfig(embedding_dim=8, width=30, heads=4)


def test_probabilities_sum_to_one_within_each_question(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    prob, std = run(model, x_c, y_c, m_c, x_t, q_t, m_t)
    prob = np.asarray(prob)
    for b in range(2):
        for q in set(q_t[b][m_t[b]]):
            assert prob[b][q_t[b] == q].sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(prob[~m_t] == 0)
    assert np.all(np.asarray(std)[m_t] > 0)


def test_permuting_context_changes_nothing(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    base = np.asarray(run(model, x_c, y_c, m_c, x_t, q_t, m_t)[0])
    perm = np.random.default_rng(1).permutation(x_c.shape[1])
    out = np.asarray(run(model, x_c[:, perm], y_c[:, perm], m_c[:, perm], x_t, q_t, m_t)[0])
    np.testing.assert_allclose(out, base, atol=1e-5)


def test_permuting_targets_permutes_only_them(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    base = np.asarray(run(model, x_c, y_c, m_c, x_t, q_t, m_t)[0])
    perm = np.random.default_rng(2).permutation(x_t.shape[1])
    out = np.asarray(run(model, x_c, y_c, m_c, x_t[:, perm], q_t[:, perm], m_t[:, perm])[0])
    np.testing.assert_allclose(out, base[:, perm], atol=1e-5)


def test_padding_changes_nothing(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    base = np.asarray(run(model, x_c, y_c, m_c, x_t, q_t, m_t)[0])
    pad = lambda a, n, v: np.concatenate([a, np.full(a.shape[:1] + (n,) + a.shape[2:], v,  # noqa: E731
                                                     a.dtype)], 1)
    out = np.asarray(run(model, pad(x_c, 5, 3.0), pad(y_c, 5, 0.7), pad(m_c, 5, False),
                           pad(x_t, 4, -2.0), pad(q_t, 4, -1), pad(m_t, 4, False))[0])
    np.testing.assert_allclose(out[:, :9], base, atol=1e-5)
    # The masked-out context of episode 1 (points 5, 6) does not matter either.
    x_c2 = x_c.copy()
    x_c2[1, 5:] = 100.0
    out2 = np.asarray(run(model, x_c2, y_c, m_c, x_t, q_t, m_t)[0])
    np.testing.assert_allclose(out2, base, atol=1e-5)


def test_targets_do_not_see_each_other_but_context_matters(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    base = np.asarray(run(model, x_c, y_c, m_c, x_t, q_t, m_t)[0])
    x_t2 = x_t.copy()
    x_t2[0, 5:7] += 1.0  # change question 2's options only
    out = np.asarray(run(model, x_c, y_c, m_c, x_t2, q_t, m_t)[0])
    np.testing.assert_allclose(out[0, :5], base[0, :5], atol=1e-6)
    assert not np.allclose(out[0, 5:7], base[0, 5:7])
    y_c2 = y_c.copy()
    y_c2[0] = 1 - y_c2[0]
    assert not np.allclose(np.asarray(run(model, x_c, y_c2, m_c, x_t, q_t, m_t)[0])[0], base[0])


def test_one_encoded_context_serves_any_targets(model):
    """predict() reuses an encoded context: targets predicted in two calls equal one call."""
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    q_c = np.where(m_c, np.arange(m_c.shape[1])[None], -1)
    group = model.encode_context(Points.of(x_c, q_c, m_c, y_c))
    both = np.asarray(model.predict(group, Points.of(x_t, q_t, m_t))[0])
    first = np.asarray(model.predict(group, Points.of(x_t[:, :5], q_t[:, :5], m_t[:, :5]))[0])
    np.testing.assert_allclose(first, both[:, :5], atol=1e-6)


def test_losses():
    q = jnp.array([[0, 0, 1, 1, -1]])
    m = q >= 0
    prob = softmax_within_questions(jnp.array([[1.0, 1.0, 0.0, 2.0, 5.0]]), q, m)
    np.testing.assert_allclose(prob[0, :2], [0.5, 0.5], atol=1e-6)
    true = jnp.array([[0.5, 0.5, 0.2, 0.8, 0.0]])
    assert float(cross_entropy(true, true, m)) == pytest.approx(0.0, abs=1e-6)
    assert float(cross_entropy(prob, true, m)) > 0
    std = jnp.full((1, 5), 0.1)
    # -log N at the mean is log(std) + log(2 pi)/2 per point; 4 real points.
    expected = 4 * (np.log(0.1) + 0.5 * np.log(2 * np.pi))
    assert float(gaussian_nll(true, std, true, m)) == pytest.approx(expected, rel=1e-5)


def test_wasserstein_loss_is_the_metric():
    """The Wasserstein loss equals 1 - alignment summed over an episode's ordinal questions."""
    from gpo.evaluation.metrics import alignment
    rng = np.random.default_rng(0)
    ordinals = np.array([[1.0, 3.0, 2.0], [1.0, 2.0, 2.0]])  # unsorted; a nominal-ish tie
    pred, true = rng.dirichlet(np.ones(3), size=(1, 2)), rng.dirichlet(np.ones(3), size=(1, 2))
    mask = np.ones((2, 3), bool)
    expected = (1 - alignment(pred, true, ordinals, mask, np.ones((1, 2), bool)).per_pair_GxQ)
    from gpo.points import ordinal_positions
    position, gap = ordinal_positions(ordinals, mask)
    q = np.repeat(np.arange(2), 3)[None]
    loss = wasserstein(jnp.asarray(pred.reshape(1, 6)), jnp.asarray(true.reshape(1, 6)), q,
                       q >= 0, jnp.asarray(position.reshape(1, 6)), jnp.asarray(gap.reshape(1, 6)))
    assert float(loss) == pytest.approx(expected.sum(), abs=1e-5)


def test_attention_two_episodes_at_a_time_equals_one_batched_pass():
    """The CPU path of `attend` (episodes in pairs, logits recomputed in the backward pass)
    computes the same attention as one batched pass, and the same gradients to rounding."""
    import jax

    from gpo.models.gpo import _attention, attend
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (6, 10, 2, 4)) for key in keys[:3])
    mask = jax.random.uniform(keys[3], (6, 10, 10)) < 0.7  # which keys each query sees
    np.testing.assert_array_equal(jax.jit(attend)(q, k, v, mask),
                                  jax.jit(_attention)(q, k, v, mask))
    grads = [jax.jit(jax.grad(lambda q, f=f: (f(q, k, v, mask) ** 2).sum()))(q)
             for f in (attend, _attention)]
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
    odd = attend(q[:5], k[:5], v[:5], mask[:5])  # an odd batch: padded with an empty episode
    np.testing.assert_allclose(odd, _attention(q[:5], k[:5], v[:5], mask[:5]), atol=1e-6)
    assert jnp.isfinite(odd).all()


def test_bfloat16_matmuls_keep_float32_weights_and_stay_close(model):
    """matmul_dtype='bfloat16' multiplies in bf16 and accumulates in f32: the same weights
    (float32 either way) give predictions within bf16 rounding of the f32 model's."""
    import jax

    config = GPOConfig(embedding_dim=E, width=32, heads=4, layers=2, feedforward=32,
                       matmul_dtype="bfloat16")
    low = GPO(config, rngs=nnx.Rngs(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(low))} == {jnp.dtype("float32")}
    nnx.update(low, nnx.state(model))  # the f32 model's weights
    data = episode()
    prob, std = run(model, *data)
    prob_low, std_low = run(low, *data)
    assert prob_low.dtype == std_low.dtype == jnp.float32
    assert not np.array_equal(prob_low, prob)  # bf16 did round something
    np.testing.assert_allclose(prob_low, prob, atol=0.02)
    np.testing.assert_allclose(std_low, std, rtol=0.05)
    with pytest.raises(ValueError, match="matmul_dtype must be one of"):
        GPOConfig(embedding_dim=E, matmul_dtype="float16")
