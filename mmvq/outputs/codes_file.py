"""The JSON file of codes that ``mmvq encode`` writes and ``mmvq decode`` reads.

::

    {
      "format": "mmvq-codes",
      "version": 1,
      "model": "org/name",            # informative
      "num_codes": 1024,              # the codebook size the codes index
      "codes": {"text": [[12, 7, -1, ...]], "image": [[...]]}   # [batch][tokens], -1 = padding
    }
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmvq.utils.checks import is_int

__all__ = [
    "CODES_FORMAT",
    "CODES_VERSION",
    "CodesFileError",
    "codes_from_dict",
    "codes_to_dict",
    "read_codes",
]

CODES_FORMAT = "mmvq-codes"
CODES_VERSION = 1


class CodesFileError(ValueError):
    """A codes file is missing, not JSON, or does not hold codes in the documented layout."""


def codes_to_dict(
    codes: Mapping[str, Tensor], *, num_codes: int, model: str | None = None
) -> dict[str, Any]:
    """The JSON-serialisable form of ``{modality: long [B, N]}``."""
    return {
        "format": CODES_FORMAT,
        "version": CODES_VERSION,
        "model": model,
        "num_codes": int(num_codes),
        "codes": {m: c.detach().cpu().long().tolist() for m, c in codes.items()},
    }


def codes_from_dict(data: Any, where: str = "codes") -> tuple[dict[str, Tensor], int | None]:
    """``({modality: long [B, N]}, num_codes)`` from :func:`codes_to_dict` output.

    Raises:
        CodesFileError: wrong layout (the message names the field and the expected form).
    """
    if not isinstance(data, Mapping) or data.get("format") != CODES_FORMAT:
        raise CodesFileError(
            f'{where} is not an mmvq codes file (expected a JSON object with "format": '
            f'"{CODES_FORMAT}", as written by `mmvq encode --out`)'
        )
    if data.get("version") != CODES_VERSION:
        raise CodesFileError(
            f"{where} has version {data.get('version')!r}; this mmvq reads version {CODES_VERSION}"
        )
    raw = data.get("codes")
    if not isinstance(raw, Mapping) or not raw:
        raise CodesFileError(
            f"{where}: 'codes' must map at least one modality to [[code, ...], ...]"
        )
    out: dict[str, Tensor] = {}
    for m, rows in raw.items():
        ok = (
            isinstance(rows, list)
            and rows
            and all(isinstance(r, list) and r for r in rows)
            and len({len(r) for r in rows}) == 1
            and all(is_int(v) for r in rows for v in r)
        )
        if not ok:
            raise CodesFileError(
                f"{where}: codes[{m!r}] must be a non-empty list of equally long, non-empty lists "
                "of "
                f"integers ([batch][tokens], -1 for padding), got {json.dumps(rows)[:80]}"
            )
        out[m] = torch.tensor(rows, dtype=torch.long)
    num_codes = data.get("num_codes")
    return out, num_codes if isinstance(num_codes, int) else None


def read_codes(path: str | os.PathLike) -> tuple[dict[str, Tensor], int | None]:
    """Read a codes file written by ``mmvq encode``."""
    path = Path(path)
    if not path.is_file():
        raise CodesFileError(
            f"codes file {str(path)!r} does not exist; write one with `mmvq encode MODEL ... "
            "--out FILE`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodesFileError(f"codes file {str(path)!r} is not valid JSON: {exc}") from None
    return codes_from_dict(data, f"codes file {str(path)!r}")
