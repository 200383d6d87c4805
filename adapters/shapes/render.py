"""Rendering a shapes example: its image, its shape mask and its sound.

Geometry (``R`` = resolution): positions are anchors at ``(0.25R, 0.25R)``, ``(0.75R, 0.25R)``,
``(0.25R, 0.75R)``, ``(0.75R, 0.75R)`` (x, y) and ``(0.5R, 0.5R)``; a shape of half-extent ``r``
(``0.11R`` small, ``0.22R`` large) is a circle of radius ``r``, an axis-aligned square of side
``2r``, or an upward triangle of base ``2r`` and height ``2r``, centred on the anchor. Drawing uses
PIL ``ImageDraw`` without anti-aliasing, so a rendering has exactly two colours. The sound
encodes the same attributes in pitch, timbre, duration and envelope (:func:`render_audio`).
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmvq.utils.checks import check_int
from mmvq_adapters.shapes.attributes import BACKGROUND, PALETTE, POSITIONS, SIZES, ShapeAttributes

__all__ = [
    "AUDIO_DURATION",
    "AUDIO_PITCH_HZ",
    "MIN_RESOLUTION",
    "MIN_SAMPLE_RATE",
    "audio_wav_bytes",
    "check_resolution",
    "png_bytes",
    "render_audio",
    "render_image",
    "render_mask",
]

MIN_RESOLUTION = 16


def check_resolution(resolution: int) -> None:
    """``resolution`` must be an int >= :data:`MIN_RESOLUTION`."""
    check_int(
        "resolution",
        resolution,
        minimum=MIN_RESOLUTION,
        fix="; smaller shapes vanish into a few pixels.",
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
    check_resolution(resolution)
    return Image.frombytes("RGB", (resolution, resolution), _render_cached(attrs, resolution))


def render_mask(attrs: ShapeAttributes, resolution: int = 32) -> np.ndarray:
    """Bool ``[resolution, resolution]`` mask of the shape's pixels in :func:`render_image`."""
    check_resolution(resolution)
    pixels = np.frombuffer(_render_cached(attrs, resolution), dtype=np.uint8)
    return pixels.reshape(resolution, resolution, 3).any(axis=-1)


@lru_cache(maxsize=4096)
def png_bytes(attrs: ShapeAttributes, resolution: int) -> bytes:
    buffer = io.BytesIO()
    render_image(attrs, resolution).save(buffer, format="PNG")
    return buffer.getvalue()


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
    check_int(
        "sample_rate",
        sample_rate,
        minimum=MIN_SAMPLE_RATE,
        fix=" (Hz); lower rates drop the harmonics that encode the shape.",
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
def audio_wav_bytes(attrs: ShapeAttributes, sample_rate: int, seconds: float) -> bytes:
    return _wav_bytes(render_audio(attrs, sample_rate, seconds), sample_rate)
