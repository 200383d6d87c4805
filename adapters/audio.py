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
rounded up to a multiple of the encoder's downsampling factor ``f``. Model side: a taming-style
:class:`mmvq.nn.convnet.ConvEncoder2d` over the ``n_mels x T`` image (downsampling both axes
by ``f``); tokens are the ``(n_mels/f) x (T/f)`` grid in row-major order (mel row, then time
column) in ``code_dim``; a token is real when its time column covers at least one real frame.
:class:`mmvq.nn.convnet.ConvDecoder2d` maps tokens back to the normalised log-mel.
:meth:`AudioAdapter.postprocess` inverts it to waveforms with Griffin-Lim
(:class:`torchaudio.transforms.InverseMelScale` + :class:`torchaudio.transforms.GriffinLim`), or
with a neural vocoder given to :meth:`AudioAdapter.set_vocoder`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
from mmvq.nn.convnet import ConvDecoder2d, ConvEncoder2d
from mmvq.nn.gan import PatchGANDiscriminator
from mmvq_adapters.audio_config import (
    CROP_MODES,
    DURATION_POLICIES,
    VOCODERS,
    AudioAdapterConfig,
)
from mmvq_adapters.audio_utils import load_waveform, resample, resampled_length, save_wav

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

#: A vocoder maps a linear mel spectrogram ``[B, n_mels, T]`` (the scale ``MelSpectrogram``
#: produces: magnitude for ``power=1``, power for ``power=2``) to waveforms: a ``[B, L]``
#: tensor/array or a list of 1-D arrays at ``config.sample_rate``.
Vocoder = Callable[[Tensor], "Tensor | np.ndarray | Sequence[np.ndarray | Tensor]"]

_MAX_LOG = 20.0  # cap on the de-normalised log-mel before exp (keeps exp finite)


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
        wave = load_waveform(example)
        # crop before resampling: only the kept window is resampled, whatever the clip's length
        start, length = self._crop(
            resampled_length(wave.samples.numel(), wave.sample_rate, cfg.sample_rate)
        )
        samples = resample(wave, cfg.sample_rate, start=start, length=length).samples
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

    def _crop(self, n: int) -> tuple[int, int]:
        """``(start, length)`` of the part of a clip of ``n`` samples (at the config's rate)
        that is kept: all of it, or ``num_samples`` as ``crop`` says."""
        cfg = self.config
        target = cfg.num_samples
        if n <= target:
            return 0, n
        extra = n - target
        if cfg.crop == "start":
            start = 0
        elif cfg.crop == "center":
            start = extra // 2
        else:
            start = int(torch.randint(0, extra + 1, ()).item())
        return start, target

    def preprocess_is_deterministic(self) -> bool:
        """Deterministic unless long clips are cropped at random (``crop="random"``)."""
        return self.config.crop != "random"

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
            BadInput(
                "sample rate 1 Hz", {"array": tone, "sampling_rate": 1}, "outside the supported"
            ),
            BadInput("sample rate 1 GHz", (tone, 10**9), "outside the supported range"),
            BadInput("float samples x1000", {"array": tone * 1000, "sampling_rate": sr}, "[-1, 1]"),
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
