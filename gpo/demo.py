"""The offline demo: embed a survey with the default frozen LLM, meta-train the default head
(the reference-group head) on 40% of the groups, adapt to the held-out groups from 5-20
context questions each, compare with every baseline and the data's noise ceiling, suggest
which questions to ask a new group, and check the calibrated intervals' coverage.
OpinionQA when its folder is given (or found via $GPO_DATA_DIR), else the seeded synthetic
survey. Sized to finish in a few minutes on 2 CPU cores; experiments/ holds full runs."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from gpo.api import load
from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data import data_dir, make_synthetic_survey
from gpo.data.opinionqa import find_human_resp, load_opinionqa
from gpo.data.splits import make_eval_task, task_with_context
from gpo.evaluation.conformal import coverage, residuals
from gpo.evaluation.evaluate import (
    Evaluation,
    evaluate_run,
    head_label,
    predict_task,
    run_table,
)
from gpo.evaluation.metrics import noise_ceiling, paired_difference, score_predictions
from gpo.evaluation.plots import plot_alignment_vs_k, plot_per_group
from gpo.evaluation.report import (
    K_DEFINITION,
    METRICS,
    NOISE_CEILING,
    Html,
    evaluation_table,
    held_out,
    html_definitions,
    html_facts,
    html_table,
    paired_text,
    write_html,
    write_json,
)
from gpo.pipeline import embed
from gpo.question_selection import Suggestions
from gpo.run_dir import RunDir
from gpo.training.loop import train

DEMO_QUESTIONS = 240  # an OpinionQA subset: embedding all 624 takes ~4 minutes on 2 cores
DEMO_STEPS = 300
DEMO_KS = (5, 10, 20)
DEMO_ASKED = 5  # questions the demo suggests asking a new group


def _demo_survey(folder: Path | None):
    if folder is not None:
        try:
            root = find_human_resp(folder)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; or give no data folder for the synthetic "
                                    "survey") from None
        if root is not None:
            survey = load_opinionqa(root).complete_questions()
            keep = np.random.default_rng(0).choice(len(survey.questions), DEMO_QUESTIONS,
                                                   replace=False)
            return survey.select(questions=np.sort(keep)), "opinionqa", root
    return make_synthetic_survey(seed=0, n_groups=36, n_questions=150).survey, "synthetic", None


def run_demo(data_dir: str | None = None, out: str = "runs/demo", steps: int | None = None,
             embedder: str = "smollm2") -> Evaluation:
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    started = time.perf_counter()
    out_dir = Path(out)
    folder = _data_dir(data_dir)
    survey, dataset, root = _demo_survey(folder)
    print(f"[demo] {survey} ({dataset})")

    config = RunConfig(
        data=DataConfig(dataset=dataset, eval_k=20),
        embed=EmbedConfig(model=embedder, cache_dir=str(out_dir / "embedding_cache")),
        train=TrainConfig.reference(steps or DEMO_STEPS, eval_every=100, checkpoint_every=100))
    t = time.perf_counter()
    embeddings = embed(survey, config.embed)
    print(f"[demo] embedded {int(survey.option_mask_QxO.sum())} options with {embedder} "
          f"in {time.perf_counter() - t:.0f}s -> {embeddings.shape}")

    t = time.perf_counter()
    run_dir = out_dir / "run"
    result = train(config, survey, embeddings, run_dir, data_dir=root)
    print(f"[demo] meta-trained {result.steps} steps in {time.perf_counter() - t:.0f}s; best "
          f"validation alignment {result.best_validation:.4f} at step {result.best_step}")

    evaluation = evaluate_run(run_dir, survey, DEMO_KS)
    counts = bool(np.isfinite(survey.respondents_GxQ).all())
    title = (f"{dataset}: alignment on {len(evaluation.splits[0].groups)} held-out groups "
             f"({config.head.upper()} adapts in-context to context answers "
             + ("with their respondent counts" if counts else "without respondent counts")
             + "; baselines fit the same answers, ignoring counts)")
    ceiling = None
    if counts:  # how predictable is the data at all?
        split, _ = RunDir(run_dir).split.resolve(survey)
        task = make_eval_task(survey, split, max(DEMO_KS), seed=split.seed)
        ceiling = noise_ceiling(survey, task).mean
    table = evaluation_table(evaluation, title, DEMO_KS)
    closing = summary(evaluation, DEMO_KS, ceiling)
    print(f"\n{table}\n\n{closing}")
    suggestions, gain = which_questions(run_dir, survey, evaluation.metric)
    print(f"\n{suggestions}\n{gain}")
    margins = interval_coverage(run_dir, survey, max(DEMO_KS), counts)
    print(f"\n{margins}")
    write_json(out_dir / "report.json", {"embedder": embedder, "config": config.to_dict(),
                                         **evaluation.to_json()})
    plot_title = f"{dataset} demo, protocol A, {len(survey.questions)} questions"
    plots = [plot_alignment_vs_k(evaluation, out_dir / "alignment_vs_k.png", plot_title,
                                 ceiling),
             plot_per_group(evaluation, max(DEMO_KS), out_dir / "per_group.png", plot_title)]
    rows = evaluation.rows(DEMO_KS)
    if ceiling is not None:
        rows[NOISE_CEILING] = {f"k={max(DEMO_KS)}": [ceiling]}
    facts = html_facts({
        "data": f"{survey} ({dataset})", "split": held_out(evaluation),
        "head": f"{config.head}, {result.steps} steps; checkpoint of step {result.best_step} "
                f"(best validation alignment {result.best_validation:.4f})",
        "embedder": embedder, "config": json.dumps(config.to_dict())})
    write_html(out_dir / "report.html", f"gpo demo: {dataset}",
               [facts, Html(f"<h2>{html.escape(title)}</h2>"),
                html_table(rows, [f"k={k}" for k in DEMO_KS]), closing,
                Html(suggestions._repr_html_()), gain, margins,
                html_definitions(evaluation.metric, [*rows])], plots)
    print(f"\n[demo] wrote {out_dir}/report.html (tables and plots), report.json "
          f"({time.perf_counter() - started:.0f}s in all); `gpo eval --run-dir {run_dir}` "
          "reprints this table")
    return evaluation


def which_questions(run_dir: Path, survey, metric: str, k: int = DEMO_ASKED
                    ) -> tuple[Suggestions, str]:
    """The k questions the model would ask a new group first, and (in words) what asking
    them instead of k random ones (the table's) gains for the held-out groups, paired over
    groups on the questions neither asked."""
    model = load(run_dir)
    suggestions = model.suggest_questions(k)
    run = RunDir(run_dir)
    split, _ = run.split.resolve(survey)
    table = run_table(run, survey, split)
    # every held-out group is asked the printed questions (survey: the run's, in its order)
    row = {q.key: i for i, q in enumerate(survey.questions)}
    suggested_Q = np.isin(np.arange(len(survey.questions)), [row[key] for key in
                                                             suggestions.keys])
    chosen = task_with_context(survey, split, survey.answered_GxQ[split.test_groups]
                               & suggested_Q)
    random = make_eval_task(survey, split, k, seed=split.seed)
    asked = chosen.context_GxQ | random.context_GxQ
    scores = []
    for task in (chosen, random):
        prob, _ = predict_task(model.module, table, survey, task, split.train_groups)
        scores.append(score_predictions(survey, task.excluding(asked), prob, metric))
    mean, low, high = paired_difference(scores[0].per_group_G, scores[1].per_group_G)
    return suggestions, (f"Asking these {k} instead of {k} random questions: "
            f"{head_label(model.config.head)} scores {scores[0].mean:.4f} instead of "
            f"{scores[1].mean:.4f} on the {len(split.test_groups)} held-out groups "
            f"({mean:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] paired over groups, on the "
            "questions neither set asked; one split).")


def interval_coverage(run_dir: Path, survey, k: int, with_counts: bool) -> str:
    """How the run's calibrated intervals (fitted on its validation groups) did on the
    held-out groups' answers after k context questions."""
    run = RunDir(run_dir)
    calibration = run.calibration()
    split, validation = run.split.resolve(survey)
    head, _ = run.restore_head()
    task = make_eval_task(survey, split, k, seed=split.seed)
    found = residuals(head, run_table(run, survey, split), survey, split, task, k, with_counts)
    result = coverage(calibration, [found], with_counts, (0.8, 0.9))
    return (f"Margins of error (calibrated on the {len(validation)} validation groups): at "
            f"k = {k}, {result.option_coverage[0]:.0%} of the held-out groups' answers fell "
            f"inside their 80% intervals (mean width {result.option_width[0]:.3f}) and "
            f"{result.option_coverage[1]:.0%} inside their 90% intervals (width "
            f"{result.option_width[1]:.3f}); one split, so read it give or take a few points."
            + ("" if run.config.data.calibration_folds > 1 else
               " For margins you quote, train with --set data.calibration_folds=4: every "
               "training group then calibrates (docs/results.md, Margins of error)."))


def summary(evaluation: Evaluation, ks, ceiling: float | None = None) -> str:
    """Plain sentences: what alignment and k are, who wins at the largest k and by how much
    over the runner-up (paired over groups), at which k the head's lead is clearest, and how
    well the data can be predicted at all."""
    ks = sorted(ks)
    k = ks[-1]
    means = {m: float(np.mean(evaluation.per_split(m, k))) for m in evaluation.methods}
    winner = max(means, key=means.get)
    runner_up = max((m for m in means if m != winner), key=means.get)
    n_groups = len(evaluation.per_group(winner, k)[0])
    spread = ("one split" if len(evaluation.splits) == 1
              else f"{len(evaluation.splits)} splits")
    diff, low, high = evaluation.paired(winner, runner_up, k)
    lines = [_sentence(METRICS[evaluation.metric]), K_DEFINITION,
             f"At k = {k}, {winner} predicts best ({means[winner]:.4f}): {diff:+.4f} over the "
             f"runner-up, {runner_up} (95% interval [{low:+.4f}, {high:+.4f}], paired over the "
             f"{n_groups} held-out groups; {spread})"
             + ("; the interval holds 0, so the two are not told apart here." if low <= 0
                else ".")]
    head = evaluation.head
    if head in means and len(ks) > 1:
        leads = {kk: evaluation.paired(head, max(
            (m for m in means if m != head),
            key=lambda m: np.mean(evaluation.per_split(m, kk))), kk) for kk in ks}
        clearest = max(leads, key=lambda kk: leads[kk][1])  # the largest lower bound
        lines.append(f"{head}'s lead over the best other method is clearest at k = "
                     f"{clearest}: {paired_text(*leads[clearest])}.")
    prior = means.get("population prior")
    if head in means and prior is not None:
        lines.append(f"{head} scores {means[head]:.4f} at k = {k}, {means[head] - prior:+.4f} "
                     "against the population prior (the training groups' mean answer).")
    if ceiling is not None:
        lines.append(f"Noise ceiling {ceiling:.4f}: each group's answers against resamples of "
                     "themselves at their own respondent counts (no method can expect more).")
    return "\n".join(lines)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _data_dir(flag: str | None) -> Path | None:
    """The data folder a user named (--data-dir, else $GPO_DATA_DIR), which must exist;
    None when neither names one (the synthetic survey)."""
    root = data_dir(flag)
    if root is not None and not root.is_dir():
        named = "--data-dir" if flag else "$GPO_DATA_DIR"
        raise FileNotFoundError(f"{named} {str(root)!r} is not a folder; give the OpinionQA "
                                f"folder, or unset {named} for the synthetic survey")
    return root
