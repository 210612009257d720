"""Which GPO training recipe works best at the 2-core budget? Variants of `TrainConfig.cpu`
(loss, group mixup, steps) on OpinionQA protocol A, scored like heads.py.

    python experiments/gpo_recipes.py --data-dir ../shared/data [--steps 400] [--seeds 0 1 2]
        [--variants base mixup50 ...]

Runs live under --runs/<variant>/<seed> and are resumed. Prints validation alignment (what
model selection may look at) and test alignment at k = 5, 10, 20, with the baselines.
"""

from __future__ import annotations

import dataclasses

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.experiment import embed, experiment_parser, load_survey, train_and_evaluate
from gpo.report import format_table, write_json

# name: (TrainConfig.cpu overrides, multiple of --steps)
VARIANTS = {
    "base": ({}, 1),                        # = experiments/heads.py's GPO
    "kl": ({"loss": "kl"}, 1),
    "mixup50": ({"group_mixup": 0.5}, 1),
    "mixup100": ({"group_mixup": 1.0}, 1),
    "base_x3": ({}, 3),
    "mixup50_x3": ({"group_mixup": 0.5}, 3),
    "kl_x3": ({"loss": "kl"}, 3),
    # The planted-agreement check (experiments/gpo_context_check.py) learns best with KL at 3e-4.
    "kl_lr3e-4_x3": ({"loss": "kl", "learning_rate": 3e-4}, 3),
    "kl_lr3e-4_mixup50_x3": ({"loss": "kl", "learning_rate": 3e-4, "group_mixup": 0.5}, 3),
}
DEFAULT_VARIANTS = ["base", "kl", "mixup50", "base_x3", "mixup50_x3", "kl_x3"]
BASELINES_SHOWN = ("population prior", "nearest group", "group mixture", "group regression")


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/",
                               out="reports/gpo_recipes.json", runs="runs/gpo_recipes",
                               precomputed=True)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS)
    args = parser.parse_args()

    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir, protocol="A")
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    ks = (5, 10, 20)
    rows, report = {}, {"seeds": args.seeds, "variants": {}}
    for name in args.variants:
        overrides, multiple = VARIANTS[name]
        train = TrainConfig.cpu(args.steps * multiple, **overrides)
        config = RunConfig(head="gpo", data=data, embed=embed_config, train=train)
        scores = train_and_evaluate(config, survey, embeddings, f"{args.runs}/{name}", ks,
                                    args.seeds)
        label = f"GPO {name} ({train.steps} steps)"
        rows[label] = {"validation": scores.validation,
                       **{f"k={k}": scores.per_k[k]["GPO"] for k in ks}}
        baselines = {b: {f"k={k}": scores.per_k[k][b] for k in ks} for b in BASELINES_SHOWN}
        report["variants"][name] = {"train": dataclasses.asdict(train),
                                    "validation": scores.validation,
                                    "per_k": scores.per_k}
    rows.update(baselines)  # the same splits and tasks for every variant
    columns = ["validation"] + [f"k={k}" for k in ks]
    print("\n" + format_table(f"OpinionQA protocol A, splits {args.seeds}: alignment", rows,
                              columns))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
