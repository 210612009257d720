"""Do the calibrated prediction intervals hold what they claim? Coverage of each head's
intervals (calibrated on each run's validation groups, `gpo.intervals`) on the test groups'
held-out answers at 50, 80, 90 and 95%, at k = 5, 10 and 20, with the mean width beside it,
against the uncalibrated mean ± z·std; per option and per question mean ordinal position.

    python experiments/calibration.py --data-dir ../shared/data [--heads REFERENCE GPO PPD]
        [--seeds 0 1 2 3 4] [--dataset opinionqa|globalopinionqa]

Uses the run folders of experiments/heads.py and experiments/globalopinionqa.py (trains them
first if missing; calibrates a run that has no calibration, or every run with --recalibrate).
Prints the tables, writes a JSON report and the reliability diagram (reports/calibration.png).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from common import (  # noqa: E402
    embed,
    experiment_parser,
    fenced,
    head_variants,
    load_survey,
    main_guard,
    train_and_evaluate,
    variant_run,
)
from scipy.stats import norm  # noqa: E402

from gpo.config import DataConfig, EmbedConfig  # noqa: E402
from gpo.data.splits import make_eval_task  # noqa: E402
from gpo.evaluation.conformal import coverage, residuals  # noqa: E402
from gpo.evaluation.evaluate import run_table  # noqa: E402
from gpo.evaluation.metrics import calibration  # noqa: E402
from gpo.evaluation.report import format_table, write_json  # noqa: E402
from gpo.intervals import bounds, option_classes  # noqa: E402
from gpo.run_dir import RunDir  # noqa: E402
from gpo.training import calibrate_trained_run  # noqa: E402

LEVELS = (0.5, 0.8, 0.9, 0.95)
DIAGRAM_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ (and "
                               "globalopinionqa/); the runs are experiments/heads.py's",
                               out="reports/calibration.json", precomputed=True,
                               seeds=(0, 1, 2, 3, 4))
    parser.add_argument("--dataset", default="opinionqa",
                        choices=["opinionqa", "globalopinionqa"],
                        help="protocol A of OpinionQA, or GlobalOpinionQA (default: opinionqa)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20],
                        help="context questions (default: 5 10 20)")
    parser.add_argument("--heads", nargs="+", default=["REFERENCE", "GPO", "PPD"],
                        choices=["REFERENCE", "GPO", "PPD", "PAL"],
                        help="heads to check (default: REFERENCE GPO PPD)")
    parser.add_argument("--draws", type=int, default=5,
                        help="random contexts per split and k the test coverage pools (draw 0 "
                             "is every table's; default: 5)")
    parser.add_argument("--without-counts", action="store_true",
                        help="give the context answers without respondent counts")
    parser.add_argument("--recalibrate", action="store_true",
                        help="fit every run's intervals again, even where it has them (after "
                             "a change to how they are fitted; trained models are kept)")
    parser.add_argument("--plot", default=None,
                        help="reliability diagram (default: reports/calibration[_DATASET].png)")
    args = parser.parse_args()

    data = DataConfig(dataset=args.dataset, data_dir=args.data_dir)
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    with_counts = not args.without_counts
    counted = bool(np.isfinite(survey.respondents_GxQ).any())  # GlobalOpinionQA has none
    rows, means, diagram, by = {}, {}, {}, {}
    calibrated_on = []  # how many groups each run's intervals were calibrated on
    for label, (head, model) in head_variants(pal_ks=(4,), heads=args.heads).items():
        config, root = variant_run(args, label, head, model, data, embed_config)
        train_and_evaluate(config, survey, embeddings, root, (20,), args.seeds,
                           log=lambda _: None, baselines=False)
        per_split = {k: [] for k in args.k}  # k -> one test residual list per split
        for seed in args.seeds:
            run = RunDir(root / str(seed))
            split, _ = run.split.resolve(survey)
            head_module, _ = run.restore_head()
            table = run_table(run, survey, split)
            fitted = (None if args.recalibrate else run.calibration()) or \
                calibrate_trained_run(run, survey, embeddings, table)
            calibrated_on.append(len(fitted.fitted_on["groups"]))
            for k in args.k:
                tasks = [make_eval_task(survey, split, k, seed=split.seed + 1000 * d)
                         for d in range(args.draws)]
                found = [residuals(head_module, table, survey, split, t, k, with_counts)
                         for t in tasks]
                # today's std, as evaluation predicts (targets with their counts)
                raw = [residuals(head_module, table, survey, split, t, k, with_counts,
                                 target_counts=True) for t in tasks]
                per_split[k].append((fitted, found, raw))
        for k in args.k:
            scored = [(coverage(c, r, with_counts, LEVELS), raw, c)
                      for c, r, raw in per_split[k]]
            row = {f"{level:.0%}": [s.option_coverage[i] for s, _, _ in scored]
                   for i, level in enumerate(LEVELS)}
            row["width 80%"] = [s.option_width[1] for s, _, _ in scored]
            row["±1.28·std: cover"], row["±1.28·std: width"] = zip(
                *[gaussian(r, 0.8) for _, r, _ in scored])
            rows[f"{label} k={k}"] = row
            means[f"{label} k={k}"] = {
                **{f"{level:.0%}": [s.mean_coverage[i] for s, _, _ in scored]
                   for i, level in enumerate(LEVELS)},
                "width 80%": [s.mean_width[1] for s, _, _ in scored]}
            if k == max(args.k):
                for level in CONDITIONAL_LEVELS:
                    cells = [conditional(c, r, with_counts, level) for c, r, _ in per_split[k]]
                    by[f"{label} k={k}, {level:.0%}"] = {
                        cell: [c[cell] for c in cells] for cell in cells[0]}
                pooled = [coverage(c, r, with_counts, DIAGRAM_LEVELS)
                          for c, r, _ in per_split[k]]
                diagram[label] = (np.mean([p.option_coverage for p in pooled], 0),
                                  [float(np.mean([gaussian(raw, lv)[0]
                                                  for _, _, raw in per_split[k]]))
                                   for lv in DIAGRAM_LEVELS])
    name = {"opinionqa": "OpinionQA protocol A", "globalopinionqa": "GlobalOpinionQA"}[
        args.dataset]
    given = ("without counts, which this data does not have" if not counted
             else "with counts" if with_counts else "without counts")
    fewest, most = min(calibrated_on), max(calibrated_on)
    calibrated_with = (f"{fewest}-{most}" if fewest < most else str(most)) + (
        " groups a run, each held out of the model that scored it")
    columns = [f"{level:.0%}" for level in LEVELS] + ["width 80%", "±1.28·std: cover",
                                                      "±1.28·std: width"]
    report = {"dataset": args.dataset, "with_counts": with_counts and counted, "seeds": args.seeds,
              "draws": args.draws,
              "title": f"{name}, {args.embedder}: coverage of the calibrated intervals on "
                       f"test groups' options (context answers {given}), mean ± std "
                       f"over splits {args.seeds}, {args.draws} random contexts each; "
                       f"calibrated on {calibrated_with}",
              "means_title": f"{name}: the same for each question's mean ordinal position "
                             "(width in ordinal units)",
              "columns": columns, "options": rows, "question_means": means,
              "conditional_title": f"{name}: coverage by the question's number of options"
                                   + (" and by the group's respondents (median count of its "
                                      "context answers)" if counted else "")
                                   + f", at k = {max(args.k)}",
              "conditional": by}
    for part in ("options", "question_means", "conditional"):
        print(render(report, part), end="\n\n")
    plot = args.plot or ("reports/calibration.png" if args.dataset == "opinionqa"
                         else f"reports/calibration_{args.dataset}.png")
    path = plot_reliability(diagram, plot, f"{name}, k = {max(args.k)}")
    suffix = ("" if args.dataset == "opinionqa" else f"_{args.dataset}") + (
        "" if with_counts or not counted else "_without_counts")
    out = write_json(args.out.replace(".json", f"{suffix}.json"), report)
    print(f"wrote {out}, {path}")


def render(report: dict, part: str = "options") -> str:
    """The options' table (`options`) or the question means' (`question_means`), as printed
    and as docs/results.md holds it (experiments/write_docs.py)."""
    if part == "options":
        return format_table(report["title"], report["options"], report["columns"])
    if part == "conditional":
        rows = report["conditional"]
        return format_table(report["conditional_title"], rows, list(next(iter(rows.values()))))
    return format_table(report["means_title"], report["question_means"],
                        report["columns"][:5])


CONDITIONAL_LEVELS = (0.8, 0.9)
PEOPLE_CELLS = {"< 300 people": (0, 300), "300-1,000": (300, 1000), ">= 1,000": (1000, np.inf)}


def conditional(fitted, found, with_counts: bool, level: float) -> dict[str, float]:
    """Coverage at `level` of the options of questions with so many options, and of groups
    of so many respondents (NaN where none fall in a cell)."""
    condition = fitted.condition(with_counts)
    weight = condition.sampling_weight
    hits, options, people = [], [], []
    for r in found:
        low, high = bounds(r.prob_N, condition.option_quantiles(r.k, level, r.options_N())
                           * r.scales(weight))
        hits.append((r.truth_N >= low) & (r.truth_N <= high))
        options.append(r.options_N())
        people.append(r.respondents_N)
    hit, options, people = map(np.concatenate, (hits, options, people))
    # the classes the intervals are calibrated by (gpo.intervals), each checked on its own
    cells = {f"{name} options": mask for name, mask in option_classes(options).items()}
    if np.isfinite(people).any():  # respondents given
        cells |= {name: (people >= lo) & (people < hi)
                  for name, (lo, hi) in PEOPLE_CELLS.items()}
    return {name: float(hit[m].mean()) if m.any() else float("nan")
            for name, m in cells.items()}


def render_markdown(report: dict, part: str | None) -> str:
    return fenced(render(report, part or 'options'))


def gaussian(found, level: float) -> tuple[float, float]:
    """(coverage, mean width) of the uncalibrated mean ± z·std at `level`, clipped to [0, 1],
    over the options of every residual set in `found`."""
    prob, std, truth = (np.concatenate([getattr(r, name) for r in found])
                        for name in ("prob_N", "std_N", "truth_N"))
    covered = calibration(prob, std, truth, [level]).observed[0]
    low, high = bounds(prob, norm.ppf(0.5 + level / 2) * std)
    return float(covered), float(np.mean(high - low))


def plot_reliability(curves: dict, path: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="nominal")
    for i, (label, (calibrated, raw)) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(DIAGRAM_LEVELS, calibrated, marker="o", ms=3, color=color,
                label=f"{label}, calibrated")
        ax.plot(DIAGRAM_LEVELS, raw, ls=":", color=color, label=f"{label}, mean ± z·std")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage on test groups")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main_guard(main)
