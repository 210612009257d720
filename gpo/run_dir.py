"""A run folder and its one owner, `RunDir`: nothing else opens a run's files.

    config.json         the RunConfig (the source of truth for how the run was made)
    run.json            the data it was trained on: dataset, data folder, question keys in
                        order, texts, options and their ordinal positions, the group split
                        (labels) and question split (keys); and the head's typed config
                        as built (the config's model fields and the data's sizes)
    arrays.npz          the questions' option embeddings, the standardisation statistics and
                        the reference groups' answers (the run's training groups)
    checkpoints/        orbax: latest (resume) and best (use)
    calibration.json    the prediction intervals' calibration on the validation groups
                        (`gpo.intervals`); absent in runs made before intervals existed

    .lock               held by the process training the run (a second one is refused)

A run is self-contained for inference: `gpo.load` needs no data folder, and evaluation reads
back exactly the questions and split the run was trained on. Every file is written whole or
not at all (a temporary name, then renamed), rewritten only when its content changed, and
checked when read: a damaged or edited file gets one message naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from gpo.checkpoint import Checkpoints
from gpo.config import RunConfig
from gpo.data.splits import Split
from gpo.data.survey import Survey
from gpo.intervals import Calibration
from gpo.models import Head
from gpo.models.registry import DATA_FIELDS, abstract_head, head_class
from gpo.points import EmbeddingStats, References
from gpo.questions import QuestionCatalogue


@dataclasses.dataclass(frozen=True)
class RunSplit:
    """A split by names (group labels, question keys), valid in any survey holding them."""

    protocol: str
    seed: int
    train_groups: tuple[str, ...]      # every training group, validation groups included
    validation_groups: tuple[str, ...]
    test_groups: tuple[str, ...]
    train_questions: tuple[str, ...]
    test_questions: tuple[str, ...]

    @classmethod
    def of(cls, split: Split, validation_groups: np.ndarray, survey: Survey) -> RunSplit:
        labels, keys = survey.group_labels, survey.question_keys
        return cls(split.protocol, split.seed, *(tuple(labels[g] for g in groups) for groups in (
            split.train_groups, validation_groups, split.test_groups)),
            *(tuple(keys[q] for q in qs) for qs in (split.train_questions,
                                                    split.test_questions)))

    def resolve(self, survey: Survey) -> tuple[Split, np.ndarray]:
        """(Split, validation group indices) in `survey`, which must hold the run's groups.
        Questions the run never saw are test questions (under protocol A, training too:
        protocol A shares every question)."""
        groups = {label: i for i, label in enumerate(survey.group_labels)}
        missing = [g for g in self.train_groups + self.test_groups if g not in groups]
        if missing:
            raise ValueError(f"{survey.name}: the run's groups {missing[:3]} are not in this "
                             "survey")
        indices = lambda names: np.array(sorted(groups[n] for n in names), int)  # noqa: E731
        keys = survey.question_keys
        seen = set(self.train_questions)
        new = {k for k in keys if k not in seen and k not in set(self.test_questions)}
        shared = self.protocol == "A"
        train_q = np.array([q for q, k in enumerate(keys) if k in seen or (shared and k in new)],
                           int)
        test_q = np.array([q for q, k in enumerate(keys)
                           if k in set(self.test_questions) or k in new], int)
        split = Split(self.protocol, indices(self.train_groups), indices(self.test_groups),
                      train_q, test_q, self.seed)
        return split, indices(self.validation_groups)


class RunFileError(ValueError):
    """A run folder's own file is missing, damaged or edited; the message names the file."""


class RunInUse(ValueError):
    """Another process holds the run folder."""


# where a run keeps the models that score its further calibration folds (one run folder each)
FOLDS = "calibration_folds"

# run.json's fields and their JSON types; runs of an older gpo lack the optional ones
_RECORD_FIELDS = {"questions": list, "texts": list, "options": list, "split": dict}
_OPTIONAL_FIELDS = {"dataset": str, "survey": str, "head_config": dict, "ordinals": list,
                    "config": dict}
_JSON_NAMES = {str: "string", list: "list", dict: "object"}
_ARRAYS = ("embeddings", "embedding_mean", "embedding_scale", "reference_labels",
           "reference_probs", "reference_answered", "reference_respondents")


class RunDir:
    """Reads and writes one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- writing (training) -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self):
        """Hold the run folder for this process while it trains: a second process gets one
        `RunInUse` line instead of two runs writing the same checkpoints. An advisory lock
        (flock) the system drops when its process dies, so a killed run leaves none behind."""
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunInUse(f"{self.path} is in use by {holder}, which is training it; "
                               "wait for it to end, or use another run folder") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, config: RunConfig, head_config: Any, survey: Survey, split: RunSplit,
              embeddings_QxOxE: np.ndarray, stats: EmbeddingStats, references: References,
              data_dir: str | None) -> None:
        """Record a run before its first step; a run folder resumed with another config or
        other data is refused rather than silently mixed. A resumed run rewrites none of its
        files unless their content changed (a run moved to another data folder)."""
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"dataset": config.data.dataset, "survey": survey.name,
                  "data_dir": data_dir, "questions": survey.question_keys,
                  "texts": [q.text for q in survey.questions],
                  "options": [list(q.answer_options) for q in survey.questions],
                  "ordinals": [list(q.ordinals) for q in survey.questions],
                  "split": dataclasses.asdict(split),
                  "head_config": dataclasses.asdict(head_config),
                  "config": config.to_dict()}
        if self.has_checkpoints():
            self._check_same(config, head_config, record)
        _write_if_changed(self.path / "config.json", json.dumps(config.to_dict(), indent=2))
        _write_if_changed(self.path / "run.json", json.dumps(record, indent=1))
        arrays = dict(embeddings=embeddings_QxOxE, embedding_mean=stats.mean_E,
                      embedding_scale=stats.scale_E, questions=np.array(survey.question_keys),
                      reference_labels=np.array(references.labels),
                      reference_probs=references.probs_SxQxO,
                      reference_answered=references.answered_SxQ,
                      reference_respondents=references.respondents_SxQ)
        if not self._holds_arrays(arrays):
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            _write_atomic(self.path / "arrays.npz", buffer.getvalue())

    def _holds_arrays(self, arrays: dict[str, np.ndarray]) -> bool:
        """Whether arrays.npz holds exactly these arrays (a damaged file holds none)."""
        if not (self.path / "arrays.npz").exists():
            return False
        try:
            saved = self._arrays()
        except RunFileError:
            return False
        return saved.keys() == arrays.keys() and all(
            saved[k].shape == np.shape(v) and np.array_equal(
                saved[k], v, equal_nan=saved[k].dtype.kind == "f")  # no counts: NaN
            for k, v in arrays.items())

    def save_calibration(self, calibration: Calibration) -> None:
        _write_atomic(self.path / "calibration.json",
                      json.dumps(calibration.to_json(), indent=1))

    def check_same_config(self, config: RunConfig, head_config: Any = None) -> None:
        """Refuse to resume with another config, naming each differing field (the head's
        config too, where given: the sizes the data decides)."""
        differing = config_differences(self.trained_config, config,
                                       None if head_config is None else self.head_config,
                                       head_config)
        if differing:
            raise ValueError(f"{self.path} holds a run with a different config: "
                             f"{'; '.join(differing[:6])}; use a new run folder, or the run's "
                             "own config (its config.json)")

    def _check_same(self, config: RunConfig, head_config: Any, record: dict) -> None:
        """Refuse to resume with another config or other data."""
        self.check_same_config(config, head_config)
        if (self.path / "run.json").exists():
            old_record = self.record
            for field in ("questions", "split"):
                if old_record.get(field) != json.loads(json.dumps(record[field])):
                    raise ValueError(f"{self.path} holds a run trained on other {field}; use a "
                                     "new run folder, or the run's own data")

    # -- reading ------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / "config.json").exists()

    def require(self) -> RunDir:
        if not self.exists():
            raise FileNotFoundError(f"{self.path}: no config.json; is this a gpo run directory?")
        if not (self.path / "run.json").exists():
            raise FileNotFoundError(f"{self.path}: no run.json; the run was made by an older "
                                    "gpo and must be trained again")
        return self

    def fold_runs(self) -> list[RunDir]:
        """The run folders of the models trained to score this run's further calibration
        folds (`data.calibration_folds`), in fold order."""
        folds = self.path / FOLDS
        names = sorted((p.name for p in folds.iterdir() if p.name.isdigit()), key=int) if (
            folds.is_dir()) else []
        return [RunDir(folds / name) for name in names]

    def has_checkpoints(self) -> bool:
        return (self.path / "checkpoints").exists()

    def _json(self, name: str, kind: type = dict) -> Any:
        """A run file's JSON, or one RunFileError naming the file and what is wrong."""
        path = self.path / name
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunFileError(f"{path}: missing; is {self.path} a whole gpo run folder?"
                               ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunFileError(f"{path}: cannot be read ({_reason(err)}); restore it from a "
                               "copy, or train the run again") from None
        if not isinstance(raw, kind):
            raise RunFileError(f"{path}: holds a JSON {type(raw).__name__}, not the "
                               f"{kind.__name__} gpo wrote; restore it from a copy")
        return raw

    def _raw_config(self) -> dict:
        return self._json("config.json")

    @property
    def config(self) -> RunConfig:
        """The run's config, parsed: fields added to gpo since the run was made take the value
        that reproduces how it was made (episodes sampled on the host), else their default;
        a model section of an older gpo (which held the sizes the data decides) keeps only
        the head's own fields. A config.json edited since training (what the run is: its
        head, data, embedder or training fields) is refused naming the fields."""
        config = self._parsed(self._raw_config(), "config.json")
        if (self.path / "run.json").exists() and "config" in self.record:
            differing = config_differences(self.trained_config, config)
            if differing:
                raise RunFileError(f"{self.path / 'config.json'}: edited since the run was "
                                   f"trained ({'; '.join(differing[:6])}); put the values back "
                                   "(run.json records them) or train a new run")
        return config

    @property
    def trained_config(self) -> RunConfig:
        """The config the run was trained with, as run.json records it (runs of an older gpo
        record it only in config.json)."""
        if (self.path / "run.json").exists() and "config" in self.record:
            return self._parsed(self.record["config"], "run.json")
        return self._parsed(self._raw_config(), "config.json")

    def _parsed(self, raw: dict, name: str) -> RunConfig:
        raw = json.loads(json.dumps(raw))
        raw.setdefault("train", {}).setdefault("sampler", "host")
        raw["model"] = {k: v for k, v in (raw.get("model") or {}).items()
                        if k not in DATA_FIELDS}
        try:
            return RunConfig.from_dict(raw)
        except (ValueError, TypeError, AttributeError) as err:
            raise RunFileError(f"{self.path / name}: not a config gpo can read ({err})"
                               ) from None

    @property
    def head_config(self) -> Any:
        """The head's typed config as training built it (runs of an older gpo recorded it
        whole as config.json's model section)."""
        config_class = head_class(self.trained_config.head).config_class
        record = self.record if (self.path / "run.json").exists() else {}
        fields = dict(record.get("head_config") or self._raw_config()["model"])
        # fields added to the head's config since the run was made: the values it was made
        # with (a config class may list them; most have none)
        for name, value in getattr(config_class, "LEGACY", {}).items():
            fields.setdefault(name, value)
        try:
            return config_class(**fields)
        except (TypeError, ValueError) as err:
            raise RunFileError(f"{self.path / 'run.json'}: its head_config is not a "
                               f"{config_class.__name__} ({err}); restore it from a copy"
                               ) from None

    @property
    def record(self) -> dict:
        """run.json, checked: its fields of the right types, one text, option list and
        ordinal list per question."""
        record = self._json("run.json")
        path = self.path / "run.json"
        for field, kind in {**_RECORD_FIELDS, **_OPTIONAL_FIELDS}.items():
            if not isinstance(record.get(field), kind) and (field in _RECORD_FIELDS
                                                            or field in record):
                raise RunFileError(f"{path}: field {field!r} is missing or not a JSON "
                                   f"{_JSON_NAMES[kind]}; restore it from a copy")
        n = len(record["questions"])
        for field in ("texts", "options", "ordinals"):
            if field in record and len(record[field]) != n:
                raise RunFileError(f"{path}: {len(record[field])} {field} for {n} questions; "
                                   "restore it from a copy")
        if len(set(record["questions"])) != n:
            raise RunFileError(f"{path}: lists a question key twice; restore it from a copy")
        return record

    @property
    def question_keys(self) -> list[str]:
        return self.record["questions"]

    def question_ordinals(self) -> dict[str, tuple[float, ...]]:
        """Question key -> its options' ordinal positions (runs of an older gpo did not record
        them: their options count as evenly spaced, in order)."""
        record = self.record
        ordinals = record.get("ordinals") or [list(range(len(o))) for o in record["options"]]
        return {key: tuple(map(float, o)) for key, o in zip(record["questions"], ordinals)}

    @property
    def data_dir(self) -> str | None:
        """The data folder the run's survey was read from (None: generated data)."""
        return self.record["data_dir"]

    @property
    def split(self) -> RunSplit:
        raw = self.record["split"]
        return RunSplit(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def _arrays(self) -> dict[str, np.ndarray]:
        """arrays.npz, read whole, checked against run.json: one array of embeddings per
        question, in run.json's order (runs of an older gpo did not store the order)."""
        path = self.path / "arrays.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:  # read each array once
                arrays = dict(npz)
        except FileNotFoundError:
            raise RunFileError(f"{path}: missing; is {self.path} a whole gpo run folder?"
                               ) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise RunFileError(f"{path}: damaged ({_reason(err)}); restore it from a copy, or "
                               "train the run again") from None
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise RunFileError(f"{path}: lacks {missing}; restore it from a copy")
        if (self.path / "run.json").exists():
            keys = self.record["questions"]
            if len(arrays["embeddings"]) != len(keys):
                raise RunFileError(f"{path}: holds {len(arrays['embeddings'])} questions' "
                                   f"embeddings, run.json lists {len(keys)}; one of them was "
                                   "replaced or edited")
            if "questions" in arrays and list(arrays["questions"]) != keys:
                at = next(i for i, (a, b) in enumerate(zip(arrays["questions"], keys))
                          if a != b)
                raise RunFileError(f"{self.path / 'run.json'}: its question list no longer "
                                   f"matches arrays.npz (question {at} is {keys[at]!r} there, "
                                   f"{str(arrays['questions'][at])!r} in the arrays); restore "
                                   "run.json from a copy")
        return arrays

    def survey_questions(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """Question key -> (answer options, option embeddings `[options, E]`), in run order."""
        embeddings, record = self.embeddings(), self.record
        return {key: (tuple(options), embeddings[q, :len(options)])
                for q, (key, options) in enumerate(zip(record["questions"],
                                                       record["options"]))}

    def question_texts(self) -> dict[str, str]:
        record = self.record
        return dict(zip(record["questions"], record["texts"]))

    def embeddings(self) -> np.ndarray:
        return self._arrays()["embeddings"]

    def catalogue(self, stats: EmbeddingStats, embedding_dim: int, embed) -> QuestionCatalogue:
        """The run's questions and reference answers, for the API (`embed` embeds questions
        new to the run)."""
        questions = self.survey_questions()
        return QuestionCatalogue({k: o for k, (o, _) in questions.items()},
                                 {k: e for k, (_, e) in questions.items()},
                                 self.question_texts(), self.question_ordinals(),
                                 self.references(), stats, embedding_dim, embed)

    def stats(self) -> EmbeddingStats:
        arrays = self._arrays()
        return EmbeddingStats(arrays["embedding_mean"], arrays["embedding_scale"])

    def references(self) -> References:
        arrays = self._arrays()
        return References(tuple(str(x) for x in arrays["reference_labels"]),
                          arrays["reference_probs"], arrays["reference_answered"],
                          arrays["reference_respondents"])

    def calibration(self) -> Calibration | None:
        """The run's interval calibration, or None for a run made before intervals existed
        (or one that held out no validation groups)."""
        path = self.path / "calibration.json"
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); calibrate the run again with "
                             f"`gpo calibrate --run-dir {self.path}`") from err
        return Calibration.from_json(raw, str(path))

    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.path / "checkpoints")

    def restore_head(self) -> tuple[Head, dict]:
        """The trained head (best checkpoint, else latest) and that checkpoint's metadata
        (`step`, `validation`)."""
        graphdef, abstract = abstract_head(self.config.head, self.head_config)
        checkpoints = self.checkpoints()
        try:
            restored = checkpoints.restore_model(abstract)
        finally:
            checkpoints.close()
        if restored is None:
            raise FileNotFoundError(f"{self.path}: no checkpoint under checkpoints/")
        state, meta = restored
        return nnx.merge(graphdef, state), meta

    def select(self, survey: Survey) -> Survey:
        """The run's questions, in the run's order, from a survey that holds them all."""
        index = {key: i for i, key in enumerate(survey.question_keys)}
        keys = self.question_keys
        missing = [k for k in keys if k not in index]
        if missing:
            raise ValueError(f"{survey.name} lacks {len(missing)} of the run's {len(keys)} "
                             f"questions, first {missing[0]!r}; is this the run's data folder?")
        return survey.select(questions=[index[k] for k in keys])


def config_differences(old: RunConfig, new: RunConfig, old_head: Any = None,
                       new_head: Any = None) -> list[str]:
    """'section.field: old -> new' for each field that makes two configs different runs
    (where things live and how steps are dispatched do not), and for their head configs."""
    a, b = _flat(_what(old)), _flat(_what(new))
    if old_head is not None and new_head is not None:
        a.update(_flat({"model": dataclasses.asdict(old_head)}))
        b.update(_flat({"model": dataclasses.asdict(new_head)}))
    else:
        a.update(_flat({"model": old.model}))
        b.update(_flat({"model": new.model}))
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flat(raw: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]


def _write_if_changed(path: Path, content: str) -> None:
    """Write a run file unless it already holds exactly this content."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return
    except (OSError, UnicodeDecodeError):
        pass
    _write_atomic(path, content)


def _write_atomic(path: Path, content: str | bytes) -> None:
    """Write a run file whole or not at all: to a temporary name beside it, then renamed, so
    a kill or a full disk mid-write leaves the previous file intact."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(content, str):
            temporary.write_text(content, encoding="utf-8")
        else:
            temporary.write_bytes(content)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _what(config: RunConfig) -> dict:
    """A config without where things live (data folder, embedding cache), how many steps
    run per dispatch or how episodes are laid out in rows (the same steps either way), and
    without its model section, which is compared as the head config it builds: what a run
    is."""
    raw = json.loads(json.dumps(config.to_dict()))
    raw.pop("model")
    raw["data"].pop("data_dir")
    raw["embed"].pop("cache_dir")
    raw["train"].pop("steps_per_call")
    raw["train"].pop("packing")
    return raw
