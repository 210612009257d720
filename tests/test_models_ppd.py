import numpy as np
import pytest
from flax import nnx

from gpo.models import PPD, Points, PPDConfig, head_class
from tests.helpers import HEAD_E as E
from tests.helpers import encode_and_predict as run
from tests.helpers import hand_made_episodes as episode


def encode(model, x_c, y_c, m_c):
    q_c = np.where(m_c, np.arange(m_c.shape[1])[None], -1)
    return model.encode_context(Points.of(x_c, q_c, m_c, y_c))


@pytest.fixture(scope="module")
def model():
    return PPD(PPDConfig(embedding_dim=E, width=32, heads=4, feedforward=32, set_layers=2,
                         group_tokens=3, predictor_layers=2), rngs=nnx.Rngs(0))


def test_registered_and_shaped(model):
    assert head_class("ppd") is PPD and PPD.config_class is PPDConfig and PPD.has_group_space
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    z = encode(model, x_c, y_c, m_c).z_BxMxD
    assert z.shape == (2, 3, 32)
    prob, std = run(model, x_c, y_c, m_c, x_t, q_t, m_t)
    prob = np.asarray(prob)
    for b in range(2):
        for q in set(q_t[b][m_t[b]]):
            assert prob[b][q_t[b] == q].sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.asarray(std)[m_t] >= 0.05)


def test_group_embedding_tracks_context_not_its_order(model):
    x_c, y_c, m_c, *_ = episode()
    z = np.asarray(encode(model, x_c, y_c, m_c).z_BxMxD)
    perm = np.random.default_rng(3).permutation(x_c.shape[1])
    z_perm = np.asarray(encode(model, x_c[:, perm], y_c[:, perm], m_c[:, perm]).z_BxMxD)
    np.testing.assert_allclose(z_perm, z, atol=1e-5)
    y_other = y_c.copy()
    y_other[0, :3] = 1 - y_other[0, :3]
    z_other = np.asarray(encode(model, x_c, y_other, m_c).z_BxMxD)
    assert not np.allclose(z_other[0], z[0], atol=1e-4)
    np.testing.assert_allclose(z_other[1], z[1], atol=1e-6)  # the other episode is untouched


def test_targets_depend_only_on_themselves_and_z(model):
    x_c, y_c, m_c, x_t, q_t, m_t = episode()
    base = np.asarray(run(model, x_c, y_c, m_c, x_t, q_t, m_t)[0])
    x_t2 = x_t.copy()
    x_t2[0, 5:7] += 1.0
    out = np.asarray(run(model, x_c, y_c, m_c, x_t2, q_t, m_t)[0])
    np.testing.assert_allclose(out[0, :5], base[0, :5], atol=1e-6)  # the others: untouched
    assert not np.allclose(out[0, 5:7], base[0, 5:7], atol=1e-4)  # the changed ones move
    np.testing.assert_allclose(out[1], base[1], atol=1e-6)  # the other episode too
