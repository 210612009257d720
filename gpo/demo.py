"""The offline demo: embed a survey with the default frozen LLM, meta-train the default head
(the reference-group head) on 40% of the groups, adapt to the held-out groups from 5-20
context questions each, and compare with every baseline and the data's noise ceiling.
OpinionQA when its folder is given (or found via $GPO_DATA_DIR), else the seeded synthetic
survey. Sized to finish in a few minutes on 2 CPU cores; experiments/ holds full runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data import data_dir, make_synthetic_survey
from gpo.data.opinionqa import find_human_resp, load_opinionqa
from gpo.data.splits import make_eval_task
from gpo.evaluation.evaluate import Evaluation, evaluate_run
from gpo.evaluation.metrics import noise_ceiling
from gpo.evaluation.plots import plot_alignment_vs_k, plot_per_group
from gpo.evaluation.report import evaluation_table, write_html, write_json
from gpo.pipeline import embed
from gpo.run_dir import RunDir
from gpo.training.loop import train

DEMO_QUESTIONS = 240  # an OpinionQA subset: embedding all 624 takes ~4 minutes on 2 cores
DEMO_STEPS = 300
DEMO_KS = (5, 10, 20)


def _demo_survey(folder: Path | None):
    if folder is not None:
        try:
            root = find_human_resp(folder)
        except FileNotFoundError:
            root = None
        if root is not None:
            survey = load_opinionqa(root).complete_questions()
            keep = np.random.default_rng(0).choice(len(survey.questions), DEMO_QUESTIONS,
                                                   replace=False)
            return survey.select(questions=np.sort(keep)), "opinionqa", root
    return make_synthetic_survey(seed=0, n_groups=36, n_questions=150).survey, "synthetic", None


def run_demo(data_dir: str | None = None, out: str = "runs/demo", steps: int | None = None,
             embedder: str = "smollm2") -> Evaluation:
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
    title = (f"{dataset}: alignment on {len(evaluation.splits[0].groups)} held-out groups "
             f"({config.head.upper()} adapts in-context; baselines fit the same context "
             "answers)")
    ceiling = None
    if np.isfinite(survey.respondents_GxQ).all():  # how predictable is the data at all?
        split, _ = RunDir(run_dir).split.resolve(survey)
        task = make_eval_task(survey, split, max(DEMO_KS), seed=split.seed)
        ceiling = noise_ceiling(survey, task).mean
    table = evaluation_table(evaluation, title, DEMO_KS)
    closing = summary(evaluation, max(DEMO_KS), ceiling)
    print(f"\n{table}\n\n{closing}")
    write_json(out_dir / "report.json", {"embedder": embedder, "config": config.to_dict(),
                                         **evaluation.to_json()})
    plot_title = f"{dataset} demo, protocol A, {len(survey.questions)} questions"
    plots = [plot_alignment_vs_k(evaluation, out_dir / "alignment_vs_k.png", plot_title),
             plot_per_group(evaluation, max(DEMO_KS), out_dir / "per_group.png", plot_title)]
    write_html(out_dir / "report.html", f"gpo demo: {dataset}", [table, closing], plots)
    print(f"\n[demo] wrote {out_dir}/report.html (tables and plots), report.json "
          f"({time.perf_counter() - started:.0f}s in all); `gpo eval --run-dir {run_dir}` "
          "reprints this table")
    return evaluation


def summary(evaluation: Evaluation, k: int, ceiling: float | None = None) -> str:
    """Plain sentences: who wins at k and by how much, where the head stands, and how well
    the data can be predicted at all."""
    means = {m: float(np.mean(evaluation.per_split(m, k))) for m in evaluation.methods}
    winner = max(means, key=means.get)
    prior = means.get("population prior")
    lines = [f"At k = {k}, {winner} predicts best ({means[winner]:.4f})"
             + (f", {means[winner] - prior:+.4f} over the population prior." if prior is not None
                and winner != "population prior" else ".")]
    head = evaluation.head
    if head in means and head != winner:
        lines.append(f"{head} scores {means[head]:.4f}, {means[head] - means[winner]:+.4f} "
                     f"against {winner}" + (f" and {means[head] - prior:+.4f} against the "
                                            "population prior." if prior is not None else "."))
    if ceiling is not None:
        lines.append(f"Noise ceiling {ceiling:.4f}: each group's answers against resamples of "
                     "themselves at their own respondent counts (no method can expect more).")
    return "\n".join(lines)


def _data_dir(flag: str | None) -> Path | None:
    root = data_dir(flag)
    return root if root is not None and root.exists() else None
