"""Meta-training: episodes from training groups, a pure jitted train step sharded over the
mesh's "data" axis, validation alignment on held-out training groups, orbax checkpoints.

Shapes: B episodes, C context points, T target points, N = Q * O option-table rows, E width.
"""

from __future__ import annotations

import dataclasses
import json
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

from gpo.checkpoint import Checkpoints, save_survey_embeddings
from gpo.config import RunConfig
from gpo.data.episodes import EpisodeSampler, Split, make_eval_task, make_split
from gpo.data.survey import Survey
from gpo.evaluate import evaluate_groups
from gpo.models import HEADS
from gpo.models.common import cross_entropy, forward_episodes, gaussian_nll
from gpo.sharding import make_mesh, put_batch, replicated


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the episodes' groups."""


@dataclasses.dataclass(frozen=True)
class EmbeddingTable:
    """Option embeddings as one `[Q * O, E]` table, standardised per dimension.

    Frozen-LLM embeddings share large constant components; standardising with statistics of the
    training survey's options keeps the inputs on a unit scale. The statistics are saved with
    the run and applied to every new embedding (`standardize`).
    """

    table_NxE: np.ndarray
    mean_E: np.ndarray
    scale_E: np.ndarray

    @classmethod
    def fit(cls, embeddings_QxOxE: np.ndarray, option_mask_QxO: np.ndarray,
            question_keys: list[str] | None = None) -> EmbeddingTable:
        emb = np.asarray(embeddings_QxOxE, np.float64)
        bad = ~np.isfinite(emb).all(-1) & option_mask_QxO
        if bad.any():
            q, o = np.argwhere(bad)[0]
            name = question_keys[q] if question_keys else f"question {q}"
            raise ValueError(f"embeddings of {int(bad.sum())} options are not finite, first "
                             f"{name!r} option {o}")
        valid = emb[option_mask_QxO]
        mean, scale = valid.mean(0), valid.std(0) + 1e-6
        return cls.with_stats(embeddings_QxOxE, mean, scale)

    @classmethod
    def with_stats(cls, embeddings_QxOxE, mean_E, scale_E) -> EmbeddingTable:
        emb = np.asarray(embeddings_QxOxE, np.float32)
        table = ((emb - mean_E) / scale_E).reshape(-1, emb.shape[-1]).astype(np.float32)
        return cls(table, np.asarray(mean_E, np.float32), np.asarray(scale_E, np.float32))

    def standardize(self, x_NxE: np.ndarray) -> np.ndarray:
        return ((np.asarray(x_NxE, np.float32) - self.mean_E) / self.scale_E).astype(np.float32)


def episode_loss(loss_name: str, prob_BxT, std_BxT, batch) -> jax.Array:
    if loss_name == "gaussian_nll":
        return gaussian_nll(prob_BxT, std_BxT, batch["target_prob_BxT"], batch["target_mask_BxT"])
    return cross_entropy(prob_BxT, batch["target_prob_BxT"], batch["target_mask_BxT"])


def build_model(config: RunConfig, seed: int):
    """The head's module, built abstractly (no weights yet): (graphdef, abstract state)."""
    _, module_cls = HEADS[config.head]
    abstract = nnx.eval_shape(lambda: module_cls(config.model, rngs=nnx.Rngs(seed)))
    return nnx.split(abstract)


def init_model_state(config: RunConfig, seed: int, mesh) -> tuple[Any, Any]:
    """Materialise the weights directly with their (replicated) sharding."""
    _, module_cls = HEADS[config.head]
    graphdef, abstract_state = build_model(config, seed)

    @jax.jit
    def init():
        return nnx.state(module_cls(config.model, rngs=nnx.Rngs(seed)))

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
        prob, std = forward_episodes(nnx.merge(graphdef, state), table, batch, training=True)
        loss = episode_loss(loss_name, prob, std, batch)
        return loss, {"loss": loss, "nonfinite_B": _nonfinite_episodes(prob, std)}

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


def _nonfinite_episodes(prob_BxT, std_BxT) -> jax.Array:
    """Per episode: whether any prediction is non-finite (to name the culprit on divergence)."""
    return ~jnp.all(jnp.isfinite(prob_BxT) & jnp.isfinite(std_BxT), axis=-1)


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
          progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Meta-train `config.head` on `survey`; resumes from run_dir's latest checkpoint.

    stop_after: end after this many steps of this call (for tests of interrupted runs).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    E = embeddings_QxOxE.shape[-1]
    config = _fit_model_config(config, E, len(survey.groups))
    _check_same_config(run_dir, config)
    config.save(run_dir / "config.json")
    save_survey_embeddings(run_dir, survey.question_keys,
                           [q.answer_options for q in survey.questions], embeddings_QxOxE)

    t = config.train
    split = split_for(config, survey)
    train_groups, val_groups = validation_split(split, config.data.validation_fraction,
                                                config.data.split_seed)
    if t.group_mixup and hasattr(HEADS[config.head][1], "encode_training_groups"):
        raise ValueError(f"train.group_mixup: head {config.head!r} learns one state per "
                         "training group, and a mixed group has none")
    sampler = EpisodeSampler(survey, train_groups, split.train_questions, t.batch_size,
                             t.context_range, t.target_range, seed=t.seed,
                             mixup=t.group_mixup, mixup_groups=t.mixup_groups)
    mesh = make_mesh(t.devices)
    if embeddings_QxOxE.shape[:2] != survey.option_mask_QxO.shape:
        raise ValueError(f"embeddings have shape {embeddings_QxOxE.shape}, expected "
                         f"{survey.option_mask_QxO.shape} + (E,) for {survey}")
    emb = EmbeddingTable.fit(embeddings_QxOxE, survey.option_mask_QxO, survey.question_keys)
    table = jax.device_put(emb.table_NxE, replicated(mesh))

    graphdef, state = init_model_state(config, t.seed, mesh)
    tx = make_optimizer(config)
    opt_state = jax.jit(tx.init, out_shardings=jax.tree.map(
        lambda _: replicated(mesh), jax.eval_shape(tx.init, state)))(state)
    checkpoints = Checkpoints(run_dir / "checkpoints")
    restored = checkpoints.restore_latest(state, opt_state)
    meta = {"step": 0, "best_validation": -math.inf, "best_step": 0, "history": []}
    if restored is not None:
        state, opt_state, meta = restored
    start = int(meta["step"])
    base_meta = {"config": config.to_dict(), "split": _split_meta(split, val_groups),
                 "embedding_mean": emb.mean_E.tolist(), "embedding_scale": emb.scale_E.tolist()}
    train_step = make_train_step(graphdef, tx, t.loss, mesh)

    end = t.steps if stop_after is None else min(t.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=t.steps, disable=not progress,
               desc=f"train {config.head}", dynamic_ncols=True)
    started = time.perf_counter()
    pending = None  # previous step's metrics: read one step late so the loop never blocks
    for step in bar:
        episodes = sampler.sample(step)
        batch = put_batch(episodes.arrays(), mesh)
        state, opt_state, metrics = train_step(state, opt_state, table, batch)
        if pending is not None:
            _check_finite(*pending, survey)
        pending = (step, metrics, episodes.group_B)
        done = step + 1
        if done % t.eval_every == 0 or done == t.steps:
            _check_finite(*pending, survey)
            record = {"step": done, "loss": float(metrics["loss"])}
            if len(val_groups):
                record["validation"] = _validate(graphdef, state, emb, survey, split,
                                                 val_groups, config)
                if record["validation"] > meta["best_validation"]:
                    meta["best_validation"], meta["best_step"] = record["validation"], done
                    checkpoints.save_best(done, state, {**base_meta, "step": done,
                                                        "validation": record["validation"]})
            meta["history"].append(record)
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "step"})
        if done % t.checkpoint_every == 0 or done == end:
            meta["step"] = done
            checkpoints.save_latest(done, state, opt_state, {**base_meta, **meta})
    if pending is not None:
        _check_finite(*pending, survey)
    if not len(val_groups) and end == t.steps:  # nothing to select on: the final model is best
        checkpoints.save_best(end, state, {**base_meta, "step": end, "validation": None})
    checkpoints.wait()
    checkpoints.close()
    return TrainResult(run_dir, end, meta["best_validation"], meta["best_step"],
                       meta["history"], time.perf_counter() - started)


def _fit_model_config(config: RunConfig, embedding_dim: int, n_groups: int) -> RunConfig:
    """Fill the fields the data decides: input width, and the group table size of heads that
    keep one state per training group."""
    model = config.model or HEADS[config.head][0].paper(embedding_dim)
    fields = {"embedding_dim": embedding_dim}
    if "n_groups" in {f.name for f in dataclasses.fields(model)}:
        fields["n_groups"] = n_groups
    return dataclasses.replace(config, model=dataclasses.replace(model, **fields))


def _check_same_config(run_dir: Path, config: RunConfig) -> None:
    """Resuming with a different config would silently mix two runs: refuse."""
    path = run_dir / "config.json"
    if path.exists() and (run_dir / "checkpoints").exists():
        # Parsed, so fields added since (with their defaults) do not count as a change.
        old = RunConfig.load(path).to_dict()
        if json.loads(json.dumps(old)) != json.loads(json.dumps(config.to_dict())):
            raise ValueError(f"{run_dir} holds a run with a different config; use a new run "
                             "directory or delete the old one")


def _check_finite(step: int, metrics: dict, groups_B: np.ndarray, survey: Survey) -> None:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
        bad = np.flatnonzero(np.asarray(metrics["nonfinite_B"]))
        labels = [survey.group_labels[groups_B[b]] for b in bad] or ["(none singled out)"]
        raise TrainingDiverged(f"loss is {loss} at step {step}; episodes {bad.tolist()} "
                               f"(groups {labels[:5]}) produced non-finite predictions")


def _validate(graphdef, state, emb: EmbeddingTable, survey: Survey, split: Split,
              val_groups: np.ndarray, config: RunConfig) -> float:
    val_split = dataclasses.replace(split, test_groups=val_groups)
    task = make_eval_task(survey, val_split, config.data.eval_k, seed=config.data.split_seed)
    model = nnx.merge(graphdef, state)
    return evaluate_groups(model, emb.table_NxE, survey, task, config.data.metric).mean


def _split_meta(split: Split, val_groups: np.ndarray) -> dict:
    return {"protocol": split.protocol, "seed": split.seed,
            "train_groups": split.train_groups.tolist(), "test_groups": split.test_groups.tolist(),
            "validation_groups": val_groups.tolist(),
            "train_questions": split.train_questions.tolist(),
            "test_questions": split.test_questions.tolist()}
