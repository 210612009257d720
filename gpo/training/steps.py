"""The jitted pieces of meta-training: sharded state, the optimiser, one pure train step, and
`steps_per_call` steps in one call with the episodes drawn on the device.

State and optimiser are replicated and donated; episodes are split over the mesh's "data"
axis. Shapes: B episodes (rows), T target points.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gpo.config import TrainConfig
from gpo.models import forward, gather_points
from gpo.models.registry import build_head
from gpo.points import EpisodeBatch
from gpo.sharding import data_sharded, replicated
from gpo.training.device_sampler import DeviceSampler
from gpo.training.losses import episode_loss
from gpo.training.packing import RowLayout, pack_rows


def init_model_state(head: str, head_config: Any, seed: int, mesh) -> tuple[Any, Any]:
    """(graphdef, state): the weights initialised op by op, then replicated over the mesh.

    Eagerly, because each initialiser then compiles once a process and is cached, where one
    jitted initialiser is a new function every run and compiles anew (about 4 s for GPO at
    the paper's config on 2 cores); the values are the same bit for bit. Every process draws
    the same weights from the seed and contributes the shards it can address."""
    graphdef, state = nnx.split(build_head(head, head_config, rngs=nnx.Rngs(seed)))
    sharding = replicated(mesh)
    return graphdef, jax.tree.map(lambda a: jax.make_array_from_callback(
        a.shape, sharding, lambda index: np.asarray(a)[index]), state)


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train.learning_rate, min(train.warmup_steps, max(train.steps - 1, 1)),
        max(train.steps, 2))
    return optax.adamw(schedule, weight_decay=train.weight_decay)


def init_optimizer_state(tx: optax.GradientTransformation, state: Any, mesh) -> Any:
    return jax.jit(tx.init, out_shardings=jax.tree.map(
        lambda _: replicated(mesh), jax.eval_shape(tx.init, state)))(state)


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_name: str, mesh):
    """train_step(state, opt_state, table, batch) -> (state, opt_state, metrics), jitted once,
    state and optimiser replicated and donated, episodes split over "data"."""

    def loss_fn(state, table, batch: EpisodeBatch):
        prob, std = forward(nnx.merge(graphdef, state), table, batch, training=True)
        targets = gather_points(table, batch, "target")
        episodes = len(batch.group_B)
        loss = episode_loss(loss_name, prob, std, targets, episodes)
        return loss, {"loss": loss,
                      "nonfinite_B": _nonfinite_episodes(prob, std, targets, episodes)}

    def train_step(state, opt_state, table, batch):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state, table, batch)
        updates, opt_state = tx.update(grads, opt_state, state)
        state = optax.apply_updates(state, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state, opt_state, metrics

    rep = replicated(mesh)
    return jax.jit(train_step, in_shardings=(rep, rep, rep, data_sharded(mesh)),
                   out_shardings=(rep, rep, rep), donate_argnums=(0, 1))


def make_device_steps(graphdef, tx: optax.GradientTransformation, loss_name: str, mesh,
                      sampler: DeviceSampler, layout: RowLayout | None = None):
    """run_steps(state, opt_state, table, survey_arrays, first_step, n) -> (state, opt_state,
    metrics of each step): n steps in one jitted call (`lax.scan`), each drawing its episodes
    on the device from (seed, step), split over "data". Nothing leaves the device between
    steps; the metrics (loss, non-finite episodes and their groups, per step) are read once
    per call. One compilation per distinct n.

    layout: pack the episodes into these rows (`gpo.training.packing`; heads that
    `packs_episodes`); a step whose episodes do not fit them trains unpacked, on the same
    episodes."""
    step_fn = make_train_step(graphdef, tx, loss_name, mesh)
    data = data_sharded(mesh)

    def step(state, opt_state, table, batch):
        if layout is None:
            return step_fn(state, opt_state, table, batch)
        packed, fits = pack_rows(batch, layout)
        packed = jax.lax.with_sharding_constraint(packed, data)
        return jax.lax.cond(fits, lambda: step_fn(state, opt_state, table, packed),
                            lambda: step_fn(state, opt_state, table, batch))

    def run_steps(state, opt_state, table, arrays, first_step, n):
        def body(carry, step_index):
            state, opt_state = carry
            batch = jax.lax.with_sharding_constraint(sampler.sample(arrays, step_index), data)
            state, opt_state, metrics = step(state, opt_state, table, batch)
            return (state, opt_state), {**metrics, "group_B": batch.group_B}

        (state, opt_state), metrics = jax.lax.scan(body, (state, opt_state),
                                                   first_step + jnp.arange(n))
        return state, opt_state, metrics

    rep = replicated(mesh)
    return jax.jit(run_steps, static_argnums=5, in_shardings=(rep, rep, rep, rep, rep),
                   out_shardings=(rep, rep, rep), donate_argnums=(0, 1))


def _nonfinite_episodes(prob_BxT, std_BxT, targets, episodes: int) -> jax.Array:
    """Per episode: whether any prediction is non-finite (to name the culprit on divergence)."""
    bad_BxT = ~(jnp.isfinite(prob_BxT) & jnp.isfinite(std_BxT))
    episode_BxT = jnp.where(targets.mask_BxN, targets.episode_BxN, episodes)  # padding: none
    return jnp.zeros(episodes, bool).at[episode_BxT].max(bad_BxT, mode="drop")
