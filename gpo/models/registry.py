"""Heads by name. A head module registers its class with `@register_head("name")`; configs
name a head and the registry builds it, so configs and head modules never import each other.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from gpo.models.head import Head

_HEADS: dict[str, type[Head]] = {}


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


def build_head(name: str, config: Any, *, rngs: nnx.Rngs) -> Head:
    return head_class(name)(config, rngs=rngs)


def abstract_head(name: str, config: Any, seed: int = 0):
    """(graphdef, abstract state) of a head: shapes only, no weights materialised."""
    abstract = nnx.eval_shape(lambda: build_head(name, config, rngs=nnx.Rngs(seed)))
    return nnx.split(abstract)
