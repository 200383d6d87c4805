"""GAN head building blocks: a PatchGAN discriminator, GAN losses and the VQGAN adaptive weight.

Modality-agnostic: the discriminator judges any ``[B, C, H, W]`` map (pixels, spectrograms).
Follows pix2pix / taming (Esser et al.): ``NLayerDiscriminator`` with 4x4 convs and LeakyReLU,
``N(0, 0.02)`` weight init, hinge or non-saturating loss, and the adaptive weight
``||grad_last(rec)|| / (||grad_last(gan)|| + delta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvq.nn.convnet import group_norm
from mmvq.utils.checks import check_choice, check_positive_int

__all__ = [
    "GAN_LOSS_KINDS",
    "NORMS",
    "PatchGANConfig",
    "PatchGANDiscriminator",
    "adaptive_weight",
    "d_loss",
    "generator_loss",
    "hinge_d_loss",
    "nonsaturating_d_loss",
    "warmup_factor",
    "weights_init",
]

NORMS: tuple[str, ...] = ("batch", "group", "instance", "none")
GAN_LOSS_KINDS: tuple[str, ...] = ("hinge", "non-saturating")
_KIND_ALIASES = {
    "hinge": "hinge",
    "non-saturating": "non-saturating",
    "nonsaturating": "non-saturating",
    "vanilla": "non-saturating",
}


@dataclass
class PatchGANConfig:
    """Shape of a :class:`PatchGANDiscriminator`.

    Attributes:
        in_channels: channels of the judged map (3 for RGB).
        base_channels: channels of the first conv (``ndf``); doubled per layer up to 8x.
        num_layers: strided 4x4 conv layers; each halves the resolution. The input's sides must
            be at least ``3 * 2 ** num_layers`` pixels.
        norm: ``"batch"`` (taming), ``"group"``, ``"instance"`` or ``"none"``.
    """

    in_channels: int = 3
    base_channels: int = 64
    num_layers: int = 3
    norm: str = "batch"

    def __post_init__(self) -> None:
        for name in ("in_channels", "base_channels", "num_layers"):
            check_positive_int(f"PatchGANConfig.{name}", getattr(self, name), fix=".")
        check_choice("PatchGANConfig.norm", self.norm, NORMS, fix=".")

    @classmethod
    def from_fields(cls, source: Any, in_channels: int) -> PatchGANConfig:
        """The config from an adapter config's ``disc_base_channels``, ``disc_num_layers`` and
        ``disc_norm``."""
        return cls(
            in_channels=in_channels,
            base_channels=source.disc_base_channels,
            num_layers=source.disc_num_layers,
            norm=source.disc_norm,
        )

    @property
    def min_input_size(self) -> int:
        """Smallest input side that leaves at least one output logit."""
        return 3 * 2**self.num_layers


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return group_norm(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.Identity()


def weights_init(module: nn.Module) -> None:
    """pix2pix/taming init: convs ``N(0, 0.02)``; norm scales ``N(1, 0.02)``, biases 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PatchGANDiscriminator(nn.Module):
    """PatchGAN (pix2pix ``NLayerDiscriminator``): ``[B, C, H, W] -> logits [B, 1, h, w]``.

    Each output logit judges one overlapping patch; ``h = H // 2**num_layers - 2``.
    """

    def __init__(self, config: PatchGANConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else PatchGANConfig()
        ndf, kw, pad = config.base_channels, 4, 1
        use_bias = config.norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, ndf, kw, stride=2, padding=pad),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, config.num_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=pad, bias=use_bias),
                _norm(config.norm, ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        prev, mult = mult, min(2**config.num_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=pad, bias=use_bias),
            _norm(config.norm, ndf * mult),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=pad),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"PatchGANDiscriminator expects x of shape [B, {cfg.in_channels}, H, W], got "
                f"{tuple(x.shape)}; set PatchGANConfig.in_channels to the input's channels."
            )
        if min(x.shape[-2:]) < cfg.min_input_size:
            raise ValueError(
                f"PatchGANDiscriminator input {tuple(x.shape[-2:])} is smaller than "
                f"{cfg.min_input_size} px (3 * 2**num_layers with num_layers={cfg.num_layers}); "
                "lower PatchGANConfig.num_layers or feed larger inputs."
            )
        return self.main(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge discriminator loss ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def nonsaturating_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Non-saturating (BCE) discriminator loss ``0.5 * (softplus(-real) + softplus(fake))``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def _kind(kind: str) -> str:
    try:
        return _KIND_ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"GAN loss kind must be one of {GAN_LOSS_KINDS} (aliases: 'nonsaturating', "
            f"'vanilla'), got {kind!r}."
        ) from None


def generator_loss(logits_fake: Tensor, kind: str = "hinge") -> Tensor:
    """Generator loss: hinge ``-mean(logits)``; non-saturating ``mean(softplus(-logits))``."""
    if _kind(kind) == "hinge":
        return -logits_fake.mean()
    return F.softplus(-logits_fake).mean()


def d_loss(logits_real: Tensor, logits_fake: Tensor, kind: str = "hinge") -> Tensor:
    """Discriminator loss of the given ``kind`` (see :data:`GAN_LOSS_KINDS`)."""
    if _kind(kind) == "hinge":
        return hinge_d_loss(logits_real, logits_fake)
    return nonsaturating_d_loss(logits_real, logits_fake)


def adaptive_weight(
    rec_loss: Tensor,
    gan_loss: Tensor,
    last_layer: Tensor,
    delta: float = 1e-4,
    max_weight: float = 1e4,
) -> Tensor:
    """VQGAN adaptive GAN weight ``||grad_last(rec)|| / (||grad_last(gan)|| + delta)``.

    Gradients are taken w.r.t. ``last_layer`` (the decoder's final weight) with
    ``retain_graph=True`` so the caller can still back-propagate both losses. The result is
    computed in fp32, clamped to ``[0, max_weight]`` and detached.

    When there is no graph (e.g. evaluation under ``torch.no_grad``) the weight is 0, as in
    taming. If the graph exists but ``last_layer`` is not part of it, that is a wiring bug and a
    ``ValueError`` says so.
    """
    if not (rec_loss.requires_grad and gan_loss.requires_grad):
        return torch.zeros((), device=rec_loss.device)
    if not last_layer.requires_grad:
        raise ValueError(
            "adaptive_weight: last_layer does not require grad; pass the decoder's final weight "
            "(adapter.last_layer()) of a model in training mode."
        )
    (rec_grad,) = torch.autograd.grad(
        [rec_loss], [last_layer], retain_graph=True, allow_unused=True
    )
    (gan_grad,) = torch.autograd.grad(
        [gan_loss], [last_layer], retain_graph=True, allow_unused=True
    )
    if rec_grad is None or gan_grad is None:
        which = "rec_loss" if rec_grad is None else "gan_loss"
        raise ValueError(
            f"adaptive_weight: {which} does not depend on last_layer; pass the weight of the "
            "decoder layer that produced the reconstruction the losses were computed on."
        )
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + delta)
    return weight.clamp(0.0, max_weight).detach()


def warmup_factor(step: int, start: int) -> float:
    """GAN warm-up gate: ``0.0`` before ``start`` steps, ``1.0`` from then on."""
    return 0.0 if step < start else 1.0
