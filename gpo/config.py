"""Run configuration: frozen dataclasses nested by concern, validated on construction, with
named presets and a JSON round trip (a run directory's config.json is the source of truth).

Importing it loads no JAX: the head's own config (`RunConfig.model`, a dict of the fields a
run sets) is checked and built by the head registry (`gpo.models.registry.head_config`),
which fills in what the data decides (the embedding width, the number of groups).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpo.data.datasets import DATASETS, dataset

DEFAULT_HEAD = "reference"
LOSSES = ("default", "gaussian_nll", "kl", "wasserstein", "kl+nll", "wasserstein+nll")
SAMPLERS = ("host", "device")
PACKINGS = ("auto", "rows", "off")
CONTEXT_DISTRIBUTIONS = ("uniform", "log_uniform")


def user_cache_dir() -> Path:
    """Where gpo caches what it computes from model weights (embeddings, LLM answers):
    $GPO_CACHE_DIR, else $XDG_CACHE_HOME/gpo, else ~/.cache/gpo (the XDG convention)."""
    if os.environ.get("GPO_CACHE_DIR"):
        return Path(os.environ["GPO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpo"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    data_dir: str | None = None       # dataset folder; default $GPO_DATA_DIR/<dataset>
    protocol: str = "A"               # A: unseen groups; B: unseen groups and questions
    split_seed: int = 0
    train_fraction: float = 0.4       # GPO: 40% of groups train
    validation_fraction: float = 0.25  # of the training groups, held out to pick checkpoints
    # 1: intervals calibrated on the validation groups; F > 1: also on F - 1 folds of the other
    # training groups, each held out of one more model trained only for that (F - 1 more
    # trainings, every training group calibrates: steadier intervals)
    calibration_folds: int = 1
    eval_k: int = 20                  # context questions per test group (GPO: 20)
    min_group_answers: int = 50       # sparse data (GlobalOpinionQA): keep groups with >= this
    synthetic_seed: int = 0           # synthetic and persona: the generator's seed
    synthetic_groups: int = 36        # synthetic groups, or persona users
    synthetic_questions: int = 300    # synthetic questions, or persona statement pairs
    persona_types: int = 4

    def __post_init__(self):
        dataset(self.dataset)  # refuses an unknown name, listing the known ones
        if self.protocol not in ("A", "B"):
            raise ValueError(f"protocol must be 'A' or 'B', got {self.protocol!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1): some groups train, some are "
                             f"tested; got {self.train_fraction}")
        for name in ("eval_k", "calibration_folds", "synthetic_groups", "synthetic_questions",
                     "persona_types"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_group_answers < 0:
            raise ValueError(f"min_group_answers must be >= 0, got {self.min_group_answers}")

    @property
    def metric(self) -> str:
        return dataset(self.dataset).metric


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    model: str = "smollm2"     # 'smollm2' (the offline default LLM), 'minilm', a .gguf file,
                               # a Hugging Face folder, or 'lexical' (hashed words: tests)
    dim: int = 1024            # lexical only: hashed feature width (an LLM fixes its own)
    pooling: str = "mean"      # LLMs: 'mean' over tokens (GPO) or 'last' token
    layer: int = -1            # LLMs: hidden layer, Hugging Face numbering (-1 = last, normed)
    cache_dir: str | None = None
    batch_size: int = 32

    def __post_init__(self):
        if not self.model:
            raise ValueError("embed.model must name an embedder")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"embed.pooling must be 'mean' or 'last', got {self.pooling!r}")
        for name in ("dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The distribution of meta-training episodes, read whole by both samplers (NumPy on the
    host, `gpo.training.sampling`; jax.random inside the jitted step,
    `gpo.training.device_sampler`). Both stay: the host's random stream is the one every
    figure in docs/results.md was trained on, the device's is the fast default.

    An episode: a group drawn uniformly from the meta-training groups; context and target
    question counts drawn from their ranges (context uniformly or log-uniformly), capped by
    what the group answered; disjoint questions drawn without replacement; every option of a
    chosen question a point. A `group_mixup` fraction of episodes is a Dirichlet(1) mix of
    `mixup_groups` training groups (their shared questions; no respondent counts); a
    `hide_references` fraction reads its targets as if no reference group had answered them
    (how heads that read references learn their text-only fallback); a `hide_respondents`
    fraction gives its answers without respondent counts (how a head learns contexts whose
    counts a user does not have).
    """

    batch_size: int = 32                        # episodes per step (GPO: 32)
    context_range: tuple[int, int] = (10, 100)  # questions per episode (GPO: U[10, 100])
    target_range: tuple[int, int] = (10, 100)
    context_distribution: str = "uniform"       # or 'log_uniform' over context_range
    group_mixup: float = 0.0                    # fraction of episodes from mixed groups
    mixup_groups: int = 3                       # training groups per mix
    hide_references: float = 0.25               # fraction of episodes whose targets hide the
                                                # reference groups' answers (heads that read
                                                # no references ignore it)
    hide_respondents: float = 0.0               # fraction of episodes without counts

    def __post_init__(self):
        object.__setattr__(self, "context_range", tuple(self.context_range))
        object.__setattr__(self, "target_range", tuple(self.target_range))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("context_range", "target_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must satisfy 1 <= low <= high, got {(low, high)}")
        for name in ("group_mixup", "hide_references", "hide_respondents"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1], got "
                                 f"{getattr(self, name)}")
        if self.group_mixup and self.mixup_groups < 2:
            raise ValueError(f"mixup_groups must be >= 2, got {self.mixup_groups}")
        if self.context_distribution not in CONTEXT_DISTRIBUTIONS:
            raise ValueError(f"context_distribution must be one of {CONTEXT_DISTRIBUTIONS}, "
                             f"got {self.context_distribution!r}")


_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    learning_rate: float = 3e-4                 # GPO: Adam 3e-4, cosine decay
    warmup_steps: int = 50
    weight_decay: float = 0.0
    loss: str = "default"                       # the head's own (GPO: 'gaussian_nll'), or
                                                # 'gaussian_nll', 'kl', 'wasserstein' (W1);
                                                # 'X+nll': X for the probabilities, the
                                                # Gaussian NLL for the predicted std
    eval_every: int = 200
    checkpoint_every: int = 200
    seed: int = 0                               # weights and episodes
    devices: int | None = None                  # default: all
    sampler: str = "device"                     # episodes drawn by jax.random inside the
                                                # jitted step, or 'host': by NumPy, one
                                                # dispatch a step
    steps_per_call: int = 50                    # device sampler: steps per jitted call
    packing: str = "auto"                       # device sampler: 'rows' packs several
                                                # episodes a row (gpo.training.packing; heads
                                                # that pack), 'off' pads each; 'auto': rows
                                                # where they pay (gpo.training.loop.packs)
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if min(self.steps, self.eval_every, self.checkpoint_every) < 1:
            raise ValueError("steps, eval_every and checkpoint_every must be >= 1")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {self.packing!r}")
        if self.packing == "rows" and self.sampler != "device":
            raise ValueError("packing='rows' needs sampler='device' (the host sampler pads "
                             "each batch to its largest episode)")
        if self.steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {self.steps_per_call}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("warmup_steps", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"devices must be >= 1 (or null: all), got {self.devices}")

    @classmethod
    def paper(cls) -> TrainConfig:
        return cls()

    @classmethod
    def of(cls, **fields) -> TrainConfig:
        """A TrainConfig from flat keyword fields: those of `SamplingConfig` go to
        `sampling`, the rest to the TrainConfig itself."""
        sampling = {k: fields.pop(k) for k in list(fields) if k in _SAMPLING_FIELDS}
        return cls(**fields, sampling=SamplingConfig(**sampling))

    @classmethod
    def cpu(cls, steps: int = 400, **overrides) -> TrainConfig:
        """The budget of the demo and experiments/ on 2 CPU cores: 16 episodes of 5-30 context
        and 5-30 target questions a step, a higher learning rate (the paper: 32 episodes of
        10-100 + 10-100 questions for far more steps). Overrides are flat (`TrainConfig.of`)."""
        every = max(1, min(250, steps))
        return cls.of(**{"steps": steps, "batch_size": 16, "context_range": (5, 30),
                         "target_range": (5, 30), "learning_rate": 1e-3, "eval_every": every,
                         "checkpoint_every": every, **overrides})

    @classmethod
    def reference(cls, steps: int = 300, **overrides) -> TrainConfig:
        """The reference head's recipe on 2 CPU cores (about 30 s on OpinionQA): `cpu` with
        1-100 context questions drawn log-uniformly (few-answer episodes as common as
        many-answer ones) and 10-100 targets."""
        return cls.cpu(steps, **{"context_range": (1, 100), "target_range": (10, 100),
                                 "context_distribution": "log_uniform", **overrides})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    head: str = DEFAULT_HEAD
    model: dict = dataclasses.field(default_factory=dict)  # fields of the head's config that
    #   differ from its defaults (e.g. {"prototypes": 4}); the rest, and the sizes the data
    #   decides, come from the head registry when the head is built
    data: DataConfig = DataConfig()
    embed: EmbedConfig = EmbedConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        if not isinstance(self.head, str) or not self.head:
            raise ValueError(f"head must name a registered head, got {self.head!r}")
        model = {} if self.model is None else self.model
        if not isinstance(model, Mapping):
            raise ValueError(f"config section 'model' must be an object of the head's config "
                             f"fields, got {type(model).__name__}")
        object.__setattr__(self, "model", dict(model))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        """Parse a config's JSON form; an older layout (sampling fields directly under
        `train`) is read as the current one."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"config: expected a JSON object of sections, got "
                             f"{type(raw).__name__}")
        raw = dict(raw)
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config: unknown sections {unknown}; have ['data', 'embed', "
                             "'head', 'model', 'train']")
        head = raw.get("head", DEFAULT_HEAD)
        if not isinstance(head, str):
            raise ValueError(f"config field head: {head!r} is not a string")
        return cls(head=head, model=raw.get("model") or {},
                   data=build_section(DataConfig, raw.get("data", {}), "data"),
                   embed=build_section(EmbedConfig, raw.get("embed", {}), "embed"),
                   train=build_section(TrainConfig, _nest_sampling(raw.get("train", {})),
                                       "train"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A RunConfig JSON file; one error names the file and what is wrong with it."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"config file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise ValueError(f"config file {str(path)!r} is a folder; give the JSON file"
                             ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"config file {str(path)!r} is not valid JSON text ({err})"
                             ) from None
        try:
            return cls.from_dict(raw)
        except ValueError as err:
            raise ValueError(f"config file {str(path)!r}: {err}") from None

    def override(self, assignments: Sequence[str]) -> RunConfig:
        """Apply 'section.field=value' (any depth, e.g. train.sampling.batch_size=8) or
        'head=name' overrides (value parsed as JSON, else a string). Changing the head drops
        a model section written for the old one."""
        raw = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not section.field=value or head=name")
            path, value = item.split("=", 1)
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            if path == "head":
                if parsed != raw["head"]:
                    raw["head"], raw["model"] = parsed, {}
                continue
            if "." not in path:
                raise ValueError(f"override {item!r} is not section.field=value or head=name")
            section, *inner, field = path.split(".")
            if section not in raw or not isinstance(raw[section], dict):
                raise ValueError(f"override {item!r}: unknown section {section!r}")
            node = raw[section]
            for name in inner:
                if not isinstance(node.get(name), dict):
                    raise ValueError(f"override {item!r}: {section}.{name} is not a section")
                node = node[name]
            node[field] = parsed
        return RunConfig.from_dict(raw)


def _nest_sampling(train: Any) -> Any:
    """`train` with any sampling field given at its top (the layout before SamplingConfig)
    moved into `train.sampling`, where it wins over a value already there."""
    if not isinstance(train, Mapping) or not set(train) & _SAMPLING_FIELDS:
        return train
    train = dict(train)
    sampling = dict(train.get("sampling") or {})
    sampling.update({k: train.pop(k) for k in list(train) if k in _SAMPLING_FIELDS})
    train["sampling"] = sampling
    return train


def build_section(cls, raw: Any, section: str, fields: Sequence | None = None,
                  construct: bool = True):
    """`cls` from a config section's JSON object, every value checked against its field's
    type (a nested dataclass field is a section of its own); one error names the field.
    With `construct=False`, the checked values as a dict (for configs built elsewhere)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"config section {section!r} must be an object, got "
                         f"{type(raw).__name__}")
    fields = dataclasses.fields(cls) if fields is None else fields
    names = {f.name for f in fields}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"config section {section!r}: unknown fields {unknown}; "
                         f"have {sorted(names)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint):
            values[name] = build_section(hint, value, f"{section}.{name}")
        else:
            values[name] = _typed(value, hint, f"{section}.{name}")
    if not construct:
        return values
    try:
        return cls(**values)
    except ValueError as err:  # a field's range or a combination: name the section
        message = str(err)
        raise ValueError(message if message.startswith("config ") else
                         f"config section {section!r}: {message}") from None


def _typed(value, hint, field: str):
    """`value` as the field's type, or one error naming the field, the value and the type
    (so `--set train.steps=abc` or `train.learning_rate=nan` never reach __post_init__)."""
    if hint is None or hint is Any:
        return value
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, field)
            except ValueError as err:
                errors.append(err)
        raise errors[0]
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ValueError(f"config field {field}: {value!r} is not a list of {len(args)} "
                             f"values ({', '.join(a.__name__ for a in args)})")
        return tuple(_typed(v, a, field) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config field {field}: {value!r} is not true or false")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config field {field}: {value!r} is not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config field {field}: {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"config field {field}: {value!r} is not a finite number")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ValueError(f"config field {field}: {value!r} is not a string")
    return value


__all__ = ["CONTEXT_DISTRIBUTIONS", "DATASETS", "DEFAULT_HEAD", "DataConfig", "EmbedConfig",
           "LOSSES", "PACKINGS", "RunConfig", "SAMPLERS", "SamplingConfig", "TrainConfig",
           "build_section"]
