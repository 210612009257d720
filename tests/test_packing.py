"""Episodes packed several to a row train exactly as the same episodes padded one a row."""

import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from gpo.config import TrainConfig
from gpo.models import GPO, PPD, forward, gather_points
from gpo.sharding import make_mesh, replicated
from gpo.training.device_sampler import DeviceSampler
from gpo.training.loop import packs
from gpo.training.losses import episode_loss
from gpo.training.packing import RowLayout, choose_layout, pack_rows, point_counts, rows_needed
from gpo.training.steps import init_model_state, make_device_steps
from tests.helpers import slots_of, tiny_head_config, tiny_sampling, tiny_table


@pytest.fixture(scope="module")
def setup(tiny):
    survey, embeddings = tiny
    table = tiny_table(survey, embeddings, np.arange(8))
    sampler, arrays = DeviceSampler.build(survey, np.arange(8), np.arange(40),
                                          tiny_sampling(context_range=(2, 12),
                                                        target_range=(2, 12)),
                                          seed=3, reference_groups=np.arange(8))
    batch = jax.jit(sampler.sample)(arrays, 0)
    return survey, table, sampler, arrays, batch


def points_of(batch, part, b):
    """Episode b's points as (option, prob, question, respondents) tuples, in slot order."""
    return [tuple(values.tolist()) for values in slots_of(batch, part, b).values()]


def layout_for(batch, rows=None, scale=1.0):
    """Rows `scale` times an episode's capacity (0: as long as its largest episode); by
    default as few as the batch needs."""
    C, T = batch.context.mask_BxN.shape[1], batch.target.mask_BxN.shape[1]
    lengths = int(C * scale), int(T * scale)
    if scale == 0:
        lengths = tuple(int(count.max()) for count in point_counts(batch))
    if rows is None:
        rows = int(rows_needed(*point_counts(batch), *lengths))
    return RowLayout(rows, *lengths)


@pytest.mark.parametrize("scale", [1.0, 0.0, 2.0])
def test_every_episode_lands_whole_in_one_row(setup, scale):
    *_, batch = setup
    B = len(batch.group_B)
    layout = layout_for(batch, scale=scale)
    assert layout.rows < B  # small episodes share rows
    packed, fits = pack_rows(batch, layout)
    assert bool(fits)
    assert packed.context.mask_BxN.shape == (layout.rows, layout.context_length)
    assert packed.target.mask_BxN.shape == (layout.rows, layout.target_length)
    for part in ("context", "target"):
        episode = np.asarray(getattr(packed, part).episode_BxN)
        mask = np.asarray(getattr(packed, part).mask_BxN)
        assert ((episode >= 0) == mask).all()
        for b in range(B):
            assert points_of(packed, part, b) == points_of(batch, part, b)
            rows = np.flatnonzero((episode == b).any(1))
            assert len(rows) == 1  # context and targets of an episode share one row
            cols = np.flatnonzero(episode[rows[0]] == b)
            assert (np.diff(cols) == 1).all()
    assert (np.asarray(packed.group_B) == np.asarray(batch.group_B)).all()
    _, fits = pack_rows(batch, dataclasses.replace(layout, rows=layout.rows - 1))
    assert not bool(fits)  # a row short: the step trains unpacked


def test_packed_rows_predict_and_lose_what_padded_episodes_do(setup):
    _, table, _, _, batch = setup
    table = jax.device_put(table)
    model = GPO(tiny_head_config("gpo"), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    B = len(batch.group_B)
    packed, fits = pack_rows(batch, layout_for(batch))
    assert bool(fits)

    @functools.partial(jax.jit, static_argnums=2)
    def loss(state, batch, loss_name):
        prob, std = forward(nnx.merge(graphdef, state), table, batch, training=True)
        return episode_loss(loss_name, prob, std, gather_points(table, batch, "target"), B)

    predict = jax.jit(lambda batch: forward(model, table, batch))
    prob, std = predict(batch)
    prob_packed, std_packed = predict(packed)
    episode = np.asarray(packed.target.episode_BxN)
    for b in range(B):
        mask = np.asarray(batch.target.mask_BxN[b])
        np.testing.assert_allclose(np.asarray(prob_packed)[episode == b],
                                   np.asarray(prob[b])[mask], atol=1e-5)
        np.testing.assert_allclose(np.asarray(std_packed)[episode == b],
                                   np.asarray(std[b])[mask], rtol=1e-5)
    for loss_name in ("gaussian_nll", "wasserstein+nll", "kl"):
        gradient = jax.value_and_grad(loss)
        padded_loss, padded_grads = gradient(state, batch, loss_name)
        packed_loss, packed_grads = gradient(state, packed, loss_name)
        assert float(packed_loss) == pytest.approx(float(padded_loss), rel=1e-5)
        for g_packed, g_padded in zip(jax.tree.leaves(packed_grads),
                                      jax.tree.leaves(padded_grads)):
            np.testing.assert_allclose(g_packed, g_padded, rtol=1e-4, atol=1e-5)


def test_packed_training_steps_match_padded_ones_even_when_a_batch_overflows(setup):
    survey, table, sampler, arrays, _ = setup
    mesh = make_mesh(1)
    table = jax.device_put(table, replicated(mesh))
    arrays = jax.device_put(arrays, replicated(mesh))
    results = {}
    needed = [layout_for(sampler.sample(arrays, s)).rows for s in range(6)]
    tight = layout_for(sampler.sample(arrays, 0), rows=max(needed) - 1)
    assert min(needed) <= tight.rows  # with `tight`, some steps fit and some train unpacked
    for label, r in (("padded", None), ("tight", tight)):
        graphdef, state = init_model_state("gpo", tiny_head_config("gpo"), 0, mesh)
        # SGD: Adam's first steps move every weight by about the learning rate whatever the
        # gradient's size, so the key biases (gradient 0 up to rounding: softmax ignores them)
        # would follow the rounding of each layout.
        tx = optax.sgd(1e-3)
        run_steps = make_device_steps(graphdef, tx, "gaussian_nll", mesh, sampler, r)
        state, _, metrics = run_steps(state, tx.init(state), table, arrays, 0, 6)
        results[label] = (np.asarray(metrics["loss"]), jax.tree.leaves(state))
    for label in ("tight",):
        np.testing.assert_allclose(results[label][0], results["padded"][0], rtol=1e-5)
        for a, b in zip(results[label][1], results["padded"][1]):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_chosen_layout_costs_least_on_the_runs_first_steps(setup):
    *_, sampler, arrays, _ = setup
    sample = lambda step: sampler.sample(arrays, step)  # noqa: E731
    B, C, T = sampler.sampling.batch_size, sampler.context_capacity, sampler.target_capacity
    layout = choose_layout(sample, width=16, steps=32)
    context_SxB, target_SxB = jax.jit(jax.vmap(lambda s: point_counts(sample(s))))(
        np.arange(32))
    needed = jax.jit(jax.vmap(rows_needed, in_axes=(0, 0, None, None)))

    def expected_cost(layout):
        fits = np.mean(np.asarray(needed(context_SxB, target_SxB, layout.context_length,
                                         layout.target_length)) <= layout.rows)
        return fits * layout.cost(16) + (1 - fits) * RowLayout(B, C, T).cost(16)

    assert layout is not None and layout.rows < B
    assert expected_cost(layout) < RowLayout(B, C, T).cost(16)
    for other in (RowLayout(layout.rows - 1, layout.context_length, layout.target_length),
                  RowLayout(layout.rows + 1, layout.context_length, layout.target_length),
                  RowLayout(B // 2, C, T), RowLayout(B // 4, 2 * C, 2 * T)):
        assert expected_cost(layout) <= expected_cost(other)
    assert choose_layout(sample, width=16, multiple=4, steps=32).rows % 4 == 0
    big, big_arrays = DeviceSampler.build(  # episodes near their capacity
        setup[0], np.arange(8), np.arange(40),
        tiny_sampling(batch_size=4, context_range=(12, 12), target_range=(12, 12)),
        reference_groups=np.arange(8))
    layout = choose_layout(lambda s: big.sample(big_arrays, s), width=16, steps=8)
    assert layout is None or layout.rows == 4  # one a row: no room to share


def test_packing_is_chosen_per_head_and_refused_where_a_head_cannot_pack():
    device = TrainConfig(packing="auto")
    assert packs(device, GPO) == (jax.default_backend() == "cpu")
    assert not packs(TrainConfig(steps=30), GPO)  # too short to repay the layout search
    assert not packs(device, PPD)  # PPD pools a row's points into one group embedding
    assert not packs(TrainConfig(packing="off"), GPO)
    assert not packs(TrainConfig(sampler="host"), GPO)
    with pytest.raises(ValueError, match="head 'ppd' does not keep the episodes of a row apart"):
        packs(TrainConfig(packing="rows"), PPD)
    with pytest.raises(ValueError, match="packing='rows' needs sampler='device'"):
        TrainConfig(packing="rows", sampler="host")
    with pytest.raises(ValueError, match="packing must be one of"):
        TrainConfig(packing="tight")
    assert dataclasses.replace(device, packing="rows").packing == "rows"
