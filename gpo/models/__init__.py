"""Preference heads. Each registers its config and module under a name: a head is built from
its config, and every head offers encode_context() / predict() / __call__ with GPO's shapes."""

from __future__ import annotations

from gpo.models.gpo import GPO, GPOConfig
from gpo.models.pal import PAL, PALConfig
from gpo.models.ppd import PPD, PPDConfig

HEADS = {"gpo": (GPOConfig, GPO), "pal": (PALConfig, PAL), "ppd": (PPDConfig, PPD)}

__all__ = ["GPO", "GPOConfig", "HEADS", "PAL", "PALConfig", "PPD", "PPDConfig"]
