"""Matplotlib figures of an `Evaluation` (PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Far below every fitted method: drawn as a note, not a line that squeezes the y-axis.
OFF_SCALE = ("uniform", "kNN options")


def plot_alignment_vs_k(evaluation, path: str | Path, title: str) -> Path:
    """Mean alignment against k context questions, one line per method, error bars = std
    over splits (or eval seeds); uniform and kNN are named in a note, not drawn."""
    ks = evaluation.ks
    fig, ax = plt.subplots(figsize=(7, 4.5))
    notes = []
    for i, method in enumerate(evaluation.methods):
        mean, std = _mean_and_std([evaluation.per_split(method, k) for k in ks])
        if method.rstrip(" *") in OFF_SCALE:
            notes.append(f"{method}: {mean.mean():.3f}")
            continue
        shift = 1 + 0.015 * (i - len(evaluation.methods) / 2)  # keep error bars apart
        ax.errorbar(np.array(ks) * shift, mean, yerr=std, marker="o", ms=4, capsize=4,
                    elinewidth=1.5, label=_escape(method),
                    lw=2.5 if method == evaluation.head else 1.2)
    n = len(evaluation.splits)
    _against_k(ax, ks, f"alignment ({evaluation.metric})", title,
               f"mean ± std over {n} splits" if n > 1 else
               f"one split (seed {evaluation.splits[0].seed}): no error bars")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if notes:
        fig.text(0.01, 0.01, "not drawn (far below): " + "; ".join(notes), fontsize=7)
    return _save(fig, path)


def _mean_and_std(values_per_k: list) -> tuple[np.ndarray, np.ndarray]:
    """Per k, the mean and the std over splits (0 for one split) of its values."""
    return (np.array([np.mean(v) for v in values_per_k]),
            np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values_per_k]))


def _against_k(ax, ks: list[int], ylabel: str, title: str, spread: str) -> None:
    """The axes of a score against k context questions: log k, one tick per k."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("context questions k")
    ax.set_ylabel(ylabel)
    ax.set_title(_escape(f"{title}\n{spread}"), fontsize=10)
    ax.grid(alpha=0.3)


def plot_per_group(evaluation, k: int, path: str | Path, title: str,
                   methods: tuple[str, ...] | None = None) -> Path:
    """Each test group's alignment at k for the head and the strongest baselines, groups
    sorted by the head's margin over the best of the others."""
    head = evaluation.head
    chosen = [m for m in (methods or evaluation.methods) if m.rstrip(" *") not in OFF_SCALE]
    labels, _ = evaluation.per_group(chosen[0], k)
    values = {m: evaluation.per_group(m, k)[1] for m in chosen}
    others = [m for m in chosen if m != head]
    if head in values and others:
        margin = values[head] - np.max([values[m] for m in others], axis=0)
        order = np.argsort(margin)
        sort_note = f"sorted by {head}'s margin over the best other method"
    else:
        order = np.argsort(values[chosen[0]])
        sort_note = f"sorted by {chosen[0]}"
    fig, ax = plt.subplots(figsize=(8, max(4, 0.26 * len(labels) + 1.5)))
    height = 0.8 / len(chosen)
    y = np.arange(len(labels))
    for i, method in enumerate(chosen):
        ax.barh(y + i * height, values[method][order], height, label=_escape(method))
    ax.set_yticks(y + 0.4 - height / 2, [_escape(labels[i]) for i in order], fontsize=7)
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    ax.set_xlim(max(0.0, finite.min() - 0.01), min(1.0, finite.max() + 0.005))
    ax.set_xlabel(f"alignment ({evaluation.metric}) at k = {k}")
    ax.set_title(_escape(f"{title}\nper test group at k = {k}, {sort_note}"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_curves(curves: dict[str, tuple[list[int], list[list[float]]]], path: str | Path,
                title: str, ylabel: str, ceiling: float | None = None,
                emphasis: tuple[str, ...] = (), dashed: tuple[str, ...] = ()) -> Path:
    """Mean against k per curve {label: (ks, per-k values over splits)}, error bars the std
    over splits (none for one split), `emphasis` curves thick, `dashed` ones dashed; a
    dotted line at the noise ceiling where known."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # one colour per method: the part of a label before its first comma
    methods = list(dict.fromkeys(label.split(",")[0] for label in curves))
    for i, (label, (ks, values)) in enumerate(curves.items()):
        mean, std = _mean_and_std(values)
        ax.errorbar(np.array(ks) * (1 + 0.012 * (i - len(curves) / 2)), mean, yerr=std,
                    marker="o", ms=4, capsize=3, elinewidth=1.2, label=_escape(label),
                    color=f"C{methods.index(label.split(',')[0])}",
                    lw=2.4 if label in emphasis else 1.3, ls="--" if label in dashed else "-")
    if ceiling is not None:
        ax.axhline(ceiling, color="0.4", ls=":", lw=1.2)
        ax.text(0.01, ceiling, "noise ceiling", va="bottom", fontsize=8, color="0.3",
                transform=ax.get_yaxis_transform())
    n = max(len(v) for _, values in curves.values() for v in values)
    _against_k(ax, sorted({k for ks, _ in curves.values() for k in ks}), ylabel, title,
               f"mean ± std over {n} splits" if n > 1 else "one split: no error bars")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _escape(text: str) -> str:
    """Matplotlib reads '$...$' as math: income labels must show their dollars."""
    return text.replace("$", r"\$")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
