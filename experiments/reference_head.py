"""The reference-group head beside every baseline: OpinionQA protocol A over five group splits
at k = 1 ... 100 context questions, with the paired per-group difference to the group
regression and its bootstrap 95% interval; protocol B; GlobalOpinionQA (JS alignment); the
persona pairs (accuracy, beside PAL); the planted-agreement task. A noise-ceiling row says how
well the observed data can be predicted at all.

    python experiments/reference_head.py --data-dir ../shared/data
    python experiments/reference_head.py --data-dir ../shared/data --settings opinionqa_A \\
        --variants base kl mixup50 x2

Recipe variants are trained on OpinionQA protocol A and the one whose runs score best on
validation groups (never test groups; mean over k, and over both regimes: context answers
with their respondent counts and without them) is the head reported there and used in every
other setting but protocol B, which picks among its own variants (recipes that train the
text prior more) on its own validation groups (a rerun without opinionqa_A keeps the recipe
its last report chose). Where counts exist, every head row is
reported again without them. Runs live under --runs and are resumed; writes
reports/reference_head.json: per setting and k, each method's list of per-split scores under
its printed name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import (
    PERSONA,
    REFERENCE_VARIANTS,
    embed,
    experiment_parser,
    fenced,
    head_variants,
    load_survey,
    main_guard,
    merge_variants,
    reference_recipe,
    train_and_evaluate,
    variant_run,
    write_merged,
)

from gpo.config import DataConfig, EmbedConfig, TrainConfig
from gpo.data.splits import make_eval_task
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.evaluation.evaluate import validation_scores
from gpo.evaluation.metrics import noise_ceiling, paired_difference
from gpo.evaluation.report import NOISE_CEILING, format_table, paired_by_k, paired_text
from gpo.run_dir import RunDir

HEAD = "REFERENCE"
BASELINE = "group regression"  # the strongest baseline, every paired difference's other side
SETTINGS = {  # name: (dataset, protocol, context sizes k)
    "opinionqa_A": ("opinionqa", "A", (1, 2, 5, 10, 20, 50, 100)),
    "opinionqa_B": ("opinionqa", "B", (5, 10, 20)),
    "globalopinionqa": ("globalopinionqa", "A", (5, 10, 20)),
    "persona": ("persona", "A", (1, 2, 5, 10, 20, 50)),
    "planted": ("planted", "A", (10,)),
}
VARIANTS = REFERENCE_VARIANTS
DEFAULT_VARIANTS = ["base", "kl", "mixup50", "uniform_k", "impute", "counts25", "counts50"]
# Under protocol B no reference group answered a test question: only the text prior answers,
# so B picks among recipes that train it more, on its own validation groups.
DEFAULT_B_VARIANTS = ["base", "hide75", "hide75_x2"]


def setting_data(name: str, data_dir: str) -> DataConfig:
    dataset, protocol, _ = SETTINGS[name]
    if dataset == "planted":
        return DataConfig(eval_k=10)
    extra = PERSONA if dataset == "persona" else {}
    return DataConfig(dataset=dataset, data_dir=data_dir, protocol=protocol, **extra)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/, "
                               "globalopinionqa/ and anthropic_persona/",
                               out="reports/reference_head.json", runs="runs/reference_head",
                               steps=300, seeds=(0, 1, 2, 3, 4))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="datasets and protocols (default: all)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS,
                        help=f"recipes compared on OpinionQA A (default: "
                             f"{' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--b-variants", nargs="+", default=DEFAULT_B_VARIANTS,
                        choices=VARIANTS, help=f"recipes compared on OpinionQA B (default: "
                        f"{' '.join(DEFAULT_B_VARIANTS)})")
    parser.add_argument("--pal-steps", type=int, default=400,
                        help="PAL's budget on the persona set, in GPO steps as heads.py "
                             "(default: 400)")
    args = parser.parse_args()
    report: dict = {"seeds": args.seeds, "variants": args.variants, "settings": {}}
    chosen = chosen_before(args.out) or args.variants[0]
    for setting in args.settings:
        dataset, protocol, ks = SETTINGS[setting]
        data = setting_data(setting, args.data_dir)
        if dataset == "planted":
            survey, embeddings = make_planted_agreement_survey()
            embed_config = EmbedConfig(model="lexical")
        else:
            survey = load_survey(data)
            embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
            embeddings = embed(survey, embed_config)
        variants = {"opinionqa_A": args.variants, "opinionqa_B": args.b_variants}.get(
            setting, [chosen])
        counts = bool(np.isfinite(survey.respondents_GxQ).all())  # known: both regimes
        runs, validation = {}, {}
        for variant in variants:
            train_config, model = reference_recipe(variant, args.steps)
            config, run_dir = variant_run(args, f"{HEAD} {variant}", "reference", model, data,
                                          embed_config, train=train_config)
            name = f"{HEAD} {variant}"
            runs[name] = train_and_evaluate(config, survey, embeddings, run_dir, ks,
                                            args.seeds, without_counts=counts)
            validation[name] = regimes_validation(runs[name], survey, ks, counts)
        # the recipe best on validation groups, over k and both regimes where counts exist
        picked = max(validation, key=lambda n: np.mean(list(validation[n].values())))
        picked = picked.split()[-1]
        if setting == "opinionqa_A":
            chosen = picked
        label = f"{HEAD} {picked}"
        heads = {HEAD: runs[label]}
        if dataset == "persona":
            (_, (head, model)), = head_variants((4,), ("PAL",)).items()
            config, run_dir = variant_run(args, "PAL K=4", head, model, data, embed_config,
                                          train=TrainConfig.cpu(args.pal_steps * 10))
            heads["PAL K=4"] = train_and_evaluate(config, survey, embeddings, run_dir, ks,
                                                  args.seeds, baselines=False)
        evaluation = merge_variants(heads)
        rows = evaluation.rows(ks)
        if counts:
            free = f"{HEAD} without counts"
            rows = {HEAD: rows.pop(HEAD), free: runs[label].evaluation.rows(ks, [free])[free],
                    **rows}
        if len(runs) > 1:
            for name, r in runs.items():
                seen = ", ".join(f"{regime} {v:.4f}" for regime, v in validation[name].items())
                rows[f"{name} (validation: {seen})"] = r.evaluation.rows(
                    ks, [r.evaluation.head])[r.evaluation.head]
                if counts:
                    rows[f"{name} without counts"] = r.evaluation.rows(
                        ks, [f"{HEAD} without counts"])[f"{HEAD} without counts"]
        if dataset == "opinionqa" and protocol == "A":  # respondent counts are known
            rows[NOISE_CEILING] = ceiling_row(runs[label], survey, ks, data.metric)
        metric = {"wasserstein": "alignment", "js": "JS alignment"}.get(data.metric,
                                                                       data.metric)
        how = "validation here" if len(runs) > 1 else "validation on OpinionQA A"
        paired = {}
        if protocol == "A" and BASELINE in evaluation.methods:  # B's baselines read test
            # questions' training answers, which a protocol-B model may not: no fair pairing
            chosen_runs = runs[label].evaluation
            for method in (HEAD, f"{HEAD} without counts") if counts else (HEAD,):
                source = evaluation if method == HEAD else chosen_runs
                paired[method] = {k: paired_difference(
                    source.per_group(method, k)[1], evaluation.per_group(BASELINE, k)[1])
                    for k in ks}
        report["settings"][setting] = {
            "title": f"{setting}: {survey}; {metric}, mean ± std over splits {args.seeds}; "
                     f"{HEAD} = recipe '{picked}' (best {how})",
            "ks": list(ks), "rows": rows,
            "chosen": picked, "paired_vs_group_regression": paired,
            "paired_groups": len(evaluation.per_group(HEAD, ks[0])[1]),
            "validation": validation,
            "evaluation": evaluation.to_json()}
        print("\n" + render_setting(report["settings"][setting]))
    print(f"\nwrote {write_merged(args.out, report, SETTINGS, key='settings')}")


def render_setting(setting: dict) -> str:
    """One setting's table and each head's paired difference to the group regression, as
    printed and as docs/results.md holds it (experiments/write_docs.py)."""
    lines = [format_table(setting["title"], setting["rows"], [f"k={k}" for k in setting["ks"]])]
    for method, per_k in setting["paired_vs_group_regression"].items():
        lines.append(f"{method} - {BASELINE}, paired over {setting['paired_groups']} test "
                     "groups x splits, mean [bootstrap 95% interval]:")
        lines.append(paired_by_k(per_k))
    return "\n".join(lines)


HEADLINE_METHODS = (HEAD, BASELINE, "population prior", NOISE_CEILING)
HEADLINE_KS = (5, 10, 20)


def render_headline(setting: dict) -> str:
    """README's cut of protocol A: the head, the strongest baseline, the prior and the noise
    ceiling at k = 5, 10, 20, and the head's paired lead at those k."""
    columns = [f"k={k}" for k in HEADLINE_KS]
    rows = {m: {c: setting["rows"][m][c] for c in columns} for m in HEADLINE_METHODS}
    table = format_table("", rows, columns).lstrip("\n")
    lead = setting["paired_vs_group_regression"][HEAD]
    leads = ", ".join(f"{paired_text(*lead[str(k)])} at k = {k}" for k in HEADLINE_KS)
    return (f"```\n{table}\n```\n\n{HEAD} − {BASELINE}, paired over "
            f"{setting['paired_groups']} held-out groups × splits (mean [95% interval]): "
            f"{leads}.")


def render_markdown(report: dict, part: str) -> str:
    """A part of the report as docs show it: a setting's full table, or `headline`."""
    if part == "headline":
        return render_headline(report["settings"]["opinionqa_A"])
    return fenced(render_setting(report['settings'][part]))


def chosen_before(path: str) -> str | None:
    """The recipe OpinionQA A chose when the report at `path` was written: the one the other
    settings use when A is not rerun (rerun, A chooses again)."""
    last = Path(path)
    if not last.is_file():
        return None
    return json.loads(last.read_text())["settings"].get("opinionqa_A", {}).get("chosen")


def regimes_validation(runs, survey, ks, counts: bool) -> dict[str, float]:
    """The variant's runs on their validation groups, mean over splits and k: with counts,
    and without them where the data has counts."""
    regimes = {"with counts": True, "without counts": False} if counts else {"score": True}
    return {regime: float(np.mean([validation_scores(run_dir, survey, ks, with_counts)
                                   for run_dir in runs.run_dirs]))
            for regime, with_counts in regimes.items()}


def ceiling_row(runs, survey, ks, metric: str) -> dict[str, list[float]]:
    """The noise ceiling on the same test groups and target questions, per split and k."""
    row = {f"k={k}": [] for k in ks}
    for run_dir in runs.run_dirs:
        split, _ = RunDir(run_dir).split.resolve(survey)
        for k in ks:
            task = make_eval_task(survey, split, k, seed=split.seed)
            row[f"k={k}"].append(noise_ceiling(survey, task, metric, seed=split.seed).mean)
    return row


if __name__ == "__main__":
    main_guard(main)
