"""How well can OpinionQA's observed answers be predicted at all? Each group's observed
distribution scored against multinomial resamples of itself at its own respondent counts:
the alignment an oracle that knew every group's true distribution would reach on data this
noisy. Over all groups and questions, and on the test groups and target questions of the
group splits the experiments use.

    python experiments/noise_ceiling.py --data-dir ../shared/data [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import main_guard

from gpo.config import DataConfig
from gpo.data.splits import EvalTask, make_eval_task, make_split
from gpo.evaluation.metrics import noise_ceiling
from gpo.evaluation.report import format_table, write_json
from gpo.pipeline import load_survey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding opinionqa/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="group split seeds (default: 0 1 2 3 4)")
    parser.add_argument("--k", type=int, default=20, help="context questions (default: 20)")
    parser.add_argument("--resamples", type=int, default=5,
                        help="multinomial resamples per answer (default: 5)")
    parser.add_argument("--out", default="reports/noise_ceiling.json",
                        help="JSON report (default: reports/noise_ceiling.json)")
    args = parser.parse_args()

    survey = load_survey(DataConfig(dataset="opinionqa", data_dir=args.data_dir))
    every = np.ones((len(survey.groups), len(survey.questions)), bool)
    everything = EvalTask(np.arange(len(survey.groups)), ~every, every)
    overall = noise_ceiling(survey, everything, resamples=args.resamples)
    per_split = []
    for seed in args.seeds:
        split = make_split(survey, "A", seed=seed)
        task = make_eval_task(survey, split, args.k, seed=seed)
        per_split.append(noise_ceiling(survey, task, resamples=args.resamples, seed=seed).mean)
    rows = {f"all {len(survey.groups)} groups, {len(survey.questions)} questions":
            {"alignment": [overall.mean]},
            f"test groups, targets at k={args.k}, splits {args.seeds}":
            {"alignment": per_split}}
    print(format_table("OpinionQA noise ceiling: observed vs resampled at own respondent counts",
                       rows, ["alignment"]))
    order = np.argsort(overall.per_group_G)
    print("lowest groups: " + ", ".join(f"{survey.group_labels[g]} {overall.per_group_G[g]:.4f}"
                                         for g in order[:4]))
    write_json(args.out, {"overall": overall.mean, "per_group": dict(zip(
        survey.group_labels, overall.per_group_G.tolist())), "per_split": per_split,
        "k": args.k, "seeds": args.seeds})


if __name__ == "__main__":
    main_guard(main)
