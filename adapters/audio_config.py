"""The configuration of the built-in audio adapter (:class:`AudioAdapterConfig`): sample rate and
clip length, the log-mel front end, the conv encoder/decoder, the GAN head and the vocoder, with
the ``cpu-small`` and ``gpu-base`` presets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmvq.adapter import AdapterConfig
from mmvq.nn.convnet import ConvNetConfig
from mmvq.nn.gan import NORMS, PatchGANConfig
from mmvq.utils.checks import check_choice, check_number, check_positive_int
from mmvq.utils.configs import from_preset

__all__ = [
    "CROP_MODES",
    "DURATION_POLICIES",
    "MEL_NORMS",
    "MEL_SCALES",
    "VOCODERS",
    "AudioAdapterConfig",
]

DURATION_POLICIES: tuple[str, ...] = ("pad_crop",)
CROP_MODES: tuple[str, ...] = ("start", "random", "center")
VOCODERS: tuple[str, ...] = ("griffinlim", "custom")
MEL_NORMS: tuple[str | None, ...] = (None, "slaney")
MEL_SCALES: tuple[str, ...] = ("htk", "slaney")

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
    check_positive_int(f"{cls}.{name}", value, fix=f"; e.g. {example}.")


def _positive_float(cls: str, name: str, value: Any, example: str) -> None:
    check_number(f"{cls}.{name}", value, low=0, low_open=True, fix=f"; e.g. {example}.")


def _choice(cls: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    check_choice(f"{cls}.{name}", value, choices, fix=".")


def _sample_rate_in_range(c: str, rate: int) -> None:
    if not 4_000 <= rate <= 384_000:  # audio_utils.MIN_SAMPLE_RATE .. MAX_SAMPLE_RATE
        raise ValueError(
            f"{c}.sample_rate = {rate} Hz is outside the supported range 4000..384000 Hz; use "
            "e.g. 16000 or 24000."
        )


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
        _sample_rate_in_range(c, self.sample_rate)
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
                f"{c}.f_min must be in [0, sample_rate/2 = {self.sample_rate / 2}), got "
                f"{self.f_min!r}."
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
                f"(channel_mult={self.channel_mult}); use e.g. "
                f"n_mels={self.n_mels - self.n_mels % f + f}."
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
        return ConvNetConfig.from_fields(self, in_channels=1)

    def discriminator_config(self) -> PatchGANConfig:
        """The :class:`PatchGANConfig` of the GAN head (one input channel)."""
        return PatchGANConfig.from_fields(self, in_channels=1)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AudioAdapterConfig:
        """A named configuration (``"cpu-small"``, ``"gpu-base"``) with field overrides."""
        return from_preset(cls, _PRESETS, name, overrides)

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by :meth:`preset`."""
        return sorted(_PRESETS)
