"""Tables and JSON reports for experiments: one formatting path for every printed figure."""

from __future__ import annotations

import base64
import html
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


def write_html(path: str | Path, title: str, texts: Sequence[str],
               images: Sequence[str | Path]) -> Path:
    """One self-contained HTML page: the printed tables and lines, then the PNGs inlined."""
    path = Path(path)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
             # wrapped: the tables fit; long lines (question texts) would hide behind a scroll
             "pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<pre>{html.escape(text)}</pre>" for text in texts]
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{html.escape(Path(image).stem)}' style='max-width:100%' "
                     f"src='data:image/png;base64,{data}'></p>")
    parts.append(f"<p><small>written {time.strftime('%Y-%m-%d %H:%M')} on "
                 f"{html.escape(platform.node())}</small></p>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
