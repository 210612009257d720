"""Can GPO learn to read a group's context, and which loss lets it? The planted-agreement task
(every group agrees with every question at its own rate, so only the context helps), a short
meta-training run per (loss, learning rate, std bound), scored beside the baselines.

    python experiments/gpo_context_check.py [--steps 150] [--seeds 0 1 2]

Runs live under --runs/<variant>/<seed> and are resumed. The paper's size of GPO (6 layers of
width 128), `TrainConfig.cpu` otherwise; alignment on the held-out groups at --k context
questions, mean ± std over split seeds.
"""

from __future__ import annotations

import argparse
import dataclasses

from common import PUBLISHED_SAMPLER, main_guard, train_and_evaluate

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.evaluation.report import format_table, write_json

# name: (loss, learning rate, bound_std)
VARIANTS = {
    "kl, lr 1e-3": ("kl", 1e-3, False),
    "kl, lr 3e-4": ("kl", 3e-4, False),
    "gaussian_nll, lr 1e-3": ("gaussian_nll", 1e-3, False),
    "gaussian_nll, lr 3e-4": ("gaussian_nll", 3e-4, False),
    "gaussian_nll, bounded std, lr 1e-3": ("gaussian_nll", 1e-3, True),
    "gaussian_nll, bounded std, lr 3e-4": ("gaussian_nll", 3e-4, True),
}
BASELINES_SHOWN = ("population prior", "nearest group", "group mixture")


def run_folder(root: str, variant: str) -> str:
    return f"{root}/{variant.replace(', ', '_').replace(' ', '-')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="steps per run (default: 150)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="group split seeds (default: 0 1 2)")
    parser.add_argument("--k", type=int, default=10,
                        help="context questions per test group (default: 10)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        metavar="VARIANT", help="which (loss, learning rate, std) variants "
                        "(default: all)")
    parser.add_argument("--runs", default="runs/gpo_context_check",
                        help="run folders, kept and resumed (default: runs/gpo_context_check)")
    parser.add_argument("--out", default="reports/gpo_context_check.json",
                        help="JSON report (default: reports/gpo_context_check.json)")
    args = parser.parse_args()

    survey, embeddings = make_planted_agreement_survey()
    rows, report = {}, {"steps": args.steps, "seeds": args.seeds, "variants": {}}
    for name in args.variants:
        loss, lr, bounded = VARIANTS[name]
        config = RunConfig(
            head="gpo", model={"bound_std": bounded},
            data=DataConfig(eval_k=args.k), embed=EmbedConfig(model="lexical"),
            train=TrainConfig.cpu(args.steps, learning_rate=lr, loss=loss,
                                  sampler=PUBLISHED_SAMPLER))
        runs = train_and_evaluate(config, survey, embeddings, run_folder(args.runs, name),
                                  (args.k,), args.seeds)
        evaluation = runs.evaluation
        rows[f"GPO {name}"] = {"validation": runs.validation,
                               f"k={args.k}": evaluation.per_split("GPO", args.k)}
        report["variants"][name] = {"train": dataclasses.asdict(config.train),
                                    "bound_std": bounded, "validation": runs.validation,
                                    "evaluation": evaluation.to_json()}
    rows.update(evaluation.rows([args.k], BASELINES_SHOWN))
    print("\n" + format_table(f"{survey.name}: alignment on held-out groups, {args.steps} "
                              f"steps, splits {args.seeds}", rows,
                              ["validation", f"k={args.k}"]))
    write_json(args.out, report)


if __name__ == "__main__":
    main_guard(main)
