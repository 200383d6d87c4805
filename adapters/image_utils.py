"""Image input/output for the image adapter: what users have -> a CHW tensor, and back.

Everything here runs on the data side (DataLoader workers) or after decoding and holds no model
state.

Accepted raw images (see :func:`load_image`):

* a ``PIL.Image.Image`` of any mode (converted to RGB; alpha is dropped);
* a file path (``str`` / ``os.PathLike``) or encoded bytes, opened with PIL (EXIF orientation
  applied);
* ``{"bytes": ..., "path": ...}``: the undecoded form of a Hugging Face ``datasets`` ``Image``
  column (``bytes`` used when present, else ``path``);
* a numpy array ``[H, W]`` (grayscale) or ``[H, W, C]`` with ``C`` in 1, 3, 4; ``uint8`` 0..255
  or float 0..1;
* a torch tensor ``[C, H, W]`` (or ``[H, W]``) with ``C`` in 1, 3, 4; ``uint8`` 0..255 or float
  0..1.

The result is always an RGB ``uint8`` or ``float32`` (0..1) tensor ``[3, H, W]``.

Images larger than :data:`MAX_PIXELS` (64 megapixels) are refused, files before they are
decoded (from the size in their header): a decompression bomb, a small file that claims a huge
image, costs nothing.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.utils import make_grid, save_image

from mmvq.adapter import AdapterInputError

__all__ = ["ACCEPTED", "MAX_PIXELS", "load_image", "save_image_grid", "to_pil_images"]

ACCEPTED = (
    "a PIL image, a file path, encoded bytes, a datasets Image dict {'bytes', 'path'}, "
    "a numpy array [H, W] / [H, W, C] or a tensor [C, H, W] / [H, W] (C in 1, 3, 4; "
    "uint8 0..255 or float 0..1)"
)
_CHANNELS = (1, 3, 4)
MAX_PIXELS = 1 << 26
"""Largest image accepted, in pixels (width x height): 67 108 864, e.g. 8192 x 8192."""


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise _fail(
            f"{what} is {width}x{height} = {width * height} pixels, more than the "
            f"{MAX_PIXELS} pixels accepted (a decompression bomb, or an image far larger than any "
            "training resolution); downscale it first (e.g. PIL's Image.thumbnail)."
        )


def _fail(message: str) -> AdapterInputError:
    return AdapterInputError(f"image: {message}")


def _open(source: str | os.PathLike | bytes) -> Tensor:
    """Open an image file or encoded bytes with PIL and return RGB uint8 ``[3, H, W]``."""
    if isinstance(source, (bytes, bytearray)):
        what, fp = f"{len(source)} bytes", io.BytesIO(source)
    else:
        path = Path(os.fspath(source))
        if not path.exists():
            raise _fail(
                f"path {str(source)!r} does not exist; pass an existing image file (PNG, JPEG, "
                "...) or the image itself (PIL image, array, tensor)."
            )
        if not path.is_file():
            raise _fail(f"path {str(source)!r} is not a file; pass the path of an image file.")
        what, fp = f"file {str(source)!r}", path
    try:
        with warnings.catch_warnings():  # the size is checked here, before decoding
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(fp) as img:
                _check_size(*img.size, what)
                img.load()
                upright = PIL.ImageOps.exif_transpose(img)  # honour camera orientation tags
                return TF.pil_to_tensor(upright.convert("RGB"))
    except PIL.Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        claimed = f"{found.group(1)} pixels" if found else "a size"
        raise _fail(
            f"{what} claims {claimed}, more than the {MAX_PIXELS} pixels accepted (a "
            "decompression bomb: PIL refuses it from its header, without decoding); pass a smaller "
            "image."
        ) from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _fail(
            f"{what} is not an image PIL can read ({type(err).__name__}: {err}); pass an image "
            "file such as PNG or JPEG."
        ) from None


def _check_channels(channels: int, shape: tuple[int, ...], layout: str) -> None:
    if channels not in _CHANNELS:
        raise _fail(
            f"expected 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {channels} channels in a "
            f"{layout} of shape {shape}; pass an image with 1, 3 or 4 channels."
        )


def _from_numeric(data: Tensor, kind: str, shape: tuple[int, ...]) -> Tensor:
    """Check dtype/range of a CHW tensor from a numpy array or tensor and make it RGB."""
    if data.dtype == torch.uint8:
        pass
    elif data.dtype.is_floating_point:
        data = data.float()
        if data.numel() and not torch.isfinite(data).all():
            raise _fail(
                f"{kind} of shape {shape} holds NaN or inf values; pass finite pixel values."
            )
        lo, hi = (float(data.min()), float(data.max())) if data.numel() else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise _fail(
                f"float {kind} values must lie in [0, 1], got min {lo:.3g} and max {hi:.3g}; "
                "scale 0..255 data with x / 255 (or pass uint8), and [-1, 1] data with (x + 1) / 2."
            )
        data = data.clamp(0.0, 1.0)
    else:
        raise _fail(
            f"{kind} dtype {data.dtype} is not supported; pass uint8 (0..255) or float (0..1) "
            "pixels, e.g. x.astype(np.uint8) / x.to(torch.uint8)."
        )
    channels = data.shape[0]
    if channels == 1:
        data = data.expand(3, -1, -1)
    elif channels == 4:
        data = data[:3]  # drop alpha, like PIL's convert("RGB")
    return data.contiguous()


def _from_array(example: np.ndarray) -> Tensor:
    """A ``[H, W]`` / ``[H, W, C]`` numpy image as ``[C, H, W]``."""
    shape = tuple(example.shape)
    if example.ndim == 2:
        example = example[:, :, None]
    elif example.ndim != 3:
        raise _fail(
            f"numpy array has rank {example.ndim} (shape {shape}); pass one image as [H, W] "
            "or [H, W, C] (for a batch, pass each image separately)."
        )
    _check_size(example.shape[1], example.shape[0], f"numpy array of shape {shape}")
    channels = example.shape[-1]
    if channels not in _CHANNELS and example.shape[0] in _CHANNELS:
        raise _fail(
            f"numpy array of shape {shape} looks channels-first ({example.shape[0]} first, "
            f"{channels} last); "
            "numpy images are [H, W, C]: pass array.transpose(1, 2, 0)."
        )
    _check_channels(channels, shape, "numpy array [H, W, C]")
    if example.dtype == np.bool_ or not (
        np.issubdtype(example.dtype, np.integer) or np.issubdtype(example.dtype, np.floating)
    ):
        raise _fail(
            f"numpy array dtype {example.dtype} is not supported; pass uint8 (0..255) or "
            "float (0..1) pixels."
        )
    if not example.flags.writeable or not example.flags.c_contiguous:
        example = np.array(example, copy=True, order="C")  # torch needs writable memory
    data = torch.from_numpy(example).permute(2, 0, 1)
    return _from_numeric(data, "numpy array", shape)


def _from_tensor(example: Tensor) -> Tensor:
    """A ``[H, W]`` / ``[C, H, W]`` tensor image as ``[C, H, W]``."""
    shape = tuple(example.shape)
    data = example.detach().cpu()
    if data.dim() == 2:
        data = data.unsqueeze(0)
    elif data.dim() != 3:
        raise _fail(
            f"tensor has rank {data.dim()} (shape {shape}); pass one image as [C, H, W] or "
            "[H, W] (for a batch, pass each image separately)."
        )
    _check_size(data.shape[-1], data.shape[-2], f"tensor of shape {shape}")
    channels = data.shape[0]
    if channels not in _CHANNELS and data.shape[-1] in _CHANNELS:
        raise _fail(
            f"tensor of shape {shape} looks channels-last; tensors are [C, H, W]: pass "
            "x.permute(2, 0, 1)."
        )
    _check_channels(channels, shape, "tensor [C, H, W]")
    return _from_numeric(data, "tensor", shape)


def load_image(example: Any) -> Tensor:
    """Turn one raw image (see the module docstring) into an RGB tensor ``[3, H, W]``.

    Returns ``uint8`` (0..255) for PIL/file/byte/uint8 inputs and ``float32`` (0..1) for float
    inputs. Raises :class:`~mmvq.adapter.AdapterInputError` naming the value and the fix.
    """
    if isinstance(example, PIL.Image.Image):
        _check_size(*example.size, "PIL image")
        return TF.pil_to_tensor(example.convert("RGB"))
    if isinstance(example, (str, os.PathLike, bytes, bytearray)):
        return _open(example)
    if isinstance(example, dict):
        if example.get("bytes") is not None:
            return _open(example["bytes"])
        if example.get("path") is not None:
            return _open(example["path"])
        raise _fail(
            f"dict with keys {sorted(example)} holds no 'bytes' or 'path'; pass a datasets Image "
            "dict {'bytes': ..., 'path': ...} or the image itself."
        )
    if isinstance(example, np.ndarray):
        return _from_array(example)
    if isinstance(example, Tensor):
        return _from_tensor(example)
    raise _fail(f"unsupported type {type(example).__name__} ({example!r:.60}); pass {ACCEPTED}.")


def _as_float01(images: Tensor, value_range: tuple[float, float]) -> Tensor:
    lo, hi = value_range
    return ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0.0, 1.0)


def to_pil_images(
    images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)
) -> list[PIL.Image.Image]:
    """``[B, 3, H, W]`` (or ``[B, 1, H, W]``) in ``value_range`` -> list of RGB PIL images."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            "to_pil_images expects a batch [B, 3, H, W] or [B, 1, H, W], got "
            f"{tuple(images.shape)}."
        )
    pixels = (_as_float01(images, value_range) * 255.0).round().to(torch.uint8)
    return [TF.to_pil_image(p).convert("RGB") for p in pixels]


def _cell(item: Any, value_range: tuple[float, float], where: str) -> Tensor:
    if isinstance(item, PIL.Image.Image):
        return TF.to_dtype(TF.pil_to_tensor(item.convert("RGB")), torch.float32, scale=True)
    if isinstance(item, Tensor) and item.dim() == 3 and item.shape[0] in (1, 3):
        return _as_float01(item, value_range).expand(3, -1, -1)
    shape = tuple(item.shape) if isinstance(item, Tensor) else None
    raise TypeError(
        f"save_image_grid: {where} is {type(item).__name__}{'' if shape is None else f' {shape}'}; "
        "each cell must be a PIL image or a tensor [3, H, W] / [1, H, W]."
    )


def save_image_grid(
    rows: Sequence[Sequence[Any] | Tensor],
    path: str | os.PathLike,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
    pad_value: float = 1.0,
) -> Path:
    """Write a comparison grid, one row per entry of ``rows``: originals | recons | translations.

    Args:
        rows: each row is a list of cells (PIL images or ``[3|1, H, W]`` tensors) or a batch
            tensor ``[B, 3|1, H, W]``. Shorter rows are padded with blank cells. Cells of a
            different size than the first one are resized to it.
        path: output file; the format follows the suffix (``.png`` recommended). Parent folders
            are created.
        value_range: range of tensor cells (the adapter's reconstructions are in ``[-1, 1]``).
            PIL cells are always 0..255.
        padding, pad_value: border between cells (in pixels) and its value in ``[0, 1]``.

    Returns:
        The path written.
    """
    if not rows:
        raise ValueError("save_image_grid got no rows; pass e.g. [originals, reconstructions].")
    table: list[list[Tensor]] = []
    for r, row in enumerate(rows):
        items = list(row.unbind(0)) if isinstance(row, Tensor) and row.dim() == 4 else list(row)
        table.append(
            [_cell(item, value_range, f"row {r} cell {c}") for c, item in enumerate(items)]
        )
    width = max(len(row) for row in table)
    if width == 0:
        raise ValueError("save_image_grid got only empty rows; each row needs at least one image.")
    size = next(row[0] for row in table if row).shape[-2:]
    cells: list[Tensor] = []
    for row in table:
        for cell in row:
            if cell.shape[-2:] != size:
                cell = TF.resize(cell, list(size), antialias=True).clamp(0.0, 1.0)
            cells.append(cell)
        cells.extend(torch.full((3, *size), pad_value) for _ in range(width - len(row)))
    grid = make_grid(cells, nrow=width, padding=padding, pad_value=pad_value)
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    return out
