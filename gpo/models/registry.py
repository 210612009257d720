"""Heads by name. A head module registers its class with `@register_head("name")`; a run
config names a head and sets some fields of its config (`RunConfig.model`), and the registry
builds the typed head config, filling in what the data decides (the embedding width, the
number of groups), and the head. Configs and head modules never import each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flax import nnx

from gpo.config import build_section
from gpo.models.head import Head

_HEADS: dict[str, type[Head]] = {}

# Head config fields the data decides: set at build time, never by a run config.
DATA_FIELDS = {"embedding_dim": "the embedder's width",
               "n_groups": "the number of groups in the survey"}


def register_head(name: str):
    """Class decorator: make a Head subclass buildable as `head=name`."""
    def register(cls: type[Head]) -> type[Head]:
        if not issubclass(cls, Head):
            raise TypeError(f"{cls.__name__} must subclass gpo.models.Head")
        if name in _HEADS and _HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is already registered by "
                             f"{_HEADS[name].__module__}.{_HEADS[name].__name__}")
        cls.name = name
        _HEADS[name] = cls
        return cls
    return register


def head_names() -> list[str]:
    return sorted(_HEADS)


def head_class(name: str) -> type[Head]:
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; have {head_names()}")
    return _HEADS[name]


def check_model_section(head: str, model: Mapping[str, Any]) -> None:
    """Refuse, before any work, a model section the head's config cannot take: an unknown
    field, a field the data decides, or a badly typed value (one message naming the field)."""
    config_class = head_class(head).config_class
    for name in model:
        if name in DATA_FIELDS:
            raise ValueError(f"config field model.{name} is set from the data "
                             f"({DATA_FIELDS[name]}); remove it from the config")
    user_fields = [f for f in dataclasses.fields(config_class) if f.name not in DATA_FIELDS]
    build_section(config_class, dict(model), "model", fields=user_fields, construct=False)


def head_config(head: str, model: Mapping[str, Any], *, embedding_dim: int,
                n_groups: int) -> Any:
    """The typed config of `head`: its defaults, the run config's model fields, and the
    sizes the data decides (fields of those names that the config class has)."""
    check_model_section(head, model)
    config_class = head_class(head).config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    data = {name: value for name, value in (("embedding_dim", embedding_dim),
                                            ("n_groups", n_groups)) if name in names}
    values = build_section(config_class, dict(model), "model", construct=False)
    try:
        return config_class(**data, **values)
    except ValueError as err:
        raise ValueError(f"config section 'model' of head {head!r}: {err}") from err


def build_head(name: str, config: Any, *, rngs: nnx.Rngs) -> Head:
    """A head from its typed config (`head_config`)."""
    return head_class(name)(config, rngs=rngs)


def abstract_head(name: str, config: Any, seed: int = 0):
    """(graphdef, abstract state) of a head: shapes only, no weights materialised."""
    abstract = nnx.eval_shape(lambda: build_head(name, config, rngs=nnx.Rngs(seed)))
    return nnx.split(abstract)
