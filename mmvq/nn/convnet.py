"""Taming-style 2-D convolutional encoder and decoder (modality-agnostic building blocks).

:class:`ConvEncoder2d` maps ``[B, C, H, W]`` to a grid ``[B, out_dim, H/f, W/f]`` and
:class:`ConvDecoder2d` maps such a grid back to ``[B, out_channels, h*f, w*f]``, where the
downsampling factor ``f = 2 ** (len(channel_mult) - 1)``. The blocks follow the VQGAN recipe
(Esser et al., "Taming Transformers"): GroupNorm + SiLU residual blocks, a strided 3x3 conv to
downsample, nearest upsampling + 3x3 conv to upsample, and single-head self-attention at the
lowest resolution. The image adapter uses them on pixels; the audio adapter on spectrograms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mmvq.utils.checks import check_int, check_positive_int, is_int

__all__ = [
    "AttnBlock",
    "ConvDecoder2d",
    "ConvEncoder2d",
    "ConvNetConfig",
    "ResnetBlock",
    "downsample_factor",
    "group_norm",
]


@dataclass
class ConvNetConfig:
    """Shape of a :class:`ConvEncoder2d` / :class:`ConvDecoder2d`.

    Attributes:
        in_channels: channels of the encoder's input (3 for RGB, 1 for a spectrogram).
        base_channels: channels of the first level; level ``i`` has ``base * channel_mult[i]``.
        channel_mult: channel multiplier per level; the downsampling factor is
            ``2 ** (len(channel_mult) - 1)``.
        num_res_blocks: residual blocks per level (the decoder uses one more, like taming).
        attn_at_lowest: self-attention block(s) at the lowest resolution (after each residual
            block of the lowest level and in the middle block).
        dropout: dropout inside residual blocks.
        num_groups: GroupNorm groups, reduced automatically to the largest divisor of the
            channel count that is not above it.
    """

    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_at_lowest: bool = True
    dropout: float = 0.0
    num_groups: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.channel_mult, list):
            self.channel_mult = tuple(self.channel_mult)
        for name in ("in_channels", "base_channels", "num_groups"):
            check_positive_int(f"ConvNetConfig.{name}", getattr(self, name), fix=".")
        check_int(
            "ConvNetConfig.num_res_blocks",
            self.num_res_blocks,
            minimum=1,
            fix="; use e.g. 1 (small) or 2 (taming).",
        )
        if (
            not isinstance(self.channel_mult, tuple)
            or len(self.channel_mult) == 0
            or not all(is_int(m) and m > 0 for m in self.channel_mult)
        ):
            raise ValueError(
                f"ConvNetConfig.channel_mult must be a non-empty tuple of positive ints, got "
                f"{self.channel_mult!r}; e.g. (1, 2, 2) for a downsampling factor of 4."
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= float(self.dropout) < 1.0):
            raise ValueError(
                f"ConvNetConfig.dropout must be a float in [0, 1), got {self.dropout!r}."
            )

    @classmethod
    def from_fields(cls, source: Any, in_channels: int) -> ConvNetConfig:
        """The config from an adapter config's fields of the same names (``base_channels``,
        ``channel_mult``, ``num_res_blocks``, ``attn_at_lowest``, ``dropout``, ``num_groups``)."""
        return cls(
            in_channels=in_channels,
            base_channels=source.base_channels,
            channel_mult=tuple(source.channel_mult),
            num_res_blocks=source.num_res_blocks,
            attn_at_lowest=source.attn_at_lowest,
            dropout=source.dropout,
            num_groups=source.num_groups,
        )


def downsample_factor(config: ConvNetConfig) -> int:
    """The spatial downsampling factor ``f = 2 ** (len(channel_mult) - 1)``."""
    return 2 ** (len(config.channel_mult) - 1)


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= num_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` with a 1x1 shortcut when channels change."""

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float, num_groups: int
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut: nn.Module = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions of a feature map (residual)."""

    def __init__(self, channels: int, num_groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        out = out.squeeze(1).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with an asymmetric pad and a strided 3x3 conv (as in taming)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution with nearest-neighbour interpolation and a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(
    in_ch: int, out_ch: int, n_blocks: int, attn: bool, config: ConvNetConfig
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n_blocks):
        layers.append(ResnetBlock(in_ch, out_ch, config.dropout, config.num_groups))
        if attn:
            layers.append(AttnBlock(out_ch, config.num_groups))
        in_ch = out_ch
    return nn.Sequential(*layers)


def _mid(channels: int, config: ConvNetConfig) -> nn.Sequential:
    layers: list[nn.Module] = [ResnetBlock(channels, channels, config.dropout, config.num_groups)]
    if config.attn_at_lowest:
        layers.append(AttnBlock(channels, config.num_groups))
    layers.append(ResnetBlock(channels, channels, config.dropout, config.num_groups))
    return nn.Sequential(*layers)


class ConvEncoder2d(nn.Module):
    """``[B, in_channels, H, W] -> [B, out_dim, H/f, W/f]`` (``H`` and ``W`` divisible by ``f``)."""

    def __init__(self, config: ConvNetConfig, out_dim: int) -> None:
        super().__init__()
        check_positive_int("ConvNetConfig.out_dim (ConvEncoder2d argument)", out_dim, fix=".")
        self.config = config
        self.out_dim = out_dim
        self.factor = downsample_factor(config)
        mults = config.channel_mult
        ch = config.base_channels
        self.conv_in = nn.Conv2d(config.in_channels, ch * mults[0], 3, padding=1)
        blocks: list[nn.Module] = []
        in_ch = ch * mults[0]
        last = len(mults) - 1
        for i, mult in enumerate(mults):
            out_ch = ch * mult
            attn = config.attn_at_lowest and i == last
            blocks.append(_level(in_ch, out_ch, config.num_res_blocks, attn, config))
            if i != last:
                blocks.append(Downsample(out_ch))
            in_ch = out_ch
        self.down = nn.Sequential(*blocks)
        self.mid = _mid(in_ch, config)
        self.norm_out = group_norm(in_ch, config.num_groups)
        self.conv_out = nn.Conv2d(in_ch, out_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"ConvEncoder2d expects x of shape [B, {self.config.in_channels}, H, W], got "
                f"{tuple(x.shape)}; set ConvNetConfig.in_channels to the input's channel count."
            )
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"ConvEncoder2d input size {h}x{w} is not divisible by the downsampling factor "
                f"{self.factor} (channel_mult={self.config.channel_mult}); resize or pad the input "
                f"to a multiple of {self.factor}."
            )
        h_ = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h_)))


class ConvDecoder2d(nn.Module):
    """``[B, in_dim, h, w] -> [B, out_channels, h*f, w*f]``, mirroring :class:`ConvEncoder2d`."""

    def __init__(self, config: ConvNetConfig, in_dim: int, out_channels: int) -> None:
        super().__init__()
        check_positive_int("ConvNetConfig.in_dim (ConvDecoder2d argument)", in_dim, fix=".")
        check_positive_int(
            "ConvNetConfig.out_channels (ConvDecoder2d argument)", out_channels, fix="."
        )
        self.config = config
        self.in_dim = in_dim
        self.factor = downsample_factor(config)
        mults = config.channel_mult
        ch = config.base_channels
        in_ch = ch * mults[-1]
        self.conv_in = nn.Conv2d(in_dim, in_ch, 3, padding=1)
        self.mid = _mid(in_ch, config)
        blocks: list[nn.Module] = []
        last = len(mults) - 1
        for i in reversed(range(len(mults))):
            out_ch = ch * mults[i]
            attn = config.attn_at_lowest and i == last
            blocks.append(_level(in_ch, out_ch, config.num_res_blocks + 1, attn, config))
            if i != 0:
                blocks.append(Upsample(out_ch))
            in_ch = out_ch
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(in_ch, config.num_groups)
        self.conv_out = nn.Conv2d(in_ch, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> nn.Parameter:
        """The final conv's weight (for the VQGAN adaptive GAN weight)."""
        return self.conv_out.weight

    def forward(self, h: Tensor) -> Tensor:
        if h.dim() != 4 or h.shape[1] != self.in_dim:
            raise ValueError(
                f"ConvDecoder2d expects h of shape [B, {self.in_dim}, h, w], got {tuple(h.shape)}."
            )
        x = self.up(self.mid(self.conv_in(h)))
        return self.conv_out(F.silu(self.norm_out(x)))
