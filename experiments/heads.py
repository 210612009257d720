"""GPO, PAL (K sweep; the best K picked on validation groups) and PPD beside the baselines, on
OpinionQA protocols A and B (alignment) and the persona pairwise set (unseen-user accuracy
against the number of context pairs).

    python experiments/heads.py --data-dir ../shared/data [--steps 400] [--seeds 0 1 2]
    python experiments/heads.py --data-dir ../shared/data --settings opinionqa_A \\
        --embedders minilm --heads GPO PPD PAL --pal-k 4   # does the frozen embedder matter?

Every head runs through the same episodes, train loop, checkpoints and evaluation, with the
2-core budget `experiment_train_config` (about equal CPU time per head: --steps for GPO,
twice as many for PPD, ten times for PAL; the reference head its own short recipe); runs are
kept under --runs and resumed, so rerunning reprints the same tables. Writes a JSON report and
the fitted PAL weights of a few groups.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from common import (
    HEAD_RECIPES,
    PERSONA,
    best_by_validation,
    embed,
    experiment_parser,
    experiment_train_config,
    fenced,
    head_variants,
    load_survey,
    main_guard,
    merge_variants,
    render_table,
    table_part,
    train_and_evaluate,
    variant_run,
    write_merged,
)

import gpo
from gpo.config import DataConfig, EmbedConfig
from gpo.data.splits import make_eval_task
from gpo.evaluation.evaluate import Evaluation
from gpo.evaluation.metrics import paired_difference
from gpo.evaluation.report import format_table, paired_by_k
from gpo.run_dir import RunDir

SETTINGS = {  # name: (dataset, protocol, context sizes k)
    "opinionqa_A": ("opinionqa", "A", (5, 10, 20)),
    "opinionqa_B": ("opinionqa", "B", (5, 10, 20)),
    "persona": ("persona", "A", (1, 2, 5, 10, 20, 50)),
}


def setting_data(name: str, data_dir: str) -> DataConfig:
    dataset, protocol, _ = SETTINGS[name]
    extra = PERSONA if dataset == "persona" else {}
    return DataConfig(dataset=dataset, data_dir=data_dir, protocol=protocol, **extra)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ and "
                               "anthropic_persona/", out="reports/heads.json",
                               several_embedders=True)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="datasets and protocols (default: all)")
    parser.add_argument("--pal-k", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="PAL prototype counts to sweep (default: 1 2 4 8)")
    parser.add_argument("--heads", nargs="+", default=["REFERENCE", "GPO", "PAL", "PPD"],
                        choices=["REFERENCE", "GPO", "PAL", "PPD"],
                        help="heads to train (default: REFERENCE GPO PAL PPD)")
    args = parser.parse_args()
    report: dict = {"train": {h: dataclasses.asdict(experiment_train_config(h, args.steps))
                              for h in HEAD_RECIPES}, "seeds": args.seeds, "tables": {}}
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
            variants = {}
            for label, (head, model) in head_variants(args.pal_k, args.heads).items():
                config, run_dir = variant_run(args, label, head, model, data, embed_config)
                variants[label] = train_and_evaluate(config, survey, embeddings, run_dir, ks,
                                                     args.seeds)
            evaluation = merge_variants(variants)
            rows = evaluation.rows(ks)
            best_pal = best_by_validation(variants, "PAL")
            if best_pal:
                rows = _ordered(rows, best_pal)
            table = table_part(f"{setting}, {embedder}: {metric_label(data.dataset)}, "
                               f"mean ± std over splits {args.seeds}", rows,
                               [f"k={k}" for k in ks])
            validation = {label: float(np.mean(r.validation)) for label, r in variants.items()}
            entry = report["tables"][f"{setting}/{embedder}"] = {
                **table, "validation": validation, "best_pal": best_pal,
                "evaluation": evaluation.to_json()}
            print("\n" + render_heads_table(entry))
            print("validation (mean over splits): " + ", ".join(
                f"{label} {v:.4f}" for label, v in validation.items()))
            weights = {}
            if best_pal:
                print(f"PAL: best K by validation groups' score: {best_pal[4:]}")
                _, run_dir = variant_run(args, best_pal, "pal", None, data, embed_config)
                weights = pal_weights(run_dir / str(args.seeds[0]), survey)
            for group, w in list(weights.items())[:6]:
                print(f"  {group:<40} weights {np.round(w.astype(float), 2).tolist()}")
            entry["pal_weights"] = {g: w.tolist() for g, w in weights.items()}
    print(f"\nwrote {write_merged(args.out, report, _known_table, key='tables')}")


def _known_table(part: str) -> bool:
    """Tables are named SETTING/EMBEDDER, so one setting or embedder at a time can be redone."""
    return part.split("/")[0] in SETTINGS


def metric_label(dataset: str) -> str:
    return "accuracy (unseen users)" if dataset == "persona" else "alignment"


def render_markdown(report: dict, part: str) -> str:
    """The table of `part` (SETTING/EMBEDDER) as docs/results.md holds it, or, for
    SETTING/embedders, the heads every embedder's table holds side by side."""
    setting, embedder = part.split("/")
    if embedder == "embedders":
        return fenced(render_embedders(report, setting))
    return fenced(render_heads_table(report["tables"][part]))


def render_heads_table(table: dict) -> str:
    """A setting's table, then each other learned head's paired difference from the
    reference head (the default) over the same test groups, where the table holds it."""
    lines = [render_table(table)]
    evaluation = Evaluation.from_json(table["evaluation"])
    if "REFERENCE" not in evaluation.methods:
        return lines[0]
    heads = {h: h for h in ("GPO", "PPD") if h in evaluation.methods}
    if table.get("best_pal"):
        heads[f"PAL best ({table['best_pal'][4:]})"] = table["best_pal"]
    groups = len(evaluation.per_group("REFERENCE", evaluation.ks[0])[0])
    for label, head in heads.items():
        lines.append(f"{label} - REFERENCE, paired over {groups} test groups x splits, "
                     "mean [bootstrap 95% interval]:")
        lines.append(paired_by_k({k: evaluation.paired(head, "REFERENCE", k)
                                  for k in evaluation.ks}))
    return "\n".join(lines)


def render_embedders(report: dict, setting: str) -> str:
    """Each head trained with every embedder of `setting`, one row per embedder, and each
    other embedder's paired difference from the first (the same splits, groups and context
    questions: the baselines, which read no embedding, are the same in every table)."""
    tables = {name.split("/")[1]: table for name, table in report["tables"].items()
              if name.split("/")[0] == setting}
    if len(tables) < 2:
        raise ValueError(f"heads.json holds {setting} for {sorted(tables) or 'no embedder'} "
                         f"only: run heads.py --settings {setting} --embedders OTHER")
    evaluations = {e: Evaluation.from_json(t["evaluation"]) for e, t in tables.items()}
    heads = [h for h in next(iter(tables.values()))["validation"]
             if all(h in t["validation"] for t in tables.values())]
    ks = next(iter(evaluations.values())).ks
    rows = {f"{h}, {e}": evaluation.rows(ks, [h])[h] for h in heads
            for e, evaluation in evaluations.items()}
    (first, reference), *others = evaluations.items()
    lines = [format_table(f"{setting}: each head with each frozen embedder, "
                          f"{metric_label(reference.dataset)}, mean ± std over splits "
                          f"{report['seeds']}",
                          rows, [f"k={k}" for k in ks])]
    for e, evaluation in others:
        for h in heads:
            groups = reference.per_group(h, ks[0])[0]
            if evaluation.per_group(h, ks[0])[0] != groups:
                raise ValueError(f"{setting}: the {first} and {e} runs of {h} were scored on "
                                 "different groups: rerun both with the same --seeds")
            lines.append(f"{h}, {e} - {first}, paired over {len(groups)} test groups x "
                         "splits, mean [bootstrap 95% interval]:")
            lines.append(paired_by_k({k: paired_difference(evaluation.per_group(h, k)[1],
                                                           reference.per_group(h, k)[1])
                                      for k in ks}))
    return "\n".join(lines)


def pal_weights(run_dir, survey, k: int = 20) -> dict[str, np.ndarray]:
    """The K mixture weights PAL fits to each test group of a run from k context answers."""
    run = RunDir(run_dir)
    split, _ = run.split.resolve(survey)
    task = make_eval_task(survey, split, k, seed=split.seed)
    model = gpo.load(run_dir)
    out = {}
    for row, g in enumerate(task.groups):
        context = [(survey.questions[q].key, survey.probs_GxQxO[g, q, :survey.n_options_Q[q]])
                   for q in np.flatnonzero(task.context_GxQ[row])]
        if context:
            out[survey.group_labels[g]] = model.adapt(context).mixture_weights
    return out


def _ordered(rows: dict, best_pal: str) -> dict:
    """Heads first (GPO, PAL best, PPD, then the K sweep), baselines after."""
    rows = dict(rows)
    rows[f"PAL best ({best_pal[4:]})"] = rows[best_pal]
    heads = [r for r in rows if r.startswith(("REFERENCE", "GPO", "PAL best", "PPD"))]
    sweep = [r for r in rows if r.startswith("PAL K=")]
    rest = [r for r in rows if r not in heads and r not in sweep]
    return {r: rows[r] for r in heads + sweep + rest}


if __name__ == "__main__":
    main_guard(main)
