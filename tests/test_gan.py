"""Tests of mmvq.nn.gan: PatchGAN shapes/init/errors, GAN losses, adaptive weight, warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvq.nn.gan import (
    NORMS,
    PatchGANConfig,
    PatchGANDiscriminator,
    adaptive_weight,
    d_loss,
    generator_loss,
    hinge_d_loss,
    nonsaturating_d_loss,
    warmup_factor,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------ discriminator
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("num_layers,size", [(1, 8), (2, 16), (3, 32), (3, 24)])
def test_patchgan_output_shape(norm: str, num_layers: int, size: int) -> None:
    cfg = PatchGANConfig(in_channels=3, base_channels=8, num_layers=num_layers, norm=norm)
    disc = PatchGANDiscriminator(cfg)
    out = disc(torch.randn(2, 3, size, size + 2**num_layers))
    side = size // 2**num_layers - 2
    assert out.shape == (2, 1, side, side + 1)


def test_patchgan_in_channels_and_channel_cap() -> None:
    disc = PatchGANDiscriminator(PatchGANConfig(in_channels=1, base_channels=4, num_layers=5))
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1
    assert max(c.out_channels for c in convs) == 4 * 8  # capped at 8x like pix2pix
    assert disc(torch.randn(1, 1, 96, 96)).shape == (1, 1, 1, 1)


def test_patchgan_weights_init() -> None:
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(PatchGANConfig(base_channels=64, num_layers=3, norm="batch"))
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda c: c.weight.numel())
    assert abs(big.weight.std().item() - 0.02) < 0.002
    assert abs(big.weight.mean().item()) < 0.002
    bns = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3
    for bn in bns:
        assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0
    # Convs followed by BatchNorm carry no bias (taming); the first and last do.
    assert convs[0].bias is not None and convs[-1].bias is not None
    assert all(c.bias is None for c in convs[1:-1])


@pytest.mark.parametrize("norm", ["group", "instance", "none"])
def test_patchgan_non_batch_norms_use_bias(norm: str) -> None:
    disc = PatchGANDiscriminator(PatchGANConfig(base_channels=8, norm=norm))
    assert all(m.bias is not None for m in disc.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())


def test_patchgan_rejects_small_input() -> None:
    disc = PatchGANDiscriminator(PatchGANConfig(base_channels=8, num_layers=3))
    with pytest.raises(ValueError, match=r"smaller than 24 px.*num_layers"):
        disc(torch.randn(1, 3, 16, 16))


def test_patchgan_rejects_wrong_channels() -> None:
    disc = PatchGANDiscriminator(PatchGANConfig(base_channels=8))
    with pytest.raises(ValueError, match=r"in_channels"):
        disc(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        disc(torch.randn(3, 32, 32))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(norm="layer"), "norm must be one of"),
        (dict(num_layers=0), "num_layers"),
        (dict(base_channels=-2), "base_channels"),
        (dict(in_channels=0), "in_channels"),
    ],
)
def test_patchgan_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PatchGANConfig(**kw)


def test_discriminator_learns_to_separate() -> None:
    """A few Adam steps on hinge loss separate smooth 'real' images from noise 'fakes'."""
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(PatchGANConfig(base_channels=8, num_layers=2, norm="group"))
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    ramp = torch.linspace(-1, 1, 16)
    real = (ramp[None, :] * ramp[:, None]).expand(4, 3, 16, 16)
    first = None
    for _ in range(40):
        fake = torch.randn(4, 3, 16, 16)
        loss = hinge_d_loss(disc(real), disc(fake))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = hinge_d_loss(disc(real), disc(torch.randn(4, 3, 16, 16))).item()
    assert final < 0.2 < first, (first, final)


# ------------------------------------------------------------------------ losses
def test_hinge_d_loss_values() -> None:
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    expected = 0.5 * ((1 - real).clamp(min=0).mean() + (1 + fake).clamp(min=0).mean())
    torch.testing.assert_close(hinge_d_loss(real, fake), expected)
    # Confident, correct logits beyond the margin give zero loss; undecided ones give 1.
    assert hinge_d_loss(torch.full((2,), 3.0), torch.full((2,), -3.0)).item() == 0.0
    assert hinge_d_loss(torch.zeros(2), torch.zeros(2)).item() == 1.0


def test_nonsaturating_d_loss_is_bce() -> None:
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    bce = F.binary_cross_entropy_with_logits
    expected = 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(nonsaturating_d_loss(real, fake), expected)


def test_generator_loss_kinds() -> None:
    fake = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(generator_loss(fake), -fake.mean())
    torch.testing.assert_close(generator_loss(fake, "hinge"), -fake.mean())
    bce = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    for kind in ("non-saturating", "nonsaturating", "vanilla"):
        torch.testing.assert_close(generator_loss(fake, kind), bce)


def test_d_loss_dispatch() -> None:
    real, fake = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(d_loss(real, fake), hinge_d_loss(real, fake))
    torch.testing.assert_close(
        d_loss(real, fake, "non-saturating"), nonsaturating_d_loss(real, fake)
    )


@pytest.mark.parametrize("fn", [generator_loss, lambda x, kind: d_loss(x, x, kind)])
def test_unknown_loss_kind(fn) -> None:
    with pytest.raises(ValueError, match=r"one of \('hinge', 'non-saturating'\).*'wgan'"):
        fn(torch.zeros(2), kind="wgan")


# ---------------------------------------------------------------- adaptive weight
def _toy(seed: int = 0):
    torch.manual_seed(seed)
    layer = nn.Linear(6, 4)
    x, target = torch.randn(8, 6), torch.randn(8, 4)
    out = layer(x)
    rec = (out - target).abs().mean()
    gan = -(out * torch.randn(8, 4)).mean()
    return layer, rec, gan


def test_adaptive_weight_matches_grad_norm_ratio() -> None:
    layer, rec, gan = _toy()
    w = adaptive_weight(rec, gan, layer.weight)
    g_rec = torch.autograd.grad(rec, layer.weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, layer.weight, retain_graph=True)[0]
    torch.testing.assert_close(w, g_rec.norm() / (g_gan.norm() + 1e-4))
    assert not w.requires_grad and w.dtype == torch.float32 and w.dim() == 0
    # The graph is retained: both losses can still be back-propagated.
    (rec + w * gan).backward()
    assert layer.weight.grad is not None


def test_adaptive_weight_scales_inversely_with_gan_loss() -> None:
    layer, rec, gan = _toy(1)
    w1 = adaptive_weight(rec, gan, layer.weight, delta=0.0)
    w2 = adaptive_weight(rec, 4.0 * gan, layer.weight, delta=0.0)
    torch.testing.assert_close(w2, w1 / 4.0)


def test_adaptive_weight_is_clamped() -> None:
    layer, rec, gan = _toy(2)
    assert adaptive_weight(rec, 1e-9 * gan, layer.weight, delta=0.0, max_weight=7.0).item() == 7.0


def test_adaptive_weight_without_graph_is_zero() -> None:
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        out = layer(torch.randn(2, 3))
        w = adaptive_weight(out.abs().mean(), -out.mean(), layer.weight)
    assert w.item() == 0.0


def test_adaptive_weight_unrelated_layer_is_an_error() -> None:
    _, rec, gan = _toy()
    other = nn.Linear(6, 4)
    with pytest.raises(ValueError, match="does not depend on last_layer"):
        adaptive_weight(rec, gan, other.weight)
    with pytest.raises(ValueError, match="does not require grad"):
        adaptive_weight(rec, gan, other.weight.detach())


def test_adaptive_weight_fp32_under_low_precision() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).to(torch.bfloat16)
    out = layer(torch.randn(8, 6, dtype=torch.bfloat16))
    w = adaptive_weight(out.float().abs().mean(), -out.float().mean(), layer.weight)
    assert w.dtype == torch.float32 and torch.isfinite(w)


# ----------------------------------------------------------------------- warm-up
def test_warmup_factor() -> None:
    assert [warmup_factor(s, 3) for s in range(6)] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
