"""Meta-training: episodes from training groups, a pure jitted train step sharded over the
mesh's "data" axis, validation alignment on held-out training groups, orbax checkpoints.

Shapes: B episodes, C context points, T target points, R option-table rows, E width.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from gpo.config import RunConfig
from gpo.data.episodes import EpisodeSampler, Split, make_eval_task, make_split
from gpo.data.survey import Survey
from gpo.device_sampler import DeviceSampler
from gpo.evaluate import predict_task
from gpo.metrics import score_predictions
from gpo.models import forward, gather_points
from gpo.models.common import cross_entropy, gaussian_nll, wasserstein
from gpo.models.registry import abstract_head, build_head, head_class
from gpo.option_table import EmbeddingStats, References, build_option_table
from gpo.packing import RowLayout, choose_layout, pack_rows
from gpo.run_dir import RunDir, RunSplit
from gpo.sharding import check_batch_split, make_mesh, put_batch, replicated


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the episodes' groups."""


def episode_loss(loss_name: str, prob_BxT, std_BxT, targets, episodes: int | None = None
                 ) -> jax.Array:
    """The training loss, averaged over `episodes` (by default one a row; packed rows hold
    several). 'X+nll' trains the probabilities with X and, separately, the predicted std with
    the Gaussian NLL of the (fixed) probabilities: each part of the output learns from the loss
    that fits it."""
    # Every loss is a mean over rows of per-row sums: rescaled, a mean over episodes.
    per_episode = 1.0 if episodes is None else prob_BxT.shape[0] / episodes
    return _row_mean_loss(loss_name, prob_BxT, std_BxT, targets) * per_episode


def _row_mean_loss(loss_name: str, prob_BxT, std_BxT, targets) -> jax.Array:
    true, mask = targets.prob_BxN, targets.mask_BxN
    if loss_name.endswith("+nll"):
        std_loss = gaussian_nll(jax.lax.stop_gradient(prob_BxT), std_BxT, true, mask)
        return _row_mean_loss(loss_name[:-len("+nll")], prob_BxT, std_BxT, targets) + std_loss
    if loss_name == "gaussian_nll":
        return gaussian_nll(prob_BxT, std_BxT, true, mask)
    if loss_name == "wasserstein":
        return wasserstein(prob_BxT, true, targets.question_BxN, mask, targets.ordinal_BxN,
                           targets.gap_BxN, targets.episode_BxN)
    return cross_entropy(prob_BxT, true, mask)


def init_model_state(config: RunConfig, seed: int, mesh) -> tuple[Any, Any]:
    """Materialise the weights directly with their (replicated) sharding."""
    graphdef, abstract_state = abstract_head(config.head, config.model, seed)

    @jax.jit
    def init():
        return nnx.state(build_head(config.head, config.model, rngs=nnx.Rngs(seed)))

    shardings = jax.tree.map(lambda _: replicated(mesh), abstract_state)
    return graphdef, jax.jit(init, out_shardings=shardings)()


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    t = config.train
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, min(t.warmup_steps, max(t.steps - 1, 1)), max(t.steps, 2))
    return optax.adamw(schedule, weight_decay=t.weight_decay)


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_name: str, mesh):
    """train_step(state, opt_state, table, batch) -> (state, opt_state, metrics), jitted once,
    state and optimiser replicated and donated, episodes split over "data"."""

    def loss_fn(state, table, batch):
        prob, std = forward(nnx.merge(graphdef, state), table, batch, training=True)
        targets = gather_points(table, batch, "target")
        episodes = len(batch["group_B"])
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
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return jax.jit(train_step, in_shardings=(rep, rep, rep, data),
                   out_shardings=(rep, rep, rep), donate_argnums=(0, 1))


def make_device_steps(graphdef, tx: optax.GradientTransformation, loss_name: str, mesh,
                      sampler: DeviceSampler, layout: RowLayout | None = None):
    """run_steps(state, opt_state, table, survey_arrays, first_step, n) -> (state, opt_state,
    metrics of each step): n steps in one jitted call (`lax.scan`), each drawing its episodes
    on the device from (seed, step), split over "data". Nothing leaves the device between
    steps; the metrics (loss, non-finite episodes and their groups, per step) are read once
    per call. One compilation per distinct n.

    layout: pack the episodes into these rows (`gpo.packing`; heads that `packs_episodes`);
    a step whose episodes do not fit them trains unpacked, on the same episodes."""
    step_fn = make_train_step(graphdef, tx, loss_name, mesh)
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

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
            return (state, opt_state), {**metrics, "group_B": batch["group_B"]}

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


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_validation: float
    best_step: int
    history: list[dict]
    seconds: float


def split_for(config: RunConfig, survey: Survey) -> Split:
    """The group (and, for protocol B, question) split a run's config defines."""
    d = config.data
    return make_split(survey, d.protocol, seed=d.split_seed, train_fraction=d.train_fraction)


def validation_split(split: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out some training groups to pick checkpoints; test groups are never looked at."""
    if fraction == 0 or len(split.train_groups) < 3:
        return split.train_groups, np.zeros(0, int)
    rng = np.random.default_rng((seed, 1))
    n_val = max(1, int(round(len(split.train_groups) * fraction)))
    val = np.sort(rng.choice(split.train_groups, size=n_val, replace=False))
    return np.setdiff1d(split.train_groups, val), val


def train(config: RunConfig, survey: Survey, embeddings_QxOxE: np.ndarray, run_dir: str | Path,
          progress: bool = True, stop_after: int | None = None,
          data_dir: str | Path | None = None) -> TrainResult:
    """Meta-train `config.head` on `survey`; resumes from run_dir's latest checkpoint.

    The reference groups every head may read are the split's training groups; while training
    and validating, only the non-validation ones, minus the episode's own group.
    data_dir: the folder the survey came from, recorded so the run can be evaluated later.
    stop_after: end after this many steps of this call (for tests of interrupted runs).
    """
    head_cls = head_class(config.head)
    config = dataclasses.replace(config, model=head_cls.config_for_data(
        config.model, embeddings_QxOxE.shape[-1], len(survey.groups)))
    t = config.train
    split = split_for(config, survey)
    train_groups, val_groups = validation_split(split, config.data.validation_fraction,
                                                config.data.split_seed)
    if t.group_mixup and head_cls.learns_training_groups:
        raise ValueError(f"train.group_mixup: head {config.head!r} learns one state per "
                         "training group, and a mixed group has none")
    stats = EmbeddingStats.fit(embeddings_QxOxE, survey.option_mask_QxO, survey.question_keys)
    references = References.from_survey(survey, split.train_groups, split.train_questions)
    run = RunDir(run_dir)
    run.start(config, survey, RunSplit.of(split, val_groups, survey), embeddings_QxOxE, stats,
              references, None if data_dir is None else str(Path(data_dir).absolute()))
    usable_references = ~np.isin(split.train_groups, val_groups)
    sampler = EpisodeSampler(survey, train_groups, split.train_questions, t.batch_size,
                             t.context_range, t.target_range, seed=t.seed,
                             mixup=t.group_mixup, mixup_groups=t.mixup_groups,
                             reference_groups=split.train_groups,
                             usable_references=usable_references,
                             hide_references=t.hide_references,
                             context_distribution=t.context_distribution)
    mesh = make_mesh(t.devices)
    check_batch_split(t.batch_size, mesh)
    table = jax.device_put(build_option_table(embeddings_QxOxE, stats, survey, references),
                           replicated(mesh))

    graphdef, state = init_model_state(config, t.seed, mesh)
    tx = make_optimizer(config)
    opt_state = jax.jit(tx.init, out_shardings=jax.tree.map(
        lambda _: replicated(mesh), jax.eval_shape(tx.init, state)))(state)
    checkpoints = run.checkpoints()
    restored = checkpoints.restore_latest(state, opt_state)
    meta = {"step": 0, "best_validation": -math.inf, "best_step": 0, "history": []}
    if restored is not None:
        state, opt_state, meta = restored
    start = int(meta["step"])
    loss = head_cls.default_loss(config.data.metric) if t.loss == "default" else t.loss

    def validate(state) -> float:
        val_split = dataclasses.replace(split, test_groups=val_groups)
        task = make_eval_task(survey, val_split, config.data.eval_k, seed=config.data.split_seed)
        prob, _ = predict_task(nnx.merge(graphdef, state), table, survey, task,
                               split.train_groups, usable_references)
        return score_predictions(survey, task, prob, config.data.metric).mean

    end = t.steps if stop_after is None else min(t.steps, start + stop_after)
    if t.sampler == "device":
        device_sampler, survey_arrays = DeviceSampler.like(sampler)
        survey_arrays = jax.device_put(survey_arrays, replicated(mesh))
        layout = None
        if packs(t, head_cls):  # heads that pack are transformers of config.model.width
            layout = choose_layout(lambda step: device_sampler.sample(survey_arrays, step),
                                   config.model.width, multiple=mesh.shape["data"])
        run_steps = make_device_steps(graphdef, tx, loss, mesh, device_sampler, layout)
    else:
        train_step = make_train_step(graphdef, tx, loss, mesh)
    bar = tqdm(initial=start, total=t.steps, disable=not progress,
               desc=f"train {config.head}", dynamic_ncols=True)
    started = time.perf_counter()
    pending = None  # the previous call's metrics: read one call late so the loop never blocks
    window = []  # losses since the last record
    for step, n in step_calls(start, end, t):
        if t.sampler == "device":
            state, opt_state, metrics = run_steps(state, opt_state, table, survey_arrays,
                                                  step, n)
            groups = None  # in the metrics, per step
        else:
            episodes = sampler.sample(step)
            batch = put_batch(episodes.arrays(), mesh)
            state, opt_state, metrics = train_step(state, opt_state, table, batch)
            groups = episodes.group_B
        if pending is not None:
            _check_finite(*pending, survey)
        pending = (step, metrics, groups)
        window.append(metrics["loss"])
        done = step + n
        bar.update(n)
        if done % t.eval_every == 0 or done == t.steps:
            _check_finite(*pending, survey)
            # the mean over the steps since the last record: one step's loss swings with its
            # episodes' sizes
            record = {"step": done, "loss": float(np.mean(np.concatenate(
                [np.atleast_1d(np.asarray(loss)) for loss in window])))}
            window = []
            if len(val_groups):
                record["validation"] = validate(state)
                if record["validation"] > meta["best_validation"]:
                    meta["best_validation"], meta["best_step"] = record["validation"], done
                    checkpoints.save_best(done, state, {"step": done,
                                                        "validation": record["validation"]})
            meta["history"].append(record)
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "step"})
        if done % t.checkpoint_every == 0 or done == end:
            meta["step"] = done
            checkpoints.save_latest(done, state, opt_state, meta)
    bar.close()
    if pending is not None:
        _check_finite(*pending, survey)
    if not len(val_groups) and end == t.steps:  # nothing to select on: the final model is best
        checkpoints.save_best(end, state, {"step": end, "validation": None})
    checkpoints.wait()
    checkpoints.close()
    return TrainResult(run.path, end, meta["best_validation"], meta["best_step"],
                       meta["history"], time.perf_counter() - started)


# Packing costs a few seconds up front (the layout search, and compiling the padded step a
# batch that does not fit falls back to): 'auto' leaves shorter runs padded.
PACK_FROM_STEPS = 200


def packs(t, head_cls) -> bool:
    """Whether meta-training packs several episodes a row (`TrainConfig.packing`)."""
    if t.packing == "rows" and not head_cls.packs_episodes:
        raise ValueError(f"train.packing='rows': head {head_cls.name!r} does not keep the "
                         "episodes of a row apart; use packing='off' or 'auto'")
    if t.packing == "auto":
        return (t.sampler == "device" and head_cls.packs_episodes
                and jax.default_backend() == "cpu" and t.steps >= PACK_FROM_STEPS)
    return t.packing == "rows"


def step_calls(start: int, end: int, t) -> list[tuple[int, int]]:
    """(first step, number of steps) of each call from start to end: `t.steps_per_call` steps
    with the device sampler, one with the host's; a call always ends where validation or a
    checkpoint is due."""
    per_call = t.steps_per_call if t.sampler == "device" else 1
    calls, step = [], start
    while step < end:
        due = min((step // every + 1) * every for every in (t.eval_every, t.checkpoint_every))
        n = min(per_call, due - step, end - step)
        calls.append((step, n))
        step += n
    return calls


def _check_finite(first_step: int, metrics: dict, groups_B: np.ndarray | None,
                  survey: Survey) -> None:
    """Raise TrainingDiverged at the first step of a call whose loss is not finite, naming the
    step, its episodes and their groups (metrics of one step, or stacked over a call's)."""
    loss_N = np.atleast_1d(np.asarray(metrics["loss"]))
    if np.isfinite(loss_N).all():
        return
    i = int(np.flatnonzero(~np.isfinite(loss_N))[0])
    nonfinite_B = np.asarray(metrics["nonfinite_B"]).reshape(len(loss_N), -1)[i]
    if groups_B is None:
        groups_B = np.asarray(metrics["group_B"]).reshape(len(loss_N), -1)[i]
    bad = np.flatnonzero(nonfinite_B)
    labels = [survey.group_labels[groups_B[b]] for b in bad] or ["(none singled out)"]
    raise TrainingDiverged(f"loss is {loss_N[i]} at step {first_step + i}; episodes "
                           f"{bad.tolist()} (groups {labels[:5]}) produced non-finite "
                           "predictions")
