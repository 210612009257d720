"""Run configuration: frozen dataclasses nested by concern, validated on construction, with
named presets and a JSON round trip (a run directory's config.json is the source of truth)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from gpo.data.episodes import check_sampling
from gpo.models.registry import head_class

DATASETS = ("synthetic", "opinionqa", "globalopinionqa", "persona")
LOSSES = ("default", "gaussian_nll", "kl", "wasserstein", "kl+nll", "wasserstein+nll")
SAMPLERS = ("host", "device")
PACKINGS = ("auto", "rows", "off")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    data_dir: str | None = None       # dataset folder; default $GPO_DATA_DIR/<dataset>
    protocol: str = "A"               # A: unseen groups; B: unseen groups and questions
    split_seed: int = 0
    train_fraction: float = 0.4       # GPO: 40% of groups train
    validation_fraction: float = 0.25  # of the training groups, held out to pick checkpoints
    eval_k: int = 20                  # context questions per test group (GPO: 20)
    min_group_answers: int = 50       # sparse data (GlobalOpinionQA): keep groups with >= this
    synthetic_seed: int = 0           # synthetic and persona: the generator's seed
    synthetic_groups: int = 36        # synthetic groups, or persona users
    synthetic_questions: int = 300    # synthetic questions, or persona statement pairs
    persona_types: int = 4

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.protocol not in ("A", "B"):
            raise ValueError(f"protocol must be 'A' or 'B', got {self.protocol!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")

    @property
    def metric(self) -> str:
        return {"globalopinionqa": "js", "persona": "accuracy"}.get(self.dataset, "wasserstein")


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32                        # episodes per step (GPO: 32)
    learning_rate: float = 3e-4                 # GPO: Adam 3e-4, cosine decay
    warmup_steps: int = 50
    weight_decay: float = 0.0
    loss: str = "default"                       # the head's own (GPO: 'gaussian_nll'), or
                                                # 'gaussian_nll', 'kl', 'wasserstein' (W1);
                                                # 'X+nll': X for the probabilities, the
                                                # Gaussian NLL for the predicted std
    context_range: tuple[int, int] = (10, 100)  # questions per episode (GPO: U[10, 100])
    target_range: tuple[int, int] = (10, 100)
    eval_every: int = 200
    checkpoint_every: int = 200
    seed: int = 0
    devices: int | None = None                  # default: all
    group_mixup: float = 0.0                    # fraction of episodes from mixed groups
    mixup_groups: int = 3                       # training groups per mix (see EpisodeSampler)
    hide_references: float = 0.25               # fraction of episodes whose targets hide the
                                                # reference groups' answers (EpisodeSampler;
                                                # heads that read no references ignore it)
    context_distribution: str = "uniform"       # or 'log_uniform' over context_range
    sampler: str = "device"                     # episodes drawn by jax.random inside the
                                                # jitted step (gpo.device_sampler), or 'host':
                                                # by NumPy (EpisodeSampler), one dispatch a step
    steps_per_call: int = 50                    # device sampler: steps per jitted call
    packing: str = "auto"                       # device sampler: 'rows' packs several
                                                # episodes a row (gpo.packing; heads that
                                                # pack), 'off' pads each; 'auto': rows on a
                                                # CPU, where padding costs compute, for runs
                                                # of 200 steps or more

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if min(self.steps, self.batch_size, self.eval_every, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, eval_every and checkpoint_every must be >= 1")
        check_sampling(self.group_mixup, self.hide_references, self.context_distribution)
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
        object.__setattr__(self, "context_range", tuple(self.context_range))
        object.__setattr__(self, "target_range", tuple(self.target_range))

    @classmethod
    def paper(cls) -> TrainConfig:
        return cls()

    @classmethod
    def cpu(cls, steps: int = 400, **overrides) -> TrainConfig:
        """The budget of the demo and experiments/ on 2 CPU cores: 16 episodes of 5-30 context
        and 5-30 target questions a step, a higher learning rate (the paper: 32 episodes of
        10-100 + 10-100 questions for far more steps)."""
        every = max(1, min(250, steps))
        return cls(**{"steps": steps, "batch_size": 16, "context_range": (5, 30),
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
    head: str = "reference"
    model: Any = None   # the head's config; its embedding_dim is set from the embedder
    data: DataConfig = DataConfig()
    embed: EmbedConfig = EmbedConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        config_cls = head_class(self.head).config_class
        if self.model is not None and not isinstance(self.model, config_cls):
            raise ValueError(f"head {self.head!r} needs a {config_cls.__name__}, got "
                             f"{type(self.model).__name__}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        raw = dict(raw)
        head = raw.get("head", "gpo")
        config_cls = head_class(head).config_class
        model = raw.pop("model", None)
        return cls(head=head,
                   model=None if model is None else _build(config_cls, model, "model"),
                   data=_build(DataConfig, raw.get("data", {}), "data"),
                   embed=_build(EmbedConfig, raw.get("embed", {}), "embed"),
                   train=_build(TrainConfig, raw.get("train", {}), "train"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, assignments: list[str]) -> RunConfig:
        """Apply 'section.field=value' or 'head=name' overrides (value parsed as JSON, else a
        string). Changing the head drops a model config written for the old one."""
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
                    raw["head"], raw["model"] = parsed, None
                continue
            if "." not in path:
                raise ValueError(f"override {item!r} is not section.field=value or head=name")
            section, field = path.split(".", 1)
            if section not in raw or not isinstance(raw[section], dict | type(None)):
                raise ValueError(f"override {item!r}: unknown section {section!r}")
            if section == "model" and raw["model"] is None:
                # the head's default config; training fills in the input width (a placeholder)
                raw["model"] = dataclasses.asdict(
                    head_class(raw["head"]).config_class.paper(embedding_dim=1))
            raw[section] = dict(raw[section] or {})
            raw[section][field] = parsed
        return RunConfig.from_dict(raw)


def _build(cls, raw: dict, section: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"config section {section!r}: unknown fields {unknown}; "
                         f"have {sorted(names)}")
    hints = typing.get_type_hints(cls)
    values = {name: _typed(value, hints.get(name), f"{section}.{name}")
              for name, value in raw.items()}
    return cls(**values)


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
