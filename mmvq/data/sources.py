"""Where a dataset's rows come from, so that an error names the file and line of a bad row.

:func:`scan_json_file` reads a local ``.json``/``.jsonl`` file before ``datasets`` does: a line
that is not JSON, a line that is not an object or a file without rows fails with the file and
the line number (``datasets`` reports none of them). The line of every row is remembered
(:func:`register_rows`, keyed by the ``datasets`` fingerprint of the loaded split) and
:func:`describe_row` turns a row index into ``"data/train.jsonl line 151 (row 150)"`` in the
messages of validation and preprocessing.
"""

from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from typing import Any

from mmvq.data.config import DataError

__all__ = [
    "RowSource",
    "copy_rows",
    "describe_row",
    "is_json_file",
    "register_rows",
    "scan_json_file",
    "source_of",
]

_SOURCES: dict[str, RowSource] = {}
_MAX_SOURCES = 64


@dataclass(frozen=True)
class RowSource:
    """A split's file and, for JSON lines, the 1-based line number of each row."""

    path: str
    lines: array | None = None

    def describe(self, index: int) -> str:
        if self.lines is not None and 0 <= index < len(self.lines):
            return f"{self.path} line {self.lines[index]} (row {index})"
        return f"{self.path} row {index}"


def _fingerprint(ds: Any) -> str | None:
    return getattr(ds, "_fingerprint", None)


def register_rows(ds: Any, source: RowSource) -> None:
    """Remember where ``ds``'s rows come from (bounded: the oldest entries are forgotten)."""
    key = _fingerprint(ds)
    if key is None:
        return
    if len(_SOURCES) >= _MAX_SOURCES:
        _SOURCES.pop(next(iter(_SOURCES)))
    _SOURCES[key] = source


def copy_rows(source_ds: Any, derived_ds: Any) -> Any:
    """``derived_ds`` has the same first rows as ``source_ds`` (a cast, a map, a prefix
    selection): it inherits its source. Returns ``derived_ds``."""
    known = _SOURCES.get(_fingerprint(source_ds) or "")
    if known is not None:
        register_rows(derived_ds, known)
    return derived_ds


def source_of(ds: Any) -> RowSource | None:
    """The registered source of ``ds``'s rows, or ``None``."""
    return _SOURCES.get(_fingerprint(ds) or "")


def describe_row(ds: Any, index: int) -> str:
    """``"FILE line L (row i)"`` when ``ds`` was loaded from a known file, else ``"row i"``."""
    known = _SOURCES.get(_fingerprint(ds) or "")
    return known.describe(index) if known is not None else f"row {index}"


def _line_error(path: str, number: int, line: str, exc: json.JSONDecodeError) -> DataError:
    snippet = line.strip()
    snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
    return DataError(
        f"{path} line {number} is not valid JSON ({exc.msg} at column {exc.colno}): {snippet!r}; "
        "fix or remove that line (each line of a JSON-lines file is one JSON object)."
    )


def _lone_surrogate(value: Any) -> str | None:
    """The first string in ``value`` (nested lists/objects too) that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((bad for v in items if (bad := _lone_surrogate(v)) is not None), None)


def _check_unicode(path: str, number: int, row: dict[str, Any]) -> None:
    for column, value in row.items():
        bad = _lone_surrogate(value)
        if bad is not None:
            raise DataError(
                f"{path} line {number}, column {column!r}: the string {bad[:40]!r} holds a lone "
                "surrogate (a \\ud800-\\udfff escape without its pair), which is not valid "
                "Unicode; fix the escape in that line or drop the row."
            )


def _scan_lines(path: str) -> tuple[array, json.JSONDecodeError | None, int, str]:
    """Line numbers of the rows; the first parse error (with its line number and text)."""
    lines = array("q")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                row = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path} line {number} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                    "re-encode the file as UTF-8 or fix that line."
                ) from None
            if not row.strip():
                continue
            try:
                value = json.loads(row)
            except json.JSONDecodeError as exc:
                return lines, exc, number, row
            if isinstance(value, dict):
                _check_unicode(path, number, value)
            else:
                raise DataError(
                    f"{path} line {number} is a JSON {type(value).__name__}, not an object; each "
                    'line must be one row such as {"depth": "a.png", "caption": "a cup"}.'
                )
            lines.append(number)
    return lines, None, 0, ""


def scan_json_file(path: str) -> RowSource:
    """Check a local JSON-lines (or JSON) file; the source of its rows.

    A ``.jsonl`` file must be JSON lines; a ``.json`` file may also be one JSON document (a list
    of objects, or an object holding one). Raises :class:`DataError` naming the file and line.
    """
    try:
        lines, error, number, row = _scan_lines(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc}); check the path and permissions.") from None
    if error is None:
        if not lines:
            raise DataError(
                f"{path} holds no rows (no non-blank line); give a file with at least one JSON "
                "object per line."
            )
        return RowSource(path, lines)
    if path.lower().endswith(".json") and number == 1:
        try:  # one JSON document (datasets reads a list of objects, or {"field": [...]})
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
            return RowSource(path)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
                "fix the file (a list of objects, or one object per line)."
            ) from None
    raise _line_error(path, number, row, error)


def is_json_file(path: str) -> bool:
    """Whether ``path`` is read by the ``json`` builder (``.json``/``.jsonl``)."""
    return os.path.splitext(path)[1].lower() in (".json", ".jsonl")
