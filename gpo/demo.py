"""The offline demo: embed a survey with the default frozen LLM, meta-train GPO on 40% of the
groups, adapt to the held-out groups from 20 context questions each, and compare with every
baseline. OpinionQA when its folder is given (or found via $GPO_DATA_DIR), else the seeded
synthetic survey. Sized to finish in minutes on 2 CPU cores; experiments/ holds full runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data import data_dir, make_synthetic_survey
from gpo.data.opinionqa import find_human_resp, load_opinionqa
from gpo.experiment import embed, evaluate_run
from gpo.plots import plot_alignment_vs_k, plot_per_group
from gpo.report import format_table, write_json
from gpo.train import train

DEMO_QUESTIONS = 240  # an OpinionQA subset: embedding all 624 takes ~6 minutes on 2 cores
DEMO_STEPS = 400


def _demo_survey(folder: Path | None):
    if folder is not None:
        try:
            root = find_human_resp(folder)
        except FileNotFoundError:
            root = None
        if root is not None:
            survey = load_opinionqa(root).complete_questions()
            keep = np.random.default_rng(0).choice(len(survey.questions), DEMO_QUESTIONS,
                                                   replace=False)
            return survey.select(questions=np.sort(keep)), "opinionqa"
    return make_synthetic_survey(seed=0, n_groups=36, n_questions=150).survey, "synthetic"


def run_demo(data_dir: str | None = None, out: str = "runs/demo", steps: int | None = None,
             embedder: str = "smollm2") -> dict:
    started = time.perf_counter()
    out_dir = Path(out)
    folder = _data_dir(data_dir)
    survey, dataset = _demo_survey(folder)
    print(f"[demo] {survey} ({dataset})")

    config = RunConfig(
        data=DataConfig(dataset=dataset, eval_k=20),
        embed=EmbedConfig(model=embedder, cache_dir=str(out_dir / "embedding_cache")),
        train=TrainConfig.cpu(steps or DEMO_STEPS, eval_every=100, checkpoint_every=100))
    t = time.perf_counter()
    embeddings = embed(survey, config.embed)
    print(f"[demo] embedded {int(survey.option_mask_QxO.sum())} options with {embedder} "
          f"in {time.perf_counter() - t:.0f}s -> {embeddings.shape}")

    t = time.perf_counter()
    run_dir = out_dir / "run"
    result = train(config, survey, embeddings, run_dir)
    print(f"[demo] meta-trained {result.steps} steps in {time.perf_counter() - t:.0f}s; best "
          f"validation alignment {result.best_validation:.4f} at step {result.best_step}")

    ks = (5, 10, 20)
    results = evaluate_run(run_dir, survey, embeddings, ks)
    rows = {m: {f"k={k}": results["k"][k][m] for k in ks} for m in results["k"][ks[-1]]}
    print()
    print(format_table(f"{dataset}: alignment on {len(results['groups'])} held-out groups "
                       "(GPO adapts in-context; baselines fit the same context answers)",
                       rows, [f"k={k}" for k in ks]))
    write_json(out_dir / "report.json", {"dataset": dataset, "embedder": embedder,
                                         "config": config.to_dict(), **results})
    plot_alignment_vs_k(results, out_dir / "alignment_vs_k.png")
    plot_per_group(results, out_dir / "per_group.png")
    print(f"\n[demo] wrote {out_dir}/report.json, alignment_vs_k.png, per_group.png "
          f"({time.perf_counter() - started:.0f}s in all)")
    return results


def _data_dir(flag: str | None) -> Path | None:
    root = data_dir(flag)
    return root if root is not None and root.exists() else None
