import pytest
import torch

from mmvq.align import AlignmentConfig, code_distributions, code_matching_loss


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
    # Codes are ~70 squared units apart: a warm assignment keeps gradients alive.
    cfg = AlignmentConfig(weight=1.0, temperature=20.0)
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

    cb = SharedCodebook(CodebookConfig(num_codes=16, code_dim=8, lookup_dim=4, l2_normalize=True, kmeans_init=False), ["a"])
    z = torch.randn(3, 5, 8, requires_grad=True)
    d = cb.distances(z)
    assert d.shape == (3, 5, 16) and d.dtype == torch.float32
    assert torch.equal(d.argmin(-1), cb.lookup(z))
    p = code_distributions(z, torch.ones(3, 5, dtype=torch.bool), cb)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    p.sum().backward()
    assert z.grad is not None
