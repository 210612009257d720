"""Meta-training: episodes from the training groups, a pure jitted step sharded over the
mesh's "data" axis, an evaluator on held-out validation groups picking the best checkpoint,
orbax checkpoints, exact resume.

Shapes: B episodes, Q questions, O options, E embedding width.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from gpo.config import RunConfig, TrainConfig
from gpo.data.splits import (
    Split,
    calibration_folds,
    make_eval_task,
    make_split,
    validation_split,
)
from gpo.data.survey import Survey
from gpo.evaluation.conformal import calibrate_run
from gpo.evaluation.evaluate import validation_evaluator
from gpo.intervals import Calibration
from gpo.models.registry import head_class, head_config
from gpo.points import EmbeddingStats, OptionTable, References, survey_option_table
from gpo.run_dir import FOLDS, RunDir, RunSplit
from gpo.sharding import check_batch_split, make_mesh, put_batch, replicated
from gpo.training.device_sampler import DeviceSampler
from gpo.training.packing import choose_layout
from gpo.training.sampling import EpisodeSampler
from gpo.training.steps import (
    init_model_state,
    init_optimizer_state,
    make_device_steps,
    make_optimizer,
    make_train_step,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the episodes' groups."""


class Evaluator(Protocol):
    """What the loop asks of an evaluator: (name, value) pairs for a head; the loop records
    them and keeps the checkpoint that scores best on the evaluator's `name`."""

    name: str

    def run(self, head: Any, table: OptionTable): ...


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


def check_against_data(config: RunConfig, survey: Survey) -> None:
    """Refuse a config the data cannot serve, before any minute goes to embedding or
    training: a split without meta-training, validation or test groups, or a `data.eval_k`
    that leaves the validation groups nothing to predict. One error names the field."""
    d = config.data
    try:
        split = split_for(config, survey)
    except ValueError as err:
        raise ValueError(f"data.train_fraction={d.train_fraction} on {len(survey.groups)} "
                         f"groups: {err}") from None
    train_groups, val_groups = validation_split(split, d.validation_fraction, d.split_seed)
    if not len(train_groups):
        raise ValueError(f"data.validation_fraction={d.validation_fraction} holds out all "
                         f"{len(split.train_groups)} training groups: none is left to "
                         "meta-train on")
    if d.validation_fraction > 0 and not len(val_groups):
        raise ValueError(f"data.validation_fraction={d.validation_fraction} of "
                         f"{len(split.train_groups)} training groups holds out none; raise it, "
                         "or set it to 0 to train without validation")
    if len(val_groups):
        try:
            make_eval_task(survey, dataclasses.replace(split, test_groups=val_groups), d.eval_k,
                           seed=split.seed)
        except ValueError as err:
            raise ValueError(f"data.eval_k={d.eval_k} (the validation groups' context): {err}"
                             ) from None
    if d.calibration_folds > 1 and not (len(val_groups)
                                        and len(train_groups) >= d.calibration_folds - 1):
        raise ValueError(f"data.calibration_folds={d.calibration_folds} needs validation groups "
                         f"and {d.calibration_folds - 1} other training groups to fold, but the "
                         f"split holds {len(val_groups)} validation and {len(train_groups)} "
                         "other training groups")


def finished_run(config: RunConfig, run: RunDir) -> TrainResult | None:
    """The result of a run folder that already finished `config`'s training (and
    calibration, where it has validation groups), read from its last checkpoint; None when
    there is more to do. A folder holding another config is refused naming the fields."""
    if not (run.exists() and run.has_checkpoints()):
        return None
    run.check_same_config(config)
    checkpoints = run.checkpoints()
    try:
        meta = checkpoints.latest_meta()
    finally:
        checkpoints.close()
    if meta is None or int(meta["step"]) != config.train.steps:
        return None
    if config.data.validation_fraction > 0 and not (run.path / "calibration.json").exists():
        return None
    return TrainResult(run.path, int(meta["step"]), meta["best_validation"],
                       meta["best_step"], meta["history"], 0.0)


def train(config: RunConfig, survey: Survey, embeddings_QxOxE: np.ndarray, run_dir: str | Path,
          progress: bool = True, stop_after: int | None = None,
          data_dir: str | Path | None = None,
          evaluator: Evaluator | None = None, calibrate: bool = True,
          validation_groups: np.ndarray | None = None) -> TrainResult:
    """Meta-train `config.head` on `survey`; resumes from run_dir's latest checkpoint.

    The reference groups every head may read are the split's training groups; while training
    and validating, only the non-validation ones, minus the episode's own group.
    data_dir: the folder the survey came from, recorded so the run can be evaluated later.
    stop_after: end after this many steps of this call (for tests of interrupted runs).
    evaluator: what picks the best checkpoint (default: alignment on the validation groups
    after `data.eval_k` context answers; none when no group is held out).
    calibrate: when training ends, fit the prediction intervals on the validation groups
    (`gpo.evaluation.conformal`; seconds for the reference head, a minute for GPO on
    OpinionQA on 2 cores), and with `data.calibration_folds` > 1 on the other training groups
    too, each fold scored by a model trained without it (`FOLDS`/N in the run folder);
    experiments that never predict skip it.
    validation_groups: hold out these training groups instead of the config's (a fold's).
    The run folder is locked while training (`RunDir.lock`; in a multi-host run, by process
    0): a second process on it is refused with `RunInUse`.
    """
    check_against_data(config, survey)  # before the run folder is made
    run = RunDir(run_dir)
    with run.lock() if jax.process_index() == 0 else contextlib.nullcontext():
        return _train(config, survey, embeddings_QxOxE, run, progress, stop_after, data_dir,
                      evaluator, calibrate, validation_groups)


def _train(config: RunConfig, survey: Survey, embeddings_QxOxE: np.ndarray, run: RunDir,
           progress: bool, stop_after: int | None, data_dir: str | Path | None,
           evaluator: Evaluator | None, calibrate: bool,
           validation_groups: np.ndarray | None = None) -> TrainResult:
    t = config.train
    head_cls = head_class(config.head)
    model = head_config(config.head, config.model, embedding_dim=embeddings_QxOxE.shape[-1],
                        n_groups=len(survey.groups))
    split = split_for(config, survey)
    train_groups, val_groups = validation_split(split, config.data.validation_fraction,
                                                config.data.split_seed)
    if validation_groups is not None:
        val_groups = np.sort(np.asarray(validation_groups, int))
        train_groups = np.setdiff1d(split.train_groups, val_groups)
    if t.sampling.group_mixup and head_cls.learns_training_groups:
        raise ValueError(f"train.sampling.group_mixup: head {config.head!r} learns one state "
                         "per training group, and a mixed group has none")
    stats = EmbeddingStats.fit(embeddings_QxOxE, survey.option_mask_QxO, survey.question_keys)
    references = References.from_survey(survey, split.train_groups, split.train_questions)
    run.start(config, model, survey, RunSplit.of(split, val_groups, survey), embeddings_QxOxE,
              stats, references, None if data_dir is None else str(Path(data_dir).absolute()))
    usable_references = ~np.isin(split.train_groups, val_groups)
    if evaluator is None:
        evaluator = validation_evaluator(survey, split, val_groups, config.data.eval_k,
                                         config.data.metric, usable_references)
    mesh = make_mesh(t.devices)
    check_batch_split(t.sampling.batch_size, mesh)
    table = jax.device_put(survey_option_table(embeddings_QxOxE, stats, survey, references),
                           replicated(mesh))

    graphdef, state = init_model_state(config.head, model, t.seed, mesh)
    tx = make_optimizer(t)
    opt_state = init_optimizer_state(tx, state, mesh)
    checkpoints = run.checkpoints()
    restored = checkpoints.restore_latest(state, opt_state)
    meta = {"step": 0, "best_validation": -math.inf, "best_step": 0, "history": []}
    if restored is not None:
        state, opt_state, meta = restored
    start = int(meta["step"])
    loss = head_cls.default_loss(config.data.metric) if t.loss == "default" else t.loss
    episodes = dict(survey=survey, groups=train_groups, questions=split.train_questions,
                    sampling=t.sampling, seed=t.seed, reference_groups=split.train_groups,
                    usable_references=usable_references)
    steps = (DeviceSteps(graphdef, tx, loss, mesh, table, t, head_cls, model, **episodes)
             if t.sampler == "device" else
             HostSteps(graphdef, tx, loss, mesh, table, EpisodeSampler(**episodes)))

    end = t.steps if stop_after is None else min(t.steps, start + stop_after)
    bar = tqdm(initial=start, total=t.steps, disable=not progress,
               desc=f"train {config.head}", dynamic_ncols=True)
    started = time.perf_counter()
    pending = None  # the previous call's metrics: read one call late so the loop never blocks
    window = []  # losses since the last record
    try:
        for step, n in step_calls(start, end, t):
            state, opt_state, metrics = steps(state, opt_state, step, n)
            if pending is not None:
                _check_finite(*pending, survey)
            pending = (step, metrics)
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
                if evaluator is not None:
                    record.update(evaluator.run(nnx.merge(graphdef, state), table))
                    if record[evaluator.name] > meta["best_validation"]:
                        meta["best_validation"], meta["best_step"] = record[evaluator.name], done
                        checkpoints.save_best(done, state, {"step": done,
                                                            "validation": record[evaluator.name]})
                meta["history"].append(record)
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "step"})
            if done % t.checkpoint_every == 0 or done == end:
                meta["step"] = done
                checkpoints.save_latest(done, state, opt_state, meta)
    except KeyboardInterrupt:  # finish the checkpoint being written: the run resumes from it
        checkpoints.wait()
        checkpoints.close()
        raise
    bar.close()
    if pending is not None:
        _check_finite(*pending, survey)
    if evaluator is None and end == t.steps:  # nothing to select on: the final model is best
        checkpoints.save_best(end, state, {"step": end, "validation": None})
    checkpoints.wait()
    checkpoints.close()
    if calibrate and end == t.steps and len(val_groups) and (start < end
                                                             or run.calibration() is None):
        calibrate_trained_run(run, survey, embeddings_QxOxE, table, progress)
    return TrainResult(run.path, end, meta["best_validation"], meta["best_step"],
                       meta["history"], time.perf_counter() - started)


def calibrate_trained_run(run: RunDir, survey: Survey, embeddings_QxOxE: np.ndarray | None = None,
                          table: OptionTable | None = None, progress: bool = False
                          ) -> Calibration:
    """Fit a finished run's intervals and save them: first the models of its further
    calibration folds (`data.calibration_folds` > 1; each resumed, or skipped when trained),
    then the conformal quantiles on its validation groups and those folds. `survey` holds
    the run's questions in its order; embeddings default to the run's own."""
    config = run.require().config
    split, val_groups = run.split.resolve(survey)
    folds = calibration_folds(split, val_groups, config.data.calibration_folds,
                              config.data.split_seed) if config.data.calibration_folds > 1 else []
    fold_config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                       calibration_folds=1))
    for i, fold in enumerate(folds, 1):  # models that score the other training groups
        if progress:
            tqdm.write(f"calibration fold {i} of {len(folds)}: a model trained without "
                       + ", ".join(survey.group_labels[g] for g in fold))
        train(fold_config, survey, run.embeddings() if embeddings_QxOxE is None
              else embeddings_QxOxE, run.path / FOLDS / str(i), progress=progress,
              calibrate=False, validation_groups=fold)
    return calibrate_run(run, survey, table)


class HostSteps:
    """One step a call, its episodes sampled on the host and split over the devices."""

    def __init__(self, graphdef, tx, loss: str, mesh, table: OptionTable,
                 sampler: EpisodeSampler):
        self.step, self.mesh, self.table, self.sampler = (
            make_train_step(graphdef, tx, loss, mesh), mesh, table, sampler)

    def __call__(self, state, opt_state, step: int, n: int):
        episodes = self.sampler.sample(step)
        state, opt_state, metrics = self.step(state, opt_state, self.table,
                                              put_batch(episodes, self.mesh))
        return state, opt_state, {**metrics, "group_B": episodes.group_B}


class DeviceSteps:
    """`n` steps a call, their episodes drawn on the device, packed several a row where
    that pays (`packs`)."""

    def __init__(self, graphdef, tx, loss: str, mesh, table: OptionTable, train: TrainConfig,
                 head_cls, model, *, survey: Survey, groups, questions, sampling, seed,
                 reference_groups, usable_references):
        sampler, arrays = DeviceSampler.build(survey, groups, questions, sampling, seed,
                                              reference_groups, usable_references)
        self.arrays = jax.device_put(arrays, replicated(mesh))
        layout = None
        if packs(train, head_cls):  # heads that pack are transformers of `model.width`
            layout = choose_layout(lambda step: sampler.sample(self.arrays, step),
                                   model.width, multiple=mesh.shape["data"])
        self.run_steps = make_device_steps(graphdef, tx, loss, mesh, sampler, layout)
        self.table = table

    def __call__(self, state, opt_state, step: int, n: int):
        return self.run_steps(state, opt_state, self.table, self.arrays, step, n)


# Packing pays a fixed cost before the first step, the layout search over 256 steps'
# episodes and the compilation of the padded step a batch that does not fit falls back to (a
# few seconds on a CPU: bench_train.py's "compile s"), and saves a fraction of every step:
# runs of fewer steps than this (the tests' tiny runs above all) are not worth the wait.
PACK_FROM_STEPS = 200


def packs(t: TrainConfig, head_cls) -> bool:
    """Whether meta-training packs several episodes a row (`TrainConfig.packing`): 'auto'
    packs where padding costs compute (a CPU) and the run is long enough to repay the fixed
    cost; accelerators keep one padded episode a row."""
    if t.packing == "rows" and not head_cls.packs_episodes:
        raise ValueError(f"train.packing='rows': head {head_cls.name!r} does not keep the "
                         "episodes of a row apart; use packing='off' or 'auto'")
    if t.packing == "auto":
        return (t.sampler == "device" and head_cls.packs_episodes
                and jax.default_backend() == "cpu" and t.steps >= PACK_FROM_STEPS)
    return t.packing == "rows"


def step_calls(start: int, end: int, t: TrainConfig) -> list[tuple[int, int]]:
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


def _check_finite(first_step: int, metrics: dict, survey: Survey) -> None:
    """Raise TrainingDiverged at the first step of a call whose loss is not finite, naming the
    step, its episodes and their groups (metrics of one step, or stacked over a call's)."""
    loss_N = np.atleast_1d(np.asarray(metrics["loss"]))
    if np.isfinite(loss_N).all():
        return
    i = int(np.flatnonzero(~np.isfinite(loss_N))[0])
    nonfinite_B = np.asarray(metrics["nonfinite_B"]).reshape(len(loss_N), -1)[i]
    groups_B = np.asarray(metrics["group_B"]).reshape(len(loss_N), -1)[i]
    bad = np.flatnonzero(nonfinite_B)
    labels = [survey.group_labels[groups_B[b]] for b in bad] or ["(none singled out)"]
    raise TrainingDiverged(f"loss is {loss_N[i]} at step {first_step + i}; episodes "
                           f"{bad.tolist()} (groups {labels[:5]}) produced non-finite "
                           "predictions")
