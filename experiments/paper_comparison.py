"""GPO's headline comparison: the meta-trained heads against prompting the LLM itself, on
GPO's protocol and on ours (protocol A).

    python experiments/paper_comparison.py --data-dir ../shared/data
    python experiments/paper_comparison.py --data-dir ../shared/data --protocols gpo \\
        --llm-questions 0          # every target question (hours on 2 CPU cores)

GPO's protocol (`data.dataset=opinionqa-gpo`): its 17 groups present in the data, the
contentious questions they all answered, 40% of the groups for meta-training (a quarter of
those held out to pick checkpoints, as everywhere here, not the paper's test-group
selection), k = 20 shared context questions. Protocol A: all 36 groups and 624 questions.

Every method is scored on the same test groups and targets: uniform, the prompting baselines
(zero-shot, steered QA / BIO / PORTRAY, few-shot; each in the listed option order and averaged
with the reversed order), GPO, PAL (K = 4, the K validation groups pick on protocol A), PPD,
the reference head, the population prior, the group regression and the noise ceiling.
Prompting a 135M LLM costs about 0.2-0.4 s a prompt on 2 cores, so by default every method is
scored on a fixed random subset of --llm-questions questions (the same in every split; each
split's targets are those of them outside its context). Heads train at the 2-core budget of
experiments/common.py and are kept under --runs, so a rerun reprints the same tables; each
protocol's report replaces its own entry of --out and keeps the others'.
"""

from __future__ import annotations

import numpy as np
from common import (
    experiment_parser,
    experiment_train_config,
    fenced,
    main_guard,
    merge_variants,
    train_and_evaluate,
    variant_run,
    write_merged,
)

from gpo.config import DataConfig, EmbedConfig
from gpo.data.splits import make_eval_task
from gpo.embed.letters import LetterScorer
from gpo.evaluation.metrics import noise_ceiling
from gpo.evaluation.prompting import STYLES, PromptingBaselines
from gpo.evaluation.report import NOISE_CEILING, format_table, paired_text
from gpo.pipeline import embed, load_survey, scored_questions
from gpo.run_dir import RunDir

PROTOCOLS = {"gpo": ("opinionqa-gpo", "GPO's protocol"), "A": ("opinionqa", "protocol A")}
HEADS = {"REFERENCE": ("reference", {}), "GPO": ("gpo", {}), "PAL K=4": ("pal", {"prototypes": 4}),
         "PPD": ("ppd", {})}
SHOWN = ["uniform", "REFERENCE", "GPO", "PAL K=4", "PPD", "population prior",
         "group regression"]


def compare(args, protocol: str, scorer: PromptingBaselines) -> dict:
    dataset, title = PROTOCOLS[protocol]
    data = DataConfig(dataset=dataset, data_dir=args.data_dir, protocol="A")
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config)
    scored_Q = scored_questions(len(survey.questions), args.llm_questions)
    k = args.k
    variants = {}
    for label, (head, model) in HEADS.items():
        if label.split()[0].lower() not in args.heads:
            continue
        config, root = variant_run(args, label, head, model, data, embed_config,
                                   experiment_train_config(head, args.steps))
        first = not variants  # baselines and the LLM once, beside the first head
        variants[label] = train_and_evaluate(
            config, survey, embeddings, root, (k,), args.seeds, baselines=first,
            llm=scorer if first else None, scored_Q=scored_Q)
    evaluation = merge_variants(variants)
    ceiling = []
    for run_dir in next(iter(variants.values())).run_dirs:
        resolved, _ = RunDir(run_dir).split.resolve(survey)
        task = make_eval_task(survey, resolved, k, seed=resolved.seed)
        if scored_Q is not None:
            task = task.excluding(~scored_Q[None])
        ceiling.append(noise_ceiling(survey, task, evaluation.metric).mean)
    llm_methods = [m for m in evaluation.methods if m.startswith("LLM ")]
    order = [m for m in SHOWN if m in evaluation.methods]
    order[1:1] = llm_methods  # uniform, then prompting, then the heads
    rows = evaluation.rows([k], order)
    rows[NOISE_CEILING] = {f"k={k}": ceiling}
    n_scored = "all" if scored_Q is None else f"{int(scored_Q.sum())} fixed random"
    title = (f"{title}: {len(survey.groups)} groups ({len(evaluation.splits[0].groups)} held "
             f"out), {len(survey.questions)} questions ({n_scored} scored), k = {k}, alignment "
             f"over splits {' '.join(map(str, args.seeds))}")
    means = {m: float(np.mean(evaluation.per_split(m, k))) for m in order}
    paired = []
    if llm_methods:
        best_llm = max(llm_methods, key=means.get)
        best_other = max((m for m in order if m != "GPO" and not m.startswith("LLM ")),
                         key=means.get)
        for a, b in (("GPO", best_llm), (best_other, "GPO"), ("REFERENCE", best_llm),
                     (best_llm, "population prior")):
            if a in means and b in means and a != b:
                diff, low, high = evaluation.paired(a, b, k)
                paired.append({"a": a, "b": b, "difference": diff, "low": low, "high": high})
    report = {"protocol": protocol, "dataset": dataset, "k": k, "seeds": args.seeds,
              "title": title, "rows": rows, "paired": paired,
              "vs_prior": {m: means[m] - means["population prior"] for m in order},
              "scored_questions": None if scored_Q is None else
              [survey.question_keys[q] for q in np.flatnonzero(scored_Q)],
              "evaluation": evaluation.to_json()}
    print(render(report))
    return report


def render(report: dict) -> str:
    """One protocol's table, its paired comparisons and every method against the prior, as
    printed and as docs/results.md holds it (experiments/write_docs.py)."""
    k = report["k"]
    groups = len(report["evaluation"]["splits"][0]["groups"]) * len(report["seeds"])
    lines = [format_table(report["title"], report["rows"], [f"k={k}"]), "",
             f"paired over {groups} held-out groups x splits, mean [bootstrap 95% interval]:"]
    lines += [f"  {p['a']} - {p['b']}: {paired_text(p['difference'], p['low'], p['high'])}"
              for p in report["paired"]]
    width = max(map(len, report["vs_prior"]))
    lines.append("each method - population prior:")
    lines += [f"  {m:<{width}}  {d:+.4f}" for m, d in report["vs_prior"].items()]
    return "\n".join(lines)


def render_headline(report: dict) -> str:
    """README's cut of one protocol: the heads, the baselines and the best prompt at its k,
    and its paired differences."""
    column = f"k={report['k']}"
    mean = lambda m: float(np.mean(report["rows"][m][column]))  # noqa: E731
    prompt = max((m for m in report["rows"] if m.startswith("LLM ")), key=mean)
    shown = [m for m in report["rows"] if not m.startswith("LLM ")
             and m not in ("uniform", NOISE_CEILING)] + [prompt]
    table = format_table("", {m: {column: report["rows"][m][column]} for m in shown},
                         [column]).lstrip("\n")
    pairs = "; ".join(f"{p['a']} − {p['b']} {paired_text(p['difference'], p['low'], p['high'])}"
                      for p in report["paired"])
    return (f"{report['title']} ({prompt}: the best prompt):\n\n```\n{table}\n```\n\n"
            f"Paired over held-out groups × splits, mean [95% interval]: {pairs}.")


def render_markdown(reports: dict, part: str | None = None) -> str:
    """Every protocol of a report file as docs/results.md shows it (write_docs.py), or
    `headline`: GPO's protocol cut down to the table README quotes."""
    if part == "headline":
        return render_headline(reports["gpo"])
    return "\n\n".join(fenced(render(reports[p])) for p in PROTOCOLS if p in reports)


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/",
                               out="reports/paper_comparison.json", runs="runs/paper",
                               seeds=(0, 1, 2, 3, 4))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--heads", nargs="+", default=["reference", "gpo", "pal", "ppd"],
                        choices=["reference", "gpo", "pal", "ppd"])
    parser.add_argument("--k", type=int, default=20, help="context questions (default: 20)")
    parser.add_argument("--llm", default="smollm2",
                        help="LLM prompted by the baselines (default: smollm2)")
    parser.add_argument("--llm-styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--llm-questions", type=int, default=30,
                        help="score every method on this many fixed random questions "
                             "(0: all; default: 30)")
    args = parser.parse_args()
    scorer = PromptingBaselines(LetterScorer(args.llm, cache_dir=args.cache_dir),
                                tuple(args.llm_styles))
    new = {protocol: compare(args, protocol, scorer) for protocol in args.protocols}
    print(f"\nwrote {write_merged(args.out, new, PROTOCOLS)}")


if __name__ == "__main__":
    main_guard(main)
