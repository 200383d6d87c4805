"""Write ``adapter.postprocess`` outputs to files, chosen by the output's type (not the modality).

=====================================================  =========================================
output                                                 file
=====================================================  =========================================
``PIL.Image.Image``                                    ``.png``
``str``                                                ``.txt`` (UTF-8)
``{"array": 1-D, "sampling_rate": int}`` (datasets)    ``.wav``
``(1-D array, sample_rate)``                           ``.wav``
1-D float array/tensor, with ``sample_rate`` given     ``.wav`` (e.g. an adapter config's rate)
other array/tensor                                     ``.npy``
JSON-serialisable value (list, number, dict)           ``.json``
=====================================================  =========================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvq.utils.checks import is_int

__all__ = ["sample_rate_of", "write_output", "write_outputs", "write_wav"]


def sample_rate_of(adapter: Any) -> int | None:
    """The ``sample_rate`` an adapter's config declares (waveform outputs), else ``None``."""
    rate = getattr(getattr(adapter, "config", None), "sample_rate", None)
    return rate if is_int(rate) and rate > 0 else None


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def write_wav(path: str | os.PathLike, wave: Any, rate: int) -> Path:
    """Write a mono waveform as 16-bit PCM WAV at ``rate`` Hz (values clipped to [-1, 1])."""
    import soundfile

    path = Path(path)
    data = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    soundfile.write(str(path), data, int(rate), subtype="PCM_16")
    return path


def write_output(value: Any, stem: str | os.PathLike, *, sample_rate: int | None = None) -> Path:
    """Write one postprocessed output to ``stem`` + the extension its type calls for.

    Raises:
        TypeError: the output's type has no file form (the message names it).
    """
    from PIL import Image

    stem = Path(stem)
    if isinstance(value, Image.Image):
        path = stem.with_suffix(".png")
        value.save(path)
        return path
    if isinstance(value, str):
        path = stem.with_suffix(".txt")
        path.write_text(value, encoding="utf-8")
        return path
    if isinstance(value, dict) and "array" in value and isinstance(value.get("sampling_rate"), int):
        wave = _as_array(value["array"])
        wave = np.asarray(value["array"]) if wave is None else wave
        return write_wav(stem.with_suffix(".wav"), wave, value["sampling_rate"])
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and _as_array(value[0]) is not None
        and isinstance(value[1], int)
    ):
        return write_wav(stem.with_suffix(".wav"), _as_array(value[0]), value[1])
    array = _as_array(value)
    if array is not None:
        if array.ndim == 1 and np.issubdtype(array.dtype, np.floating) and sample_rate:
            return write_wav(stem.with_suffix(".wav"), array, sample_rate)
        path = stem.with_suffix(".npy")
        np.save(path, array)
        return path
    try:
        encoded = json.dumps(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"cannot write an output of type {type(value).__name__}: postprocess should return PIL "
            "images, strings, waveforms (arrays) or JSON-serialisable values"
        ) from None
    path = stem.with_suffix(".json")
    path.write_text(encoded + "\n", encoding="utf-8")
    return path


def write_outputs(
    values: Sequence[Any],
    directory: str | os.PathLike,
    prefix: str,
    *,
    sample_rate: int | None = None,
    start: int = 0,
    total: int | None = None,
) -> list[Path]:
    """Write ``values`` as ``directory/<prefix>_<i>.<ext>`` (directory created); return paths.

    ``start`` numbers the first value (for outputs written in batches) and ``total`` (default:
    ``start + len(values)``) sets the width of the numbers."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    total = start + len(values) if total is None else total
    width = max(3, len(str(total - 1)))
    return [
        write_output(v, directory / f"{prefix}_{i:0{width}d}", sample_rate=sample_rate)
        for i, v in enumerate(values, start=start)
    ]
