"""Alignment against the number of context questions k = 1 ... 100 on OpinionQA protocol A:
every head (PAL at the K its validation groups prefer) beside every baseline, three splits.

    python experiments/sample_efficiency.py --data-dir ../shared/data

Trains through the same run folders as experiments/heads.py (same names, same per-head
budget), so after that script nothing is retrained. Prints the table, writes a JSON report and
reports/sample_efficiency.png.
"""

from __future__ import annotations

from common import (
    best_by_validation,
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
from gpo.evaluation.plots import plot_alignment_vs_k
from gpo.evaluation.report import write_json

KS = (1, 2, 5, 10, 20, 50, 100)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ (the same as "
                               "experiments/heads.py's, so its runs are reused)",
                               out="reports/sample_efficiency.json", precomputed=True)
    parser.add_argument("--heads", nargs="+", default=["REFERENCE", "GPO", "PAL", "PPD"],
                        choices=["REFERENCE", "GPO", "PAL", "PPD"],
                        help="heads to train (default: REFERENCE GPO PAL PPD)")
    parser.add_argument("--plot", default="reports/sample_efficiency.png",
                        help="figure path (default: reports/sample_efficiency.png)")
    args = parser.parse_args()

    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    variants = {}
    for label, (head, model) in head_variants(heads=args.heads).items():
        config, run_dir = variant_run(args, label, head, model, data, embed_config)
        variants[label] = train_and_evaluate(config, survey, embeddings, run_dir, KS,
                                             args.seeds)
    best_pal = best_by_validation(variants, "PAL")
    kept = {label: runs for label, runs in variants.items()
            if not label.startswith("PAL") or label == best_pal}
    evaluation = merge_variants(kept)
    rows = evaluation.rows(KS)
    chosen = f" ({best_pal} chosen on validation groups)" if best_pal else ""
    title = (f"OpinionQA protocol A, {args.embedder}: alignment vs context questions k, "
             f"mean ± std over splits {args.seeds}{chosen}")
    table = table_part(title, rows, [f"k={k}" for k in KS])
    print(render_table(table))
    path = plot_alignment_vs_k(evaluation, args.plot, f"OpinionQA protocol A, "
                               f"{len(survey.questions)} questions, {args.embedder}")
    print(f"\nwrote {write_json(args.out, {'embedder': args.embedder, **table})}, {path}")


def render_markdown(report: dict, part: str | None = None) -> str:
    """The table as docs/results.md holds it (experiments/write_docs.py)."""
    return fenced(render_table(report))


if __name__ == "__main__":
    main_guard(main)
