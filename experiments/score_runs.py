"""Score kept runs beside the baselines without training: runs trained elsewhere (a GPU
machine, say) and brought back, one folder per group split.

    python experiments/score_runs.py --runs runs/gpu/A_nll_lr3e-4/opinionqa_A_smollm2_paper \
        [--data-dir ../shared/data/opinionqa] [--ks 5 10 20 50]

Every folder under --runs holding a config.json is one run; it records its dataset, questions,
split and embeddings, so nothing is embedded again. --data-dir points at the dataset when it
is not where the runs recorded it. Prints each run's checkpoint (step, validation alignment)
and the alignment at each k, mean ± std over the runs, with the baselines on the same tasks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import fenced, main_guard, render_table, table_part

from gpo.evaluation.report import write_json
from gpo.pipeline import evaluate_saved_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder of run folders (one per split)")
    parser.add_argument("--data-dir", help="the runs' dataset folder, if it moved")
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50],
                        help="context questions (default: 5 10 20 50)")
    parser.add_argument("--out", default="reports/score_runs.json",
                        help="JSON report (default: reports/score_runs.json)")
    args = parser.parse_args()

    runs = sorted(p.parent for p in Path(args.runs).glob("*/config.json"))
    if not runs:
        raise FileNotFoundError(f"{args.runs}: no run folders (*/config.json)")
    evaluation, report = None, {"runs": {}}
    for run in runs:
        scored, survey, _ = evaluate_saved_run(run, args.ks, None, args.data_dir)
        checkpoint = scored.splits[0].checkpoint
        validation = checkpoint["validation"]
        print(f"{run}: split {scored.splits[0].seed}, protocol {scored.protocol}; checkpoint "
              f"at step {checkpoint['step']}, validation "
              f"{'none' if validation is None else f'{validation:.4f}'}")
        report["runs"][str(run)] = scored.to_json()
        evaluation = scored if evaluation is None else evaluation.extend(scored)
    report["table"] = table_part(f"{evaluation.dataset} protocol {evaluation.protocol}: "
                                 f"alignment, mean ± std over {len(runs)} "
                                 f"run{'s' * (len(runs) > 1)}", evaluation.rows(args.ks),
                                 [f"k={k}" for k in args.ks])
    print("\n" + render_table(report["table"]))
    print(f"\nwrote {write_json(args.out, report)}")


def render_markdown(report: dict, part: str | None = None) -> str:
    """The table as docs/results.md holds it (experiments/write_docs.py)."""
    return fenced(render_table(report["table"]))


if __name__ == "__main__":
    main_guard(main)
