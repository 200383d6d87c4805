"""What mmvq's dataclass configs share: one way to reject unknown keys and to apply presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["check_known_fields", "from_preset"]

C = TypeVar("C")


def check_known_fields(cls: type, keys: Iterable[str], owner: str, noun: str = "field") -> None:
    """Raise a ``ValueError`` naming every key of ``keys`` that is not a field of dataclass ``cls``.

    ``owner`` says where the keys came from (``"TrainConfig.balancer"``) and ``noun`` what they
    are called there (``"field"``, ``"option"``, ``"override"``).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(keys) - names)
    if unknown:
        raise ValueError(
            f"{owner} got unknown {noun}(s) {unknown}; {cls.__name__} has the fields "
            f"{sorted(names)}."
        )


def from_preset(
    cls: type[C], presets: Mapping[str, Mapping[str, Any]], name: str, overrides: Mapping[str, Any]
) -> C:
    """``cls(**presets[name], **overrides)``, with a clear error for an unknown preset or field."""
    if name not in presets:
        raise ValueError(
            f"unknown {cls.__name__} preset {name!r}; available presets: {sorted(presets)}."
        )
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.preset({name!r}) got unknown override(s) {unknown}: unknown field(s) "
            f"{unknown} of {cls.__name__}, whose fields are {sorted(names)}."
        )
    return cls(**{**presets[name], **overrides})
