"""The built-in generated dataset ("shapes"): one coloured shape on a black background.

Every example is fully described by four attributes (:class:`ShapeAttributes`):

========  =====================================================================
colour    red, green, blue, yellow, purple, cyan, orange, white (:data:`PALETTE`)
shape     circle, square, triangle
size      small, large
position  top left, top right, bottom left, bottom right, center
========  =====================================================================

From the attributes come, deterministically, an image (:func:`render_image`), a caption that
fully determines the image (:func:`caption`, inverted by :func:`parse_caption`) and a sound
(:func:`render_audio`). :func:`make_shapes_dataset` builds a ``datasets.DatasetDict`` of them,
and :func:`text_to_image_score` scores generated images against the true rendering of their
captions' attributes (the metric of the text -> image translation demo).

Geometry (``R`` = resolution): positions are anchors at ``(0.25R, 0.25R)``, ``(0.75R, 0.25R)``,
``(0.25R, 0.75R)``, ``(0.75R, 0.75R)`` (x, y) and ``(0.5R, 0.5R)``; a shape of half-extent ``r``
(``0.11R`` small, ``0.22R`` large) is a circle of radius ``r``, an axis-aligned square of side
``2r``, or an upward triangle of base ``2r`` and height ``2r``, centred on the anchor. Drawing uses
PIL ``ImageDraw`` without anti-aliasing, so a rendering has exactly two colours.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

if TYPE_CHECKING:  # imported lazily at run time: ``import mmvq.synthetic`` stays cheap
    import datasets

__all__ = [
    "BACKGROUND",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "ShapeAttributes",
    "all_attributes",
    "caption",
    "chance_accuracy",
    "make_shapes_dataset",
    "parse_caption",
    "predict_attributes",
    "render_audio",
    "render_image",
    "render_mask",
    "sample_attributes",
    "text_to_image_score",
]

#: Colour name -> RGB. Pairwise Euclidean distances are >= 127 (orange/yellow, orange/red).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (160, 32, 240),
    "cyan": (0, 255, 255),
    "orange": (255, 128, 0),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Size name -> half-extent as a fraction of the resolution.
SIZES: dict[str, float] = {"small": 0.11, "large": 0.22}
#: Position name -> anchor (x, y) as fractions of the resolution.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
MIN_RESOLUTION = 16

#: A pixel is foreground when some channel differs from the background by more than this
#: fraction of the full range (every palette colour has a channel at >= 240/255).
FOREGROUND_THRESHOLD = 0.35
#: Foreground area (fraction of the image) separating "small" from "large": the geometric mean
#: of the largest small shape (square, 4 * 0.11^2 = 0.048) and the smallest large shape
#: (triangle, 2 * 0.22^2 = 0.097).
SIZE_AREA_THRESHOLD = math.sqrt(4 * SIZES["small"] ** 2 * 2 * SIZES["large"] ** 2)
#: PSNR of a perfect reconstruction (MSE 0) is reported as this many dB instead of infinity.
MAX_PSNR_DB = 100.0

_ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(PALETTE),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}


@dataclass(frozen=True)
class ShapeAttributes:
    """The four attributes that fully determine one example (values are validated)."""

    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for name, allowed in _ATTRIBUTE_VALUES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"ShapeAttributes.{name} must be one of {list(allowed)}, got {value!r}."
                )

    def to_dict(self) -> dict[str, str]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "size": self.size,
            "position": self.position,
        }


def all_attributes() -> list[ShapeAttributes]:
    """Every attribute combination (8 colours x 3 shapes x 2 sizes x 5 positions = 240)."""
    return [
        ShapeAttributes(c, s, z, p)
        for c in PALETTE
        for s in SHAPES
        for z in SIZES
        for p in POSITIONS
    ]


def sample_attributes(rng: np.random.Generator) -> ShapeAttributes:
    """Draw each attribute uniformly and independently from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"sample_attributes expects a numpy Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}."
        )
    picks = {
        name: values[int(rng.integers(len(values)))] for name, values in _ATTRIBUTE_VALUES.items()
    }
    return ShapeAttributes(**picks)


# --------------------------------------------------------------------------------- images
def _check_resolution(resolution: int) -> None:
    if (
        not isinstance(resolution, int)
        or isinstance(resolution, bool)
        or resolution < MIN_RESOLUTION
    ):
        raise ValueError(
            f"resolution must be an int >= {MIN_RESOLUTION} (smaller shapes vanish into a few "
            f"pixels), got {resolution!r}."
        )


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return None


def _draw(draw: ImageDraw.ImageDraw, attrs: ShapeAttributes, resolution: int, fill: Any) -> None:
    ax, ay = POSITIONS[attrs.position]
    cx, cy = ax * resolution, ay * resolution
    r = SIZES[attrs.size] * resolution
    box = [cx - r, cy - r, cx + r - 1, cy + r - 1]
    if attrs.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif attrs.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(_shape_polygon(attrs.shape, cx, cy, r), fill=fill)


@lru_cache(maxsize=4096)
def _render_cached(attrs: ShapeAttributes, resolution: int) -> bytes:
    image = Image.new("RGB", (resolution, resolution), BACKGROUND)
    _draw(ImageDraw.Draw(image), attrs, resolution, PALETTE[attrs.colour])
    return image.tobytes()


def render_image(attrs: ShapeAttributes, resolution: int = 32) -> Image.Image:
    """The RGB image of ``attrs`` (``resolution`` x ``resolution``), without anti-aliasing."""
    _check_resolution(resolution)
    return Image.frombytes("RGB", (resolution, resolution), _render_cached(attrs, resolution))


def render_mask(attrs: ShapeAttributes, resolution: int = 32) -> np.ndarray:
    """Bool ``[resolution, resolution]`` mask of the shape's pixels in :func:`render_image`."""
    _check_resolution(resolution)
    pixels = np.frombuffer(_render_cached(attrs, resolution), dtype=np.uint8)
    return pixels.reshape(resolution, resolution, 3).any(axis=-1)


@lru_cache(maxsize=4096)
def _png_bytes(attrs: ShapeAttributes, resolution: int) -> bytes:
    buffer = io.BytesIO()
    render_image(attrs, resolution).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------- captions
def caption(attrs: ShapeAttributes) -> str:
    """The caption, e.g. ``"a small red circle at the top left"`` / ``"... in the center"``."""
    where = "in the center" if attrs.position == "center" else f"at the {attrs.position}"
    return f"a {attrs.size} {attrs.colour} {attrs.shape} {where}"


_CAPTION_RE = re.compile(
    r"^\s*an?\s+(?P<size>{sizes})\s+(?P<colour>{colours})\s+(?P<shape>{shapes})\s+"
    r"(?:at|in)\s+the\s+(?P<position>{positions})\s*\.?\s*$".format(
        sizes="|".join(SIZES),
        colours="|".join(PALETTE),
        shapes="|".join(SHAPES),
        positions="|".join(p.replace(" ", r"\s+") for p in POSITIONS),
    ),
    re.IGNORECASE,
)


def parse_caption(text: str) -> ShapeAttributes | None:
    """Invert :func:`caption` (case and extra spaces tolerated); ``None`` if it does not parse."""
    if not isinstance(text, str):
        return None
    match = _CAPTION_RE.match(text)
    if match is None:
        return None
    values = {k: " ".join(v.lower().split()) for k, v in match.groupdict().items()}
    return ShapeAttributes(**values)


# ---------------------------------------------------------------------------------- audio
#: Colour -> fundamental frequency (Hz): 220 Hz upward in steps of four semitones (to 1109 Hz).
AUDIO_PITCH_HZ: dict[str, float] = {
    name: 220.0 * 2 ** (4 * i / 12) for i, name in enumerate(PALETTE)
}
#: Lowest sample rate of :func:`render_audio`: Nyquist must exceed 3 x 1109 Hz.
MIN_SAMPLE_RATE = 8000
#: Size -> fraction of the clip during which the tone sounds.
AUDIO_DURATION: dict[str, float] = {"small": 0.4, "large": 0.8}
#: Horizontal part of the position -> amplitude slope; vertical part -> tremolo rate (Hz).
_SLOPE = {"left": "falling", "right": "rising", "center": "flat"}
_TREMOLO_HZ = {"top": 8.0, "bottom": 3.0, "center": 0.0}


def _position_parts(position: str) -> tuple[str, str]:
    """(vertical, horizontal) of a position name; "center" is ("center", "center")."""
    if position == "center":
        return "center", "center"
    vertical, horizontal = position.split()
    return vertical, horizontal


def render_audio(
    attrs: ShapeAttributes, sample_rate: int = 8000, seconds: float = 1.0
) -> np.ndarray:
    """A deterministic mono float32 waveform in ``[-1, 1]`` encoding ``attrs``.

    * colour -> pitch: fundamental :data:`AUDIO_PITCH_HZ` (220 Hz upward in steps of 4 semitones);
    * shape -> timbre: circle = pure sine; square = band-limited square wave (odd harmonics,
      amplitude 1/k); triangle = band-limited triangle wave (odd harmonics, 1/k^2, alternating);
    * size -> duration: the tone sounds for 40% (small) or 80% (large) of the clip, from 5% in;
    * position -> envelope: left = falling, right = rising, centre column = flat amplitude; top =
      8 Hz tremolo, bottom = 3 Hz tremolo, middle row = none ("center" is flat, no tremolo).

    Harmonics at or above Nyquist are left out; ``sample_rate`` must be at least
    :data:`MIN_SAMPLE_RATE` so that the third harmonic of the highest pitch (3.3 kHz), which
    tells the shapes apart, is kept.
    """
    if (
        not isinstance(sample_rate, int)
        or isinstance(sample_rate, bool)
        or sample_rate < MIN_SAMPLE_RATE
    ):
        raise ValueError(
            f"sample_rate must be an int >= {MIN_SAMPLE_RATE} (Hz; lower rates drop the harmonics "
            f"that encode the shape), got {sample_rate!r}."
        )
    if not isinstance(seconds, (int, float)) or not 0.1 <= float(seconds) <= 60.0:
        raise ValueError(f"seconds must be a number in [0.1, 60], got {seconds!r}.")
    n = round(sample_rate * float(seconds))
    t = np.arange(n, dtype=np.float64) / sample_rate
    f0 = AUDIO_PITCH_HZ[attrs.colour]
    nyquist = sample_rate / 2
    if attrs.shape == "circle":
        harmonics = [(1, 1.0)]
    elif attrs.shape == "square":
        harmonics = [(k, 1.0 / k) for k in range(1, 64, 2) if k * f0 < nyquist]
    else:
        harmonics = [
            (k, (-1) ** ((k - 1) // 2) / k**2) for k in range(1, 64, 2) if k * f0 < nyquist
        ]
    wave = np.zeros(n, dtype=np.float64)
    for k, amp in harmonics:
        wave += amp * np.sin(2 * np.pi * k * f0 * t)
    wave /= np.max(np.abs(wave)) + 1e-12

    start = round(0.05 * n)
    stop = start + round(AUDIO_DURATION[attrs.size] * n)
    local = np.linspace(0.0, 1.0, stop - start)
    vertical, horizontal = _position_parts(attrs.position)
    slope = _SLOPE[horizontal]
    if slope == "falling":
        envelope = 1.0 - 0.8 * local
    elif slope == "rising":
        envelope = 0.2 + 0.8 * local
    else:
        envelope = np.full_like(local, 0.6)
    rate = _TREMOLO_HZ[vertical]
    if rate > 0:
        envelope = envelope * (0.6 + 0.4 * np.cos(2 * np.pi * rate * (t[start:stop] - t[start])))
    fade = max(1, int(0.005 * sample_rate))  # 5 ms ramps: no clicks
    ramp = np.ones(stop - start)
    ramp[:fade] = np.linspace(0.0, 1.0, fade)
    ramp[-fade:] = np.linspace(1.0, 0.0, fade)
    out = np.zeros(n, dtype=np.float64)
    out[start:stop] = 0.9 * wave[start:stop] * envelope * ramp
    return out.astype(np.float32)


def _wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, waveform, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@lru_cache(maxsize=1024)
def _audio_wav_cached(attrs: ShapeAttributes, sample_rate: int, seconds: float) -> bytes:
    return _wav_bytes(render_audio(attrs, sample_rate, seconds), sample_rate)


# -------------------------------------------------------------------------------- dataset
def _check_count(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def make_shapes_dataset(
    num_train: int = 2048,
    num_eval: int = 256,
    seed: int = 0,
    resolution: int = 32,
    with_audio: bool = False,
    sample_rate: int = 8000,
    audio_seconds: float = 1.0,
) -> datasets.DatasetDict:
    """Build the shapes dataset: a ``datasets.DatasetDict`` with splits "train" and "validation".

    Columns: ``image`` (``datasets.Image``), ``text`` (:func:`caption`), ``colour``, ``shape``,
    ``size``, ``position`` (strings) and, when ``with_audio``, ``audio``: ``datasets.Audio(
    decode=False)`` values ``{"path": None, "bytes": <16-bit PCM WAV written with soundfile>}``
    (readable without torchcodec). The train and validation attributes come from two independent
    child streams of ``np.random.SeedSequence(seed)``, so the same seed always gives the same
    data and the splits are not copies of each other. (The caption determines the image, so with
    only 240 combinations most validation examples also occur in training: validation measures
    fit, not generalisation to unseen combinations.)
    """
    import datasets

    _check_count("num_train", num_train, 1)
    _check_count("num_eval", num_eval, 0)
    _check_count("seed", seed, 0)
    _check_resolution(resolution)
    train_ss, eval_ss = np.random.SeedSequence(seed).spawn(2)

    features = {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        "colour": datasets.Value("string"),
        "shape": datasets.Value("string"),
        "size": datasets.Value("string"),
        "position": datasets.Value("string"),
    }
    if with_audio:
        features["audio"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    splits = {}
    for split, seed_seq, count in (
        ("train", train_ss, num_train),
        ("validation", eval_ss, num_eval),
    ):
        rng = np.random.default_rng(seed_seq)
        attrs = [sample_attributes(rng) for _ in range(count)]
        columns: dict[str, list[Any]] = {
            "image": [{"bytes": _png_bytes(a, resolution), "path": None} for a in attrs],
            "text": [caption(a) for a in attrs],
            "colour": [a.colour for a in attrs],
            "shape": [a.shape for a in attrs],
            "size": [a.size for a in attrs],
            "position": [a.position for a in attrs],
        }
        if with_audio:
            columns["audio"] = [
                {"bytes": _audio_wav_cached(a, sample_rate, float(audio_seconds)), "path": None}
                for a in attrs
            ]
        ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        if with_audio:
            # Cast at the Arrow level: datasets>=4 needs torchcodec to *encode* Audio values.
            ds = ds.cast_column("audio", datasets.Audio(sampling_rate=sample_rate, decode=False))
        splits[split] = ds
    return datasets.DatasetDict(splits)


# -------------------------------------------------------------------------------- scoring
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
    parts = {f"{name}_accuracy": 1.0 / len(values) for name, values in _ATTRIBUTE_VALUES.items()}
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

    correct = {name: [] for name in _ATTRIBUTE_VALUES}
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
        for name in _ATTRIBUTE_VALUES:
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
