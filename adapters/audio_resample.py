"""Band-limited resampling with bounded time and memory at any pair of rates.

:func:`torchaudio.functional.resample` builds one filter phase per output sample of the
rates' reduced ratio, each as long as the reduced input period: for rates that share no factor
(44101 Hz -> 8 kHz: 8000 phases of ~44 000 taps) the kernel alone takes gigabytes and the
convolution most of a minute. This resampler computes the same windowed-sinc interpolation (a
Hann-windowed sinc with ``LOWPASS_FILTER_WIDTH`` zero crossings and cut-off
``ROLLOFF * min(rates) / 2``: torchaudio's ``sinc_interp_hann`` defaults) at each output sample's
exact position (``j * orig / new`` input samples, in integer arithmetic: no approximation of the
ratio), over only the input samples the filter reaches:

* filter weights: one row of ``taps = 2 * ceil(width * orig / (rolloff * min(orig, new))) + 2``
  per distinct phase actually used (at most ``min(new / gcd, outputs)`` rows: a few million
  numbers at most for rates in 4 kHz .. 384 kHz);
* work: ``outputs * taps`` multiply-adds (about 12 x max(input, output) samples);
* memory: the input window plus chunks of ``CHUNK_ELEMENTS`` gathered samples and weights;
* a window of the output (``start``, ``length``) costs only that window, so a long clip cropped
  to a few seconds is never resampled in full.

The result matches torchaudio's to float rounding (``tests/test_adapter_audio.py`` compares them
on rates torchaudio handles quickly); ``bench/bench_resample.py`` measures time and peak memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "CHUNK_ELEMENTS",
    "LOWPASS_FILTER_WIDTH",
    "ROLLOFF",
    "resample_window",
    "resampled_length",
]

LOWPASS_FILTER_WIDTH = 6
"""Zero crossings of the sinc on each side (torchaudio's default)."""
ROLLOFF = 0.99
"""Cut-off as a fraction of the lower rate's Nyquist frequency (torchaudio's default)."""
CHUNK_ELEMENTS = 1 << 21
"""Gathered samples (outputs x taps) per chunk: bounds the temporaries to a few MB each."""


def resampled_length(num_samples: int, orig: int, new: int) -> int:
    """Samples after resampling ``num_samples`` from ``orig`` to ``new`` Hz:
    ``ceil(num_samples * new / orig)`` (as torchaudio)."""
    return -(-num_samples * new // orig)


def _taps(orig: int, new: int) -> int:
    """Input samples on each side of an output position that the filter reaches."""
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (ROLLOFF * min(orig, new)))


def _weights(frac: Tensor, width: int, scale: float) -> Tensor:
    """Filter rows ``[len(frac), 2 * width + 2]`` (float32) for outputs at fractional positions
    ``frac`` (in ``[0, 1)``) past their left input sample: Hann-windowed sinc, zero outside
    ``LOWPASS_FILTER_WIDTH`` zero crossings."""
    offsets = torch.arange(-width, width + 2, dtype=torch.float32)
    x = (offsets[None, :] - frac.float()[:, None]).mul_(scale)  # distance in cut-off periods
    x.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)  # the window is 0 at the ends
    window = torch.cos(x * (math.pi / (2 * LOWPASS_FILTER_WIDTH))).square_()
    zero = x == 0
    angle = x.mul_(math.pi).masked_fill_(zero, 1.0)
    sinc = torch.sin(angle).div_(angle).masked_fill_(zero, 1.0)
    return window.mul_(sinc).mul_(scale)


def _decimated(samples: Tensor, q: int, lo: int, hi: int) -> Tensor:
    """Samples ``lo .. hi`` of ``samples`` low-passed to ``ROLLOFF / q`` of its Nyquist
    frequency and decimated by ``q`` (sample ``m`` at input sample ``m * q``): one strided
    convolution over the input samples they reach."""
    width = math.ceil(LOWPASS_FILTER_WIDTH * q / ROLLOFF)
    t = torch.arange(-width, width + 1, dtype=torch.float64)
    kernel = _weights(torch.zeros(1, dtype=torch.float64), width, ROLLOFF / q)[0]
    kernel = kernel[: t.numel()]  # taps at input offsets -width .. width
    first, last = lo * q - width, (hi - 1) * q + width + 1
    window = torch.zeros(last - first, dtype=torch.float32)
    a, b = max(0, first), min(samples.numel(), last)
    if b > a:
        window[a - first : b - first] = samples[a:b].float()
    out = torch.nn.functional.conv1d(window.view(1, 1, -1), kernel.view(1, 1, -1), stride=q)
    return out.view(-1)[: hi - lo]


def _interpolate(source: Tensor, lo: int, orig: int, new: int, start: int, length: int) -> Tensor:
    """Outputs ``start .. start + length`` from ``source`` = samples ``lo ..`` of a signal at
    ``orig`` Hz (zero beyond its ends), resampled to ``new`` Hz by windowed-sinc interpolation."""
    width = _taps(orig, new)
    taps = 2 * width + 2
    padded = torch.zeros(source.numel() + 2 * width + 2, dtype=torch.float32)
    padded[width : width + source.numel()] = source
    rows = padded.unfold(0, taps, 1)  # row i: padded[i : i + taps], a view
    position = torch.arange(start, start + length, dtype=torch.int64) * orig
    left = torch.div(position, new, rounding_mode="floor")  # input sample at or before output j
    remainder = position - left * new  # the phase, in 1/new of an input sample
    scale = ROLLOFF * min(orig, new) / orig  # sinc argument per input sample
    phases = new // math.gcd(orig, new)
    table = None
    if phases < length:  # fewer distinct phases than outputs: one filter row per phase
        table = _weights(torch.arange(phases, dtype=torch.float64) / phases, width, scale)
        remainder = torch.div(remainder * phases, new, rounding_mode="floor")
    out = torch.empty(length, dtype=torch.float32)
    chunk = max(1, CHUNK_ELEMENTS // taps)
    for first in range(0, length, chunk):
        part = slice(first, min(length, first + chunk))
        if table is not None:
            weights = table[remainder[part]]
        else:
            weights = _weights(remainder[part].to(torch.float64) / new, width, scale)
        data = rows[left[part] - lo]  # [chunk, taps]: source sample left - width + k
        out[part] = torch.einsum("ct,ct->c", data, weights)
    return out


def _window(total: int, orig: int, new: int, start: int, length: int) -> tuple[int, int]:
    """The source samples ``[lo, hi)`` that outputs ``start .. start + length`` reach."""
    width = _taps(orig, new)
    lo = max(0, start * orig // new - width - 1)
    hi = min(total, (start + length) * orig // new + width + 3)
    return lo, hi


def resample_window(
    samples: Tensor, orig: int, new: int, start: int = 0, length: int | None = None
) -> Tensor:
    """Output samples ``start .. start + length`` of ``samples`` (mono float ``[T]``) resampled
    from ``orig`` to ``new`` Hz; the whole output when ``length`` is ``None``.

    A reduction by 4x or more first decimates by the integer ``q = orig // (2 * new)`` (one
    strided convolution with the same windowed sinc), so that the interpolation's filter stays
    short: its cost no longer grows with the ratio.
    """
    total = resampled_length(samples.numel(), orig, new)
    length = total - start if length is None else length
    if start < 0 or length < 0 or start + length > total:
        raise ValueError(
            f"resample_window: window [{start}, {start + length}) is outside the output's "
            f"{total} samples"
        )
    if orig == new:
        return samples[start : start + length].float().clone()
    q = orig // (2 * new) if orig >= 4 * new else 1
    if q > 1:  # the interpolation then reads a signal at orig / q Hz: the ratio orig : q * new
        lo, hi = _window(-(-samples.numel() // q), orig, q * new, start, length)
        source = _decimated(samples, q, lo, hi)
        return _interpolate(source, lo, orig, q * new, start, length)
    lo, hi = _window(samples.numel(), orig, new, start, length)
    return _interpolate(samples[lo:hi].float(), lo, orig, new, start, length)
