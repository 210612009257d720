"""Countries as groups (GlobalOpinionQA subset, Jensen-Shannon alignment): each head meta-trained
on 40% of the countries beside the baselines, and the same head meta-trained on OpinionQA's US
groups adapting to the same held-out countries (cross-dataset transfer), three splits.

    python experiments/globalopinionqa.py --data-dir ../shared/data [--heads REFERENCE GPO PPD]

The OpinionQA models come from experiments/heads.py's run folders (trained here if missing).
Prints the table and writes a JSON report.
"""

from __future__ import annotations

import dataclasses

from common import (
    embed,
    experiment_parser,
    fenced,
    head_variants,
    load_survey,
    main_guard,
    merge_variants,
    render_table,
    table_part,
    train_and_evaluate,
    variant_run,
)

from gpo.config import DataConfig, EmbedConfig
from gpo.evaluation.evaluate import SplitResult, evaluate_head, survey_table
from gpo.evaluation.report import write_json
from gpo.run_dir import RunDir
from gpo.training.loop import split_for

KS = (5, 10, 20)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding globalopinionqa/ and "
                               "opinionqa/", out="reports/globalopinionqa.json")
    parser.add_argument("--heads", nargs="+", default=["REFERENCE", "GPO"],
                        choices=["REFERENCE", "GPO", "PPD"],
                        help="heads to train (default: REFERENCE GPO)")
    args = parser.parse_args()
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    countries = DataConfig(dataset="globalopinionqa", data_dir=args.data_dir)
    survey = load_survey(countries)
    embeddings = embed(survey, embed_config)
    print(f"{survey}; {args.embedder} embeddings {embeddings.shape}")
    us = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    us_survey = load_survey(us)
    us_embeddings = embed(us_survey, embed_config)

    variants, transfers = {}, {}
    for label, (head, model) in head_variants(heads=args.heads).items():
        config, run_dir = variant_run(args, label, head, model, countries, embed_config)
        variants[label] = train_and_evaluate(config, survey, embeddings, run_dir, KS,
                                             args.seeds)
        us_config, us_runs = variant_run(args, label, head, model, us, embed_config)
        train_and_evaluate(us_config, us_survey, us_embeddings, us_runs, (20,), args.seeds,
                           log=lambda _: None, baselines=False)
        transfers[f"{label} trained on OpinionQA"] = [
            transfer(us_runs / str(seed), survey, embeddings,
                     split_for(dataclasses.replace(config, data=dataclasses.replace(
                         countries, split_seed=seed)), survey), seed)
            for seed in args.seeds]
    evaluation = merge_variants(variants)
    rows = evaluation.rows(KS, [m for m in evaluation.methods if m in variants])
    for label, results in transfers.items():
        rows[label] = {f"k={k}": [r.scores[label][k]["mean"] for r in results] for k in KS}
    rows.update(evaluation.rows(KS, [m for m in evaluation.methods if m not in variants]))
    table = table_part(f"GlobalOpinionQA, held-out countries: JS alignment, mean ± std over "
                       f"splits {args.seeds}", rows, [f"k={k}" for k in KS])
    print("\n" + render_table(table))
    print(f"\nwrote {write_json(args.out, {'embedder': args.embedder, **table})}")


def render_markdown(report: dict, part: str | None = None) -> str:
    """The table as docs/results.md holds it (experiments/write_docs.py)."""
    return fenced(render_table(report))


def transfer(run_dir, survey, embeddings, split, seed: int) -> SplitResult:
    """A run trained on another survey, adapting to `survey`'s held-out groups (its
    references, for heads that read them, are this split's training groups)."""
    run = RunDir(run_dir)
    head, meta = run.restore_head()
    label = f"{head.name.upper()} trained on OpinionQA"
    table = survey_table(run.stats(), survey, split, embeddings)
    return evaluate_head(head, table, survey, split, KS, "js", seed, label=label,
                         checkpoint=meta, baselines=False)


if __name__ == "__main__":
    main_guard(main)
