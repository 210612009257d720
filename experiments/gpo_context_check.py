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

from common import PUBLISHED_SAMPLER, fenced, main_guard, train_and_evaluate

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.evaluation.evaluate import Evaluation
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
    report = {"survey": survey.name, "steps": args.steps, "seeds": args.seeds, "k": args.k,
              "variants": {}}
    for name in args.variants:
        loss, lr, bounded = VARIANTS[name]
        config = RunConfig(
            head="gpo", model={"bound_std": bounded},
            data=DataConfig(eval_k=args.k), embed=EmbedConfig(model="lexical"),
            train=TrainConfig.cpu(args.steps, learning_rate=lr, loss=loss,
                                  sampler=PUBLISHED_SAMPLER))
        runs = train_and_evaluate(config, survey, embeddings, run_folder(args.runs, name),
                                  (args.k,), args.seeds)
        report["variants"][name] = {"train": dataclasses.asdict(config.train),
                                    "bound_std": bounded, "validation": runs.validation,
                                    "evaluation": runs.evaluation.to_json()}
    print("\n" + render(report))
    write_json(args.out, report)


def render(report: dict) -> str:
    """The table as printed: each variant's validation and test alignment, then the
    baselines (every variant scored the same tasks: the last one's are shown)."""
    k, rows = report["k"], {}
    for name, variant in report["variants"].items():
        evaluation = Evaluation.from_json(variant["evaluation"])
        rows[f"GPO {name}"] = {"validation": variant["validation"],
                               f"k={k}": evaluation.per_split("GPO", k)}
    rows.update(evaluation.rows([k], BASELINES_SHOWN))
    return format_table(f"{report['survey']}: alignment on held-out groups, {report['steps']} "
                        f"steps, splits {report['seeds']}", rows, ["validation", f"k={k}"])


def render_markdown(report: dict, part: str | None = None) -> str:
    """The table as docs/results.md holds it (experiments/write_docs.py)."""
    return fenced(render(report))


if __name__ == "__main__":
    main_guard(main)
