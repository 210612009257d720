"""How far can a prediction built from the training groups go on OpinionQA protocol A?

    python experiments/ceilings.py --data-dir ../shared/data

The convex mixture and the affine regression of training groups, fitted to a test group's
k = 5/10/20 context answers (honest baselines), and fitted to ALL its answers and scored on
the same answers (in-sample: not a method, a ceiling for its family). A target above the
convex family's ceiling needs predictions outside the training groups' convex hull.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import fenced, main_guard

from gpo.config import DataConfig
from gpo.data.splits import EvalTask, make_eval_task, make_split
from gpo.evaluation.baselines import group_mixture, group_regression
from gpo.evaluation.metrics import score_predictions
from gpo.evaluation.report import format_table, write_json
from gpo.pipeline import load_survey

KS = (5, 10, 20)
IN_SAMPLE = "all answers, in-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding opinionqa/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="group split seeds (default: 0 1 2)")
    parser.add_argument("--out", default="reports/ceilings.json",
                        help="JSON report (default: reports/ceilings.json)")
    args = parser.parse_args()
    survey = load_survey(DataConfig(dataset="opinionqa", data_dir=args.data_dir))
    methods = {"group mixture (convex)": group_mixture,
               "group regression (affine)": group_regression}
    rows: dict[str, dict[str, list[float]]] = {name: {} for name in methods}
    for seed in args.seeds:
        split = make_split(survey, "A", seed=seed)
        every_answer = np.ones((len(split.test_groups), len(survey.questions)), bool)
        in_sample = EvalTask(split.test_groups, every_answer, every_answer)
        tasks = {k: make_eval_task(survey, split, k, seed=seed) for k in KS}  # shared by methods
        for name, predict in methods.items():
            for k, task in tasks.items():
                score = score_predictions(survey, task, predict(survey, split, task)).mean
                rows[name].setdefault(f"k={k}", []).append(score)
            # With every answer as context no question is left to choose a penalty on: a tiny
            # fixed one (the fit is well posed with 624 questions and 14 groups).
            pred = predict(survey, split, in_sample, penalty=1e-6)
            rows[name].setdefault(IN_SAMPLE, []).append(
                score_predictions(survey, in_sample, pred).mean)
    report = {"title": f"OpinionQA protocol A ({len(survey.questions)} questions, "
                       f"{len(split.train_groups)} training groups), alignment over splits "
                       f"{args.seeds}",
              "seeds": args.seeds, "columns": [f"k={k}" for k in KS] + [IN_SAMPLE],
              "rows": rows}
    print(render(report))
    print(f"\nwrote {write_json(args.out, report)}")


def render(report: dict) -> str:
    """The table as printed and as docs/results.md holds it (write_docs.py)."""
    return format_table(report["title"], report["rows"], report["columns"])


def render_markdown(report: dict, part: str | None = None) -> str:
    return fenced(render(report))


if __name__ == "__main__":
    main_guard(main)
