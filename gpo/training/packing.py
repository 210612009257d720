"""Several episodes to a row: static shapes that compute little padding.

The device sampler pads every episode to the most points its ranges allow, so that a run
compiles once; at the paper's config (10-100 questions of 2-5 options per part) an episode
fills about 40% of its slots, and on a CPU, where a step is compute-bound, the padding is paid
for in full. `pack_rows` moves the episodes of a batch, first-fit by decreasing size, into a
fixed `RowLayout` (rows of context and target slots); every point keeps its episode's index,
by which a head that packs (`Head.packs_episodes`) lets a point attend and normalise only
within its own episode. A batch that does not fit the layout trains unpacked (`fits` is
False): `choose_layout` picks the layout that costs least on the run's own first steps,
overflows included, and an overflow changes nothing but the speed.

Shapes: B episodes, R rows, C/T context/target slots of an episode, Lc/Lt of a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gpo.points import PADDING, EpisodeBatch, PointSlots


@dataclasses.dataclass(frozen=True)
class RowLayout:
    rows: int
    context_length: int
    target_length: int

    def cost(self, width: int) -> int:
        """Multiply-adds of one transformer layer over the rows (context self-attention and
        target-to-context attention, plus projections and feed-forward per token of `width`)."""
        tokens = self.context_length + self.target_length
        return self.rows * (2 * width * self.context_length * tokens + 6 * width**2 * tokens)


def place(context_B: jax.Array, target_B: jax.Array, layout: RowLayout
          ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """First-fit decreasing placement of B episodes of `context_B` + `target_B` points.

    Returns (row_B, context offset_B, target offset_B, placed_B); an episode that fits no row
    is not placed."""
    order_B = jnp.argsort(-(context_B + target_B), stable=True)

    def place_one(fill, e):
        fill_c_R, fill_t_R = fill
        fits_R = ((fill_c_R + context_B[e] <= layout.context_length)
                  & (fill_t_R + target_B[e] <= layout.target_length))
        r = jnp.argmax(fits_R)
        placed = fits_R[r]
        taken = jnp.where(placed, 1, 0)
        new = (fill_c_R.at[r].add(taken * context_B[e]), fill_t_R.at[r].add(taken * target_B[e]))
        return new, (r, fill_c_R[r], fill_t_R[r], placed)

    empty = jnp.zeros(layout.rows, context_B.dtype)
    _, placement = jax.lax.scan(place_one, (empty, empty), order_B)
    unsort = lambda x: jnp.zeros_like(x).at[order_B].set(x)  # noqa: E731  # episode order
    return tuple(unsort(x) for x in placement)


def point_counts(batch: EpisodeBatch) -> tuple[jax.Array, jax.Array]:
    return (batch.context.mask_BxN.sum(-1).astype(jnp.int32),
            batch.target.mask_BxN.sum(-1).astype(jnp.int32))


def pack_rows(batch: EpisodeBatch, layout: RowLayout) -> tuple[EpisodeBatch, jax.Array]:
    """(the batch laid out in rows, whether every episode fit). Each row holds its episodes'
    points one after another (an episode's points first in its slots, as `pack_points` lays
    them out), `episode_BxN` naming each point's episode (-1 for padding); the per-episode
    arrays (group_B, reference_mask_BxS, hide_target_references_B) stay as they are."""
    row_B, offset_c_B, offset_t_B, placed_B = place(*point_counts(batch), layout)
    R = layout.rows

    def into_rows(slots: PointSlots, offset_B, length: int) -> PointSlots:
        B, N = slots.mask_BxN.shape
        # Out-of-range rows drop the update: padding slots and unplaced episodes write nothing.
        row_BxN = jnp.where(slots.mask_BxN & placed_B[:, None], row_B[:, None], R)
        col_BxN = offset_B[:, None] + jnp.arange(N)[None, :]
        slots = dataclasses.replace(slots, episode_BxN=jnp.broadcast_to(
            jnp.arange(B, dtype=jnp.int32)[:, None], (B, N)))
        rows = {}
        for field in dataclasses.fields(PointSlots):
            value = getattr(slots, field.name)
            rows[field.name] = (jnp.full((R, length), PADDING[field.name], value.dtype)
                                .at[row_BxN, col_BxN].set(value, mode="drop"))
        return PointSlots(**rows)

    packed = dataclasses.replace(
        batch, context=into_rows(batch.context, offset_c_B, layout.context_length),
        target=into_rows(batch.target, offset_t_B, layout.target_length))
    return packed, placed_B.all()


def rows_needed(context_B: jax.Array, target_B: jax.Array, context_length: int,
                target_length: int) -> jax.Array:
    """Rows first-fit decreasing fills with these episodes (B + 1 where one fits no row)."""
    B = context_B.shape[-1]
    row_B, _, _, placed_B = place(context_B, target_B,
                                  RowLayout(B, context_length, target_length))
    return jnp.where(placed_B.all(), row_B.max() + 1, B + 1)


def choose_layout(sample: Callable[[jax.Array], EpisodeBatch], width: int,
                  multiple: int = 1, steps: int = 256) -> RowLayout | None:
    """The row layout with the least expected `RowLayout.cost` over the first `steps` steps
    that `sample(step)` draws (a step that does not fit pays for the padded layout), or None
    when padding every episode costs no more. Rows are a multiple of `multiple` (the devices
    episodes are split over). A function of the sampler's settings and data alone, so a
    resumed run chooses the same layout."""
    shape = jax.eval_shape(sample, jnp.int32(0))
    B, C = shape.context.mask_BxN.shape
    T = shape.target.mask_BxN.shape[1]
    counts = jax.jit(lambda s: jax.lax.map(lambda step: jnp.stack(point_counts(sample(step))),
                                           s))(jnp.arange(steps))
    context_SxB, target_SxB = np.asarray(counts[:, 0]), np.asarray(counts[:, 1])
    padded = RowLayout(B, C, T).cost(width)
    needed = jax.jit(jax.vmap(rows_needed, in_axes=(0, 0, None, None)))  # lengths traced
    best, best_cost = None, padded
    for context_length in _lengths(context_SxB.max(), C, B):
        for target_length in _lengths(target_SxB.max(), T, B):
            rows_S = np.asarray(needed(jnp.asarray(context_SxB), jnp.asarray(target_SxB),
                                       context_length, target_length))
            for rows in np.unique(np.minimum(rows_S, B)):
                rows = min(-(-int(rows) // multiple) * multiple, B)
                layout = RowLayout(rows, context_length, target_length)
                overflow = float(np.mean(rows_S > rows))
                cost = (1 - overflow) * layout.cost(width) + overflow * padded
                if cost < best_cost:
                    best, best_cost = layout, cost
    return best


def _lengths(most: int, capacity: int, batch_size: int) -> list[int]:
    """Row lengths worth trying: from the most points an episode had (a multiple of 8) to a
    few times that, and the episode capacity itself."""
    lengths = {capacity} | {-(-int(most * f) // 8) * 8 for f in (1, 1.25, 1.5, 2, 3)}
    return sorted(n for n in lengths if 0 < n <= capacity * batch_size)
