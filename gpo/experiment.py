"""End-to-end steps shared by the CLI, the demo and experiments/: load the survey a config
names, embed it, train, and score the trained head beside every baseline."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpo.api import load
from gpo.baselines import BASELINES, USES_ONLY_CONTEXT, score_predictions
from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data import data_dir, load_dataset, make_synthetic_survey
from gpo.data.episodes import make_eval_task
from gpo.data.persona import make_persona_preferences
from gpo.data.survey import Survey
from gpo.embed import embed_survey, make_embedder
from gpo.evaluate import predict_task
from gpo.models import HEADS
from gpo.train import EmbeddingTable, TrainResult, split_for, train


def experiment_parser(doc: str, *, data_help: str, out: str, runs: str = "runs/heads",
                      steps: int = 400, several_embedders: bool = False,
                      precomputed: bool = False) -> argparse.ArgumentParser:
    """The arguments every training script in experiments/ shares: the data folder, the
    embedder (or embedders), the embedding cache, the run folder (runs are resumed), the split
    seeds, the step budget and the JSON report. Scripts add their own on top.

    precomputed: offer --embeddings, a `gpo embed` file of the script's survey, so a machine
    without the LLM's weights (a GPU box, say) can train on embeddings made elsewhere."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help=data_help)
    if several_embedders:
        parser.add_argument("--embedders", nargs="+", default=["smollm2"])
    else:
        parser.add_argument("--embedder", default="smollm2")
    parser.add_argument("--cache-dir", default="runs/embedding_cache")
    if precomputed:
        parser.add_argument("--embeddings", metavar="NPZ",
                            help="precomputed embeddings from `gpo embed --model <embedder>` "
                                 "instead of running the embedder")
    parser.add_argument("--runs", default=runs, help="run folders, kept and resumed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="group splits")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--out", default=out, help="JSON report")
    return parser


def load_survey(config: DataConfig) -> Survey:
    """The survey a data config names, filtered as experiments use it."""
    if config.dataset == "synthetic":
        return make_synthetic_survey(seed=config.synthetic_seed, n_groups=config.synthetic_groups,
                                     n_questions=config.synthetic_questions).survey
    root = data_dir(config.data_dir)
    if config.dataset == "persona":
        if root is None:
            raise FileNotFoundError("dataset 'persona' needs data.data_dir or $GPO_DATA_DIR "
                                    "(the anthropic_persona folder or its parent)")
        folder = root / "anthropic_persona" if (root / "anthropic_persona").is_dir() else root
        return make_persona_preferences(folder, seed=config.synthetic_seed,
                                        n_types=config.persona_types,
                                        n_users=config.synthetic_groups,
                                        n_pairs=config.synthetic_questions).survey
    if root is None:
        raise FileNotFoundError(f"dataset {config.dataset!r} needs data.data_dir or "
                                "$GPO_DATA_DIR (see data_cards/)")
    if (root / config.dataset).is_dir():
        root = root / config.dataset
    survey = load_dataset(root, config.dataset)
    if config.dataset == "opinionqa":
        return survey.complete_questions()
    return survey.drop_sparse(config.min_group_answers)


def embed(survey: Survey, config: EmbedConfig, precomputed: str | Path | None = None
          ) -> np.ndarray:
    """The survey's option embeddings: from config's embedder, or read from `precomputed` (a
    `gpo embed` file), which must hold this survey's questions embedded by config.model."""
    if precomputed is None:
        return embed_survey(survey, make_embedder(config))
    saved = np.load(precomputed)
    if "model" not in saved:
        raise ValueError(f"{precomputed}: records no embedder; write it again with `gpo embed "
                         f"--model {config.model}`")
    model = str(saved["model"])
    if model != config.model:
        raise ValueError(f"{precomputed}: embeddings made by {model!r}, but the run's "
                         f"embedder is {config.model!r}")
    keys = [str(k) for k in saved["keys"]]
    expected = list(survey.question_keys)
    if keys != expected:
        at = next((i for i, (a, b) in enumerate(zip(keys, expected)) if a != b),
                  min(len(keys), len(expected)))
        found = keys[at] if at < len(keys) else "its end"
        wanted = expected[at] if at < len(expected) else "the survey's end"
        raise ValueError(f"{precomputed}: holds {len(keys)} questions, not the survey's "
                         f"{len(expected)}; question {at} is {found!r}, the survey's is "
                         f"{wanted!r}")
    vectors = saved["embeddings"]
    if vectors.shape[:2] != survey.option_mask_QxO.shape:
        raise ValueError(f"{precomputed}: embeddings of shape {vectors.shape}, expected "
                         f"{survey.option_mask_QxO.shape} + (width,)")
    return vectors


def train_run(config: RunConfig, run_dir: str | Path, progress: bool = True,
              survey: Survey | None = None, embeddings: np.ndarray | None = None
              ) -> TrainResult:
    survey = load_survey(config.data) if survey is None else survey
    embeddings = embed(survey, config.embed) if embeddings is None else embeddings
    return train(config, survey, embeddings, run_dir, progress=progress)


def evaluate_run(run_dir: str | Path, survey: Survey, embeddings: np.ndarray,
                 ks: Sequence[int] = (20,), eval_seeds: Sequence[int] = (0,)) -> dict:
    """Alignment of the run's head and of every baseline on the run's test groups, per k.

    Returns {"k": {k: {method: [score per eval seed]}}, "per_group": {method: [...]},
    "checkpoint": {"step", "validation"}} where per_group holds the first seed's per-group
    scores at the largest k and checkpoint names the weights scored.
    """
    model = load(run_dir)
    config = model.config
    split = split_for(config, survey)
    table = EmbeddingTable.with_stats(embeddings[:, :survey.max_options],
                                      model.table.mean_E, model.table.scale_E).table_NxE
    head = model.module
    results: dict = {"k": {}, "per_group": {}, "groups": [
        survey.group_labels[g] for g in split.test_groups], "head": config.head,
        "checkpoint": {"step": model.checkpoint_step,
                       "validation": model.checkpoint_validation}}
    for k in ks:
        per_method: dict[str, list[float]] = {}
        for seed in eval_seeds:
            task = make_eval_task(survey, split, k, seed=seed)
            prob, _ = predict_task(head, table, survey, task)
            scores = {config.head.upper(): score_predictions(survey, task, prob,
                                                             config.data.metric)}
            for name, predict in BASELINES.items():
                if name == "kNN options" and config.data.protocol == "A":
                    continue
                pred = predict(survey, split, task, metric=config.data.metric,
                               option_embeddings_QxOxE=embeddings)
                label = name if config.data.protocol == "A" or name in USES_ONLY_CONTEXT \
                    else f"{name} *"
                scores[label] = score_predictions(survey, task, pred, config.data.metric)
            for name, score in scores.items():
                per_method.setdefault(name, []).append(score.mean)
                if k == max(ks) and seed == eval_seeds[0]:
                    results["per_group"][name] = score.per_group_G.tolist()
        results["k"][k] = per_method
    return results


# Steps per unit of an experiment's --steps, by head: about the same CPU time each on 2 cores
# (OpinionQA episodes: GPO ~0.4 s a step, PPD ~0.2 s, PAL ~0.02 s), so heads are compared at a
# matched compute budget rather than at a step count that leaves the cheap ones unfinished.
STEPS_PER_UNIT = {"gpo": 1, "ppd": 2, "pal": 10}


def experiment_train_config(head: str, steps: int) -> TrainConfig:
    """The 2-core budget of experiments/ for one head: `TrainConfig.cpu` at its step share."""
    return TrainConfig.cpu(steps * STEPS_PER_UNIT[head])


def head_variants(embedding_dim: int, pal_ks: Sequence[int] = (1, 2, 4, 8)
                  ) -> dict[str, tuple[str, object]]:
    """The heads experiments compare, by label: GPO, PPD and PAL at each K (head, model config)."""
    out = {"GPO": ("gpo", None), "PPD": ("ppd", None)}
    for k in pal_ks:
        out[f"PAL K={k}"] = ("pal", dataclasses.replace(HEADS["pal"][0].paper(embedding_dim),
                                                        prototypes=k))
    return out


def run_directory(root: str | Path, config: RunConfig, label: str) -> Path:
    """Where experiments keep a head's runs (one folder per split seed below it): one name
    per (dataset, protocol, embedder, head variant), so scripts that share a run resume it."""
    embedder = Path(config.embed.model).stem if config.embed.model.endswith(".gguf") else \
        Path(config.embed.model).name
    return Path(root) / (f"{config.data.dataset}_{config.data.protocol}_{embedder}_"
                         f"{label.replace(' ', '').replace('=', '')}")


@dataclasses.dataclass
class SplitScores:
    """A head and the baselines over split seeds: {k: {method: [score per seed]}}, and the
    head's best validation alignment per seed (what model selection may look at)."""

    per_k: dict[int, dict[str, list[float]]]
    validation: list[float]


def train_and_evaluate(config: RunConfig, survey: Survey, embeddings: np.ndarray,
                       run_dir: str | Path, ks: Sequence[int], seeds: Sequence[int],
                       log=print) -> SplitScores:
    """For each split seed: meta-train (resuming run_dir/<seed>) and score the head beside the
    baselines at every k."""
    scores = SplitScores({k: {} for k in ks}, [])
    for seed in seeds:
        seeded = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      split_seed=seed))
        start = time.perf_counter()
        result = train(seeded, survey, embeddings, Path(run_dir) / str(seed), progress=False)
        results = evaluate_run(Path(run_dir) / str(seed), survey, embeddings, ks,
                               eval_seeds=(seed,))
        log(f"{config.head} protocol {config.data.protocol} split {seed}: {result.steps} steps "
            f"({time.perf_counter() - start:.0f}s), best validation "
            f"{result.best_validation:.4f} at step {result.best_step}")
        scores.validation.append(result.best_validation)
        add_scores(scores.per_k, results)
    return scores


def add_scores(per_k: dict[int, dict[str, list[float]]], results: dict) -> None:
    """Append one run's evaluate_run scores to {k: {method: [score per run]}}."""
    for k in per_k:
        for method, values in results["k"][k].items():
            per_k[k].setdefault(method, []).extend(values)
