"""Audio input/output for the audio adapter: decode what users have into a mono waveform.

Everything here runs on the data side (DataLoader workers) and holds no model state.

Accepted raw examples (see :func:`load_waveform`):

* ``{"array": waveform, "sampling_rate": sr}``: the decoded form of a Hugging Face ``datasets``
  ``Audio`` column (datasets < 5, or any dict of that shape);
* ``(waveform, sr)``: a 2-tuple;
* ``{"path": ..., "bytes": ...}``: the *undecoded* form of a ``datasets`` ``Audio`` column
  (``dataset.cast_column("audio", Audio(decode=False))``). ``bytes`` is used when present,
  else ``path``. datasets 5 decodes audio only through ``torchcodec``; casting with
  ``decode=False`` lets us decode with ``soundfile`` instead;
* a file path (``str`` / ``os.PathLike``) or raw encoded bytes, decoded with ``soundfile``;
* a torchcodec ``AudioDecoder`` (what a decoded ``datasets`` ``Audio`` column yields when
  ``torchcodec`` is installed): its ``get_all_samples()``.

Channel rule for waveform arrays: a 1-D array ``[T]`` is mono. A 2-D array is
channels-first ``[C, T]`` when its first axis has at most 2 entries, otherwise channels-last
``[T, C]`` when its last axis has at most 2 entries (soundfile's layout); anything else (more
than two channels, or 3+ dimensions) is rejected. So a ``[2, 2]`` array is read as ``[C, T]``.
Integer PCM arrays are scaled to ``[-1, 1]`` by their dtype's range. Channels are averaged
(mono mixdown).

Bounds (each refusal names the field, the value and the fix): sample rates from
:data:`MIN_SAMPLE_RATE` (4 kHz) to :data:`MAX_SAMPLE_RATE` (384 kHz); float samples within
:data:`MAX_AMPLITUDE` (float audio is nominally in ``[-1, 1]``: a peak of 1000 is integer PCM
stored as float, or a gain error); files of at most :data:`MAX_DECODED_SAMPLES` samples (checked
from the header, before decoding). Resampling (:func:`resample`) costs time and memory in
proportion to the samples it produces, at any pair of rates (:mod:`mmvq_adapters.audio_resample`).
"""

from __future__ import annotations

import io
import math
import numbers
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from mmvq.adapter import AdapterInputError
from mmvq_adapters.audio_resample import resample_window, resampled_length

__all__ = [
    "MAX_AMPLITUDE",
    "MAX_DECODED_SAMPLES",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "Waveform",
    "load_waveform",
    "waveform_from_array",
    "check_sample_rate",
    "decode_audio_bytes",
    "decode_audio_file",
    "resample",
    "resampled_length",
    "save_wav",
    "MAX_CHANNELS",
]

MAX_CHANNELS = 2
MIN_SAMPLE_RATE = 4_000
"""Lowest input sample rate accepted (Hz)."""
MAX_SAMPLE_RATE = 384_000
"""Highest input sample rate accepted (Hz)."""
MAX_AMPLITUDE = 4.0
"""Largest absolute float sample accepted (12 dB over full scale)."""
MAX_DECODED_SAMPLES = 1 << 26
"""Largest audio file decoded, in samples over all channels (256 MB as float32): about 23
minutes of 48 kHz stereo."""

_ACCEPTED = (
    "a dict {'array': waveform, 'sampling_rate': sr}, a tuple (waveform, sr), "
    "a dict {'path': ..., 'bytes': ...} (datasets Audio(decode=False)), a file path, raw "
    "encoded bytes (wav/flac/ogg), or a torchcodec AudioDecoder (datasets Audio())"
)


class Waveform(NamedTuple):
    """A mono waveform ``samples`` (float32 ``[T]``) at ``sample_rate`` Hz."""

    samples: Tensor
    sample_rate: int


def check_sample_rate(
    sample_rate: Any, field: str = "sampling_rate", *, bounded: bool = False
) -> int:
    """Validate a sample rate and return it as an ``int``.

    Accepts positive integers and integral floats (``44100.0``); rejects bools, non-numbers,
    non-finite, non-integral and non-positive values with an :class:`AdapterInputError`; with
    ``bounded`` also rates outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``.
    """
    if isinstance(sample_rate, Tensor) and sample_rate.numel() == 1:
        sample_rate = sample_rate.item()
    if isinstance(sample_rate, np.generic):
        sample_rate = sample_rate.item()
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise AdapterInputError(
            f"audio '{field}' must be a positive number of samples per second, got "
            f"{sample_rate!r} ({type(sample_rate).__name__}); pass e.g. "
            "{'array': waveform, 'sampling_rate': 16000}."
        )
    value = float(sample_rate)
    if not math.isfinite(value) or value <= 0:
        raise AdapterInputError(
            f"audio '{field}' must be > 0, got {sample_rate!r}; pass the rate the waveform was "
            "recorded at, e.g. 16000 or 44100."
        )
    if value != int(value):
        raise AdapterInputError(
            f"audio '{field}' must be a whole number of Hz, got {sample_rate!r}; round it "
            "(e.g. int(round(sr))) if the fraction comes from a float conversion."
        )
    if bounded and not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise AdapterInputError(
            f"audio '{field}' = {int(value)} Hz is outside the supported range "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; pass the rate the waveform was recorded "
            "at (a rate of 1 or 1e9 is a mix-up of samples and seconds, or of Hz and kHz)."
        )
    return int(value)


def _to_numpy(array: Any, field: str) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().numpy()
    if isinstance(array, np.ndarray):
        return array
    if isinstance(array, (list, tuple)):
        try:
            return np.asarray(array)
        except (TypeError, ValueError) as exc:
            raise AdapterInputError(
                f"audio '{field}' could not be read as an array ({exc}); pass a numpy array or "
                "a torch tensor of samples."
            ) from exc
    raise AdapterInputError(
        f"audio '{field}' must be a numpy array, torch tensor or list of samples, got "
        f"{type(array).__name__}; pass the decoded waveform."
    )


def _as_float(array: np.ndarray, field: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind in "iu":
        info = np.iinfo(array.dtype)
        if kind == "u":  # unsigned PCM (e.g. 8-bit wav) is centred on the middle of its range
            mid = (int(info.max) + 1) / 2.0
            return ((array.astype(np.float64) - mid) / mid).astype(np.float32)
        return (array.astype(np.float64) / (float(info.max) + 1.0)).astype(np.float32)
    raise AdapterInputError(
        f"audio '{field}' must hold real numeric samples, got dtype {array.dtype}; pass float "
        "samples in [-1, 1] (or integer PCM)."
    )


def waveform_from_array(array: Any, sample_rate: Any, field: str = "array") -> Waveform:
    """Validate a waveform array + sample rate and mix it down to mono float32.

    See the module docstring for the channel rule. Raises :class:`AdapterInputError` for
    empty audio, NaN/Inf samples, more than two channels, 3+ dimensions and bad sample rates.
    """
    sr = check_sample_rate(sample_rate, bounded=True)
    data = _to_numpy(array, field)
    if data.ndim == 0:
        raise AdapterInputError(
            f"audio '{field}' is a scalar ({data!r}); pass a 1-D waveform [T] or a 2-D [C, T] / "
            "[T, C] array with C <= 2."
        )
    if data.ndim > 2:
        raise AdapterInputError(
            f"audio '{field}' has shape {tuple(data.shape)} (3+ dimensions); pass one clip as "
            "[T], [C, T] or [T, C] with C <= 2 channels."
        )
    if data.size == 0:
        raise AdapterInputError(
            f"audio '{field}' is empty (shape {tuple(data.shape)}, zero samples); drop empty "
            "clips from the dataset or pass at least one sample."
        )
    data = _as_float(data, field)
    if data.ndim == 2:
        if data.shape[0] <= MAX_CHANNELS:
            data = data.mean(axis=0)
        elif data.shape[1] <= MAX_CHANNELS:
            data = data.mean(axis=1)
        else:
            raise AdapterInputError(
                f"audio '{field}' has shape {tuple(data.shape)}: more than {MAX_CHANNELS} "
                "channels (neither axis has <= 2 entries); mix it down to mono or stereo first, "
                "e.g. array.mean(axis=0) for [C, T]."
            )
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AdapterInputError(
            f"audio '{field}' contains {bad} NaN/Inf sample(s); clean the waveform "
            "(e.g. np.nan_to_num) or drop the clip."
        )
    peak = float(np.abs(data).max())
    if peak > MAX_AMPLITUDE:
        raise AdapterInputError(
            f"audio '{field}' has samples up to {peak:.4g} in absolute value; float audio must "
            f"lie in [-1, 1] (up to {MAX_AMPLITUDE} is accepted): integer PCM stored as float? "
            "divide by 32768 (16-bit) or pass the integer array itself."
        )
    samples = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return Waveform(samples, sr)


def _decode(source: Any, what: str) -> Waveform:
    try:
        info = sf.info(source)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        if info.frames * info.channels > MAX_DECODED_SAMPLES:
            raise AdapterInputError(
                f"audio {what} holds {info.frames} frames x {info.channels} channel(s) "
                f"({info.duration:.0f} s at {info.samplerate} Hz), more than the "
                f"{MAX_DECODED_SAMPLES} samples decoded per clip; cut it into clips (a training "
                "example keeps only max_seconds of it anyway)."
            )
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(": ", 1)[-1] if str(exc).startswith("Error opening") else str(exc)
        raise AdapterInputError(
            f"audio {what} could not be decoded by soundfile ({reason}); pass a valid wav/flac/ogg "
            "file, or a decoded {'array': waveform, 'sampling_rate': sr}."
        ) from exc
    return waveform_from_array(data, sr, field=what)


def decode_audio_bytes(data: bytes | bytearray | memoryview, field: str = "bytes") -> Waveform:
    """Decode encoded audio bytes (wav/flac/ogg...) with soundfile into a mono waveform."""
    raw = bytes(data)
    if not raw:
        raise AdapterInputError(
            f"audio '{field}' is empty (0 bytes); pass the encoded file contents, or drop the clip."
        )
    return _decode(io.BytesIO(raw), f"'{field}' ({len(raw)} bytes)")


def decode_audio_file(path: str | os.PathLike, field: str = "path") -> Waveform:
    """Decode an audio file with soundfile into a mono waveform."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise AdapterInputError(
            f"audio '{field}' {str(p)!r} does not exist; check the path (relative paths are "
            f"resolved against {os.getcwd()!r})."
        )
    if not p.is_file():
        raise AdapterInputError(
            f"audio '{field}' {str(p)!r} is not a file; pass the path of an audio file."
        )
    return _decode(str(p), f"file {str(p)!r}")


def _from_dict(example: dict[str, Any]) -> Waveform:
    if "array" in example:
        if example.get("sampling_rate") is None:
            raise AdapterInputError(
                "audio dict has 'array' but no 'sampling_rate' (got keys "
                f"{sorted(map(str, example))}); add the rate, e.g. "
                "{'array': waveform, 'sampling_rate': 16000}."
            )
        return waveform_from_array(example["array"], example["sampling_rate"], field="array")
    if "bytes" in example or "path" in example:
        raw, path = example.get("bytes"), example.get("path")
        if raw is not None:
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise AdapterInputError(
                    f"audio 'bytes' must be bytes, got {type(raw).__name__}; pass the encoded "
                    "file contents (as datasets Audio(decode=False) does)."
                )
            return decode_audio_bytes(raw, field="bytes")
        if path is not None:
            if not isinstance(path, (str, os.PathLike)):
                raise AdapterInputError(
                    f"audio 'path' must be a str or os.PathLike, got {type(path).__name__}."
                )
            return decode_audio_file(path, field="path")
        raise AdapterInputError(
            "audio dict has both 'path' and 'bytes' set to None; the example holds no audio. "
            "Drop it from the dataset."
        )
    raise AdapterInputError(
        f"audio dict has keys {sorted(map(str, example))}, none of 'array'+'sampling_rate' or "
        f"'path'/'bytes'; pass {_ACCEPTED}."
    )


def load_waveform(example: Any) -> Waveform:
    """Turn any accepted raw audio example into a mono :class:`Waveform` (original rate).

    Raises :class:`AdapterInputError` naming the field, the value and the fix on bad input.
    """
    if isinstance(example, dict):
        return _from_dict(example)
    if (
        isinstance(example, tuple)
        and len(example) == 2
        and isinstance(example[0], (np.ndarray, Tensor, list, tuple))
    ):
        return waveform_from_array(example[0], example[1], field="array")
    if isinstance(example, (str, os.PathLike)):
        return decode_audio_file(example, field="path")
    if isinstance(example, (bytes, bytearray, memoryview)):
        return decode_audio_bytes(example, field="bytes")
    if isinstance(example, (np.ndarray, Tensor, list, tuple)):
        shape = (
            tuple(np.shape(example)) if not isinstance(example, Tensor) else tuple(example.shape)
        )
        raise AdapterInputError(
            f"audio got a bare array of shape {shape} without a sample rate ('sampling_rate' "
            "missing); pass {'array': waveform, 'sampling_rate': sr} or (waveform, sr)."
        )
    if callable(getattr(example, "get_all_samples", None)):
        return _from_decoder(example)
    raise AdapterInputError(
        f"audio example of type {type(example).__name__} is not supported; pass {_ACCEPTED}."
    )


def _from_decoder(decoder: Any) -> Waveform:
    """A torchcodec ``AudioDecoder`` (a decoded ``datasets`` ``Audio`` value when torchcodec is
    installed): its ``get_all_samples()`` gives ``data`` ``[C, T]`` and ``sample_rate``."""
    name = type(decoder).__name__
    try:
        samples = decoder.get_all_samples()
    except Exception as exc:  # noqa: BLE001 - the decoder's own failure, reworded at the boundary
        raise AdapterInputError(
            f"audio {name} could not decode its clip ({type(exc).__name__}: {exc}); check the "
            "file, or cast the column with datasets.Audio(decode=False) so the adapter decodes it."
        ) from exc
    data, rate = getattr(samples, "data", None), getattr(samples, "sample_rate", None)
    if data is None or rate is None:
        raise AdapterInputError(
            f"audio {name}.get_all_samples() returned {type(samples).__name__} without 'data' "
            "and 'sample_rate' (torchcodec's AudioSamples has both); pass "
            "{'array': waveform, 'sampling_rate': sr} instead."
        )
    return waveform_from_array(data, rate, field=f"{name} samples")


def resample(
    wave: Waveform, sample_rate: int, *, start: int = 0, length: int | None = None
) -> Waveform:
    """Resample to ``sample_rate`` (no-op if equal), keeping output samples ``start ..
    start + length`` only (default: all); time and memory grow with the samples kept, at any pair
    of rates (:func:`mmvq_adapters.audio_resample.resample_window`)."""
    if wave.sample_rate == sample_rate and start == 0 and length is None:
        return wave
    samples = resample_window(wave.samples, wave.sample_rate, sample_rate, start, length)
    if samples.numel() == 0:
        raise AdapterInputError(
            f"audio has {wave.samples.numel()} sample(s) at {wave.sample_rate} Hz, which is empty "
            f"after resampling to {sample_rate} Hz; pass a longer clip."
        )
    return Waveform(samples, sample_rate)


def save_wav(
    waveform: np.ndarray | Tensor,
    path: str | os.PathLike,
    sample_rate: int,
    subtype: str = "FLOAT",
) -> Path:
    """Write a mono waveform ``[T]`` (or ``[C, T]``) to a wav file with soundfile.

    ``subtype="FLOAT"`` stores samples unchanged (no clipping); pass ``"PCM_16"`` for 16-bit
    files, in which case samples outside ``[-1, 1]`` are clipped by libsndfile. Returns the path.
    """
    sr = check_sample_rate(sample_rate, field="sample_rate")
    data = _to_numpy(waveform, "waveform").astype(np.float32, copy=False)
    if data.ndim == 2:
        if data.shape[0] > MAX_CHANNELS:
            raise AdapterInputError(
                f"save_wav 'waveform' has shape {tuple(data.shape)}; pass [T] or [C, T] with C <= "
                "2."
            )
        data = data.T  # soundfile wants [T, C]
    elif data.ndim != 1:
        raise AdapterInputError(
            f"save_wav 'waveform' has shape {tuple(data.shape)}; pass [T] or [C, T] with C <= 2."
        )
    if data.shape[0] == 0:
        raise AdapterInputError("save_wav 'waveform' is empty; there is nothing to write.")
    if not np.isfinite(data).all():
        raise AdapterInputError(
            "save_wav 'waveform' contains NaN/Inf samples; clean it (np.nan_to_num) first."
        )
    out = Path(os.fspath(path))
    sf.write(str(out), data, sr, subtype=subtype)
    return out
