"""GPO, PAL (K sweep; the best K picked on validation groups) and PPD beside the baselines, on
OpinionQA protocols A and B (alignment) and the persona pairwise set (unseen-user accuracy
against the number of context pairs).

    python experiments/heads.py --data-dir ../shared/data [--steps 400] [--seeds 0 1 2]
    python experiments/heads.py --data-dir ../shared/data --settings opinionqa_A \\
        --embedders smollm2 minilm         # does the frozen embedder matter?

Every head runs through the same episodes, train loop, checkpoints and evaluation, with the
2-core budget `experiment_train_config` (about equal CPU time per head: --steps for GPO,
twice as many for PPD, ten times for PAL); runs are kept under --runs and resumed, so rerunning
reprints the same tables. Writes a JSON report and the fitted PAL weights of a few groups.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from gpo.api import load
from gpo.config import DataConfig, EmbedConfig, RunConfig
from gpo.experiment import (
    STEPS_PER_UNIT,
    embed,
    experiment_parser,
    experiment_train_config,
    head_variants,
    load_survey,
    run_directory,
    train_and_evaluate,
)
from gpo.report import format_table, write_json

SETTINGS = {  # name: (dataset, protocol, context sizes k)
    "opinionqa_A": ("opinionqa", "A", (5, 10, 20)),
    "opinionqa_B": ("opinionqa", "B", (5, 10, 20)),
    "persona": ("persona", "A", (1, 2, 5, 10, 20, 50)),
}
PERSONA = {"synthetic_groups": 60, "synthetic_questions": 400}  # 60 users x 400 pairs


def setting_data(name: str, data_dir: str) -> DataConfig:
    dataset, protocol, _ = SETTINGS[name]
    extra = PERSONA if dataset == "persona" else {}
    return DataConfig(dataset=dataset, data_dir=data_dir, protocol=protocol, **extra)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ and "
                               "anthropic_persona/", out="reports/heads.json",
                               several_embedders=True)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--pal-k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--heads", nargs="+", default=["GPO", "PAL", "PPD"],
                        choices=["GPO", "PAL", "PPD"])
    args = parser.parse_args()
    report: dict = {"train": {h: dataclasses.asdict(experiment_train_config(h, args.steps))
                              for h in STEPS_PER_UNIT}, "seeds": args.seeds, "tables": {}}
    for setting in args.settings:
        data = setting_data(setting, args.data_dir)
        ks = SETTINGS[setting][2]
        survey = load_survey(data)
        for embedder in args.embedders:
            embed_config = EmbedConfig(model=embedder, cache_dir=args.cache_dir)
            start = time.perf_counter()
            embeddings = embed(survey, embed_config)
            print(f"\n{setting}: {survey}; {embedder} embeddings {embeddings.shape[-1]}-wide "
                  f"({time.perf_counter() - start:.0f}s)")
            rows: dict[str, dict[str, list[float]]] = {}
            validation, pal_dirs = {}, {}
            variants = {label: v for label, v in head_variants(embeddings.shape[-1],
                                                               args.pal_k).items()
                        if label.split()[0] in args.heads}
            for label, (head, model) in variants.items():
                config = RunConfig(head=head, model=model, data=data, embed=embed_config,
                                   train=experiment_train_config(head, args.steps))
                run_dir = run_directory(args.runs, config, label)
                scores = train_and_evaluate(config, survey, embeddings, run_dir, ks, args.seeds)
                validation[label] = float(np.mean(scores.validation))
                if head == "pal":
                    pal_dirs[label] = run_dir
                for method in scores.per_k[ks[0]]:
                    name = label if method == head.upper() else method
                    rows.setdefault(name, {}).update(
                        {f"k={k}": scores.per_k[k][method] for k in ks})
            best_pal = max(pal_dirs, key=validation.get) if pal_dirs else None
            if best_pal:
                rows[f"PAL best ({best_pal[4:]})"] = rows[best_pal]
            metric = "accuracy (unseen users)" if data.dataset == "persona" else "alignment"
            print(format_table(f"\n{setting}, {embedder}: {metric}, mean ± std over splits "
                               f"{args.seeds}", _ordered(rows), [f"k={k}" for k in ks]))
            print("validation (mean over splits): " + ", ".join(
                f"{label} {v:.4f}" for label, v in validation.items()))
            weights = {}
            if best_pal:
                print(f"PAL: best K by validation groups' score: {best_pal[4:]}")
                weights = pal_weights(pal_dirs[best_pal] / str(args.seeds[0]), survey,
                                      embeddings)
            for group, w in list(weights.items())[:6]:
                print(f"  {group:<40} weights {np.round(w.astype(float), 2).tolist()}")
            report["tables"][f"{setting}/{embedder}"] = {
                "rows": rows, "validation": validation, "best_pal": best_pal,
                "pal_weights": {g: w.tolist() for g, w in weights.items()}}
    print(f"\nwrote {write_json(args.out, report)}")


def pal_weights(run_dir, survey, embeddings, k: int = 20) -> dict[str, np.ndarray]:
    """The K mixture weights PAL fits to each test group of a run from k context answers."""
    from gpo.data.episodes import make_eval_task
    from gpo.train import split_for
    model = load(run_dir)
    split = split_for(model.config, survey)
    task = make_eval_task(survey, split, k, seed=split.seed)
    out = {}
    for row, g in enumerate(task.groups):
        context = [(embeddings[q, :survey.n_options_Q[q]],
                    survey.probs_GxQxO[g, q, :survey.n_options_Q[q]])
                   for q in np.flatnonzero(task.context_GxQ[row])]
        if context:
            out[survey.group_labels[g]] = model.adapt(context).mixture_weights
    return out


def _ordered(rows: dict) -> dict:
    """Heads first (GPO, PAL best, PPD, then the K sweep), baselines after."""
    heads = [r for r in rows if r.startswith(("GPO", "PAL best", "PPD"))]
    sweep = [r for r in rows if r.startswith("PAL K=")]
    rest = [r for r in rows if r not in heads and r not in sweep]
    return {r: rows[r] for r in heads + sweep + rest}


if __name__ == "__main__":
    main()
