"""End-to-end steps the CLI, the demo and experiments/ share: load the survey a config names,
embed it, train a run, and evaluate a saved run on the data it was trained on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpo.config import DataConfig, EmbedConfig, RunConfig
from gpo.data import data_dir
from gpo.data.datasets import dataset
from gpo.data.survey import Survey
from gpo.embed import embed_survey, make_embedder
from gpo.evaluation.evaluate import Evaluation, evaluate_run
from gpo.models.registry import check_model_section
from gpo.points import check_finite
from gpo.run_dir import RunDir
from gpo.training.loop import TrainResult, check_against_data, finished_run, train

if TYPE_CHECKING:
    from gpo.evaluation.prompting import PromptingBaselines


def dataset_folder(config: DataConfig) -> Path | None:
    """The folder a data config reads (None for generated data): the dataset's own folder
    under the data root, or the root itself."""
    entry = dataset(config.dataset)
    if entry.folder is None:
        return None
    root = data_dir(config.data_dir)
    if root is None:
        raise FileNotFoundError(f"dataset {config.dataset!r} needs data.data_dir or "
                                f"$GPO_DATA_DIR ({entry.holds})")
    return root / entry.folder if (root / entry.folder).is_dir() else root


def load_survey(config: DataConfig) -> Survey:
    """The survey a data config names, filtered as experiments use it."""
    return dataset(config.dataset).load(config, dataset_folder(config))


def embed(survey: Survey, config: EmbedConfig, precomputed: str | Path | None = None
          ) -> np.ndarray:
    """The survey's option embeddings: from config's embedder, or read from `precomputed` (a
    `gpo embed` file), which must hold this survey's questions embedded by config.model."""
    if precomputed is None:
        vectors = embed_survey(survey, make_embedder(config))
    else:
        vectors = read_embeddings(precomputed, survey, config.model)
    check_finite(vectors, survey.option_mask_QxO, survey.question_keys)
    return vectors


def read_embeddings(path: str | Path, survey: Survey, model: str) -> np.ndarray:
    """A `gpo embed` file's vectors, checked against the survey and the embedder."""
    saved = np.load(path)
    if "model" not in saved:
        raise ValueError(f"{path}: records no embedder; write it again with `gpo embed "
                         f"--model {model}`")
    if str(saved["model"]) != model:
        raise ValueError(f"{path}: embeddings made by {str(saved['model'])!r}, but the run's "
                         f"embedder is {model!r}")
    keys = [str(k) for k in saved["keys"]]
    expected = list(survey.question_keys)
    if keys != expected:
        at = next((i for i, (a, b) in enumerate(zip(keys, expected)) if a != b),
                  min(len(keys), len(expected)))
        found = keys[at] if at < len(keys) else "its end"
        wanted = expected[at] if at < len(expected) else "the survey's end"
        raise ValueError(f"{path}: holds {len(keys)} questions, not the survey's "
                         f"{len(expected)}; question {at} is {found!r}, the survey's is "
                         f"{wanted!r}")
    vectors = saved["embeddings"]
    if vectors.shape[:2] != survey.option_mask_QxO.shape:
        raise ValueError(f"{path}: embeddings of shape {vectors.shape}, expected "
                         f"{survey.option_mask_QxO.shape} + (width,)")
    return vectors


def train_run(config: RunConfig, run_dir: str | Path, progress: bool = True,
              survey: Survey | None = None, embeddings: np.ndarray | None = None,
              announce: Callable[[str], None] | None = None) -> TrainResult:
    """Load (unless given), embed (unless given) and meta-train; the run records its data.
    Before any minute goes to embedding: the head's config section, the config against the
    data, and the run folder are checked; a run folder that already finished this config
    returns its result at once (`TrainResult.seconds` 0). announce: called once with a line
    saying what is trained, on what, embedded how, before anything slow starts."""
    check_model_section(config.head, config.model)
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ValueError(f"{run_dir}: a file where the run folder belongs; give a folder")
    survey = load_survey(config.data) if survey is None else survey
    check_against_data(config, survey)
    done = finished_run(config, RunDir(run_dir))  # refuses a changed config, naming fields
    if done is not None:
        if announce is not None:
            announce(f"{run_dir} already finished this config ({done.steps} steps): "
                     "nothing to train")
        return done
    if announce is not None:
        announce(training_line(config, survey, run_dir, embedded=embeddings is not None))
    embeddings = embed(survey, config.embed) if embeddings is None else embeddings
    return train(config, survey, embeddings, run_dir, progress=progress,
                 data_dir=dataset_folder(config.data))


def training_line(config: RunConfig, survey: Survey, run_dir: str | Path,
                  embedded: bool = False) -> str:
    """What a training run is about to do, in one line."""
    data = config.data
    embedder = "embeddings given" if embedded else (
        f"questions embedded with {config.embed.model}"
        + (f" (cache {config.embed.cache_dir})" if config.embed.cache_dir else " (no cache)"))
    return (f"training the {config.head} head for {config.train.steps} steps on {survey.name} "
            f"({len(survey.groups)} groups, {len(survey.questions)} questions; protocol "
            f"{data.protocol}, split seed {data.split_seed}); {embedder}; run folder {run_dir}")


def run_survey(run: RunDir, data_dir_override: str | Path | None = None) -> Survey:
    """The survey a run was trained on, read again: its own questions in its own order."""
    config = run.config
    folder = data_dir_override if data_dir_override is not None else run.data_dir
    data = dataclasses.replace(config.data, data_dir=None if folder is None else str(folder))
    return run.select(load_survey(data))


def evaluate_saved_run(run_dir: str | Path, ks: Sequence[int], eval_seeds: Sequence[int] | None,
                       data_dir_override: str | Path | None = None,
                       all_questions: bool = False, llm: PromptingBaselines | None = None,
                       llm_questions: int = 0) -> tuple[Evaluation, Survey, str]:
    """(evaluation, survey, what was evaluated) of a saved run: on its own questions and
    embeddings (nothing is embedded again), or with `all_questions` on every question of its
    dataset (the new ones embedded with the run's embedder). llm: the prompting baselines
    too; llm_questions > 0: every method scored on that many fixed random questions only."""
    run = RunDir(run_dir).require()
    if not all_questions:
        survey = run_survey(run, data_dir_override)
        scored_Q = scored_questions(len(survey.questions), llm_questions)
        what = f"the run's {len(survey.questions)} questions" + _scored(scored_Q)
        return (evaluate_run(run, survey, ks, eval_seeds, llm=llm, scored_Q=scored_Q), survey,
                what)
    config = run.config
    folder = data_dir_override if data_dir_override is not None else run.data_dir
    data = dataclasses.replace(config.data, data_dir=None if folder is None else str(folder))
    survey = load_survey(data)
    embeddings = embed(survey, config.embed)
    scored_Q = scored_questions(len(survey.questions), llm_questions)
    what = (f"all {len(survey.questions)} questions of {survey.name} (the run trained on "
            f"{len(run.question_keys)})" + _scored(scored_Q))
    return (evaluate_run(run, survey, ks, eval_seeds, embeddings_QxOxE=embeddings, llm=llm,
                         scored_Q=scored_Q), survey, what)


def scored_questions(n_questions: int, wanted: int, seed: int = 0) -> np.ndarray | None:
    """A fixed random subset of `wanted` questions (bool `[Q]`) to score every method on, the
    same whatever the split (None: all): prompting an LLM with every target of every group
    takes hours on a CPU."""
    if wanted < 0:
        raise ValueError(f"the number of scored questions must be >= 0, got {wanted}")
    if wanted == 0 or wanted >= n_questions:
        return None
    scored = np.zeros(n_questions, bool)
    scored[np.random.default_rng(seed).choice(n_questions, wanted, replace=False)] = True
    return scored


def _scored(scored_Q: np.ndarray | None) -> str:
    return "" if scored_Q is None else f", {int(scored_Q.sum())} fixed random ones scored"
