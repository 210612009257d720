"""Matplotlib figures of an `Evaluation` (PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gpo.evaluation.report import NOISE_CEILING  # noqa: E402

# Far below every fitted method: drawn as a note, not a line that squeezes the y-axis.
OFF_SCALE = ("uniform", "kNN options")


def plot_alignment_vs_k(evaluation, path: str | Path, title: str,
                        ceiling: float | None = None) -> Path:
    """Mean alignment against k context questions, one line per method, error bars = std
    over splits (none for one split); uniform and kNN are named in a note, not drawn; a
    dotted line at the noise ceiling where known."""
    ks = evaluation.ks
    fig, ax = plt.subplots(figsize=(7, 4.5))
    notes = []
    n = len(evaluation.splits)
    for i, method in enumerate(evaluation.methods):
        mean, std = _mean_and_std([evaluation.per_split(method, k) for k in ks])
        if method.rstrip(" *") in OFF_SCALE:
            notes.append(f"{method}: {mean.mean():.3f}")
            continue
        style = dict(marker="o", ms=4, label=_escape(method),
                     lw=2.5 if method == evaluation.head else 1.2)
        if n > 1:
            shift = 1 + 0.015 * (i - len(evaluation.methods) / 2)  # keep error bars apart
            ax.errorbar(np.array(ks) * shift, mean, yerr=std, capsize=4, elinewidth=1.5,
                        **style)
        else:  # one split: no spread to draw, and no caps in the legend
            ax.plot(ks, mean, **style)
    if ceiling is not None:
        ax.axhline(ceiling, color="0.4", ls=":", lw=1.2, label=f"noise ceiling ({ceiling:.3f})")
    _against_k(ax, ks, f"alignment ({evaluation.metric}, higher is better)", title,
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
    """Per test group at k, each method's margin over the best of the others (the winner's
    dot right of zero, everyone else's left of it), groups sorted by the head's margin: the
    small differences that decide a comparison, readable group by group. Methods: the given
    ones, or the head and the three others that score best at k."""
    head = evaluation.head
    chosen = [m for m in (methods or evaluation.methods) if m.rstrip(" *") not in OFF_SCALE]
    if methods is None:  # the head and its three closest rivals: the others are far behind
        rivals = sorted((m for m in chosen if m != head),
                        key=lambda m: -np.mean(evaluation.per_split(m, k)))
        chosen = [m for m in chosen if m == head] + rivals[:3]
    labels, _ = evaluation.per_group(chosen[0], k)
    values = np.array([evaluation.per_group(m, k)[1] for m in chosen])  # [M, G]
    margins = np.empty_like(values)
    for i in range(len(chosen)):
        margins[i] = values[i] - np.delete(values, i, axis=0).max(0)
    lead = chosen.index(head) if head in chosen else 0
    order = np.argsort(margins[lead])
    fig, ax = plt.subplots(figsize=(8, max(4, 0.24 * len(labels) + 1.8)))
    y = np.arange(len(labels))
    ax.axvline(0, color="0.3", lw=1)
    for i, method in enumerate(chosen):
        ax.scatter(margins[i][order], y, s=36 if i == lead else 16, zorder=3,
                   marker="D" if i == lead else "o", label=_escape(method))
    ax.set_yticks(y, [_escape(labels[i]) for i in order], fontsize=7)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:+.3f}"))
    ax.set_xlabel(f"margin over the best other method at k = {k} "
                  f"(alignment, {evaluation.metric}; > 0: this method wins the group)")
    wins = int((margins[lead] > 0).sum())
    n = len(evaluation.splits)
    ax.set_title(_escape(f"{title}\nper test group at k = {k}: {chosen[lead]} wins {wins} of "
                         f"{len(labels)} groups" + (f" ({n} splits)" if n > 1 else "")
                         + f"; sorted by {chosen[lead]}'s margin"), fontsize=10)
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
        ax.text(0.01, ceiling, NOISE_CEILING, va="bottom", fontsize=8, color="0.3",
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
