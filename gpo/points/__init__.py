"""Points: the option table every point indexes and the typed batch of episodes' points that
training, evaluation and the API build and every head reads."""

from __future__ import annotations

from gpo.points.batch import (
    PADDING,
    EpisodeBatch,
    Points,
    PointSlots,
    gather_points,
    pack_episodes,
    pack_points,
    padded_size,
    point_capacity,
    reference_mask,
)
from gpo.points.table import (
    EmbeddingStats,
    OptionTable,
    References,
    build_option_table,
    check_finite,
    ordinal_positions,
    survey_option_table,
)

__all__ = ["PADDING", "EmbeddingStats", "EpisodeBatch", "OptionTable", "PointSlots", "Points",
           "References", "build_option_table", "check_finite", "gather_points",
           "ordinal_positions", "pack_episodes", "pack_points", "padded_size",
           "point_capacity", "reference_mask", "survey_option_table"]
