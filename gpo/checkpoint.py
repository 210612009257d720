"""Checkpoints with orbax: the latest training state (model, optimizer, step, data position,
config) for resuming, and the best model by validation alignment for use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2):
        directory = Path(directory).absolute()
        self.latest = ocp.CheckpointManager(
            directory / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=keep))
        self.best = ocp.CheckpointManager(
            directory / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1))

    def save_latest(self, step: int, model_state: Any, optimizer_state: Any,
                    meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state),
            optimizer=ocp.args.StandardSave(optimizer_state),
            meta=ocp.args.JsonSave(meta)))

    def save_best(self, step: int, model_state: Any, meta: dict) -> None:
        self.best.save(step, args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state), meta=ocp.args.JsonSave(meta)))

    def restore_latest(self, abstract_model: Any, abstract_optimizer: Any):
        """(model, optimizer, meta) of the latest checkpoint, or None when there is none."""
        step = self.latest.latest_step()
        if step is None:
            return None
        out = self.latest.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(abstract_model),
            optimizer=ocp.args.StandardRestore(abstract_optimizer),
            meta=ocp.args.JsonRestore()))
        return out.model, out.optimizer, out.meta

    def restore_model(self, abstract_model: Any):
        """(model, meta) from the best checkpoint, else the latest; None when there is none."""
        for manager in (self.best, self.latest):
            step = manager.latest_step()
            if step is not None:
                out = manager.restore(step, args=ocp.args.Composite(
                    model=ocp.args.StandardRestore(abstract_model),
                    meta=ocp.args.JsonRestore()))
                return out.model, out.meta
        return None

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
