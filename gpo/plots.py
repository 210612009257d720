"""Matplotlib figures for evaluation reports (PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_alignment_vs_k(results: dict, path: str | Path) -> Path:
    """Alignment against the number of context questions, one line per method."""
    ks = sorted(int(k) for k in results["k"])
    methods = list(results["k"][ks[0]] if ks[0] in results["k"] else results["k"][str(ks[0])])
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        values = [results["k"][k][method] for k in ks]
        mean = [np.mean(v) for v in values]
        std = [np.std(v) for v in values]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("context questions k")
    ax.set_ylabel("alignment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_per_group(results: dict, path: str | Path) -> Path:
    """Per test group alignment of each method at the largest k."""
    groups = results["groups"]
    methods = list(results["per_group"])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups)), 4))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        ax.bar(x + i * width, results["per_group"][method], width, label=method)
    ax.set_xticks(x + 0.4 - width / 2, groups, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("alignment")
    lows = [v for m in methods for v in results["per_group"][m] if np.isfinite(v)]
    ax.set_ylim(max(0.0, min(lows) - 0.02), 1.0)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
