"""The JSON file of codes that ``mmvq encode`` writes and ``mmvq decode`` reads.

::

    {
      "format": "mmvq-codes",
      "version": 2,
      "model": "org/name",              # informative
      "num_codes": 1024,                # the detail codebook's size
      "codes": {"text": [[12, 7, -1, ...]], "image": [[...]]},    # detail: [batch][tokens]
      "num_concept_codes": 256,         # with concept codes: the concept codebook's size
      "concept_codes": {"text": [[3, 41, 9, 120]], "image": [[...]]}   # [batch][concepts]
    }

``-1`` marks padding (detail) or an absent row. Either level may be missing (``mmvq encode
--level concept`` writes concept codes only, with ``"codes": {}``); version 1 files (detail codes
only) are still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmvq.concept.codes import MultimodalCodes
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
CODES_VERSION = 2
_READABLE = (1, 2)


class CodesFileError(ValueError):
    """A codes file is missing, not JSON, or does not hold codes in the documented layout."""


def codes_to_dict(
    codes: MultimodalCodes | Mapping[str, Tensor],
    *,
    num_codes: int,
    num_concept_codes: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable form of two-level codes (or ``{modality: detail codes}``)."""
    codes = MultimodalCodes.from_mapping(codes)
    data: dict[str, Any] = {
        "format": CODES_FORMAT,
        "version": CODES_VERSION,
        "model": model,
        "num_codes": int(num_codes),
        "codes": {m: c.detach().cpu().long().tolist() for m, c in codes.detail.items()},
    }
    if codes.concept:
        data["num_concept_codes"] = None if num_concept_codes is None else int(num_concept_codes)
        data["concept_codes"] = {
            m: c.detach().cpu().long().tolist() for m, c in codes.concept.items()
        }
    return data


def _rows(raw: Any, key: str, where: str) -> dict[str, Tensor]:
    if not isinstance(raw, Mapping):
        raise CodesFileError(f"{where}: {key!r} must map modalities to [[code, ...], ...]")
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
                f"{where}: {key}[{m!r}] must be a non-empty list of equally long, non-empty "
                f"lists of integers ([batch][codes], -1 for padding), got {json.dumps(rows)[:80]}"
            )
        out[m] = torch.tensor(rows, dtype=torch.long)
    return out


def codes_from_dict(data: Any, where: str = "codes") -> tuple[MultimodalCodes, dict[str, int]]:
    """``(codes, sizes)`` from :func:`codes_to_dict` output; ``sizes`` maps each level present
    to the codebook size the file records (``"detail"``, ``"concept"``).

    Raises:
        CodesFileError: wrong layout (the message names the field and the expected form).
    """
    if not isinstance(data, Mapping) or data.get("format") != CODES_FORMAT:
        raise CodesFileError(
            f'{where} is not an mmvq codes file (expected a JSON object with "format": '
            f'"{CODES_FORMAT}", as written by `mmvq encode --out`)'
        )
    if data.get("version") not in _READABLE:
        raise CodesFileError(
            f"{where} has version {data.get('version')!r}; this mmvq reads versions {_READABLE}"
        )
    codes = MultimodalCodes(
        concept=_rows(data.get("concept_codes", {}), "concept_codes", where),
        detail=_rows(data.get("codes", {}), "codes", where),
    )
    if not codes.modalities:
        raise CodesFileError(
            f"{where}: 'codes' (or 'concept_codes') must map at least one modality to "
            "[[code, ...], ...]"
        )
    sizes = {}
    for level, key in (("detail", "num_codes"), ("concept", "num_concept_codes")):
        if is_int(data.get(key)):
            sizes[level] = int(data[key])
    return codes, sizes


def read_codes(path: str | os.PathLike) -> tuple[MultimodalCodes, dict[str, int]]:
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
