"""Scoring images against the shapes they should show: :func:`predict_attributes` reads the
four attributes back from pixels, :func:`text_to_image_score` scores images generated from
captions against the true renderings of those captions (the text -> image metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmvq_adapters.shapes.attributes import (
    ATTRIBUTE_VALUES,
    BACKGROUND,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeAttributes,
)
from mmvq_adapters.shapes.render import MIN_RESOLUTION, render_image, render_mask

__all__ = [
    "FOREGROUND_THRESHOLD",
    "MAX_PSNR_DB",
    "SIZE_AREA_THRESHOLD",
    "chance_accuracy",
    "predict_attributes",
    "text_to_image_score",
]

#: A pixel is foreground when some channel differs from the background by more than this
#: fraction of the full range (every palette colour has a channel at >= 240/255).
FOREGROUND_THRESHOLD = 0.35
#: Foreground area (fraction of the image) separating "small" from "large": the geometric mean
#: of the largest small shape (square, 4 * 0.11^2 = 0.048) and the smallest large shape
#: (triangle, 2 * 0.22^2 = 0.097).
SIZE_AREA_THRESHOLD = math.sqrt(4 * SIZES["small"] ** 2 * 2 * SIZES["large"] ** 2)
#: PSNR of a perfect reconstruction (MSE 0) is reported as this many dB instead of infinity.
MAX_PSNR_DB = 100.0


def _to_float_array(image: Any, index: int) -> np.ndarray:
    """An image as float ``[H, W, 3]`` in ``[0, 1]``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, Tensor):
        x = image.detach().cpu()
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(
                f"images[{index}]: a tensor image must be [3, H, W] (RGB, channels first), got "
                f"shape {tuple(x.shape)}."
            )
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        else:
            x = x.float()
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(
                    f"images[{index}]: float tensor values must lie in [0, 1], got range "
                    f"[{lo:.3f}, {hi:.3f}]; map [-1, 1] outputs with (x + 1) / 2 and clamp."
                )
            x = x.clamp(0, 1)
        return x.permute(1, 2, 0).numpy()
    raise TypeError(
        f"images[{index}] must be a PIL image or a [3, H, W] tensor, got {type(image).__name__}."
    )


def _foreground(pixels: np.ndarray) -> np.ndarray:
    background = np.asarray(BACKGROUND, dtype=np.float32) / 255.0
    return np.abs(pixels - background).max(axis=-1) > FOREGROUND_THRESHOLD


def _nearest(point: np.ndarray, table: dict[str, Sequence[float]]) -> str:
    names = list(table)
    anchors = np.asarray([table[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((anchors - point) ** 2).sum(axis=1)))]


def predict_attributes(image: Image.Image | Tensor) -> ShapeAttributes | None:
    """Recover the attributes from an image; ``None`` when it has no foreground pixel.

    Foreground = pixels where some channel differs from the black background by more than
    :data:`FOREGROUND_THRESHOLD`. colour = palette colour nearest (Euclidean, RGB) to the mean
    foreground colour; position = anchor nearest to the foreground centroid; size = "large" when
    the foreground covers more than :data:`SIZE_AREA_THRESHOLD` of the image; shape = the shape
    whose rendering at the predicted position and size has the highest IoU with the foreground.
    """
    pixels = _to_float_array(image, 0)
    return _predict(pixels)


def _predict(pixels: np.ndarray) -> ShapeAttributes | None:
    h, w, _ = pixels.shape
    if h != w:
        raise ValueError(f"images must be square (the shapes dataset renders R x R), got {h}x{w}.")
    fg = _foreground(pixels)
    if not fg.any():
        return None
    colour = _nearest(pixels[fg].mean(axis=0) * 255.0, PALETTE)
    ys, xs = np.nonzero(fg)
    centroid = np.array([(xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h])
    position = _nearest(centroid, POSITIONS)
    size = "large" if fg.mean() > SIZE_AREA_THRESHOLD else "small"
    ious = []
    for shape in SHAPES:
        template = render_mask(ShapeAttributes(colour, shape, size, position), h)
        ious.append((template & fg).sum() / max(1, (template | fg).sum()))
    return ShapeAttributes(colour, SHAPES[int(np.argmax(ious))], size, position)


def chance_accuracy() -> dict[str, float]:
    """Expected accuracy of uniform guessing per attribute and their mean (the score's floor)."""
    parts = {f"{name}_accuracy": 1.0 / len(values) for name, values in ATTRIBUTE_VALUES.items()}
    parts["text_to_image_score"] = float(np.mean(list(parts.values())))
    return parts


def text_to_image_score(
    images: Sequence[Image.Image | Tensor] | Tensor, attrs: Sequence[ShapeAttributes]
) -> dict[str, float]:
    """Score generated images against the true rendering of their captions' attributes.

    For each image (PIL, or a ``[3, H, W]`` tensor in ``[0, 1]`` / uint8; a ``[B, 3, H, W]``
    tensor is a batch) and its true :class:`ShapeAttributes`:

    (a) attribute recovery (:func:`predict_attributes`): colour, shape, size and position are
        predicted from the image alone and compared with the truth; an image without foreground
        gets all four wrong.
    (b) fidelity against the true rendering at the image's resolution: PSNR (dB, data range 1,
        torchmetrics; an exact match counts as :data:`MAX_PSNR_DB`) and the IoU of the
        foreground mask with the true shape mask.

    Returns ``text_to_image_score`` (mean of the four attribute accuracies), ``colour_accuracy``,
    ``shape_accuracy``, ``size_accuracy``, ``position_accuracy``, ``psnr`` and ``mask_iou``
    (all means over the images). Uniform guessing scores :func:`chance_accuracy` (~0.29).
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(
                "images as one tensor must be a batch [B, 3, H, W], got shape "
                f"{tuple(images.shape)}."
            )
        images = list(images)
    images = list(images)
    attrs = list(attrs)
    if len(images) != len(attrs):
        raise ValueError(
            f"text_to_image_score got {len(images)} images but {len(attrs)} attribute sets; pass "
            "one ShapeAttributes per image (parse_caption(text) gives them from captions)."
        )
    if not images:
        raise ValueError("text_to_image_score needs at least one image.")
    for i, a in enumerate(attrs):
        if not isinstance(a, ShapeAttributes):
            raise TypeError(
                f"attrs[{i}] must be a ShapeAttributes, got {type(a).__name__}; use "
                "parse_caption(caption) to get one from a caption."
            )

    correct = {name: [] for name in ATTRIBUTE_VALUES}
    psnrs: list[float] = []
    ious: list[float] = []
    for i, (image, truth) in enumerate(zip(images, attrs)):
        pixels = _to_float_array(image, i)
        h, w, _ = pixels.shape
        if h != w or h < MIN_RESOLUTION:
            raise ValueError(
                f"images[{i}] must be square and at least {MIN_RESOLUTION} pixels wide, got "
                f"{h}x{w}."
            )
        predicted = _predict(pixels)
        for name in ATTRIBUTE_VALUES:
            correct[name].append(
                float(predicted is not None and getattr(predicted, name) == getattr(truth, name))
            )
        target = np.asarray(render_image(truth, h), dtype=np.float32) / 255.0
        psnr = peak_signal_noise_ratio(
            torch.from_numpy(pixels)[None], torch.from_numpy(target)[None], data_range=1.0
        )
        psnrs.append(min(float(psnr), MAX_PSNR_DB))
        fg, true_mask = _foreground(pixels), render_mask(truth, h)
        ious.append(float((fg & true_mask).sum() / max(1, (fg | true_mask).sum())))

    result = {f"{name}_accuracy": float(np.mean(v)) for name, v in correct.items()}
    result = {
        "text_to_image_score": float(np.mean(list(result.values()))),
        **result,
        "psnr": float(np.mean(psnrs)),
        "mask_iou": float(np.mean(ious)),
    }
    return result
