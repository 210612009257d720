"""Which GPO training recipe works best? Variants of the 2-core budget `TrainConfig.cpu`
(loss, group mixup, steps) and the paper's own recipe, on OpinionQA, scored beside the
baselines over group splits.

    python experiments/gpo_recipes.py --data-dir ../shared/data [--steps 400] [--seeds 0 1 2]
        [--variants base mixup50 ...] [--protocols A B]
    # the paper's episodes (32 of 10-100 + 10-100 questions a step) on a GPU, from a
    # `gpo embed` file:
    python experiments/gpo_recipes.py --data-dir data --embeddings opinionqa_smollm2.npz \\
        --variants paper --steps 3000 --set train.loss=kl

Runs live under --runs/opinionqa_<protocol>_<embedder>_<variant>[_overrides]/<seed> and are
resumed. Prints
validation alignment (what model selection may look at) and test alignment at each k.
"""

from __future__ import annotations

import dataclasses

from common import (
    embed,
    experiment_parser,
    fenced,
    load_survey,
    main_guard,
    render_table,
    table_part,
    train_and_evaluate,
    variant_run,
)

from gpo.config import DataConfig, EmbedConfig, TrainConfig
from gpo.evaluation.report import write_json

# name: (preset, overrides, multiple of --steps)
VARIANTS = {
    "base": ("cpu", {}, 1),                        # = experiments/heads.py's GPO
    "kl": ("cpu", {"loss": "kl"}, 1),
    "mixup50": ("cpu", {"group_mixup": 0.5}, 1),
    "mixup100": ("cpu", {"group_mixup": 1.0}, 1),
    "base_x3": ("cpu", {}, 3),
    "mixup50_x3": ("cpu", {"group_mixup": 0.5}, 3),
    "kl_x3": ("cpu", {"loss": "kl"}, 3),
    # The planted-agreement check (experiments/gpo_context_check.py) learns best with KL at 3e-4.
    "kl_lr3e-4_x3": ("cpu", {"loss": "kl", "learning_rate": 3e-4}, 3),
    "kl_lr3e-4_mixup50_x3": ("cpu", {"loss": "kl", "learning_rate": 3e-4, "group_mixup": 0.5},
                             3),
    "paper": ("paper", {}, 1),  # 32 episodes of 10-100 + 10-100 questions, lr 3e-4 cosine
}
DEFAULT_VARIANTS = ["base", "kl", "mixup50", "base_x3", "mixup50_x3", "kl_x3"]
BASELINES_SHOWN = ("population prior", "nearest group", "group mixture", "group regression")


def recipe(name: str, steps: int) -> TrainConfig:
    preset, overrides, multiple = VARIANTS[name]
    if preset == "paper":
        return TrainConfig.of(steps=steps * multiple, eval_every=250, checkpoint_every=250,
                              **overrides)
    return TrainConfig.cpu(steps * multiple, **overrides)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/",
                               out="reports/gpo_recipes.json", runs="runs/gpo_recipes",
                               precomputed=True)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS,
                        metavar="VARIANT", help=f"recipes to run, of {list(VARIANTS)} "
                        f"(default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--protocols", nargs="+", default=["A"], choices=["A", "B"],
                        help="A: unseen groups; B: unseen groups and questions (default: A)")
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20],
                        help="context questions (default: 5 10 20)")
    args = parser.parse_args()

    survey = load_survey(DataConfig(dataset="opinionqa", data_dir=args.data_dir))
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    report = {"seeds": args.seeds, "protocols": {}, "tables": {}}
    for protocol in args.protocols:
        data = DataConfig(dataset="opinionqa", data_dir=args.data_dir, protocol=protocol)
        rows, evaluation = {}, None
        for name in args.variants:
            config, run_dir = variant_run(args, name, "gpo", None, data, embed_config,
                                          train=recipe(name, args.steps))
            runs = train_and_evaluate(config, survey, embeddings, run_dir, args.ks, args.seeds)
            evaluation = runs.evaluation
            rows[f"GPO {name} ({config.train.steps} steps)"] = {
                "validation": runs.validation, **evaluation.rows(args.ks, ["GPO"])["GPO"]}
            report["protocols"].setdefault(protocol, {})[run_dir.name] = {
                "train": dataclasses.asdict(config.train), "validation": runs.validation,
                "evaluation": evaluation.to_json()}
        shown = [m for m in evaluation.methods if m.rstrip(" *") in BASELINES_SHOWN]
        rows.update(evaluation.rows(args.ks, shown))  # the same splits and tasks for each
        report["tables"][protocol] = table_part(
            f"OpinionQA protocol {protocol}, splits {args.seeds}: alignment", rows,
            ["validation"] + [f"k={k}" for k in args.ks])
        print("\n" + render(report, protocol))
    write_json(args.out, report)


def render(report: dict, protocol: str) -> str:
    """A protocol's table as printed, from the JSON report."""
    text = render_table(report["tables"][protocol])
    return text + ("\n* reads training groups' answers on the held-out questions"
                   if protocol == "B" else "")


def render_markdown(report: dict, part: str) -> str:
    """A protocol's table as docs/results.md holds it (experiments/write_docs.py)."""
    return fenced(render(report, part))


if __name__ == "__main__":
    main_guard(main)
