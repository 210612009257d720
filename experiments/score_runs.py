"""Score kept runs beside the baselines without training: runs trained elsewhere (a GPU
machine, say) and brought back, one folder per group split.

    python experiments/score_runs.py --data-dir ../shared/data \
        --runs runs/gpu_h200/A_nll_lr3e-4/smollm2_A_gaussian_nll [--ks 5 10 20 50] \
        [--embeddings opinionqa_smollm2.npz]

Every folder under --runs holding a config.json is one run; its config names the dataset,
protocol, split seed and embedder. Prints each run's checkpoint (step, validation alignment)
and the alignment at each k, mean ± std over the runs, with the baselines on the same tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from gpo.config import RunConfig
from gpo.experiment import add_scores, embed, evaluate_run, load_survey
from gpo.report import format_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding the runs' dataset")
    parser.add_argument("--runs", required=True, help="folder of run folders (one per split)")
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--cache-dir", default="runs/embedding_cache")
    parser.add_argument("--embeddings", metavar="NPZ",
                        help="precomputed embeddings from `gpo embed` instead of the embedder")
    parser.add_argument("--out", default="reports/score_runs.json", help="JSON report")
    args = parser.parse_args()

    runs = sorted(p.parent for p in Path(args.runs).glob("*/config.json"))
    if not runs:
        raise SystemExit(f"{args.runs}: no run folders (*/config.json)")
    configs = [RunConfig.load(run / "config.json") for run in runs]
    first = configs[0]
    for run, config in zip(runs, configs):
        if (config.data.dataset, config.embed.model) != (first.data.dataset, first.embed.model):
            raise SystemExit(f"{run}: dataset/embedder differ from {runs[0]}'s")
    survey = load_survey(dataclasses.replace(first.data, data_dir=args.data_dir))
    embed_config = dataclasses.replace(first.embed, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)

    per_k: dict[int, dict[str, list[float]]] = {k: {} for k in args.ks}
    report = {"runs": {}}
    for run, config in zip(runs, configs):
        results = evaluate_run(run, survey, embeddings, args.ks,
                               eval_seeds=(config.data.split_seed,))
        checkpoint = results["checkpoint"]
        validation = checkpoint["validation"]
        print(f"{run}: split {config.data.split_seed}, protocol {config.data.protocol}, "
              f"{config.train.steps} steps planned; checkpoint at step {checkpoint['step']}, "
              f"validation {'none' if validation is None else f'{validation:.4f}'}")
        report["runs"][str(run)] = {"checkpoint": checkpoint, "k": results["k"]}
        add_scores(per_k, results)
    rows = {m: {f"k={k}": per_k[k][m] for k in args.ks} for m in per_k[args.ks[0]]}
    title = (f"\n{first.data.dataset} protocol {first.data.protocol}: alignment, mean ± std "
             f"over {len(runs)} run{'s' * (len(runs) > 1)}")
    print(format_table(title, rows, [f"k={k}" for k in args.ks]))
    print(f"\nwrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
