"""Argument checks, one helper per check, shared by every config and boundary of mmvq.

Each ``check_*`` raises ``error`` (default :class:`ValueError`) with the message
``"<name> must be <what>, got <value!r><fix>"``: ``name`` says where the value came from
(``"TrainConfig.log_every"``), ``fix`` (optional, e.g. ``"; e.g. 1024."``) how to mend it. The
predicates ``is_int`` / ``is_real`` are what the checks test, for callers that word their own
message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "describe_value",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_positive_int",
    "is_int",
    "is_real",
]


def describe_value(value: Any) -> str:
    """How an error message shows a value that should have been a tensor: ``"torch.int32 (2,
    3)"`` for a tensor, else its type's name."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive_int(
    name: str, value: Any, *, fix: str = "", error: type[Exception] = ValueError
) -> None:
    """``value`` must be an int > 0: ``"<name> must be a positive int, got <value>"``."""
    if not (is_int(value) and value > 0):
        raise error(f"{name} must be a positive int, got {value!r}{fix}")


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int,
    optional: bool = False,
    fix: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """``value`` must be an int >= ``minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if not (is_int(value) and value >= minimum):
        need = f"{'None or ' if optional else ''}an int >= {minimum}"
        raise error(f"{name} must be {need}, got {value!r}{fix}")


def check_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    fix: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """``value`` must be a finite number ``>= low`` (``> low`` when ``low_open``), ``<= high``."""
    ok = is_real(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (
            f" and <= {high}" if high < math.inf else ""
        )
        raise error(f"{name} must be a finite number {bound}, got {value!r}{fix}")


def check_bool(
    name: str, value: Any, *, fix: str = "", error: type[Exception] = ValueError
) -> None:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}{fix}")


def check_choice(
    name: str,
    value: Any,
    choices: Sequence[Any],
    *,
    fix: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """``value`` must be one of ``choices`` (named in the message as a tuple)."""
    if value not in choices:
        raise error(f"{name} must be one of {tuple(choices)}, got {value!r}{fix}")
