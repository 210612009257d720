"""Preference heads behind one protocol (`Head`), built by name from their configs.

Each head module registers its class with `@register_head(name)`; importing this package
registers the built-in heads: one import line each.
"""

from __future__ import annotations

from gpo.models.gpo import GPO, GPOConfig
from gpo.models.head import Head, forward
from gpo.models.pal import PAL, PALConfig
from gpo.models.ppd import PPD, PPDConfig
from gpo.models.reference import ReferenceConfig, ReferenceRegression
from gpo.models.registry import (
    build_head,
    check_model_section,
    head_class,
    head_config,
    head_names,
    register_head,
)
from gpo.points import OptionTable, Points, gather_points

__all__ = ["GPO", "GPOConfig", "Head", "OptionTable", "PAL", "PALConfig", "PPD", "PPDConfig",
           "Points", "ReferenceConfig", "ReferenceRegression", "build_head",
           "check_model_section", "forward", "gather_points", "head_class", "head_config",
           "head_names", "register_head"]
