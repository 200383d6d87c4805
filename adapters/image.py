"""The built-in ``image`` adapter: RGB images <-> a grid of tokens in the shared code space.

Registered through the ``mmvq.adapters`` entry point ``image = mmvq_adapters.image:ImageAdapter``
(exactly as a third-party plugin would be).

* Data side: :func:`mmvq_adapters.image_utils.load_image` accepts PIL images, paths, bytes,
  arrays and tensors; ``torchvision.transforms.v2`` resizes the shorter side to
  ``resolution`` and crops (center, or random with ``random_crop``); pixels end in ``[-1, 1]``.
  Batch key: ``pixel_values`` ``[B, 3, R, R]``.
* Model side: a taming-style :class:`~mmvq.nn.convnet.ConvEncoder2d` maps the image to a grid
  ``[B, D, R/f, R/f]`` whose cells, row-major, are the ``(R/f)^2`` tokens (all real: the mask
  is all True); :class:`~mmvq.nn.convnet.ConvDecoder2d` maps hidden states back to pixels.
* Loss: L1 or L2 per sample, plus an optional LPIPS-like perceptual term from local VGG16
  weights (:mod:`mmvq_adapters.image_perceptual`; nothing is downloaded).
* GAN head: a :class:`~mmvq.nn.gan.PatchGANDiscriminator` on pixels.
* Metrics: PSNR and SSIM (torchmetrics) on ``[0, 1]`` images.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2 as T
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from mmvq.adapter import (
    AdapterConfig,
    AdapterInputError,
    BadInput,
    DataColumn,
    ModalityAdapter,
    Tokens,
)
from mmvq.nn.convnet import ConvDecoder2d, ConvEncoder2d, ConvNetConfig, downsample_factor
from mmvq.nn.gan import NORMS, PatchGANConfig, PatchGANDiscriminator
from mmvq.utils.checks import check_choice, check_positive_int, is_int
from mmvq.utils.configs import from_preset
from mmvq_adapters.image_perceptual import VGGPerceptualLoss, missing_weights_message
from mmvq_adapters.image_utils import load_image, save_image_grid, to_pil_images

__all__ = ["IMAGE_PRESETS", "ImageAdapter", "ImageAdapterConfig", "save_image_grid"]

LOSSES = ("l1", "l2")

IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    # 32 px, f = 4 -> 8x8 = 64 tokens; about 1M parameters: trains on a 2-core CPU in minutes.
    "cpu-small": dict(
        resolution=32,
        base_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_at_lowest=False,
        disc_base_channels=32,
        disc_num_layers=3,
    ),
    # taming VQGAN scale: 256 px, f = 16 -> 16x16 = 256 tokens.
    "gpu-base": dict(
        code_dim=256,
        resolution=256,
        base_channels=128,
        channel_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_at_lowest=True,
        disc_base_channels=64,
        disc_num_layers=3,
    ),
}


@dataclass
class ImageAdapterConfig(AdapterConfig):
    """Configuration of :class:`ImageAdapter` (JSON-serialisable; stored on the Hub).

    Defaults equal the ``"cpu-small"`` preset; see :meth:`preset`.

    Attributes:
        code_dim: shared code dimension ``D`` (must match the codebook).
        resolution: side ``R`` of the square images the model sees; a multiple of the
            downsampling factor ``f = 2 ** (len(channel_mult) - 1)``.
        random_crop: random instead of center crop after resizing (training augmentation).
        base_channels, channel_mult, num_res_blocks, attn_at_lowest, dropout, num_groups:
            the encoder/decoder shape (:class:`mmvq.nn.convnet.ConvNetConfig`).
        loss: pixel loss, ``"l1"`` or ``"l2"``, averaged per sample.
        perceptual_weight: weight of the LPIPS-like VGG16 term (0 disables it).
        perceptual_weights_path: local VGG16 state dict (``.pth``/``.pt``/``.safetensors``);
            required when ``perceptual_weight > 0``. Nothing is ever downloaded.
        disc_base_channels, disc_num_layers, disc_norm: the PatchGAN discriminator
            (:class:`mmvq.nn.gan.PatchGANConfig`); ``resolution >= 3 * 2 ** disc_num_layers``.
    """

    resolution: int = 32
    random_crop: bool = False
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_at_lowest: bool = False
    dropout: float = 0.0
    num_groups: int = 32
    loss: str = "l1"
    perceptual_weight: float = 0.0
    perceptual_weights_path: str | None = None
    disc_base_channels: int = 32
    disc_num_layers: int = 3
    disc_norm: str = "batch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.channel_mult, list):
            self.channel_mult = tuple(self.channel_mult)
        name = type(self).__name__
        try:
            net = self.convnet_config()
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        f = downsample_factor(net)
        if not is_int(self.resolution) or self.resolution <= 0 or self.resolution % f:
            raise ValueError(
                f"{name}.resolution must be a positive multiple of the downsampling factor {f} "
                f"(channel_mult={self.channel_mult}), got {self.resolution!r}; e.g. "
                f"resolution={max(f, 32 // f * f)}."
            )
        check_choice(f"{name}.loss", self.loss, LOSSES, fix=".")
        if not isinstance(self.perceptual_weight, (int, float)) or self.perceptual_weight < 0:
            raise ValueError(
                f"{name}.perceptual_weight must be a float >= 0, got {self.perceptual_weight!r}; "
                "use 0.0 to disable the perceptual loss."
            )
        check_choice(f"{name}.disc_norm", self.disc_norm, NORMS, fix=".")
        for field in ("disc_base_channels", "disc_num_layers"):
            check_positive_int(f"{name}.{field}", getattr(self, field), fix=".")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ImageAdapterConfig:
        """A named configuration (``"cpu-small"``, ``"gpu-base"``) with field overrides."""
        return from_preset(cls, IMAGE_PRESETS, name, overrides)

    def convnet_config(self) -> ConvNetConfig:
        """The encoder/decoder shape as a :class:`~mmvq.nn.convnet.ConvNetConfig`."""
        return ConvNetConfig.from_fields(self, in_channels=3)

    def patchgan_config(self) -> PatchGANConfig:
        """The discriminator shape as a :class:`~mmvq.nn.gan.PatchGANConfig`."""
        return PatchGANConfig.from_fields(self, in_channels=3)


class ImageAdapter(ModalityAdapter):
    """RGB images through a taming-style conv encoder/decoder; tokens are grid cells."""

    config_class: ClassVar[type[AdapterConfig]] = ImageAdapterConfig
    # a dataset column holds PIL images (datasets.Image) or file paths to resolve
    data_column: ClassVar[DataColumn] = DataColumn(file_paths=True)
    headline_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim")
    sample_format: ClassVar[str | None] = "png"
    config: ImageAdapterConfig

    def __init__(self, config: ImageAdapterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        net = cfg.convnet_config()
        self.factor = downsample_factor(net)
        self.grid = cfg.resolution // self.factor
        self.encoder = ConvEncoder2d(net, out_dim=cfg.code_dim)
        self.decoder = ConvDecoder2d(net, in_dim=cfg.code_dim, out_channels=3)
        crop = T.RandomCrop if cfg.random_crop else T.CenterCrop
        self.transform = T.Compose(
            [
                T.ToDtype(torch.float32, scale=True),
                T.Resize(cfg.resolution, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                crop(cfg.resolution),
            ]
        )
        # Frozen and rebuilt from the local file, so kept out of the module tree: it is not
        # part of the adapter's state dict, parameters or optimiser.
        self._perceptual: list[VGGPerceptualLoss] = []
        if cfg.perceptual_weight > 0:
            path = cfg.perceptual_weights_path
            if path is None:
                raise ValueError(missing_weights_message(cfg.perceptual_weight, None))
            if not Path(path).is_file():
                raise FileNotFoundError(missing_weights_message(cfg.perceptual_weight, path))
            self._perceptual.append(VGGPerceptualLoss(path))

    # ------------------------------------------------------------------ data side
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        """One raw image -> ``{"pixel_values": [3, R, R] float in [-1, 1]}``."""
        image = load_image(example)
        h, w = image.shape[-2:]
        if min(h, w) < self.factor:
            raise AdapterInputError(
                f"image: size {h}x{w} is smaller than the downsampling factor {self.factor} "
                f"(channel_mult={self.config.channel_mult}); pass an image at least "
                f"{self.factor}x{self.factor} px (ideally >= {self.config.resolution} px)."
            )
        pixels = self.transform(image).clamp(0.0, 1.0)
        return {"pixel_values": pixels * 2.0 - 1.0}

    def preprocess_is_deterministic(self) -> bool:
        """Deterministic unless the config crops at random (``random_crop``)."""
        return not self.config.random_crop

    def bad_inputs(self) -> list[BadInput]:
        """Inputs that :meth:`preprocess` rejects (run by ``mmvq.testing.check_adapter``)."""
        not_image = Path(tempfile.gettempdir()) / "mmvq_image_bad_input_not_an_image.txt"
        if not not_image.exists():
            not_image.write_text("this is text, not an image\n")
        f = self.factor
        return [
            BadInput("5-channel numpy array", np.zeros((8, 8, 5), np.uint8), "5 channels"),
            BadInput("5-channel tensor", torch.zeros(5, 8, 8), "5 channels"),
            BadInput("1-D numpy array", np.zeros(16, np.uint8), "rank 1"),
            BadInput("4-D tensor (a batch)", torch.zeros(2, 3, 8, 8), "rank 4"),
            BadInput("channels-first numpy array", np.zeros((3, 8, 8), np.uint8), "transpose"),
            BadInput("float tensor outside [0, 1]", torch.full((3, 8, 8), 255.0), "[0, 1]"),
            BadInput("int64 tensor", torch.zeros(3, 8, 8, dtype=torch.int64), "uint8"),
            BadInput(
                "image smaller than the downsampling factor",
                np.zeros((f - 1 if f > 1 else 0, 8, 3), np.uint8),
                "smaller than the downsampling factor",
            ),
            BadInput("text file path", str(not_image), "not an image"),
            BadInput("missing file path", "/nonexistent/mmvq/no_such_image.png", "does not exist"),
            BadInput("bytes that are no image", b"plain text", "not an image"),
            BadInput("unsupported type (int)", 42, "unsupported type int"),
        ]

    # ----------------------------------------------------------------- model side
    def num_tokens(self) -> int:
        """``(resolution / f) ** 2`` grid cells."""
        return self.grid * self.grid

    def _pixels(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch.get("pixel_values") if isinstance(batch, dict) else None
        r = self.config.resolution
        if x is not None and not isinstance(x, Tensor):
            raise AdapterInputError(
                f"batch['pixel_values'] is a {type(x).__module__}.{type(x).__name__}, not a torch "
                "tensor; build batches with adapter.collate([adapter.preprocess(image), ...]) "
                "(or torch.as_tensor(x, dtype=torch.float32))."
            )
        if isinstance(x, Tensor) and not x.is_floating_point():
            raise AdapterInputError(
                f"batch['pixel_values'] has dtype {x.dtype}; pixel values must be float in "
                "[-1, 1] as adapter.preprocess makes them (uint8 0..255: x.float() / 127.5 - 1)."
            )
        weight = self.encoder.conv_in.weight if hasattr(self.encoder, "conv_in") else None
        autocast = isinstance(x, Tensor) and torch.is_autocast_enabled(x.device.type)
        if (
            isinstance(x, Tensor)
            and weight is not None
            and x.dtype != weight.dtype
            and (not autocast or x.dtype == torch.float64)
        ):
            raise AdapterInputError(
                f"batch['pixel_values'] has dtype {x.dtype} but the image encoder's weights "
                f"are {weight.dtype}; pass x.to({weight.dtype}) (preprocess makes float32)."
            )
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, r, r):
            got = (
                tuple(x.shape)
                if isinstance(x, Tensor)
                else (sorted(batch) if isinstance(batch, dict) else type(batch).__name__)
            )
            raise AdapterInputError(
                f"batch['pixel_values'] must be a float tensor [B, 3, {r}, {r}], got {got}; "
                "build batches with adapter.collate([adapter.preprocess(image), ...])."
            )
        return x

    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        """``pixel_values [B, 3, R, R]`` -> ``Tokens(z [B, (R/f)^2, D], mask all True)``."""
        x = self._pixels(batch).to(self.target_device())
        grid = self.encoder(x)  # [B, D, R/f, R/f]
        z = grid.flatten(2).transpose(1, 2)  # row-major cells
        mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        return Tokens(z=z, mask=mask)

    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        """``h [B, (R/f)^2, D]`` -> reconstruction ``[B, 3, R, R]`` (roughly in ``[-1, 1]``)."""
        n, d = self.num_tokens(), self.config.code_dim
        if h.dim() != 3 or tuple(h.shape[1:]) != (n, d):
            raise AdapterInputError(
                f"ImageAdapter.decode expects h of shape [B, {n}, {d}] (num_tokens, code_dim), "
                f"got {tuple(h.shape)}."
            )
        grid = h.transpose(1, 2).reshape(h.shape[0], d, self.grid, self.grid)
        return self.decoder(grid)

    def _check_recon(self, x: Tensor, recon: Tensor) -> None:
        if recon.shape != x.shape:
            raise AdapterInputError(
                f"image reconstruction has shape {tuple(recon.shape)} but pixel_values has "
                f"{tuple(x.shape)}; pass the output of ImageAdapter.decode for this batch."
            )

    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        """Per-sample L1/L2 pixel loss ``[B]`` (+ ``perceptual_weight`` x VGG distance)."""
        x = self._pixels(batch).to(recon.device)
        self._check_recon(x, recon)
        diff = recon.float() - x.float()
        per_pixel = diff.abs() if self.config.loss == "l1" else diff.square()
        loss = per_pixel.mean(dim=(1, 2, 3))
        if self._perceptual:
            vgg = self._perceptual[0].to(recon.device)
            loss = loss + self.config.perceptual_weight * vgg(recon.float(), x.float()).float()
        return loss

    @torch.no_grad()
    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        """``{"psnr": dB, "ssim": ...}``: means over the images (rows with ``present`` only)."""
        x = self._pixels(batch).to(recon.device)
        self._check_recon(x, recon)
        present = batch.get("present")
        if isinstance(present, Tensor) and present.dtype == torch.bool:
            x, recon = x[present.to(x.device)], recon[present.to(x.device)]
        if x.shape[0] == 0:
            return {}
        target = ((x.float() + 1) / 2).clamp(0, 1)
        preds = ((recon.float() + 1) / 2).clamp(0, 1)
        side = min(target.shape[-2:])
        kernel = min(11, side if side % 2 else side - 1)
        psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(
            preds, target, data_range=1.0, kernel_size=kernel
        )
        return {"psnr": float(psnr), "ssim": float(ssim)}

    def postprocess(self, recon: Tensor) -> list[PIL.Image.Image]:
        """Reconstructions ``[B, 3, R, R]`` in ``[-1, 1]`` -> RGB PIL images."""
        return to_pil_images(recon, value_range=(-1.0, 1.0))

    # ------------------------------------------------------------------- GAN head
    def discriminator(self) -> nn.Module:
        """A fresh :class:`~mmvq.nn.gan.PatchGANDiscriminator` on ``[B, 3, R, R]`` pixels."""
        cfg = self.config.patchgan_config()
        if self.config.resolution < cfg.min_input_size:
            raise ValueError(
                f"ImageAdapterConfig.disc_num_layers={cfg.num_layers} needs images of at least "
                f"{cfg.min_input_size} px but resolution={self.config.resolution}; lower "
                "disc_num_layers."
            )
        return PatchGANDiscriminator(cfg)

    def gan_inputs(self, batch: dict[str, Tensor], recon: Tensor) -> tuple[Tensor, Tensor]:
        """``(real, fake)`` = ``(pixel_values, recon)``."""
        x = self._pixels(batch).to(recon.device)
        self._check_recon(x, recon)
        return x.to(recon.dtype), recon

    def last_layer(self) -> Tensor:
        """The decoder's final conv weight (for the VQGAN adaptive weight)."""
        return self.decoder.last_layer
