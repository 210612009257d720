"""Tables and JSON reports for experiments: one formatting path for every printed figure."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def mean_std(values: Sequence[float]) -> str:
    """'mean ± sample std' over seeds; a single value is shown alone."""
    arr = np.asarray(values, np.float64)
    if arr.size == 1:
        return f"{arr[0]:.4f}"
    return f"{arr.mean():.4f} ± {arr.std(ddof=1):.4f}"


def format_table(title: str, rows: Mapping[str, Mapping[str, Sequence[float]]],
                 columns: Sequence[str]) -> str:
    """rows: {row name: {column: per-seed values}} -> aligned text, 'mean ± std' per cell."""
    cells = [[name] + [mean_std(r[c]) if c in r else "—" for c in columns]
             for name, r in rows.items()]
    header = ["method", *columns]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *cells)]
    line = lambda xs: "  ".join(str(x).ljust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([title, line(header), line(["-" * w for w in widths]),
                      *(line(c) for c in cells)])


def write_json(path: str | Path, payload: dict) -> Path:
    """Write a report with provenance (time, host) beside the numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
               **payload}
    path.write_text(json.dumps(payload, indent=2, default=_to_builtin))
    return path


def _to_builtin(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def evaluation_table(evaluation, title: str, ks=None, rename: dict | None = None) -> str:
    """An `Evaluation` as a table: one row per method, 'mean ± std' over splits per k."""
    ks = evaluation.ks if ks is None else ks
    return format_table(title, evaluation.rows(ks, rename=rename), [f"k={k}" for k in ks])
