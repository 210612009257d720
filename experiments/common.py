"""What the scripts in experiments/ share: their arguments, the heads they compare and each
head's step budget, one run-folder naming scheme, and train-then-evaluate over split seeds.
Scripts keep a thin main() on top of these."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gpo.config import RunConfig, TrainConfig
from gpo.data.survey import Survey
from gpo.evaluation.evaluate import Evaluation, evaluate_run
from gpo.evaluation.report import format_table, write_json
from gpo.pipeline import dataset_folder, embed, load_survey  # noqa: F401  (scripts' imports)
from gpo.training import train


def experiment_parser(doc: str, *, data_help: str | None, out: str, runs: str = "runs/heads",
                      steps: int = 400, seeds: Sequence[int] = (0, 1, 2),
                      several_embedders: bool = False, precomputed: bool = False,
                      ) -> argparse.ArgumentParser:
    """The arguments training scripts share: the data folder (unless the data is generated),
    the embedder (or embedders), the embedding cache, the run folder (runs are resumed), the
    split seeds, the step budget, config overrides and the JSON report.

    precomputed: offer --embeddings, a `gpo embed` file of the script's survey, so a machine
    without the LLM's weights (a GPU box, say) can train on embeddings made elsewhere."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if data_help is not None:
        parser.add_argument("--data-dir", required=True, help=data_help)
    if several_embedders:
        parser.add_argument("--embedders", nargs="+", default=["smollm2"],
                            help="frozen embedders to compare (default: smollm2)")
    else:
        parser.add_argument("--embedder", default="smollm2",
                            help="frozen embedder: smollm2, minilm, lexical, a .gguf or a "
                                 "model folder (default: smollm2)")
    parser.add_argument("--cache-dir", default="runs/embedding_cache",
                        help="embedding cache (default: runs/embedding_cache)")
    if precomputed:
        parser.add_argument("--embeddings", metavar="NPZ",
                            help="precomputed embeddings from `gpo embed --model <embedder>` "
                                 "instead of running the embedder")
    parser.add_argument("--runs", default=runs,
                        help=f"run folders, kept and resumed (default: {runs})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds),
                        help=f"group split seeds (default: {' '.join(map(str, seeds))})")
    parser.add_argument("--steps", type=int, default=steps,
                        help=f"training budget in GPO steps (default: {steps})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of every trained config, e.g. "
                             "--set train.sampling.batch_size=32 (changes the run folders' names)")
    parser.add_argument("--out", default=out, help=f"JSON report (default: {out})")
    return parser


# Each head's recipe and steps per unit of an experiment's --steps: about the same CPU time
# each on 2 cores (OpinionQA episodes: GPO ~0.4 s a step, PPD ~0.2 s, PAL ~0.02 s), so heads
# are compared at a matched compute budget rather than at a step count that leaves the cheap
# ones unfinished. The reference head has its own recipe (1-100 context questions drawn
# log-uniformly) and converges far sooner: 300 steps (~30 s) at the default --steps 400.
# A head not listed gets GPO's recipe and budget.
HEAD_RECIPES = {"gpo": (TrainConfig.cpu, 1), "ppd": (TrainConfig.cpu, 2),
                "pal": (TrainConfig.cpu, 10), "reference": (TrainConfig.reference, 0.75)}


# The persona pairs as experiments/heads.py and reference_head.py build them.
PERSONA = {"synthetic_groups": 60, "synthetic_questions": 400}

# The reference head's recipe variants: name -> (TrainConfig overrides, model section,
# multiple of --steps), on `REFERENCE_BASE`: `TrainConfig.reference` as it was before
# episodes withheld respondent counts, and the head adding no sampling noise to an answer
# given without its count, so that every variant keeps its meaning (and its run folders).
REFERENCE_BASE = ({"hide_references": 0.25, "hide_respondents": 0.0}, {"count_free": "none"})
REFERENCE_VARIANTS = {
    "base": ({}, {}, 1),
    "kl": ({"loss": "kl+nll"}, {}, 1),               # KL instead of the metric's own loss
    "mixup50": ({"group_mixup": 0.5}, {}, 1),        # half the episodes from mixed groups
    "uniform_k": ({"context_distribution": "uniform"}, {}, 1),  # k uniform in 1-100
    "x2": ({}, {}, 2),
    "hide75": ({"hide_references": 0.75}, {}, 1),   # the text prior sees 3x the episodes
    "hide75_x2": ({"hide_references": 0.75}, {}, 2),
    # answers without respondent counts: the reference groups' median count instead ...
    "impute": ({}, {"count_free": "references"}, 1),
    # ... or a typical count learned from episodes that withhold their counts
    "counts25": ({"hide_respondents": 0.25}, {"count_free": "learned"}, 1),
    "counts50": ({"hide_respondents": 0.5}, {"count_free": "learned"}, 1),
}


def reference_recipe(variant: str, steps: int) -> tuple[TrainConfig, dict]:
    """(TrainConfig, model section) of a reference-head variant: `REFERENCE_BASE` (1-100
    context questions, log-uniform; 10-100 targets; a quarter of the episodes hide their
    targets' references, so the text prior learns) with the variant's changes."""
    train, model, multiple = REFERENCE_VARIANTS[variant]
    base_train, base_model = REFERENCE_BASE
    return (TrainConfig.reference(steps * multiple, **{**base_train, **train}),
            {**base_model, **model})


def experiment_train_config(head: str, steps: int, **overrides) -> TrainConfig:
    """The 2-core budget of experiments/ for one head: its recipe at its step share."""
    preset, share = HEAD_RECIPES.get(head, HEAD_RECIPES["gpo"])
    return preset(max(1, round(steps * share)), **overrides)


def head_variants(pal_ks: Sequence[int] = (1, 2, 4, 8),
                  heads: Sequence[str] = ("GPO", "PPD", "PAL")) -> dict[str, tuple[str, dict]]:
    """The heads experiments compare, by label: (head name, its config's model section)."""
    out = {}
    for label in heads:
        if label == "PAL":
            for k in pal_ks:
                out[f"PAL K={k}"] = ("pal", {"prototypes": k})
        else:
            out[label] = (label.lower(), {})
    return out


def run_directory(root: str | Path, config: RunConfig, label: str) -> Path:
    """Where a head variant's runs live (one folder per split seed below it): one name per
    (dataset, protocol, embedder, head variant), so scripts that share a run resume it."""
    model = config.embed.model
    embedder = Path(model).stem if model.endswith(".gguf") else Path(model).name
    variant = label.replace(" ", "").replace("=", "").replace(",", "_")
    return Path(root) / f"{config.data.dataset}_{config.data.protocol}_{embedder}_{variant}"


# Every figure in docs/results.md was trained with episodes sampled on the host: experiments
# keep that sampler so that a rerun from scratch reproduces them exactly (`--set
# train.sampler=device` trains faster, on another random stream of the same distribution).
PUBLISHED_SAMPLER = "host"


def variant_run(args, label: str, head: str, model: dict, data, embed_config,
                train: TrainConfig | None = None) -> tuple[RunConfig, Path]:
    """A head variant's config (the experiment budget, then any --set overrides) and its run
    folder (overrides name it too, so runs of other configs never mix)."""
    train = train or experiment_train_config(head, args.steps)
    config = RunConfig(head=head, model=model, data=data, embed=embed_config,
                       train=dataclasses.replace(train, sampler=PUBLISHED_SAMPLER))
    assignments = list(getattr(args, "set", []) or [])
    if assignments:
        config = config.override(assignments)
    suffix = "".join(f"_{a.split('.')[-1].replace('=', '')}" for a in assignments)
    return config, run_directory(args.runs, config, label + suffix)


@dataclasses.dataclass
class SplitRuns:
    """A head variant over split seeds: its evaluation beside the baselines, and its best
    validation alignment per seed (what model selection may look at)."""

    evaluation: Evaluation
    validation: list[float]
    run_dirs: list[Path]


def train_and_evaluate(config: RunConfig, survey: Survey, embeddings: np.ndarray,
                       run_root: str | Path, ks: Sequence[int], seeds: Sequence[int],
                       log=print, baselines: bool = True, without_counts: bool = False,
                       **evaluate_options) -> SplitRuns:
    """For each split seed: meta-train (resuming run_root/<seed>; intervals are calibrated
    by experiments/calibration.py, which alone reads them) and score the head beside
    the baselines at every k (context questions drawn with the split's seed); with
    `without_counts`, the head also given its context answers without respondent counts;
    `evaluate_options` go to `evaluate_run` (the prompting baselines' LLM, say)."""
    evaluation, validation, run_dirs = None, [], []
    for seed in seeds:
        seeded = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      split_seed=seed))
        start = time.perf_counter()
        run_dir = Path(run_root) / str(seed)
        result = train(seeded, survey, embeddings, run_dir, progress=False,
                       data_dir=dataset_folder(seeded.data), calibrate=False)
        scored = evaluate_run(run_dir, survey, ks, baselines=baselines,
                              without_counts=without_counts, **evaluate_options)
        log(f"{config.head} protocol {config.data.protocol} split {seed}: {result.steps} steps "
            f"({time.perf_counter() - start:.0f}s), best validation "
            f"{result.best_validation:.4f} at step {result.best_step}")
        validation.append(result.best_validation)
        run_dirs.append(run_dir)
        evaluation = scored if evaluation is None else evaluation.extend(scored)
    return SplitRuns(evaluation, validation, run_dirs)


def write_merged(path: str | Path, report: dict, known: Sequence[str] | Callable[[str], bool],
                 key: str | None = None) -> Path:
    """Write `report`, whose parts (settings, protocols: report[key], or the report itself
    when key is None) were rerun, keeping the parts of the file's last version that were
    not rerun and are still `known` (names, or a test of a name): one part at a time can be
    redone. Read last, so that another part written meanwhile is kept."""
    path = Path(path)
    last = json.loads(path.read_text()) if path.is_file() else {}
    is_known = known if callable(known) else known.__contains__
    kept = {name: part for name, part in (last.get(key, {}) if key else last).items()
            if is_known(name)}
    report = {**report, key: kept | report[key]} if key else kept | report
    return write_json(path, report)


def table_part(title: str, rows: dict, columns: Sequence[str]) -> dict:
    """A printed table as a report holds it, so that the docs render it from the JSON alone
    (`render_table`)."""
    return {"title": title, "columns": list(columns), "rows": rows}


def render_table(part: dict) -> str:
    """A `table_part` as printed."""
    return format_table(part["title"], part["rows"], part["columns"])


def fenced(text: str) -> str:
    """Printed text as a code block, as docs/ hold it (experiments/write_docs.py)."""
    return f"```\n{text}\n```"


def main_guard(main) -> None:
    """Run a script's main(); a user mistake (bad folder, bad flag value) ends in one line."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {err}")


def merge_variants(variants: dict[str, SplitRuns]) -> Evaluation:
    """Several head variants trained on the same splits as one Evaluation: each variant's head
    scores under its label first, then the baselines once (every variant saw the same
    tasks). Its `head` is the first label."""
    first = next(iter(variants.values())).evaluation
    merged = Evaluation(first.dataset, first.protocol, first.metric, next(iter(variants)))
    for i, split in enumerate(first.splits):
        scores = {label: runs.evaluation.splits[i].scores[runs.evaluation.head]
                  for label, runs in variants.items()}
        scores.update({m: v for m, v in split.scores.items() if m != first.head})
        merged.splits.append(dataclasses.replace(split, scores=scores))
    return merged


def best_by_validation(variants: dict[str, SplitRuns], prefix: str) -> str | None:
    """The label (starting with prefix) whose runs score best on validation groups."""
    candidates = {label: float(np.mean(r.validation)) for label, r in variants.items()
                  if label.startswith(prefix)}
    return max(candidates, key=candidates.get) if candidates else None
