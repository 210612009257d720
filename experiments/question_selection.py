"""Which questions to ask a new group: every criterion of gpo.question_selection against
random questions, for the reference head and the group regression, at k = 1 ... 20 context
questions, on OpinionQA protocol A (five group splits), GlobalOpinionQA and the persona pairs.

    python experiments/question_selection.py --data-dir ../shared/data

Per split the reference head is meta-trained in experiments/reference_head.py's run folders
(resumed: after that script nothing is retrained). Each criterion picks the context
questions from the training groups' answers alone (greedy, so its k = 5 questions are the
first five of k = 20's); random contexts are three draws of the protocol's own
(`make_eval_task`, the first with the split's seed as every other table). Every method then
goes through the one evaluation path (`task_predictions`): the context, all other test
questions as targets.

The default criterion is the one whose contexts score best for the reference head on the
validation groups (held out of meta-training, the other training groups as references),
averaged over k, every strategy scored on the validation targets no strategy asked. Test
groups are never looked at for it.

Paired comparisons (chosen vs random at the same k, chosen at k vs random at 2k) are per test
group, on the targets neither context asked (a question that is asked is no longer scored,
which would otherwise flatter a criterion that asks the hardest questions), averaged over
the random draws, with bootstrap 95% intervals over groups x splits. Writes
reports/question_selection.json and a plot per setting (docs/question_selection*.png, which
docs/results.md shows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from common import (
    PERSONA,
    embed,
    experiment_parser,
    fenced,
    load_survey,
    main_guard,
    reference_recipe,
    variant_run,
    write_merged,
)

from gpo.config import DataConfig, EmbedConfig
from gpo.data.splits import EvalTask, make_eval_task
from gpo.evaluation.evaluate import chosen_tasks, predict_task, run_table, task_predictions
from gpo.evaluation.metrics import noise_ceiling, paired_difference, score_predictions
from gpo.evaluation.plots import plot_curves
from gpo.evaluation.report import NOISE_CEILING, format_table, paired_by_k, paired_text
from gpo.pipeline import dataset_folder
from gpo.question_selection import CRITERIA, QuestionSelector
from gpo.run_dir import RunDir
from gpo.training import train

HEAD = "REFERENCE"
BASELINE = "group regression"
KS = (1, 2, 3, 5, 10, 20)
DRAWS = 3
SETTINGS = {"opinionqa_A": "opinionqa", "globalopinionqa": "globalopinionqa",
            "persona": "persona"}


def random_tasks(survey, split, ks: Sequence[int], draws: int) -> list[dict[int, EvalTask]]:
    """Random contexts: draw 0 with the split's seed (every table's), the others seeded
    after it."""
    return [{k: make_eval_task(survey, split, k, seed=split.seed + 1000 * d) for k in ks}
            for d in range(draws)]


def validation_choice(head, table, survey, split, validation, ks, criteria, metric, draws):
    """{strategy: mean over k of the head's validation alignment}: each criterion's
    contexts and the random draws, chosen with the other training groups as references and
    scored on the validation targets no strategy asked."""
    usable = ~np.isin(split.train_groups, validation)
    held_out = dataclasses.replace(split, test_groups=validation,
                                   test_questions=split.train_questions)
    selector = QuestionSelector(head, table, survey.option_mask_QxO, usable_S=usable)
    strategies = {c: chosen_tasks(selector, survey, held_out, ks, c) for c in criteria}
    strategies.update({f"random {d}": t for d, t in enumerate(random_tasks(
        survey, held_out, ks, draws))})
    scores = {name: [] for name in strategies}
    for k in ks:
        asked = np.any([tasks[k].context_GxQ for tasks in strategies.values()], axis=0)
        for name, tasks in strategies.items():
            prob, _ = predict_task(head, table, survey, tasks[k], split.train_groups, usable)
            scores[name].append(score_predictions(survey, tasks[k].excluding(asked), prob,
                                                  metric).mean)
    out = {c: float(np.mean(scores[c])) for c in criteria}
    out["random"] = float(np.mean([np.mean(scores[f"random {d}"]) for d in range(draws)]))
    return out


def score_split(run_dir, survey, ks, criteria, metric, draws, embeddings):
    """One split: the validation choice, and per strategy and k every method's per-group
    scores, plus the head's and the regression's predictions for the paired comparisons."""
    run = RunDir(run_dir)
    split, validation = run.split.resolve(survey)
    head, _ = run.restore_head()
    table = run_table(run, survey, split)
    chosen = validation_choice(head, table, survey, split, validation, ks, criteria, metric,
                               draws)
    selector = QuestionSelector(head, table, survey.option_mask_QxO)
    strategies = {c: chosen_tasks(selector, survey, split, ks, c) for c in criteria}
    doubled = sorted(set(ks) | {2 * k for k in ks})
    strategies.update({f"random {d}": t for d, t in enumerate(random_tasks(
        survey, split, doubled, draws))})
    scores, kept = {}, {}
    for name, tasks in strategies.items():
        for k, task in tasks.items():
            predictions = task_predictions(head, table, survey, split, task, metric,
                                           embeddings_QxOxE=embeddings)
            for method, pred in predictions.items():
                scores.setdefault(name, {}).setdefault(method, {})[k] = score_predictions(
                    survey, task, pred, metric).per_group_G
            kept[name, k] = (task, {m: predictions[m] for m in (HEAD, BASELINE)})
    ceiling = None
    if np.isfinite(survey.respondents_GxQ).all():  # counts known: how predictable at all?
        ceiling = noise_ceiling(survey, strategies["random 0"][max(ks)], metric,
                                seed=split.seed).mean
    return {"validation": chosen, "scores": scores, "kept": kept, "ceiling": ceiling,
            "groups": [survey.group_labels[g] for g in split.test_groups]}


def paired(splits, survey, metric, method, criterion, k, random_k, draws):
    """Per test group (all splits), chosen at k minus random at random_k, on the targets
    neither context asked, averaged over the random draws."""
    diffs = []
    for result in splits:
        task, predictions = result["kept"][criterion, k]
        per_draw = []
        for d in range(draws):
            other, other_predictions = result["kept"][f"random {d}", random_k]
            asked = task.context_GxQ | other.context_GxQ
            mine = score_predictions(survey, task.excluding(asked), predictions[method],
                                     metric).per_group_G
            theirs = score_predictions(survey, other.excluding(asked),
                                       other_predictions[method], metric).per_group_G
            per_draw.append(mine - theirs)
        diffs.append(np.mean(per_draw, axis=0))
    return np.concatenate(diffs)


def interval(differences: np.ndarray) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of paired per-group differences, bootstrapped over groups."""
    return paired_difference(differences, np.zeros_like(differences))


PAIRINGS = {"vs random at k": 1, "vs random at 2k": 2}  # chosen at k against random at k·times


def render_setting(report: dict, methods=(HEAD, BASELINE), subset: bool = False) -> str:
    """A setting's table, validation line and paired comparisons as printed; `subset`: the
    rows and comparisons docs/results.md shows (the head's, and the regression's default
    criterion and random rows)."""
    best, draws = report["default"], report["draws"]
    rows = report["rows"]
    if subset:
        keep = [r for r in rows if r.startswith(f"{HEAD},")] + [
            f"{BASELINE}, chosen ({best})", f"{BASELINE}, random ({draws} draws)",
            "population prior, random", NOISE_CEILING]
        rows = {r: rows[r] for r in keep if r in rows}
    lines = [format_table(report["title"], rows, [f"k={k}" for k in report["ks"]])]
    if not subset:
        lines.append("validation groups (reference head, targets no strategy asked, mean "
                     "over k): " + ", ".join(f"{s} {v:.4f}"
                                             for s, v in report["validation"].items()))
    n = sum(len(groups) for groups in report["groups"])
    for method in methods[:1] if subset else methods:
        for key, times in PAIRINGS.items():
            what = "random at the same k" if times == 1 else f"random at {times}k"
            cells = report["paired"][f"{method} {best}"][key]
            lines.append(f"{method} chosen ({best}) - {what}, paired over {n} test groups x "
                         "splits on the targets neither asked, mean [bootstrap 95% interval]:")
            lines.append(paired_by_k(cells))
    return "\n".join(lines)


def render_headline(report: dict, k: int = 5) -> str:
    """README's sentence: k chosen questions against k and 2k random ones."""
    best, draws = report["default"], report["draws"]
    score = lambda row, at: float(np.mean(report["rows"][row][f"k={at}"]))  # noqa: E731
    chosen = f"{HEAD}, chosen ({best})"
    random = f"{HEAD}, random ({draws} draws)"
    lead = report["paired"][f"{HEAD} {best}"]["vs random at 2k"][str(k)]
    return (f"{k} questions chosen by `suggest_questions` score {score(chosen, k):.4f}, "
            f"{k} random ones {score(random, k):.4f} and {2 * k} random ones "
            f"{score(random, 2 * k):.4f} (chosen {k} − random {2 * k}, paired on the "
            f"questions neither asked: {paired_text(*lead)}).")


def render_markdown(report: dict, part: str) -> str:
    """A part of the report as docs show it: `opinionqa_A` (or another setting), the rows
    docs/results.md shows, or `headline`, README's sentence."""
    if part == "headline":
        return render_headline(report["settings"]["opinionqa_A"])
    return fenced(render_setting(report['settings'][part], subset=True))


def summarise(name, survey, splits, ks, criteria, metric, draws, seeds):
    """Print the setting's tables; return its report and plot curves."""
    validation = {s: float(np.mean([r["validation"][s] for r in splits]))
                  for s in (*criteria, "random")}
    best = max(criteria, key=validation.get)
    per_split = lambda strategy, method, k: [  # noqa: E731  mean over groups, per split
        float(np.nanmean(r["scores"][strategy][method][k])) for r in splits]
    random_mean = lambda method, k: [  # noqa: E731  each split's mean over the draws
        float(np.mean(v)) for v in zip(*(per_split(f"random {d}", method, k)
                                         for d in range(draws)))]
    rows = {}
    for method in (HEAD, BASELINE):
        for c in sorted(criteria, key=lambda c: c != best):
            rows[f"{method}, chosen ({c})"] = {f"k={k}": per_split(c, method, k) for k in ks}
        rows[f"{method}, random ({draws} draws)"] = {f"k={k}": random_mean(method, k)
                                                     for k in ks}
    for method in ("population prior", "group mixture"):
        rows[f"{method}, random"] = {f"k={k}": random_mean(method, k) for k in ks}
    ceilings = [r["ceiling"] for r in splits if r["ceiling"] is not None]
    if ceilings:
        rows[NOISE_CEILING] = {f"k={k}": ceilings for k in ks}
    label = {"wasserstein": "alignment", "js": "JS alignment"}.get(metric, metric)
    comparisons = {}
    for method in (HEAD, BASELINE):
        for c in criteria:
            comparisons[f"{method} {c}"] = {
                key: {k: interval(paired(splits, survey, metric, method, c, k, times * k,
                                         draws)) for k in ks}
                for key, times in PAIRINGS.items()}
    curves = {f"{method}, {kind}": (list(ks), [rows[row][f"k={k}"] for k in ks])
              for method in (HEAD, BASELINE)
              for kind, row in ((f"chosen ({best})", f"{method}, chosen ({best})"),
                                ("random", f"{method}, random ({draws} draws)"))}
    report = {"title": f"{name}: {survey}; {label} on the other test questions after k "
                       f"context questions, mean ± std over splits {seeds}; default criterion "
                       f"'{best}' (best on validation groups)",
              "ks": list(ks), "draws": draws, "rows": rows, "validation": validation,
              "default": best, "paired": comparisons, "groups": [r["groups"] for r in splits]}
    print("\n" + render_setting(report))
    return report, curves, (float(np.mean(ceilings)) if ceilings else None), label


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/, "
                               "globalopinionqa/ and anthropic_persona/",
                               out="reports/question_selection.json",
                               runs="runs/reference_head", steps=300, seeds=(0, 1, 2, 3, 4))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help=f"datasets (default: {' '.join(SETTINGS)})")
    parser.add_argument("--recipe", default="impute",
                        help="the reference head's recipe, as experiments/reference_head.py "
                             "picks it on validation groups (default: impute)")
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA,
                        help=f"criteria compared (default: {' '.join(CRITERIA)})")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS),
                        help=f"context sizes (default: {' '.join(map(str, KS))})")
    parser.add_argument("--draws", type=int, default=DRAWS,
                        help=f"random contexts a split (default: {DRAWS})")
    parser.add_argument("--plot", default="docs/question_selection.png",
                        help="OpinionQA's figure (docs/results.md shows it); other settings add "
                             "their name (default: docs/question_selection.png)")
    args = parser.parse_args()
    report = {"seeds": args.seeds, "recipe": args.recipe, "ks": args.ks, "settings": {}}
    for setting in args.settings:
        dataset = SETTINGS[setting]
        data = DataConfig(dataset=dataset, data_dir=args.data_dir,
                          **(PERSONA if dataset == "persona" else {}))
        survey = load_survey(data)
        embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
        embeddings = embed(survey, embed_config)
        train_config, model = reference_recipe(args.recipe, args.steps)
        config, run_root = variant_run(args, f"{HEAD} {args.recipe}", "reference", model,
                                       data, embed_config, train=train_config)
        splits = []
        for seed in args.seeds:
            seeded = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                          split_seed=seed))
            train(seeded, survey, embeddings, run_root / str(seed), progress=False,
                  data_dir=dataset_folder(seeded.data), calibrate=False)
            splits.append(score_split(run_root / str(seed), survey, args.ks, args.criteria,
                                      data.metric, args.draws, embeddings))
            print(f"{setting} split {seed}: scored", flush=True)
        summary, curves, ceiling, label = summarise(setting, survey, splits, args.ks,
                                                    args.criteria, data.metric, args.draws,
                                                    args.seeds)
        path = args.plot if setting == "opinionqa_A" else args.plot.replace(
            ".png", f"_{setting}.png")
        plot_curves(curves, path, f"{setting}: held-out groups after k questions, chosen or "
                    "random", label, ceiling,
                    emphasis=(next(iter(curves)),), dashed=tuple(c for c in curves
                                                                 if c.endswith("random")))
        print(f"wrote {path}")
        report["settings"][setting] = summary
    print(f"\nwrote {write_merged(args.out, report, SETTINGS, key='settings')}")


if __name__ == "__main__":
    main_guard(main)
