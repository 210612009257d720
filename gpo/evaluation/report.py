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


def paired_text(mean: float, low: float, high: float) -> str:
    """A paired difference with its interval: '+0.0018 [+0.0008, +0.0031]'."""
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def paired_by_k(cells: Mapping) -> str:
    """{k: (mean, low, high)} as one indented line: '  k=5: +0.0018 [...]  k=10: ...'."""
    return "  " + "  ".join(f"k={k}: {paired_text(*cell)}" for k, cell in cells.items())


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


# One line each, for the reports a reader opens without the README.
METRICS = {
    "wasserstein": "alignment = 1 − the Wasserstein-1 distance between the predicted and the "
                   "observed answer shares on the question's ordinal scale, divided by the "
                   "scale's span; averaged over the held-out groups' target questions. 1 is "
                   "exact; higher is better.",
    "js": "alignment = 1 − the Jensen–Shannon distance between the predicted and the observed "
          "answer shares, averaged over the held-out groups' target questions. 1 is exact; "
          "higher is better.",
    "accuracy": "accuracy = the share of held-out pairwise preferences predicted the way the "
                "user chose. Higher is better.",
}
K_DEFINITION = ("k = how many of a held-out group's answers every method is given (its "
                "context); the group's other answers are predicted and scored.")
# The row of the best any method can expect to score (a bound, not a method: `BOUNDS`).
NOISE_CEILING = "noise ceiling"

METHODS = {
    "REFERENCE": "the reference-group head (default): a new group fitted as an affine "
                 "combination of the training groups' answers, with a noise model and a text "
                 "prior learned by meta-training",
    "GPO": "GPO (Zhao et al. 2024): a transformer over the group's context points, "
           "meta-trained across groups",
    "PAL": "PAL: K learned prototypes, a group a mixture of them fitted to its context",
    "PPD": "PPD: a group embedding from the context conditions the predictor",
    "uniform": "every option equally likely",
    "population prior": "the training groups' mean answer to the question",
    "nearest group": "the training group closest to the group on its context answers",
    "group mixture": "a convex mixture of training groups fitted to the context answers",
    "group regression": "an affine combination of training groups fitted to the context "
                        "answers (ridge, penalty by leave-one-group-out)",
    "kNN options": "the group's own context answers, carried to similar options by embedding",
    "LLM": "the LLM prompted with the question (zero-shot), a persona naming the group "
           "(steered), or the group's context answers (few-shot); 'both orders' averages the "
           "listed and the reversed option order",
    NOISE_CEILING: "each group's answers against resamples of themselves at their own "
                   "respondent counts: what no method can expect to beat",
}


def method_definition(method: str) -> str | None:
    """A method's one-line definition (by its label's first word for heads and LLM rows)."""
    base = method.rstrip(" *")
    for key in (base, base.split()[0]):
        if key in METHODS:
            return METHODS[key]
    return None


class Html(str):
    """Markup for `write_html`, inserted as it is (any other text is escaped)."""


# Rows that bound what a method can score rather than compete with it: never the column's best.
BOUNDS = (NOISE_CEILING,)


def html_table(rows: Mapping[str, Mapping[str, Sequence[float]]], columns: Sequence[str]
               ) -> Html:
    """rows as `format_table` takes them, as an HTML table: 'mean ± std' cells, each
    column's best method in bold (a bound such as the noise ceiling is not a method)."""
    best = {c: max((float(np.mean(r[c])) for name, r in rows.items()
                    if c in r and len(r[c]) and name not in BOUNDS), default=None)
            for c in columns}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for name, r in rows.items():
        cells = []
        for c in columns:
            if c not in r or not len(r[c]):
                cells.append("<td>—</td>")
                continue
            text = html.escape(mean_std(r[c]))
            bold = name not in BOUNDS and float(np.mean(r[c])) == best[c]
            cells.append(f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>")
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return Html(f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>")


def held_out(evaluation) -> str:
    """The first split of an `Evaluation` in words: protocol, seed, its held-out groups."""
    split = evaluation.splits[0]
    return (f"protocol {evaluation.protocol}, seed {split.seed}: {len(split.groups)} held-out "
            f"groups ({', '.join(split.groups)})")


def html_facts(facts: Mapping[str, str]) -> Html:
    """A two-column table of what a report is about (data, split, config)."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    return Html(f"<table class='facts'>{rows}</table>")


def html_definitions(metric: str, methods: Sequence[str]) -> Html:
    """The metric, k and each method shown, one line each."""
    items = [("alignment" if metric != "accuracy" else "accuracy", METRICS.get(metric, metric)),
             ("k", K_DEFINITION)]
    seen = set()
    for m in methods:
        text = method_definition(m)
        if text and text not in seen:
            seen.add(text)
            items.append((m.rstrip(" *") if not m.startswith("LLM") else "LLM …", text))
    return Html("<dl>" + "".join(f"<dt>{html.escape(a)}</dt><dd>{html.escape(b)}</dd>"
                                 for a, b in items) + "</dl>")


_STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}"
          "table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
          "th:first-child{text-align:left}"
          "table.facts td{text-align:left}"
          "dt{font-weight:bold}dd{margin:0 0 .5em 1.5em}"
          "p{white-space:pre-wrap}")


def write_html(path: str | Path, title: str, blocks: Sequence[str],
               images: Sequence[str | Path], json_name: str | None = "report.json") -> Path:
    """One self-contained HTML page: the blocks in order (`Html` as markup, other text as
    wrapped paragraphs), the PNGs inlined, and a link to the JSON report beside it."""
    path = Path(path)
    parts = [f"<!doctype html><html lang='en'><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        parts.append(block if isinstance(block, Html) else f"<p>{html.escape(block)}</p>")
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{html.escape(Path(image).stem)}' style='max-width:100%' "
                     f"src='data:image/png;base64,{data}'></p>")
    link = (f" Every number above is in <a href='{html.escape(json_name)}'>"
            f"{html.escape(json_name)}</a>." if json_name else "")
    parts.append(f"<p><small>Written {time.strftime('%Y-%m-%d %H:%M')} on "
                 f"{html.escape(platform.node())}.{link}</small></p></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
