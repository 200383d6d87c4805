"""The built-in audio adapter: waveforms <-> a grid of tokens over the log-mel spectrogram.

Registered through the ``mmvq.adapters`` entry point ``audio = mmvq_adapters.audio:AudioAdapter``
(exactly as a third-party plugin would be).

Data side (:meth:`AudioAdapter.preprocess`, CPU, no model state): decode the raw example
(array + sample rate, file path, bytes, or a ``datasets`` ``Audio`` dict; see
:mod:`mmvq_adapters.audio_utils`), mix down to mono, resample to ``config.sample_rate`` with
:func:`torchaudio.functional.resample`, crop or zero-pad to ``config.max_seconds``, and compute
the normalised log-mel spectrogram with :class:`torchaudio.transforms.MelSpectrogram`.

Batch keys:

* ``mel``: float ``[B, 1, n_mels, T]``, the **normalised log-mel**
  ``(ln(max(mel, log_floor)) - log_mel_mean) / log_mel_std`` where ``mel`` is the
  magnitude (``power=1``) or power (``power=2``) mel spectrogram. The affine constants are fixed
  in the config (not per-sample statistics), so loudness is kept and the transform is exactly
  invertible for the vocoder. Padded frames hold the value of silence (``ln(log_floor)``).
* ``frame_mask``: bool ``[B, T]``, ``True`` for frames whose centre lies inside the real
  (unpadded) audio.

``T`` (``config.num_frames``) is fixed by ``max_seconds``: ``1 + ceil(num_samples / hop)``
rounded up to a multiple of the encoder's downsampling factor ``f``. Model side: a taming-style :class:`mmvq.nn.convnet.ConvEncoder2d`
over the ``n_mels x T`` image (downsampling both axes by ``f``); tokens are the
``(n_mels/f) x (T/f)`` grid in row-major order (mel row, then time column) in ``code_dim``;
a token is real when its time column covers at least one real frame.
:class:`mmvq.nn.convnet.ConvDecoder2d` maps tokens back to the normalised log-mel.
:meth:`AudioAdapter.postprocess` inverts it to waveforms with Griffin-Lim
(:class:`torchaudio.transforms.InverseMelScale` + :class:`torchaudio.transforms.GriffinLim`), or
with a neural vocoder given to :meth:`AudioAdapter.set_vocoder`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

from mmvq.adapter import (
    AdapterConfig,
    AdapterInputError,
    BadInput,
    DataColumn,
    ModalityAdapter,
    Tokens,
)
from mmvq.utils.configs import from_preset
from mmvq.nn.convnet import ConvDecoder2d, ConvEncoder2d, ConvNetConfig
from mmvq.nn.gan import NORMS, PatchGANConfig, PatchGANDiscriminator
from mmvq_adapters.audio_utils import load_waveform, resample, save_wav

__all__ = [
    "AudioAdapterConfig",
    "AudioAdapter",
    "LogMelSpectrogram",
    "GriffinLimVocoder",
    "Vocoder",
    "save_wav",
    "DURATION_POLICIES",
    "CROP_MODES",
    "VOCODERS",
]

DURATION_POLICIES: tuple[str, ...] = ("pad_crop",)
CROP_MODES: tuple[str, ...] = ("start", "random", "center")
VOCODERS: tuple[str, ...] = ("griffinlim", "custom")
MEL_NORMS: tuple[str | None, ...] = (None, "slaney")
MEL_SCALES: tuple[str, ...] = ("htk", "slaney")

#: A vocoder maps a linear mel spectrogram ``[B, n_mels, T]`` (the scale ``MelSpectrogram``
#: produces: magnitude for ``power=1``, power for ``power=2``) to waveforms: a ``[B, L]``
#: tensor/array or a list of 1-D arrays at ``config.sample_rate``.
Vocoder = Callable[[Tensor], "Tensor | np.ndarray | Sequence[np.ndarray | Tensor]"]

_MAX_LOG = 20.0  # cap on the de-normalised log-mel before exp (keeps exp finite)

_PRESETS: dict[str, dict[str, Any]] = {
    # 8 kHz, 1 s, 32 mels, hop 128 -> 64 frames; f=4 -> 8 x 16 = 128 tokens. Trains on a 2-core CPU.
    "cpu-small": dict(
        sample_rate=8000,
        max_seconds=1.0,
        n_fft=512,
        hop_length=128,
        n_mels=32,
        base_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_at_lowest=True,
        disc_base_channels=32,
        disc_num_layers=3,
    ),
    # 24 kHz, 4 s, 80 mels, hop 256 -> 376 frames; f=8 -> 10 x 47 = 470 tokens (taming-like scale,
    # code_dim 256 as in taming).
    "gpu-base": dict(
        code_dim=256,
        sample_rate=24000,
        max_seconds=4.0,
        n_fft=1024,
        hop_length=256,
        n_mels=80,
        f_max=12000.0,
        base_channels=128,
        channel_mult=(1, 1, 2, 4),
        num_res_blocks=2,
        attn_at_lowest=True,
        disc_base_channels=64,
        disc_num_layers=3,
    ),
}


def _positive_int(cls: str, name: str, value: Any, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{cls}.{name} must be a positive int, got {value!r}; e.g. {example}.")


def _positive_float(cls: str, name: str, value: Any, example: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(
            f"{cls}.{name} must be a finite number > 0, got {value!r}; e.g. {example}."
        )


def _choice(cls: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{cls}.{name} must be one of {tuple(choices)}, got {value!r}.")


@dataclass
class AudioAdapterConfig(AdapterConfig):
    """Configuration of :class:`AudioAdapter` (JSON-serialisable; stored on the Hub).

    Defaults are the ``"cpu-small"`` preset; see :meth:`preset`.

    Attributes:
        sample_rate: rate (Hz) every input is resampled to; postprocess returns this rate.
        max_seconds: clip length; longer clips are cropped, shorter ones zero-padded and masked.
        duration_policy: ``"pad_crop"`` (the only policy: fixed length, pad + mask, crop).
        crop: where to crop clips longer than ``max_seconds``: ``"start"``, ``"random"``
            (torch's RNG, seeded per DataLoader worker) or ``"center"``.
        n_fft, win_length, hop_length: STFT parameters (``win_length=None`` means ``n_fft``).
        n_mels, f_min, f_max: mel filterbank (``f_max=None`` means ``sample_rate / 2``).
        power: 1 for a magnitude mel, 2 for a power mel.
        mel_norm, mel_scale: filterbank normalisation (``None``/``"slaney"``) and mel scale
            (``"htk"``/``"slaney"``), as in torchaudio.
        log_floor: the mel is clamped to at least this before the log (the value of silence).
        log_mel_mean, log_mel_std: fixed normalisation ``(ln(mel) - mean) / std``.
        base_channels, channel_mult, num_res_blocks, attn_at_lowest, dropout, num_groups: the
            :class:`mmvq.nn.convnet.ConvNetConfig` of encoder and decoder (``in_channels=1``);
            the downsampling factor is ``f = 2 ** (len(channel_mult) - 1)``.
        spectral_convergence_weight: weight of the spectral convergence term added to the
            log-mel L1 in :meth:`AudioAdapter.reconstruction_loss` (0 disables it).
        disc_base_channels, disc_num_layers, disc_norm: the PatchGAN discriminator.
        vocoder: ``"griffinlim"`` or ``"custom"`` (a callable given to
            :meth:`AudioAdapter.set_vocoder`).
        griffinlim_iters, griffinlim_momentum: Griffin-Lim iterations and momentum.
    """

    sample_rate: int = 8000
    max_seconds: float = 1.0
    duration_policy: str = "pad_crop"
    crop: str = "start"
    n_fft: int = 512
    win_length: int | None = None
    hop_length: int = 128
    n_mels: int = 32
    f_min: float = 0.0
    f_max: float | None = None
    power: float = 1.0
    mel_norm: str | None = None
    mel_scale: str = "htk"
    log_floor: float = 1e-5
    log_mel_mean: float = -3.0
    log_mel_std: float = 4.0
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_at_lowest: bool = True
    dropout: float = 0.0
    num_groups: int = 32
    spectral_convergence_weight: float = 0.0
    disc_base_channels: int = 32
    disc_num_layers: int = 3
    disc_norm: str = "batch"
    vocoder: str = "griffinlim"
    griffinlim_iters: int = 32
    griffinlim_momentum: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.channel_mult, list):
            self.channel_mult = tuple(self.channel_mult)
        c = type(self).__name__
        _positive_int(c, "sample_rate", self.sample_rate, "16000")
        _positive_float(c, "max_seconds", self.max_seconds, "1.0")
        _choice(c, "duration_policy", self.duration_policy, DURATION_POLICIES)
        _choice(c, "crop", self.crop, CROP_MODES)
        _positive_int(c, "n_fft", self.n_fft, "512")
        if self.win_length is not None:
            _positive_int(c, "win_length", self.win_length, "None (= n_fft)")
            if self.win_length > self.n_fft:
                raise ValueError(
                    f"{c}.win_length ({self.win_length}) must be <= n_fft ({self.n_fft}); "
                    "set win_length=None to use n_fft."
                )
        _positive_int(c, "hop_length", self.hop_length, "n_fft // 4")
        _positive_int(c, "n_mels", self.n_mels, "32")
        if (
            isinstance(self.f_min, bool)
            or not isinstance(self.f_min, (int, float))
            or not (0 <= self.f_min < self.sample_rate / 2)
        ):
            raise ValueError(
                f"{c}.f_min must be in [0, sample_rate/2 = {self.sample_rate / 2}), got {self.f_min!r}."
            )
        if self.f_max is not None and (
            isinstance(self.f_max, bool)
            or not isinstance(self.f_max, (int, float))
            or not (self.f_min < self.f_max <= self.sample_rate / 2)
        ):
            raise ValueError(
                f"{c}.f_max must be None or in (f_min, sample_rate/2] = ({self.f_min}, "
                f"{self.sample_rate / 2}], got {self.f_max!r}."
            )
        _positive_float(c, "power", self.power, "1.0 (magnitude) or 2.0 (power)")
        _choice(c, "mel_norm", self.mel_norm, MEL_NORMS)
        _choice(c, "mel_scale", self.mel_scale, MEL_SCALES)
        _positive_float(c, "log_floor", self.log_floor, "1e-5")
        if isinstance(self.log_mel_mean, bool) or not isinstance(self.log_mel_mean, (int, float)):
            raise ValueError(f"{c}.log_mel_mean must be a number, got {self.log_mel_mean!r}.")
        _positive_float(c, "log_mel_std", self.log_mel_std, "4.0")
        if (
            isinstance(self.spectral_convergence_weight, bool)
            or not isinstance(self.spectral_convergence_weight, (int, float))
            or self.spectral_convergence_weight < 0
        ):
            raise ValueError(
                f"{c}.spectral_convergence_weight must be a number >= 0, got "
                f"{self.spectral_convergence_weight!r}; 0 disables the term."
            )
        _choice(c, "vocoder", self.vocoder, VOCODERS)
        _positive_int(c, "griffinlim_iters", self.griffinlim_iters, "32")
        if (
            isinstance(self.griffinlim_momentum, bool)
            or not isinstance(self.griffinlim_momentum, (int, float))
            or not 0 <= self.griffinlim_momentum < 1
        ):
            raise ValueError(
                f"{c}.griffinlim_momentum must be in [0, 1), got {self.griffinlim_momentum!r}."
            )
        _choice(c, "disc_norm", self.disc_norm, NORMS)
        self.convnet_config()  # validates the conv fields
        disc = self.discriminator_config()
        f = self.downsample_factor
        if self.n_mels % f:
            raise ValueError(
                f"{c}.n_mels ({self.n_mels}) must be divisible by the downsampling factor {f} "
                f"(channel_mult={self.channel_mult}); use e.g. n_mels={self.n_mels - self.n_mels % f + f}."
            )
        if min(self.n_mels, self.num_frames) < disc.min_input_size:
            raise ValueError(
                f"{c}: the log-mel ({self.n_mels} x {self.num_frames}) is smaller than the "
                f"discriminator's minimum input {disc.min_input_size} (disc_num_layers="
                f"{self.disc_num_layers}); lower disc_num_layers or raise n_mels / max_seconds."
            )

    # ------------------------------------------------------------------ derived sizes
    @property
    def downsample_factor(self) -> int:
        """Encoder downsampling factor ``f`` (both mel and time axes)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def num_samples(self) -> int:
        """Samples of a full clip at ``sample_rate`` (``round(max_seconds * sample_rate)``)."""
        return max(1, int(round(self.max_seconds * self.sample_rate)))

    @property
    def num_frames(self) -> int:
        """Frames ``T`` per clip: ``1 + ceil(num_samples / hop)`` rounded up to a multiple of
        ``f`` (so that :attr:`padded_samples` >= :attr:`num_samples`)."""
        f = self.downsample_factor
        return -(-(1 + -(-self.num_samples // self.hop_length)) // f) * f

    @property
    def padded_samples(self) -> int:
        """Waveform length (>= :attr:`num_samples`) whose centred STFT has exactly
        :attr:`num_frames` frames: ``(num_frames - 1) * hop``."""
        return (self.num_frames - 1) * self.hop_length

    @property
    def token_grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the token grid: ``(n_mels / f, num_frames / f)``."""
        f = self.downsample_factor
        return self.n_mels // f, self.num_frames // f

    def convnet_config(self) -> ConvNetConfig:
        """The encoder/decoder :class:`ConvNetConfig` (one input channel: the log-mel)."""
        return ConvNetConfig(
            in_channels=1,
            base_channels=self.base_channels,
            channel_mult=tuple(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            attn_at_lowest=self.attn_at_lowest,
            dropout=self.dropout,
            num_groups=self.num_groups,
        )

    def discriminator_config(self) -> PatchGANConfig:
        """The :class:`PatchGANConfig` of the GAN head (one input channel)."""
        return PatchGANConfig(
            in_channels=1,
            base_channels=self.disc_base_channels,
            num_layers=self.disc_num_layers,
            norm=self.disc_norm,
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AudioAdapterConfig:
        """A named configuration (``"cpu-small"``, ``"gpu-base"``) with field overrides."""
        return from_preset(cls, _PRESETS, name, overrides)

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by :meth:`preset`."""
        return sorted(_PRESETS)


class LogMelSpectrogram(nn.Module):
    """Waveform ``[..., L]`` -> normalised log-mel ``[..., n_mels, 1 + L // hop]`` and back.

    Wraps :class:`torchaudio.transforms.MelSpectrogram` (centred STFT, Hann window) and the
    fixed normalisation ``(ln(max(mel, log_floor)) - log_mel_mean) / log_mel_std``.
    """

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = AT.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=float(config.f_min),
            f_max=None if config.f_max is None else float(config.f_max),
            n_mels=config.n_mels,
            power=float(config.power),
            norm=config.mel_norm,
            mel_scale=config.mel_scale,
        )

    def forward(self, waveform: Tensor) -> Tensor:
        return self.normalise(self.mel(waveform))

    def normalise(self, mel: Tensor) -> Tensor:
        """Linear mel -> normalised log-mel."""
        cfg = self.config
        return (torch.log(mel.clamp(min=cfg.log_floor)) - cfg.log_mel_mean) / cfg.log_mel_std

    def log_mel(self, normalised: Tensor) -> Tensor:
        """Normalised log-mel -> natural-log mel ``ln(max(mel, log_floor))``."""
        return normalised * self.config.log_mel_std + self.config.log_mel_mean

    def linear(self, normalised: Tensor) -> Tensor:
        """Normalised log-mel -> linear mel (capped so ``exp`` stays finite)."""
        return torch.exp(self.log_mel(normalised).clamp(max=_MAX_LOG))

    @property
    def silence(self) -> float:
        """The normalised value of silence (``ln(log_floor)`` normalised)."""
        cfg = self.config
        return (math.log(cfg.log_floor) - cfg.log_mel_mean) / cfg.log_mel_std


class GriffinLimVocoder(nn.Module):
    """Linear mel ``[B, n_mels, T]`` -> waveforms ``[B, (T - 1) * hop]`` by Griffin-Lim.

    :class:`torchaudio.transforms.InverseMelScale` (least squares, clipped at 0) recovers the
    linear spectrogram, :class:`torchaudio.transforms.GriffinLim` estimates the phase.
    """

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        self.inverse_mel = AT.InverseMelScale(
            n_stft=config.n_fft // 2 + 1,
            n_mels=config.n_mels,
            sample_rate=config.sample_rate,
            f_min=float(config.f_min),
            f_max=None if config.f_max is None else float(config.f_max),
            norm=config.mel_norm,
            mel_scale=config.mel_scale,
        )
        self.griffin_lim = AT.GriffinLim(
            n_fft=config.n_fft,
            n_iter=config.griffinlim_iters,
            win_length=config.win_length,
            hop_length=config.hop_length,
            power=float(config.power),
            momentum=float(config.griffinlim_momentum),
        )

    def forward(self, mel: Tensor) -> Tensor:
        self.to(mel.device)
        return self.griffin_lim(self.inverse_mel(mel.float()))


class AudioAdapter(ModalityAdapter):
    """Audio adapter: waveforms -> normalised log-mel -> ``(n_mels/f) x (T/f)`` token grid.

    See the module docstring for the accepted inputs, batch keys and token layout.
    """

    config_class: ClassVar[type[AdapterConfig]] = AudioAdapterConfig
    # a dataset column holds file paths or datasets.Audio values, kept undecoded
    # ({"path", "bytes"}: decoded here with soundfile, no torchcodec needed); a folder of sound
    # files loads as --dataset_name audiofolder
    data_column: ClassVar[DataColumn] = DataColumn(
        file_paths=True, undecoded="Audio", folder_builder="audiofolder"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("logmel_l1",)
    sample_format: ClassVar[str | None] = "wav"
    config: AudioAdapterConfig

    def __init__(self, config: AudioAdapterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        conv = cfg.convnet_config()
        self.encoder = ConvEncoder2d(conv, out_dim=cfg.code_dim)
        self.decoder = ConvDecoder2d(conv, in_dim=cfg.code_dim, out_channels=1)
        # The feature transform and the vocoder are deterministic DSP, not model state: kept out
        # of the module tree so they are not saved with the weights and ``adapter.to(device)``
        # leaves the features on the CPU, where preprocess runs (in DataLoader workers).
        object.__setattr__(self, "features", LogMelSpectrogram(cfg))
        object.__setattr__(self, "_griffin_lim", None)
        object.__setattr__(self, "_vocoder", None)

    # ------------------------------------------------------------------ data side
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        """Raw audio example -> ``{"mel": [1, n_mels, T], "frame_mask": [T]}``.

        Raises :class:`AdapterInputError` on bad input (see :meth:`bad_inputs`).
        """
        cfg = self.config
        wave = resample(load_waveform(example), cfg.sample_rate)
        samples = self._fit_duration(wave.samples)
        length = samples.numel()
        padded = torch.zeros(cfg.padded_samples, dtype=torch.float32)
        padded[:length] = samples
        with torch.no_grad():
            mel = self.features(padded).unsqueeze(0)  # [1, n_mels, T]
        real_frames = min(cfg.num_frames, -(-length // cfg.hop_length))
        frame_mask = torch.arange(cfg.num_frames) < real_frames
        # frames centred in the zero padding still see the clip's tail through the window:
        # set them to exact silence so padding carries no signal.
        mel[..., ~frame_mask] = self.features.silence
        return {"mel": mel.contiguous(), "frame_mask": frame_mask}

    def _fit_duration(self, samples: Tensor) -> Tensor:
        cfg = self.config
        n, target = samples.numel(), cfg.num_samples
        if n <= target:
            return samples
        extra = n - target
        if cfg.crop == "start":
            start = 0
        elif cfg.crop == "center":
            start = extra // 2
        else:
            start = int(torch.randint(0, extra + 1, ()).item())
        return samples[start : start + target]

    def bad_inputs(self) -> list[BadInput]:
        """Every input ``preprocess`` rejects (run by :func:`mmvq.testing.check_adapter`)."""
        sr = self.config.sample_rate
        tone = np.sin(np.linspace(0, 200, sr // 4)).astype(np.float32)
        nan = tone.copy()
        nan[10] = np.nan
        inf = tone.copy()
        inf[3] = np.inf
        return [
            BadInput("NaN sample", {"array": nan, "sampling_rate": sr}, "NaN/Inf"),
            BadInput("Inf sample", (inf, sr), "NaN/Inf"),
            BadInput(
                "zero-length audio",
                {"array": np.zeros(0, np.float32), "sampling_rate": sr},
                "empty",
            ),
            BadInput("zero-length [C, 0] audio", (np.zeros((2, 0), np.float32), sr), "empty"),
            BadInput(
                "more than two channels",
                (np.zeros((3, 400), np.float32), sr),
                "more than 2 channels",
            ),
            BadInput("3-D array", (np.zeros((1, 2, 400), np.float32), sr), "3+ dimensions"),
            BadInput("bare array without sample rate", tone, "without a sample rate"),
            BadInput("dict with array but no sampling_rate", {"array": tone}, "no 'sampling_rate'"),
            BadInput("corrupt bytes", b"RIFF\x00\x01garbage-not-audio" * 8, "could not be decoded"),
            BadInput(
                "corrupt bytes in a datasets dict",
                {"path": None, "bytes": b"\x13\x37" * 64},
                "could not be decoded",
            ),
            BadInput("path that does not exist", "/nonexistent/mmvq/clip.wav", "does not exist"),
            BadInput("sample rate 0", {"array": tone, "sampling_rate": 0}, "must be > 0"),
            BadInput("negative sample rate", (tone, -16000), "must be > 0"),
            BadInput("non-numeric sample rate", (tone, "16k"), "positive number"),
            BadInput(
                "datasets dict without audio", {"path": None, "bytes": None}, "holds no audio"
            ),
            BadInput("unsupported type", 3.5, "not supported"),
        ]

    # ----------------------------------------------------------------- model side
    def num_tokens(self) -> int:
        rows, cols = self.config.token_grid
        return rows * cols

    def _check_batch(self, batch: dict[str, Tensor], method: str) -> tuple[Tensor, Tensor]:
        cfg = self.config
        for key in ("mel", "frame_mask"):
            if key not in batch:
                raise AdapterInputError(
                    f"AudioAdapter.{method}: batch has no '{key}' (keys: {sorted(batch)}); build "
                    "batches with adapter.collate([adapter.preprocess(x) ...])."
                )
        mel, frame_mask = batch["mel"], batch["frame_mask"]
        want = (1, cfg.n_mels, cfg.num_frames)
        if mel.dim() != 4 or tuple(mel.shape[1:]) != want:
            raise AdapterInputError(
                f"AudioAdapter.{method}: batch['mel'] has shape {tuple(mel.shape)}, expected "
                f"[B, {want[0]}, {want[1]}, {want[2]}] for this config; preprocess the audio with "
                "this adapter (same config)."
            )
        if (
            tuple(frame_mask.shape) != (mel.shape[0], cfg.num_frames)
            or frame_mask.dtype != torch.bool
        ):
            raise AdapterInputError(
                f"AudioAdapter.{method}: batch['frame_mask'] has shape {tuple(frame_mask.shape)} "
                f"and dtype {frame_mask.dtype}, expected bool [B={mel.shape[0]}, {cfg.num_frames}]."
            )
        return mel, frame_mask

    def _check_recon(self, recon: Tensor, method: str, batch_size: int | None = None) -> Tensor:
        cfg = self.config
        if recon.dim() == 3:
            recon = recon.unsqueeze(1)
        want = (1, cfg.n_mels, cfg.num_frames)
        if (
            recon.dim() != 4
            or tuple(recon.shape[1:]) != want
            or (batch_size is not None and recon.shape[0] != batch_size)
        ):
            raise AdapterInputError(
                f"AudioAdapter.{method}: recon has shape {tuple(recon.shape)}, expected "
                f"[{batch_size if batch_size is not None else 'B'}, 1, {cfg.n_mels}, "
                f"{cfg.num_frames}] (the output of decode)."
            )
        return recon

    def token_mask(self, frame_mask: Tensor) -> Tensor:
        """Frame mask ``[B, T]`` -> token mask ``[B, N]``: a token column is real if it covers
        any real frame (the same for every mel row)."""
        rows, cols = self.config.token_grid
        f = self.config.downsample_factor
        col_mask = frame_mask.reshape(frame_mask.shape[0], cols, f).any(-1)
        return col_mask[:, None, :].expand(-1, rows, -1).reshape(frame_mask.shape[0], rows * cols)

    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        mel, frame_mask = self._check_batch(batch, "encode")
        grid = self.encoder(mel)  # [B, D, rows, cols]
        z = grid.flatten(2).transpose(1, 2)  # row-major: [B, rows * cols, D]
        return Tokens(z=z, mask=self.token_mask(frame_mask.to(z.device)))

    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        """Tokens ``[B, N, D]`` -> normalised log-mel ``[B, 1, n_mels, T]``."""
        rows, cols = self.config.token_grid
        if h.dim() != 3 or h.shape[1] != rows * cols or h.shape[2] != self.config.code_dim:
            raise AdapterInputError(
                f"AudioAdapter.decode: h has shape {tuple(h.shape)}, expected [B, {rows * cols}, "
                f"{self.config.code_dim}] (num_tokens x code_dim)."
            )
        grid = h.transpose(1, 2).reshape(h.shape[0], h.shape[2], rows, cols)
        return self.decoder(grid)

    def _frame_weights(self, frame_mask: Tensor, like: Tensor) -> Tensor:
        return frame_mask[:, None, None, :].to(like.dtype)  # [B, 1, 1, T]

    def _l1(self, mel: Tensor, recon: Tensor, frame_mask: Tensor) -> Tensor:
        w = self._frame_weights(frame_mask, recon)
        denom = (w.sum(dim=(1, 2, 3)) * self.config.n_mels).clamp(min=1.0)
        return ((recon.float() - mel.float()).abs() * w).sum(dim=(1, 2, 3)) / denom

    def _spectral_convergence(self, mel: Tensor, recon: Tensor, frame_mask: Tensor) -> Tensor:
        w = self._frame_weights(frame_mask, recon)
        target = self.features.linear(mel.float()) * w
        estimate = self.features.linear(recon.float()) * w
        num = (target - estimate).flatten(1).norm(dim=1)
        return num / target.flatten(1).norm(dim=1).clamp(min=1e-8)

    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        """Per-sample ``[B]``: L1 on the normalised log-mel over real frames, plus
        ``spectral_convergence_weight`` x spectral convergence (linear mel, real frames)."""
        mel, frame_mask = self._check_batch(batch, "reconstruction_loss")
        recon = self._check_recon(recon, "reconstruction_loss", mel.shape[0])
        loss = self._l1(mel, recon, frame_mask)
        if self.config.spectral_convergence_weight > 0:
            loss = loss + self.config.spectral_convergence_weight * self._spectral_convergence(
                mel, recon, frame_mask
            )
        return loss

    @torch.no_grad()
    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        """``logmel_l1``: mean L1 in natural-log mel units (``ln``, not normalised) over real
        frames; ``spectral_convergence``: ``||S - S_hat||_F / ||S||_F`` in linear mel over real
        frames. Both averaged over the batch."""
        mel, frame_mask = self._check_batch(batch, "metrics")
        recon = self._check_recon(recon, "metrics", mel.shape[0])
        l1 = self._l1(mel, recon, frame_mask) * self.config.log_mel_std
        sc = self._spectral_convergence(mel, recon, frame_mask)
        return {"logmel_l1": float(l1.mean()), "spectral_convergence": float(sc.mean())}

    # ------------------------------------------------------------------ GAN head
    def discriminator(self) -> nn.Module:
        """A fresh PatchGAN over the ``[B, 1, n_mels, T]`` log-mel."""
        return PatchGANDiscriminator(self.config.discriminator_config())

    def gan_inputs(self, batch: dict[str, Tensor], recon: Tensor) -> tuple[Tensor, Tensor]:
        """``(real, fake)`` log-mels; the fake's padded frames are copied from the real one so
        the discriminator judges real frames only."""
        mel, frame_mask = self._check_batch(batch, "gan_inputs")
        recon = self._check_recon(recon, "gan_inputs", mel.shape[0])
        keep = frame_mask[:, None, None, :].to(recon.device)
        return mel, torch.where(keep, recon, mel.to(recon.dtype))

    def last_layer(self) -> Tensor:
        return self.decoder.last_layer

    # ------------------------------------------------------------------ output side
    def set_vocoder(self, vocoder: Vocoder | None) -> None:
        """Use ``vocoder`` (e.g. a neural vocoder) in :meth:`postprocess`; ``None`` restores
        Griffin-Lim.

        The callable receives the **linear** mel ``[B, n_mels, T]`` (the scale
        ``MelSpectrogram`` produces with ``config.power``; take the log your vocoder expects)
        on the reconstruction's device, and returns waveforms at ``config.sample_rate``: a
        ``[B, L]`` tensor/array or a list of ``B`` 1-D arrays. Sets ``config.vocoder`` to
        ``"custom"`` (or back to ``"griffinlim"``).
        """
        if vocoder is not None and not callable(vocoder):
            raise TypeError(
                f"set_vocoder expects a callable mel [B, n_mels, T] -> waveforms, or None; got "
                f"{type(vocoder).__name__}."
            )
        object.__setattr__(self, "_vocoder", vocoder)
        self.config.vocoder = "griffinlim" if vocoder is None else "custom"

    def _griffin_lim_vocoder(self) -> GriffinLimVocoder:
        if self._griffin_lim is None:
            object.__setattr__(self, "_griffin_lim", GriffinLimVocoder(self.config))
        return self._griffin_lim

    @torch.no_grad()
    def postprocess(self, recon: Tensor) -> list[np.ndarray]:
        """Reconstructed log-mel ``[B, 1, n_mels, T]`` -> list of ``B`` mono float32 waveforms
        (1-D numpy, ``config.sample_rate`` Hz, ``num_samples`` long)."""
        recon = self._check_recon(recon, "postprocess")
        mel = self.features.linear(recon.detach().float()).squeeze(1)  # [B, n_mels, T]
        if self.config.vocoder == "custom":
            if self._vocoder is None:
                raise RuntimeError(
                    "AudioAdapter config.vocoder is 'custom' but no vocoder is set; call "
                    "adapter.set_vocoder(fn) (mel [B, n_mels, T] -> waveforms) or set "
                    "config.vocoder = 'griffinlim'."
                )
            out = self._vocoder(mel)
        else:
            out = self._griffin_lim_vocoder()(mel)
        return self._waveforms(out, recon.shape[0])

    def _waveforms(self, out: Any, batch_size: int) -> list[np.ndarray]:
        if isinstance(out, (Tensor, np.ndarray)):
            items = list(out) if out.ndim == 2 else None
        elif isinstance(out, (list, tuple)):
            items = list(out)
        else:
            items = None
        if items is None or len(items) != batch_size:
            raise RuntimeError(
                f"the vocoder returned {type(out).__name__} "
                f"{tuple(getattr(out, 'shape', ()))}; expected {batch_size} waveforms ([B, L] "
                "or a list of 1-D arrays)."
            )
        waves = []
        for item in items:
            arr = (
                item.detach().float().cpu().numpy()
                if isinstance(item, Tensor)
                else np.asarray(item, dtype=np.float32)
            )
            waves.append(
                np.ascontiguousarray(arr.reshape(-1)[: self.config.num_samples], dtype=np.float32)
            )
        return waves

    save_wav = staticmethod(save_wav)
