"""Countries as groups (GlobalOpinionQA subset, Jensen-Shannon alignment): GPO meta-trained on
40% of the countries beside the baselines, and GPO meta-trained on OpinionQA's US groups
adapting to the same held-out countries (cross-dataset transfer), three splits.

    python experiments/globalopinionqa.py --data-dir ../shared/data

The OpinionQA model comes from experiments/heads.py's run folders (trained here if missing).
Prints the table and writes a JSON report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gpo.api import load
from gpo.baselines import score_predictions
from gpo.config import DataConfig, EmbedConfig, RunConfig
from gpo.data.episodes import make_eval_task
from gpo.evaluate import predict_task
from gpo.experiment import (
    embed,
    experiment_parser,
    experiment_train_config,
    load_survey,
    run_directory,
    train_and_evaluate,
)
from gpo.report import format_table, write_json
from gpo.train import EmbeddingTable, split_for

KS = (5, 10, 20)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding globalopinionqa/ and "
                               "opinionqa/", out="reports/globalopinionqa.json")
    args = parser.parse_args()
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    train_config = experiment_train_config("gpo", args.steps)

    countries = DataConfig(dataset="globalopinionqa", data_dir=args.data_dir)
    survey = load_survey(countries)
    embeddings = embed(survey, embed_config)
    print(f"{survey}; {args.embedder} embeddings {embeddings.shape}")
    config = RunConfig(data=countries, embed=embed_config, train=train_config)
    scores = train_and_evaluate(config, survey, embeddings, run_directory(args.runs, config,
                                                                          "GPO"), KS, args.seeds)
    rows = {name: {f"k={k}": scores.per_k[k][name] for k in KS} for name in scores.per_k[KS[0]]}

    us = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    us_survey = load_survey(us)
    us_config = RunConfig(data=us, embed=embed_config, train=train_config)
    us_runs = run_directory(args.runs, us_config, "GPO")
    train_and_evaluate(us_config, us_survey, embed(us_survey, embed_config), us_runs, (20,),
                       args.seeds, log=lambda _: None)
    transfer = {f"k={k}": [] for k in KS}
    for seed in args.seeds:
        model = load(us_runs / str(seed))
        split = split_for(dataclasses.replace(config, data=dataclasses.replace(
            countries, split_seed=seed)), survey)
        table = EmbeddingTable.with_stats(embeddings, model.table.mean_E,
                                          model.table.scale_E).table_NxE
        for k in KS:
            task = make_eval_task(survey, split, k, seed=seed)
            prob, _ = predict_task(model.module, table, survey, task)
            transfer[f"k={k}"].append(score_predictions(survey, task, prob, "js").mean)
    rows = {"GPO": rows.pop("GPO"), "GPO trained on OpinionQA": transfer, **rows}
    print(format_table(f"\nGlobalOpinionQA, held-out countries: JS alignment, mean ± std over "
                       f"splits {args.seeds}", rows, [f"k={k}" for k in KS]))
    print(f"\nwrote {write_json(Path(args.out), {'embedder': args.embedder, 'rows': rows})}")


if __name__ == "__main__":
    main()
