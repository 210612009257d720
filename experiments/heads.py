"""GPO, PAL (K sweep, best K) and PPD beside the baselines, on OpinionQA protocols A and B and
on the persona pairwise set (unseen-user accuracy against the number of context pairs).

    python experiments/heads.py --data-dir ../shared/data [--steps 1000] [--seeds 0 1 2]

Every head runs through the same episodes, train loop, checkpoints and evaluation; runs are
kept under --runs and resumed. Prints one table per dataset and writes a JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.experiment import embed, load_survey, train_and_evaluate
from gpo.models import HEADS
from gpo.report import format_table, write_json

PERSONA_PAIRS = (1, 2, 5, 10, 20, 50)


def head_configs(embedding_dim: int, pal_ks: list[int]) -> dict[str, tuple[str, object]]:
    out = {"GPO": ("gpo", None), "PPD": ("ppd", None)}
    for k in pal_ks:
        out[f"PAL K={k}"] = ("pal", dataclasses.replace(HEADS["pal"][0].paper(embedding_dim),
                                                        prototypes=k))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding opinionqa/ and "
                        "anthropic_persona/")
    parser.add_argument("--embedder", default="smollm2")
    parser.add_argument("--cache-dir", default="runs/embedding_cache")
    parser.add_argument("--runs", default="runs/heads")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pal-k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", default="reports/heads.json")
    args = parser.parse_args()
    train = TrainConfig(steps=args.steps, batch_size=16, context_range=(5, 30),
                        target_range=(5, 30), learning_rate=1e-3, eval_every=250,
                        checkpoint_every=250)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    report = {}
    settings = [("opinionqa", "A", (5, 10, 20)), ("opinionqa", "B", (5, 10, 20)),
                ("persona", "A", PERSONA_PAIRS)]
    for dataset, protocol, ks in settings:
        data = DataConfig(dataset=dataset, data_dir=args.data_dir, protocol=protocol,
                          synthetic_groups=60, synthetic_questions=400)
        survey = load_survey(data)
        embeddings = embed(survey, embed_config)
        rows: dict[str, dict[str, list[float]]] = {}
        for label, (head, model) in head_configs(embeddings.shape[-1], args.pal_k).items():
            config = RunConfig(head=head, model=model, data=data, embed=embed_config,
                               train=train)
            run_dir = Path(args.runs) / f"{dataset}_{protocol}_{label.replace(' ', '')}"
            per_k = train_and_evaluate(config, survey, embeddings, run_dir, ks, args.seeds)
            for method, _ in per_k[ks[0]].items():
                name = label if method == head.upper() else method
                rows.setdefault(name, {}).update({f"k={k}": per_k[k][method] for k in ks})
        metric = "accuracy (unseen users)" if dataset == "persona" else "alignment"
        print(format_table(f"\n{dataset} protocol {protocol}: {metric}, mean ± std over "
                           f"seeds {args.seeds}", rows, [f"k={k}" for k in ks]))
        report[f"{dataset}_{protocol}"] = rows
    print(f"\nwrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
