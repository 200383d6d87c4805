"""Write evaluation samples a person can look at, in the format each adapter declares.

The core knows no modality by name: what it writes is the format the adapter declares
(:attr:`~mmvq.adapter.ModalityAdapter.sample_format`) or, when it declares none, the type of what
``adapter.postprocess`` returns. ``"png"`` (PIL images): one PNG grid per modality (one row per
example, one column per variant: original | reconstruction | translations); ``"txt"`` (strings):
one text file (``original -> reconstruction -> from_<source>`` per line); ``"wav"`` (1-D
waveforms): WAV files at the adapter config's ``sample_rate``; anything else: its ``repr`` in a
text file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmvq.outputs.files import write_wav

__all__ = ["write_samples"]


def _format_of(values: Sequence[Any]) -> str | None:
    """The sample format the first value's type calls for (``None``: written as ``repr``)."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, Image.Image):
            return "png"
        if isinstance(v, str):
            return "txt"
        if (
            isinstance(v, (np.ndarray, Tensor))
            and np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v).ndim == 1
        ):
            return "wav"
        return None
    return None


def _as_pil(value: Any) -> Image.Image | None:
    """A raw image value (PIL, path, HWC array, CHW tensor in [0, 1]) as RGB PIL; None otherwise."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        with Image.open(value) as im:
            return im.convert("RGB")
    if isinstance(value, Mapping) and value.get("bytes"):
        with Image.open(io.BytesIO(value["bytes"])) as im:
            return im.convert("RGB")
    if isinstance(value, np.ndarray) and value.ndim in (2, 3) and value.dtype == np.uint8:
        return Image.fromarray(value).convert("RGB")
    return None


def _as_waveform(value: Any) -> np.ndarray | None:
    """A raw audio value (1-D array, ``{"array"}``, ``{"bytes"}``/``{"path"}``, a path) as mono
    float32 samples; ``None`` when it cannot be read."""
    import soundfile

    try:
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            data = value
        elif isinstance(value, Mapping) and value.get("array") is not None:
            data = np.asarray(value["array"])
        elif isinstance(value, Mapping) and value.get("bytes"):
            data, _ = soundfile.read(io.BytesIO(value["bytes"]), dtype="float32")
        elif isinstance(value, Mapping) and value.get("path"):
            data, _ = soundfile.read(value["path"], dtype="float32")
        elif isinstance(value, (str, os.PathLike)):
            data, _ = soundfile.read(value, dtype="float32")
        else:
            return None
    except (RuntimeError, OSError, ValueError):
        return None
    data = np.asarray(data, dtype=np.float32)
    return data.mean(axis=-1) if data.ndim == 2 else data


def _write_grid(path: Path, columns: Mapping[str, Sequence[Any]]) -> None:
    from torchvision.transforms.functional import pil_to_tensor
    from torchvision.utils import make_grid, save_image

    cells = {name: [_as_pil(v) for v in values] for name, values in columns.items()}
    size = next(im.size for values in cells.values() for im in values if im is not None)
    rows = max(len(v) for v in cells.values())
    tiles = []
    for r in range(rows):
        for values in cells.values():
            im = values[r] if r < len(values) else None
            if im is None:
                tiles.append(torch.zeros(3, size[1], size[0]))
            else:
                tiles.append(pil_to_tensor(im.resize(size, Image.NEAREST)).float() / 255.0)
    grid = make_grid(torch.stack(tiles), nrow=len(cells), padding=2, pad_value=1.0)
    save_image(grid, str(path))


def _write_lines(path: Path, columns: Mapping[str, Sequence[Any]]) -> None:
    rows = max(len(v) for v in columns.values())
    lines = ["# " + " -> ".join(columns)]
    for r in range(rows):
        cells = []
        for values in columns.values():
            v = values[r] if r < len(values) else None
            cells.append("-" if v is None else repr(v) if not isinstance(v, str) else v)
        lines.append(" -> ".join(cells))
    path.write_text("\n".join(lines) + "\n")


def _write_waveforms(
    directory: Path, modality: str, columns: Mapping[str, Sequence[Any]], sample_rate: int | None
) -> list[Path]:
    if not sample_rate:
        raise ValueError(
            f"modality {modality!r} produces waveforms but its adapter config has no sample_rate; "
            "add a sample_rate field to the adapter's config"
        )
    written = []
    for name, values in columns.items():
        for r, v in enumerate(values):
            wave = _as_waveform(v)
            if wave is None or wave.size == 0:
                continue
            path = directory / f"{modality}_{r:02d}_{name}.wav"
            written.append(write_wav(path, wave, sample_rate))
    return written


def write_samples(
    directory: str | os.PathLike,
    samples: Mapping[str, Mapping[str, Sequence[Any]]],
    sample_rates: Mapping[str, int | None] | None = None,
    formats: Mapping[str, str | None] | None = None,
) -> list[Path]:
    """Write ``samples[modality][variant] = [value per example]`` under ``directory``.

    Variants are columns in their given order (e.g. ``original``, ``reconstruction``,
    ``from_text``); ``None`` marks a missing value (drawn black / written ``-``). The kind of file
    is ``formats[modality]`` (an adapter's ``sample_format``) or, when that is ``None``, follows
    the reconstruction's type (see the module docstring). Returns the written paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for modality, columns in samples.items():
        columns = {k: list(v) for k, v in columns.items() if any(x is not None for x in v)}
        if not columns:
            continue
        generated = [v for k, vals in columns.items() if k != "original" for v in vals]
        fmt = (formats or {}).get(modality) or _format_of(generated or next(iter(columns.values())))
        if fmt == "png":
            path = directory / f"{modality}.png"
            _write_grid(path, columns)
            written.append(path)
        elif fmt == "wav":
            written += _write_waveforms(
                directory, modality, columns, (sample_rates or {}).get(modality)
            )
        else:
            path = directory / f"{modality}.txt"
            _write_lines(path, columns)
            written.append(path)
    if written:
        legend = directory / "README.txt"
        legend.write_text(
            "Columns (left to right in PNG grids, ' -> '-separated in .txt files, file-name "
            "suffixes "
            "of WAV files):\n"
            + "".join(
                f"  {m}: {' | '.join(c for c in cols if any(x is not None for x in cols[c]))}\n"
                for m, cols in samples.items()
            )
            + "original = the input; reconstruction = decoded from the example's own codes (all "
            "modalities visible); from_<m> = decoded from modality <m>'s codes only.\n"
        )
        written.append(legend)
    return written
