"""Tests of mmvq.nn.convnet: shapes, factor, attention placement, GroupNorm reduction, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmvq.nn.convnet import (
    AttnBlock,
    ConvDecoder2d,
    ConvEncoder2d,
    ConvNetConfig,
    downsample_factor,
    group_norm,
)

torch.set_num_threads(1)


def small(**kw) -> ConvNetConfig:
    base = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_at_lowest=False)
    base.update(kw)
    return ConvNetConfig(**base)


@pytest.mark.parametrize(
    "mult,factor", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2, 4), 16)]
)
def test_downsample_factor(mult: tuple[int, ...], factor: int) -> None:
    assert downsample_factor(ConvNetConfig(channel_mult=mult)) == factor


@pytest.mark.parametrize("mult", [(1,), (1, 2), (1, 2, 2), (1, 2, 2, 4)])
@pytest.mark.parametrize("attn", [False, True])
def test_encoder_decoder_shapes(mult: tuple[int, ...], attn: bool) -> None:
    cfg = small(channel_mult=mult, attn_at_lowest=attn)
    f = downsample_factor(cfg)
    enc, dec = ConvEncoder2d(cfg, out_dim=5), ConvDecoder2d(cfg, in_dim=5, out_channels=3)
    x = torch.randn(2, 3, 16, 8)  # non-square
    z = enc(x)
    assert z.shape == (2, 5, 16 // f, 8 // f)
    y = dec(z)
    assert y.shape == (2, 3, 16, 8)
    assert any(isinstance(m, AttnBlock) for m in enc.modules()) == attn
    assert any(isinstance(m, AttnBlock) for m in dec.modules()) == attn


def test_in_channels_and_out_channels() -> None:
    cfg = small(in_channels=1)
    enc, dec = ConvEncoder2d(cfg, 4), ConvDecoder2d(cfg, 4, out_channels=1)
    assert dec(enc(torch.randn(3, 1, 8, 12))).shape == (3, 1, 8, 12)


def test_last_layer_is_final_conv_weight_and_gets_grad() -> None:
    cfg = small()
    enc, dec = ConvEncoder2d(cfg, 4), ConvDecoder2d(cfg, 4, 3)
    assert isinstance(dec.last_layer, nn.Parameter)
    assert dec.last_layer is dec.conv_out.weight
    assert dec.last_layer.shape[0] == 3
    dec(enc(torch.randn(2, 3, 8, 8))).square().mean().backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert dec.last_layer.grad.abs().sum() > 0


def test_attn_block_mixes_positions_and_is_residual() -> None:
    """Self-attention lets one output position see a far-away input; zero proj -> identity."""
    torch.manual_seed(0)
    block = AttnBlock(8, num_groups=4)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    out = block(x)
    (grad,) = torch.autograd.grad(out[0, :, 0, 0].sum(), x)
    assert grad[0, :, 5, 5].abs().sum() > 0  # far corner influences position (0, 0)
    nn.init.zeros_(block.proj.weight)
    nn.init.zeros_(block.proj.bias)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize(
    "channels,groups,expected", [(64, 32, 32), (48, 32, 24), (20, 32, 20), (7, 32, 7), (9, 4, 3)]
)
def test_group_norm_reduces_groups(channels: int, groups: int, expected: int) -> None:
    gn = group_norm(channels, groups)
    assert gn.num_groups == expected and channels % gn.num_groups == 0


def test_encoder_rejects_wrong_channels() -> None:
    enc = ConvEncoder2d(small(), 4)
    with pytest.raises(ValueError, match=r"in_channels"):
        enc(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enc(torch.randn(3, 8, 8))


def test_encoder_rejects_size_not_divisible_by_factor() -> None:
    enc = ConvEncoder2d(small(), 4)  # f = 4
    with pytest.raises(ValueError, match=r"10x8 is not divisible by the downsampling factor 4"):
        enc(torch.randn(1, 3, 10, 8))


def test_decoder_rejects_wrong_in_dim() -> None:
    dec = ConvDecoder2d(small(), 4, 3)
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        dec(torch.randn(1, 6, 2, 2))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(channel_mult=()), "channel_mult"),
        (dict(channel_mult=(1, 0)), "channel_mult"),
        (dict(base_channels=0), "base_channels"),
        (dict(in_channels=-1), "in_channels"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(dropout=1.5), "dropout"),
        (dict(num_groups=0), "num_groups"),
    ],
)
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConvNetConfig(**kw)


def test_config_list_mult_becomes_tuple() -> None:
    assert ConvNetConfig(channel_mult=[1, 2]).channel_mult == (1, 2)
