"""What mmvq's dataclass configs share: unknown keys, presets, and one ``JSON or key=value`` parser.

* :func:`check_known_fields`: a ``ValueError`` naming every key that is not a field.
* :func:`from_preset`: ``cls(**presets[name], **overrides)`` with clear errors.
* :func:`parse_mapping`: the one parser of the mapping syntax every flag that takes a mapping
  accepts (``--balancer``, ``--columns``, ``--adapter_overrides``...): a dict, a JSON object
  string, or ``key=value`` pairs split at top-level commas, so a value may itself be a JSON
  object or list (``name=static,weights={"a": 1, "b": 2}``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["check_known_fields", "from_preset", "parse_mapping"]

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
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.preset({name!r}) got unknown override(s) {unknown}: unknown field(s) "
            f"{unknown} of {cls.__name__}, whose fields are {sorted(names)}."
        )
    return cls(**{**presets[name], **overrides})


#: Python's spellings of the JSON constants, as a user writes them on a command line
_PYTHON_CONSTANTS: dict[str, Any] = {"True": True, "False": False, "None": None}


def _parse_value(value: str) -> Any:
    """A ``key=value`` value: JSON when it parses (numbers, bools, objects), Python's ``True``,
    ``False`` and ``None`` as the constants they name, else the string."""
    if value.strip() in _PYTHON_CONSTANTS:
        return _PYTHON_CONSTANTS[value.strip()]
    try:
        return json.loads(value)
    except ValueError:
        return value


def _split_pairs(pairs: str) -> list[str]:
    """Split ``a=1,b={"x": 1, "y": 2}`` at top-level commas (not inside braces/brackets)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(pairs):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(pairs[start:i])
            start = i + 1
    parts.append(pairs[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_mapping(
    value: Any,
    owner: str,
    *,
    example: str = "key=value",
    shorthand: str | None = None,
    json_values: bool = True,
    error: type[Exception] = ValueError,
) -> dict[str, Any]:
    """A dict from a mapping, a JSON object string, or ``key=value[,key=value...]`` pairs.

    Args:
        value: ``None`` or ``""`` (an empty dict), a mapping (copied), or a string.
        owner: names the option in errors (``"DataConfig.columns"``).
        example: a valid ``key=value`` string for the error message.
        shorthand: a string without ``=`` sets this one key (``"gradnorm"`` ->
            ``{"name": "gradnorm"}``); without it such a string is an error.
        json_values: parse each pair's value as JSON when it can be (``3`` -> ``3``); ``False``
            keeps every value a string.
        error: the exception raised for a malformed string.

    Raises:
        TypeError: ``value`` is neither a mapping nor a string.
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise TypeError(
            f"{owner} must be a dict or a string ('{example}' or JSON), got "
            f"{type(value).__name__}: {value!r}"
        )
    string = value.strip()
    if not string:
        return {}
    if string.startswith("{"):
        try:
            return json.loads(string)  # text opening with "{" is an object or invalid
        except ValueError as err:
            raise error(f"{owner} is not valid JSON ({err}): {value!r}") from None
    parse = _parse_value if json_values else str
    if shorthand is not None and "=" not in string:
        return {shorthand: parse(string)}
    pairs: dict[str, Any] = {}
    for part in _split_pairs(string):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise error(f"{owner}: {part!r} is not key=value; write e.g. '{example}'")
        pairs[key.strip()] = parse(raw.strip())
    return pairs
