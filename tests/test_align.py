import math

import pytest
import torch

from mmvq.training.align import AlignmentConfig, code_distributions, code_matching_loss


def _codebook(k=8, d=4):
    torch.manual_seed(0)
    return torch.randn(k, d) * 3


def test_code_distributions_sum_to_one_and_ignore_padding():
    cb = _codebook()
    z = torch.randn(3, 5, 4)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    p = code_distributions(z, mask, cb)
    assert p.shape == (3, 8)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    z2 = z.clone()
    z2[0, 3:] = 100.0  # padding content must not matter
    assert torch.allclose(code_distributions(z2, mask, cb), p)
    with pytest.raises(ValueError, match="expects z"):
        code_distributions(z[0], mask, cb)


def test_fp32_under_bf16_autocast():
    cb = _codebook()
    z = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = code_distributions(z, mask, cb)
    assert p.dtype == torch.float32
    assert torch.allclose(p, code_distributions(z, mask, cb))


def test_loss_rewards_paired_codes_and_trains_alignment():
    cb = _codebook()
    torch.manual_seed(1)
    b = 6
    # Modality a: sample i sits on code i. Modality b: random, to be aligned by the loss.
    za = cb[:b, None, :].repeat(1, 3, 1) + 0.01 * torch.randn(b, 3, 4)
    zb = torch.randn(b, 2, 4, requires_grad=True)
    masks = {"a": torch.ones(b, 3, dtype=torch.bool), "b": torch.ones(b, 2, dtype=torch.bool)}
    present = {"a": torch.ones(b, dtype=torch.bool), "b": torch.ones(b, dtype=torch.bool)}
    # The default scale-free assignment: the temperature needs no tuning to the codes' spacing.
    cfg = AlignmentConfig(weight=1.0)
    aligned = cb[:b, None, :].repeat(1, 2, 1)
    good, _ = code_matching_loss({"a": za, "b": aligned}, masks, present, cb, cfg)
    bad, _ = code_matching_loss({"a": za, "b": aligned[torch.randperm(b)]}, masks, present, cb, cfg)
    assert good < bad
    opt = torch.optim.Adam([zb], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss, log = code_matching_loss({"a": za, "b": zb}, masks, present, cb, cfg)
        loss.backward()
        opt.step()
    assert log["align/acc/a-b"] == 1.0
    assert zb.grad is not None


def test_only_rows_with_both_modalities_pair_up():
    cb = _codebook()
    z = {"a": torch.randn(4, 2, 4, requires_grad=True), "b": torch.randn(4, 2, 4)}
    masks = {m: torch.ones(4, 2, dtype=torch.bool) for m in z}
    present = {"a": torch.tensor([1, 1, 0, 0]).bool(), "b": torch.tensor([0, 1, 1, 1]).bool()}
    loss, log = code_matching_loss(z, masks, present, cb, AlignmentConfig())
    assert float(loss.detach()) == 0.0 and log == {}
    loss.backward()  # still part of the graph: no special-casing needed in the loop
    with pytest.raises(ValueError, match="weight"):
        AlignmentConfig(weight=-1)


def test_shared_codebook_distances_follow_its_lookup_space():
    from mmvq.quantize import CodebookConfig, SharedCodebook

    cb = SharedCodebook(
        CodebookConfig(
            num_codes=16, code_dim=8, lookup_dim=4, l2_normalize=True, kmeans_init=False
        ),
        ["a"],
    )
    z = torch.randn(3, 5, 8, requires_grad=True)
    d = cb.distances(z)
    assert d.shape == (3, 5, 16) and d.dtype == torch.float32
    assert torch.equal(d.argmin(-1), cb.lookup(z))
    p = code_distributions(z, torch.ones(3, 5, dtype=torch.bool), cb)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    p.sum().backward()
    assert z.grad is not None


# ------------------------------------------------------------ scale-free soft assignment
def _disjoint_setup(scale=100.0, b=8):
    """Codes far apart (raw squared distances in the thousands); modality a sits on codes 0..b-1
    (sample i on code i), modality b on codes b..2b-1: the two use disjoint codes, as in a split
    shared codebook."""
    torch.manual_seed(0)
    cb = torch.randn(2 * b, 6) * scale
    za = cb[:b, None, :].repeat(1, 4, 1) + 0.01 * scale * torch.randn(b, 4, 6)
    zb = cb[b:, None, :].repeat(1, 3, 1) + 0.01 * scale * torch.randn(b, 3, 6)
    masks = {"a": torch.ones(b, 4, dtype=torch.bool), "b": torch.ones(b, 3, dtype=torch.bool)}
    present = {"a": torch.ones(b, dtype=torch.bool), "b": torch.ones(b, dtype=torch.bool)}
    return cb, za, zb, masks, present


def test_disjoint_codes_still_give_a_gradient():
    cb, za, zb, masks, present = _disjoint_setup()
    za.requires_grad_(True)
    zb.requires_grad_(True)
    loss, log = code_matching_loss(
        {"a": za, "b": zb}, masks, present, cb, AlignmentConfig(weight=1.0)
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert float(za.grad.abs().max()) > 0 and float(zb.grad.abs().max()) > 0
    assert torch.isfinite(za.grad).all() and torch.isfinite(zb.grad).all()
    assert 0.0 < log["align/sim/a-b"] < 1.0

    # The raw squared-distance form (the paper's, temperature 1) is one-hot here: every
    # similarity is 0, the loss is exactly ln(B) and there is no gradient at all.
    za.grad = zb.grad = None
    raw = AlignmentConfig(weight=1.0, temperature=1.0, scale="none")
    loss, _ = code_matching_loss({"a": za, "b": zb}, masks, present, cb, raw)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(math.log(za.shape[0]), abs=1e-5)
    assert float(za.grad.abs().max()) == 0.0 and float(zb.grad.abs().max()) == 0.0


def test_scale_free_assignment_is_invariant_to_the_scale_of_the_space():
    cb, za, _, _, _ = _disjoint_setup(scale=1.0)
    mask = torch.ones(za.shape[:2], dtype=torch.bool)
    for temperature in (0.2, 1.0):
        p = code_distributions(za, mask, cb, temperature)
        for c in (1e-2, 30.0):
            assert torch.allclose(
                code_distributions(za * c, mask, cb * c, temperature), p, atol=1e-5
            )
        # and not one-hot: every code keeps some mass
        assert float(p.min()) > 0
    # the raw form is not scale-free
    raw = code_distributions(za, mask, cb, 1.0, scale="none")
    assert not torch.allclose(
        code_distributions(za * 30, mask, cb * 30, 1.0, scale="none"), raw, atol=1e-3
    )
    with pytest.raises(ValueError, match="scale"):
        code_distributions(za, mask, cb, scale="mean")


def test_disjoint_modality_is_pulled_onto_its_partners_codes():
    cb, za, zb0, masks, present = _disjoint_setup()
    b = za.shape[0]
    zb = zb0.clone().requires_grad_(True)
    cfg = AlignmentConfig(weight=1.0)
    opt = torch.optim.Adam([zb], lr=2.0)
    for _ in range(200):
        opt.zero_grad()
        loss, log = code_matching_loss({"a": za, "b": zb}, masks, present, cb, cfg)
        loss.backward()
        opt.step()
    assert log["align/acc/a-b"] == 1.0

    # hard codes: b's tokens started on codes b..2b-1 (disjoint from a's); now most sit on their
    # partner's code
    def hits(z):  # how many of b's tokens sit on their partner's code (sample i: code i)
        nearest = torch.cdist(z.detach(), cb[None].expand(b, -1, -1)).argmin(-1)  # [b, 3]
        return float((nearest == torch.arange(b)[:, None]).float().mean())

    assert hits(zb0) == 0.0
    assert hits(zb) >= 0.5


def test_shared_codebook_and_tensor_give_the_same_scale_free_distributions():
    from mmvq.quantize import CodebookConfig, SharedCodebook

    cb = SharedCodebook(CodebookConfig(num_codes=16, code_dim=8, kmeans_init=False), ["a"])
    z = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert torch.allclose(
        code_distributions(z, mask, cb, 0.5),
        code_distributions(z, mask, cb.codebook, 0.5),
        atol=1e-5,
    )


def test_config_scale_and_warmup():
    assert AlignmentConfig().scale == "std"
    with pytest.raises(ValueError, match="scale"):
        AlignmentConfig(scale="max")
    with pytest.raises(ValueError, match="warmup_steps"):
        AlignmentConfig(warmup_steps=-1)
    cfg = AlignmentConfig(weight=0.4, warmup_steps=3)
    assert [cfg.weight_at(s) for s in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    assert AlignmentConfig(weight=0.4).weight_at(0) == 0.4


def test_anchor_modality_is_not_moved():
    cb, za, zb, masks, present = _disjoint_setup()
    za.requires_grad_(True)
    zb.requires_grad_(True)
    cfg = AlignmentConfig(weight=1.0, anchor="a")
    loss, _ = code_matching_loss({"a": za, "b": zb}, masks, present, cb, cfg)
    loss.backward()
    assert za.grad is None and float(zb.grad.abs().max()) > 0
    free, _ = code_matching_loss(
        {"a": za, "b": zb}, masks, present, cb, AlignmentConfig(weight=1.0)
    )
    assert float(loss.detach()) == pytest.approx(
        float(free.detach())
    )  # the same value, only the gradient differs
    with pytest.raises(TypeError, match="anchor"):
        AlignmentConfig(anchor=None)
