"""Alignment against the number of context questions k = 1 ... 100 on OpinionQA protocol A:
every head (PAL at the K its validation groups prefer) beside every baseline, three splits.

    python experiments/sample_efficiency.py --data-dir ../shared/data

Trains through the same run folders as experiments/heads.py (same names, same per-head
budget), so after that script nothing is retrained. Prints the table, writes a JSON report and
reports/sample_efficiency.png.
"""

from __future__ import annotations

import numpy as np

from gpo.config import DataConfig, EmbedConfig, RunConfig
from gpo.experiment import (
    embed,
    experiment_parser,
    experiment_train_config,
    head_variants,
    load_survey,
    run_directory,
    train_and_evaluate,
)
from gpo.plots import plot_alignment_vs_k
from gpo.report import format_table, write_json

KS = (1, 2, 5, 10, 20, 50, 100)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ (the same as "
                               "experiments/heads.py's, so its runs are reused)",
                               out="reports/sample_efficiency.json",
                               precomputed=True)
    args = parser.parse_args()

    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    rows: dict[str, dict[int, list[float]]] = {}
    pal_validation = {}
    for label, (head, model) in head_variants(embeddings.shape[-1]).items():
        config = RunConfig(head=head, model=model, data=data, embed=embed_config,
                           train=experiment_train_config(head, args.steps))
        scores = train_and_evaluate(config, survey, embeddings,
                                    run_directory(args.runs, config, label), KS, args.seeds)
        for method in scores.per_k[KS[0]]:
            name = label if method == head.upper() else method
            if name.startswith("PAL"):
                pal_validation[name] = float(np.mean(scores.validation))
            rows.setdefault(name, {k: scores.per_k[k][method] for k in KS})
    best_pal = max(pal_validation, key=pal_validation.get)
    kept = ["GPO", best_pal, "PPD"] + [r for r in rows if not r.startswith(("GPO", "PAL", "PPD"))]
    table = {name: {f"k={k}": rows[name][k] for k in KS} for name in kept}
    print(format_table(f"OpinionQA protocol A, {args.embedder}: alignment vs context questions "
                       f"k, mean ± std over splits {args.seeds} ({best_pal} chosen on "
                       "validation groups)", table, [f"k={k}" for k in KS]))
    results = {"k": {k: {name: rows[name][k] for name in kept} for k in KS}}
    path = plot_alignment_vs_k(results, "reports/sample_efficiency.png")
    print(f"\nwrote {write_json(args.out, {'embedder': args.embedder, **results})}, {path}")


if __name__ == "__main__":
    main()
