"""Checkpoints with orbax: the latest training state (model, optimizer, step, data position,
config) for resuming, and the best model by validation alignment for use."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """No checkpoint of a run can be read; the message names each step and what failed."""


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2):
        directory = Path(directory).absolute()
        self.directory = directory
        self.latest = ocp.CheckpointManager(
            directory / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=keep))
        self.best = ocp.CheckpointManager(
            directory / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1))

    def save_latest(self, step: int, model_state: Any, optimizer_state: Any,
                    meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state),
            optimizer=ocp.args.StandardSave(optimizer_state),
            meta=ocp.args.JsonSave(_snapshot(meta))))

    def save_best(self, step: int, model_state: Any, meta: dict) -> None:
        self.best.save(step, args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state), meta=ocp.args.JsonSave(_snapshot(meta))))

    def restore_latest(self, abstract_model: Any, abstract_optimizer: Any):
        """(model, optimizer, meta) of the newest latest checkpoint that can be read, or None
        when there is none.

        A damaged step is skipped for the one before it, with a warning naming both, and
        moved to checkpoints/damaged/ (kept for inspection; left in place it would stop the
        resumed run from saving that step again). When no step can be read, one
        `CheckpointError` names each and says what still works."""
        args = ocp.args.Composite(model=ocp.args.StandardRestore(abstract_model),
                                  optimizer=ocp.args.StandardRestore(abstract_optimizer),
                                  meta=ocp.args.JsonRestore())
        found, failures = self._walk_back([("latest", self.latest)], args)
        if found is None and not failures:
            return None
        if found is None:
            best = self._walk_back([("best", self.best)], ocp.args.Composite(
                model=ocp.args.StandardRestore(abstract_model), meta=ocp.args.JsonRestore()))[0]
            still = (f"its best checkpoint (step {best[1]}) is intact and still serves "
                     "predictions; train again in a new run folder" if best else
                     "restore checkpoints/ from a copy, or move it aside and train again")
            raise CheckpointError(f"{self.directory}: the run cannot resume, no checkpoint "
                                  f"under latest/ can be read: {_listed(failures)}; {still}")
        _, step, out = found
        if failures:
            moved = self._set_aside("latest", [failed_step for _, failed_step, _ in failures])
            warnings.warn(f"{self.directory}: resuming from step {step}: "
                          f"{_listed(failures)} cannot be read (moved to {moved})",
                          stacklevel=2)
        return out.model, out.optimizer, out.meta

    def restore_model(self, abstract_model: Any):
        """(model, meta) from the newest best checkpoint that can be read, else the newest
        latest one; None when there is none.

        A damaged checkpoint (a truncated or missing file) is skipped for the next one, every
        saved step of both, with a warning naming what was used and why; when none can be
        read, one `CheckpointError` names each step and the array that failed, instead of
        orbax's tracebacks."""
        args = ocp.args.Composite(model=ocp.args.StandardRestore(abstract_model),
                                  meta=ocp.args.JsonRestore())
        found, failures = self._walk_back([("best", self.best), ("latest", self.latest)], args)
        if found is None and failures:
            raise CheckpointError(f"{self.directory}: no checkpoint can be read: "
                                  f"{_listed(failures)}. Restore the files from a copy, or "
                                  "move checkpoints/ aside and train again")
        if found is None:
            return None
        which, step, out = found
        if failures:
            warnings.warn(f"{self.directory}: using the {which} checkpoint (step {step}): "
                          f"{_listed(failures)} cannot be read", stacklevel=2)
        return out.model, out.meta

    def latest_meta(self) -> dict | None:
        """The meta (step, best, history) of the newest readable latest checkpoint, its
        arrays left unread; None when there is none."""
        found, _ = self._walk_back([("latest", self.latest)],
                                   ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return None if found is None else found[2].meta

    def _walk_back(self, managers, args):
        """((which, step, restored) of the newest readable step, newest manager first, or
        None; and the failures on the way, (which, step, why) each)."""
        failures = []
        for which, manager in managers:
            for step in sorted(manager.all_steps(), reverse=True):
                try:
                    with _quiet_orbax():
                        return (which, step, manager.restore(step, args=args)), failures
                except Exception as err:  # noqa: BLE001  (orbax raises many types; all mean damage)
                    failures.append((which, step, _culprit(err)))
        return None, failures

    def _set_aside(self, which: str, steps: list[int]) -> Path:
        """Move damaged steps of a manager to checkpoints/damaged/WHICH-STEP; orbax then sees
        only the readable ones."""
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        for step in steps:
            source = self.directory / which / str(step)
            target = damaged / f"{which}-{step}"
            n = 1
            while target.exists():
                target, n = damaged / f"{which}-{step}.{n}", n + 1
            if source.exists():
                os.replace(source, target)
        self.latest.reload() if which == "latest" else self.best.reload()
        return damaged

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _listed(failures: list[tuple[str, int, str]]) -> str:
    return "; ".join(f"{which} checkpoint (step {step}): {why}"
                     for which, step, why in failures)


def _snapshot(meta: dict) -> dict:
    """A copy of `meta` as it is now. Orbax writes JSON in its background thread, from the
    dict as it stands then: the training loop's meta, already moved on to a later step, would
    pair this checkpoint's arrays with a later step's position, and a resume would silently
    skip steps."""
    return json.loads(json.dumps(meta))


def _culprit(err: BaseException) -> str:
    """The array and the reason of an orbax restore failure, in one line (the useful part
    sits down the chain of causes, e.g. 'OUT_OF_RANGE: Error reading "embedder.layers.2.
    kernel.value/0.0" ... is not valid for value of size 643691')."""
    chain = []
    while err is not None and len(chain) < 10:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        text = re.sub(r"\s*\[(tensorstore_spec|source locations)=.*", "", str(e), flags=re.S)
        found = re.search(r'Error reading "([^"/]+)', text)
        if found:
            item = found.group(1).removesuffix(".value")
            reason = re.split(r'": ', text)[-1].strip()  # after the last quoted path
            return f"array {item!r} is damaged ({reason[:160]})"
    first = str(chain[-1]).splitlines()[0] if str(chain[-1]) else type(chain[-1]).__name__
    return first[:200]


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs every failed read with a traceback, and TensorStore's threads print more
    ('Event loop is closed') as its abandoned reads finish: while a restore runs, and for a
    moment after it fails, the process's stderr goes nowhere. The raised error says what
    failed; a successful restore prints nothing anyway."""
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    _drop_abandoned_reads()  # they may report before the restore has failed
    try:
        yield
    except Exception:
        time.sleep(0.5)  # let the abandoned reads report into the void
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


ABANDONED_READ = ("_read_array_index_and_device_put", "reading array index",
                  # a read finishing after its restore's event loop was closed
                  "RuntimeError('Event loop is closed')")


def _drop_abandoned_reads() -> None:
    """From the first restore on, drop the 'exception ignored' reports of orbax's abandoned
    array reads (coroutines collected long after a failed restore, and TensorStore's
    callbacks into its closed event loop), and only those."""
    hook = sys.unraisablehook
    if getattr(hook, "drops_abandoned_reads", False):
        return

    def filtered(unraisable):
        text = f"{unraisable.object!r} {unraisable.exc_value!r}"
        if not any(sign in text for sign in ABANDONED_READ):
            hook(unraisable)

    filtered.drops_abandoned_reads = True
    sys.unraisablehook = filtered
