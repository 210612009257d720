"""gpo: few-shot group preference modelling in JAX (the reference-group head, GPO, PAL, PPD).

The public names below load on first use, so `gpo --help` does not import JAX.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "AdaptedGroup": "gpo.api", "GroupPreferenceModel": "gpo.api", "Prediction": "gpo.api",
    "load": "gpo.api",
    "DataConfig": "gpo.config", "EmbedConfig": "gpo.config", "RunConfig": "gpo.config",
    "SamplingConfig": "gpo.config", "TrainConfig": "gpo.config",
    "Group": "gpo.data", "Question": "gpo.data", "Survey": "gpo.data",
    "load_globalopinionqa": "gpo.data", "load_opinionqa": "gpo.data",
    "GPOConfig": "gpo.models", "Head": "gpo.models", "Points": "gpo.models",
    "ReferenceConfig": "gpo.models", "register_head": "gpo.models",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
