"""Tests of the mmvq.quantize package: SharedCodebook, its kernel, statistics, restarts and input
checks (single process; see test_quantize_distributed.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mmvq.adapter import AdapterInputError
from mmvq.quantize import CodebookConfig, QuantizerOutput, SharedCodebook
from mmvq.quantize.ema import Assigned, reduce_statistics
from mmvq.quantize.kernel import CPU_BLOCK_BYTES, chunk_rows

torch.set_num_threads(1)


def make(modalities=("image", "text"), **overrides) -> SharedCodebook:
    base = {"num_codes": 32, "code_dim": 8, "kmeans_init": False, "restart_every": 0}
    base.update(overrides)
    return SharedCodebook(CodebookConfig(**base), list(modalities))


def brute_force_dists(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared distances in float64, the plain way."""
    return ((z.double().reshape(-1, 1, z.shape[-1]) - codes.double().unsqueeze(0)) ** 2).sum(-1)


def assert_nearest(found: torch.Tensor, z: torch.Tensor, codes: torch.Tensor) -> None:
    """``found`` is the brute-force argmin (random data has no exact ties)."""
    d = brute_force_dists(z, codes)
    best = d.argmin(1)
    found = found.reshape(-1)
    # the distance of the chosen code is the minimum (tolerance: fp32 rounding only)
    chosen = d.gather(1, found.unsqueeze(1)).squeeze(1)
    assert torch.all(chosen <= d.min(1).values + 1e-4 * (1 + d.min(1).values))
    mismatches = (found != best).sum().item()
    assert mismatches == 0, f"{mismatches} rows differ from brute force"


def set_codes(cb: SharedCodebook, vectors: torch.Tensor) -> None:
    """Place the codes (and keep the EMA state consistent with them)."""
    with torch.no_grad():
        cb.code_vectors.copy_(vectors)
        if cb.config.ema:
            cb.code_sums.copy_(vectors * cb.cluster_size.unsqueeze(1))


# ------------------------------------------------------------------------ nearest code
def test_nearest_code_equals_brute_force() -> None:
    torch.manual_seed(0)
    cb = make(num_codes=50, code_dim=16).eval()
    z = torch.randn(3, 100, 16)
    codes = cb.lookup(z)
    assert codes.shape == (3, 100) and codes.dtype == torch.long
    assert_nearest(codes, z, cb.codebook)
    out = cb({"image": z})
    assert torch.equal(out.codes["image"], codes)


def test_nearest_code_in_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    cb = make(num_codes=256, code_dim=32).eval()
    # codes packed around one point: bf16-rounded inputs cannot tell many of them apart
    set_codes(cb, 1.0 + 0.1 * torch.randn(256, 32))
    z = 1.0 + 0.1 * torch.randn(2, 200, 32)
    codebook = cb.codebook

    def fp32_brute_force(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return ((x.float().reshape(-1, 1, 32) - codebook.unsqueeze(0)) ** 2).sum(-1).argmin(1)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = (codebook.pow(2).sum(1) - 2 * z.reshape(-1, 32) @ codebook.t()).argmin(1)
        codes = cb.lookup(z)
        out = cb({"image": z})
    best = fp32_brute_force(z)
    assert (naive != best).float().mean() > 0.2  # autocast really changes the answer here
    assert torch.equal(codes.reshape(-1), best)
    assert torch.equal(out.codes["image"].reshape(-1), best)
    # reduced-precision fp32 matmuls allowed globally (TF32 on GPU, bf16 passes on some CPUs):
    # the lookup still runs at full fp32 and leaves the global setting as it was
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert torch.equal(cb.lookup(z).reshape(-1), best)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    # bf16 inputs: the nearest code of the bf16 values, computed in fp32
    zb = z.to(torch.bfloat16)
    out_b = cb({"image": zb})
    assert torch.equal(out_b.codes["image"].reshape(-1), fp32_brute_force(zb))
    assert out_b.z_q["image"].dtype == torch.bfloat16
    assert out_b.loss["image"].dtype == torch.float32


def test_chunked_lookup_equals_unchunked() -> None:
    torch.manual_seed(1)
    big = make(num_codes=64, code_dim=8, memory_budget_mb=256.0).eval()
    tiny = make(num_codes=64, code_dim=8, memory_budget_mb=0.001).eval()
    tiny.load_state_dict(big.state_dict())
    z = torch.randn(4, 250, 8)
    assert chunk_rows(64, 0.001) < 1000 // 50  # the tiny budget really forces > 50 chunks
    assert chunk_rows(64, 256.0) >= 1000  # the big one does it in one
    a, b = big.lookup(z), tiny.lookup(z)
    assert torch.equal(a, b)
    assert torch.equal(big({"text": z}).codes["text"], tiny({"text": z}).codes["text"])
    assert_nearest(b, z, big.codebook)


# ------------------------------------------------------------------------ gradients / loss
def test_gradient_reaches_encoder_straight_through() -> None:
    torch.manual_seed(0)
    encoder = nn.Linear(5, 8)
    cb = make().train()
    x = torch.randn(2, 6, 5)
    z = encoder(x)
    z.retain_grad()
    book = cb.codebook  # the forward's EMA step moves the codes afterwards
    out = cb({"image": z})
    upstream = torch.randn_like(out.z_q["image"])
    (out.z_q["image"] * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)  # straight-through: identity gradient
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    # forward value is the code vector
    assert torch.allclose(out.z_q["image"], book[out.codes["image"]], atol=1e-6)


def test_commitment_loss_value_and_no_codebook_grad_with_ema() -> None:
    torch.manual_seed(0)
    cb = make(beta=0.3).eval()
    z = torch.randn(3, 7, 8, requires_grad=True)
    out = cb({"text": z})
    e = cb.embed(out.codes["text"])
    assert torch.allclose(out.loss["text"], 0.3 * F.mse_loss(z, e))
    assert not cb.code_vectors.requires_grad and len(list(cb.parameters())) == 0
    out.loss["text"].backward()
    assert torch.allclose(z.grad, 0.3 * 2 * (z - e) / z.numel(), atol=1e-7)


def test_codebook_loss_trains_codes_without_ema() -> None:
    torch.manual_seed(0)
    cb = make(beta=0.25, ema=False).eval()
    assert isinstance(cb.code_vectors, nn.Parameter)
    z = torch.randn(2, 9, 8, requires_grad=True)
    out = cb({"image": z})
    e = cb.embed(out.codes["image"]).detach()
    assert torch.allclose(out.loss["image"], 1.25 * F.mse_loss(z, e))
    out.loss["image"].backward()
    # codebook term ||sg(z) - e||^2 only: its gradient on code k is the sum over its tokens
    expected = torch.zeros_like(cb.code_vectors)
    expected.index_add_(
        0, out.codes["image"].reshape(-1), (2 * (e - z) / z.numel()).reshape(-1, 8).detach()
    )
    assert torch.allclose(cb.code_vectors.grad, expected, atol=1e-7)
    assert torch.allclose(z.grad, 0.25 * 2 * (z - e) / z.numel(), atol=1e-7)


def test_rotation_trick_value_and_gradient() -> None:
    torch.manual_seed(0)
    cb = make(rotation_trick=True).train()
    z = torch.randn(2, 5, 8, requires_grad=True)
    book = cb.codebook
    out = cb({"image": z})
    e = book[out.codes["image"]]
    assert torch.allclose(out.z_q["image"], e, atol=1e-5)  # forward value is the code
    g = torch.randn_like(z)
    (out.z_q["image"] * g).sum().backward()
    assert z.grad is not None and not torch.allclose(z.grad, g)  # not plain straight-through
    # the gradient is the rotation R^T g rescaled by |e|/|z|: it preserves |g| * |e| / |z|
    ratio = (e.norm(dim=-1) / z.norm(dim=-1)).detach()
    assert torch.allclose(z.grad.norm(dim=-1), g.norm(dim=-1) * ratio, rtol=1e-4)


# ------------------------------------------------------------------------ EMA
def test_ema_fits_gaussian_mixture() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    cb = make(modalities=["x"], num_codes=4, code_dim=2, decay=0.9).train()
    set_codes(cb, centres + torch.tensor([1.5, -1.0]))  # every code starts off its centre
    for _ in range(150):
        which = torch.randint(0, 4, (256,))
        z = centres[which] + 0.3 * torch.randn(256, 2)
        cb({"x": z.view(8, 32, 2)})
    assert torch.allclose(cb.codebook, centres, atol=0.15)


def _two_modality_mean(weights=None, pad_b: bool = False) -> torch.Tensor:
    """One code; modality a (40 tokens/sample) at (1, 0), modality b (4 tokens/sample) at (0, 1)."""
    torch.manual_seed(0)
    cb = make(modalities=["a", "b"], num_codes=1, code_dim=2, decay=0.8).train()
    set_codes(cb, torch.zeros(1, 2))
    for _ in range(80):
        za = torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(4, 40, 2)
        zb = torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(4, 4, 2)
        mask = None
        if pad_b:  # padding far away: it must not count
            zb = torch.cat([zb, torch.full((4, 6, 2), 100.0)], 1)
            mask = {
                "b": torch.cat(
                    [torch.ones(4, 4, dtype=torch.bool), torch.zeros(4, 6, dtype=torch.bool)], 1
                )
            }
        cb({"a": za, "b": zb}, mask=mask, weights=weights)
    return cb.codebook[0]


def test_modalities_pull_codes_equally_whatever_their_token_count() -> None:
    # token pooling would give (40 a + 4 b) / 44 = (0.91, 0.09); equal shares give (0.5, 0.5)
    assert torch.allclose(_two_modality_mean(), torch.tensor([0.5, 0.5]), atol=0.02)
    # weights set the shares: 3:1
    assert torch.allclose(
        _two_modality_mean({"a": 3.0, "b": 1.0}), torch.tensor([0.75, 0.25]), atol=0.02
    )


def test_weighted_statistics_exact() -> None:
    # a: 40 tokens (fewer than K = 64), b: 200 tokens (more): both summation paths
    torch.manual_seed(0)
    cb = make(modalities=["a", "b"], num_codes=64, code_dim=3)
    xa, xb = torch.randn(40, 3), torch.randn(200, 3)
    ia, ib = torch.randint(0, 64, (40,)), torch.randint(0, 64, (200,))
    assigned = {
        "a": Assigned(xa, ia, torch.bincount(ia, minlength=64)),
        "b": Assigned(xb, ib, torch.bincount(ib, minlength=64)),
    }
    red = reduce_statistics(cb, assigned, {"a": 3.0, "b": 1.0}, with_sums=True)
    # shares 3:1 of the 240 tokens, whatever each modality's own count
    sa, sb = 0.75 * 240 / 40, 0.25 * 240 / 200
    counts = sa * torch.bincount(ia, minlength=64) + sb * torch.bincount(ib, minlength=64)
    sums = sa * torch.zeros(64, 3).index_add_(0, ia, xa) + sb * torch.zeros(64, 3).index_add_(
        0, ib, xb
    )
    assert torch.allclose(red.counts, counts.float()) and red.counts.sum().item() == pytest.approx(
        240
    )
    assert torch.allclose(red.sums, sums, atol=1e-5)


def test_padding_gets_code_minus_one_and_leaves_ema_untouched() -> None:
    assert torch.allclose(_two_modality_mean(pad_b=True), _two_modality_mean(), atol=1e-6)
    cb = make().train()
    z = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    out = cb({"text": z}, mask={"text": mask})
    assert torch.all(out.codes["text"][~mask] == -1) and torch.all(out.codes["text"][mask] >= 0)
    assert torch.equal(out.z_q["text"][~mask], z[~mask])  # padding passes through unchanged
    # EMA cluster sizes count the 6 real tokens only
    assert cb.cluster_size.sum().item() == pytest.approx(32 * 0.99 * 1.0 + 0.01 * 6, rel=1e-5)


def test_kmeans_init_samples_modalities_equally() -> None:
    torch.manual_seed(0)
    cb = make(
        modalities=["a", "b"], num_codes=8, code_dim=2, kmeans_init=True, kmeans_iters=5
    ).train()
    assert not bool(cb.initialized)
    za = torch.tensor([10.0, 0.0]) + torch.randn(4, 200, 2)  # 10x the tokens of b
    zb = torch.tensor([-10.0, 0.0]) + torch.randn(4, 20, 2)
    cb({"a": za, "b": zb})
    assert bool(cb.initialized)
    near_a = (cb.codebook[:, 0] > 5).sum().item()
    near_b = (cb.codebook[:, 0] < -5).sum().item()
    assert (near_a, near_b) == (4, 4)
    before = cb.codebook
    cb({"a": za, "b": zb})  # no second k-means: only a small EMA step
    assert torch.allclose(cb.codebook, before, atol=0.2)


def test_dead_codes_restart_from_both_modalities() -> None:
    torch.manual_seed(0)
    cb = make(
        modalities=["a", "b"], num_codes=16, code_dim=2, restart_every=5, reservoir_size=64
    ).train()
    start = torch.full((16, 2), 100.0)
    start[0] = torch.tensor([10.0, 0.0])
    start[1] = torch.tensor([-10.0, 0.0])
    set_codes(cb, start)
    for step in range(5):
        za = torch.tensor([10.0, 0.0]) + torch.randn(4, 100, 2)  # 10x the tokens of b
        zb = torch.tensor([-10.0, 0.0]) + torch.randn(4, 10, 2)
        cb({"a": za, "b": zb})
        if step < 4:  # nothing restarted before restart_every (unused codes stay put)
            assert torch.allclose(cb.codebook[2:], torch.full((14, 2), 100.0), atol=1e-2)
    book = cb.codebook
    near_a = ((book - torch.tensor([10.0, 0.0])).norm(dim=1) < 5).sum().item()
    near_b = ((book - torch.tensor([-10.0, 0.0])).norm(dim=1) < 5).sum().item()
    assert (near_a, near_b) == (8, 8)  # 14 dead codes, 7 restarted from each modality
    assert len({tuple(v) for v in book.tolist()}) == 16  # distinct reservoir rows
    assert torch.all(cb.cluster_size[2:] == 1.0)


def test_dead_codes_restart_onto_restart_from_not_the_tokens() -> None:
    torch.manual_seed(0)
    cb = make(
        modalities=["a", "b"], num_codes=8, code_dim=2, restart_every=3, reservoir_size=32
    ).train()
    start = torch.full((8, 2), 100.0)
    start[0] = torch.tensor([10.0, 0.0])
    start[1] = torch.tensor([-10.0, 0.0])
    set_codes(cb, start)
    target = torch.tensor([0.0, 30.0])  # far from every token of both modalities
    for _ in range(3):
        za = torch.tensor([10.0, 0.0]) + torch.randn(4, 5, 2)
        zb = torch.tensor([-10.0, 0.0]) + torch.randn(4, 5, 2)
        restart = target + 0.01 * torch.randn(4, 5, 2)
        cb({"a": za, "b": zb}, restart_from={"a": restart, "b": restart.clone()})
    dead = cb.codebook[2:]
    assert ((dead - target).norm(dim=1) < 0.1).all()  # all 6 dead codes moved onto restart_from
    assert len({tuple(v) for v in dead.tolist()}) == 6

    with pytest.raises(AdapterInputError, match=r"restart_from\['a'\] must be a float Tensor"):
        cb({"a": za, "b": zb}, restart_from={"a": torch.zeros(4, 5, 3)})
    with pytest.raises(AdapterInputError, match="restart_from has modality 'c'"):
        cb({"a": za, "b": zb}, restart_from={"c": torch.zeros(4, 5, 2)})


def test_restarts_stop_after_restart_until() -> None:
    def dead_codes_after_two_steps(until: int) -> torch.Tensor:
        torch.manual_seed(0)
        cb = make(
            modalities=["a"], num_codes=8, code_dim=2, restart_every=2, restart_until=until
        ).train()
        start = torch.full((8, 2), 100.0)
        start[0] = torch.tensor([10.0, 0.0])
        set_codes(cb, start)
        for _ in range(2):  # the restart check runs at step 2
            cb({"a": torch.tensor([10.0, 0.0]) + torch.randn(4, 10, 2)})
        return cb.codebook[1:]

    assert (dead_codes_after_two_steps(until=2) < 50).all()  # step 2 <= 2: restarted
    assert (dead_codes_after_two_steps(until=0) < 50).all()  # 0: restarts never stop
    assert torch.allclose(dead_codes_after_two_steps(until=1), torch.full((7, 2), 100.0), atol=1e-2)
    with pytest.raises(ValueError, match="restart_until"):
        CodebookConfig(restart_until=-1)


def test_assign_overrides_the_nearest_codes() -> None:
    cb = make(modalities=["a"], num_codes=4, code_dim=4, beta=1.0).train()
    set_codes(cb, torch.eye(4))
    z = torch.eye(4)[[0, 1]].view(1, 2, 4).clone().requires_grad_(True)
    chosen = torch.tensor([[3, 3]])
    out = cb({"a": z}, assign={"a": chosen})
    assert torch.equal(out.codes["a"], chosen)
    assert torch.allclose(out.z_q["a"], torch.eye(4)[[3, 3]].view(1, 2, 4))
    # the commitment pulls z towards the assigned code, not towards its nearest one
    assert out.loss["a"].item() == pytest.approx(F.mse_loss(z, out.z_q["a"]).item())
    assert int(cb.cluster_size.argmax()) == 3
    for bad, match in (
        ({"a": torch.tensor([[3]])}, "shape"),
        ({"a": torch.tensor([[3, 9]])}, "outside"),
        ({"b": chosen}, "z lacks"),
        ([chosen], "dict"),
    ):
        with pytest.raises(AdapterInputError, match=match):
            cb({"a": z.detach()}, assign=bad)


def test_batch_stats_follow_own_nearest_codes_not_the_assignment() -> None:
    """A joint assignment puts paired samples on one code; the logged agreement and usage must
    still be those of each modality's own nearest codes (what encoding gives), not 1.0."""
    cb = make(modalities=["a", "b"], num_codes=4, code_dim=4).train()
    set_codes(cb, torch.eye(4))
    za = torch.eye(4)[[0, 1]].view(2, 1, 4)  # sample 0 -> code 0, sample 1 -> code 1
    zb = torch.eye(4)[[0, 2]].view(2, 1, 4)  # sample 0 -> code 0, sample 1 -> code 2
    same = torch.tensor([[0], [1]])
    out = cb({"a": za, "b": zb}, assign={"a": same, "b": same})
    assert torch.equal(out.codes["b"], same)  # the outputs follow the assignment
    assert out.stats["agreement/a-b"] == pytest.approx(0.5)  # sample 0 agrees, sample 1 not
    assert out.stats["usage/b"] == pytest.approx(2 / 4)
    assert out.stats["overlap/a-b"] == pytest.approx(1 / 3)  # {0, 1} vs {0, 2}


# ------------------------------------------------------------------------ stats
def test_forward_stats_exact_on_constructed_codes() -> None:
    cb = make(num_codes=8, code_dim=8).eval()
    set_codes(cb, 10 * torch.eye(8))
    img = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    txt = torch.tensor([[2, 3, 4], [4, 4, 4]])
    out = cb({"image": 10 * F.one_hot(img, 8).float(), "text": 10 * F.one_hot(txt, 8).float()})
    assert torch.equal(out.codes["image"], img) and torch.equal(out.codes["text"], txt)
    s = {k: v.item() for k, v in out.stats.items()}
    assert s["usage/image"] == pytest.approx(4 / 8) and s["perplexity/image"] == pytest.approx(4.0)
    assert s["usage/text"] == pytest.approx(3 / 8)
    # text counts (1, 1, 4): perplexity exp(-(2 * 1/6 ln 1/6 + 4/6 ln 4/6))
    h = -(2 * (1 / 6) * math.log(1 / 6) + (4 / 6) * math.log(4 / 6))
    assert s["perplexity/text"] == pytest.approx(math.exp(h), rel=1e-5)
    assert s["overlap/image-text"] == pytest.approx(2 / 5)  # {0,1,2,3} vs {2,3,4}
    assert s["agreement/image-text"] == pytest.approx((2 / 5 + 0.0) / 2)
    assert set(s) == {
        "usage/image",
        "perplexity/image",
        "usage/text",
        "perplexity/text",
        "overlap/image-text",
        "agreement/image-text",
    }
    assert all(not v.requires_grad for v in out.stats.values())


def test_absent_samples_are_padding_and_leave_ema_untouched() -> None:
    torch.manual_seed(0)
    img, txt = torch.randn(4, 6, 8), torch.randn(4, 3, 8)
    txt_garbage = txt.clone()
    txt_garbage[[1, 3]] = 1000.0  # rows that lack text: whatever they hold must not count
    rows = torch.tensor([True, False, True, False])
    with_absent = make(restart_every=5, reservoir_size=16).train()
    only_present = make(restart_every=5, reservoir_size=16).train()
    only_present.load_state_dict(with_absent.state_dict())
    torch.manual_seed(1)
    out = with_absent({"image": img, "text": txt_garbage}, present={"text": rows})
    torch.manual_seed(1)
    ref = only_present({"image": img[[0, 2]], "text": txt[[0, 2]]})
    assert torch.all(out.codes["text"][~rows] == -1)
    assert torch.equal(out.codes["text"][rows], ref.codes["text"])
    assert torch.equal(out.z_q["text"][~rows], txt_garbage[~rows])  # passed through
    assert torch.allclose(out.loss["text"], ref.loss["text"])
    # text statistics and the image-text agreement only see the samples that hold text
    assert out.stats["usage/text"] == ref.stats["usage/text"]
    assert out.stats["agreement/image-text"] == ref.stats["agreement/image-text"]
    # text alone: the EMA state equals that of a batch without the absent samples
    a, b = make().train(), make().train()
    b.load_state_dict(a.state_dict())
    a({"text": txt_garbage}, present={"text": rows})
    b({"text": txt[[0, 2]]})
    for key in ("cluster_size", "code_sums", "code_vectors"):
        assert torch.allclose(a.state_dict()[key], b.state_dict()[key], atol=1e-6), key
    # the text reservoir holds exactly the 6 real text tokens (in random order), no garbage
    assert int(with_absent.reservoir_filled[1]) == 6
    stored = sorted(with_absent.reservoir[1, :6].tolist())
    assert stored == sorted(txt[[0, 2]].reshape(-1, 8).tolist())


def test_modality_absent_from_every_sample() -> None:
    cb = make().train()
    out = cb(
        {"image": torch.randn(2, 4, 8), "text": torch.full((2, 3, 8), float("nan"))},
        present={"text": torch.zeros(2, dtype=torch.bool)},
    )
    assert torch.all(out.codes["text"] == -1) and out.loss["text"].item() == 0.0
    assert set(out.stats) == {"usage/image", "perplexity/image"}
    assert torch.isfinite(cb.code_vectors).all()
    with pytest.raises(AdapterInputError, match="z holds no real token"):
        cb({"text": torch.randn(2, 3, 8)}, present={"text": torch.zeros(2, dtype=torch.bool)})


def test_subset_of_modalities_and_output_type() -> None:
    cb = make(modalities=["audio", "image", "text"]).train()
    out = cb({"text": torch.randn(2, 3, 8)})
    assert isinstance(out, QuantizerOutput)
    assert set(out.z_q) == set(out.codes) == set(out.loss) == {"text"}
    assert set(out.stats) == {"usage/text", "perplexity/text"}


# ------------------------------------------------------------------------ variants
def test_l2_normalize_variant() -> None:
    torch.manual_seed(0)
    cb = make(l2_normalize=True, kmeans_init=True, restart_every=2, reservoir_size=16).train()
    z = torch.randn(4, 10, 8) * 3
    for _ in range(4):
        out = cb({"image": z})
    book = cb.codebook
    assert torch.allclose(book.norm(dim=1), torch.ones(32), atol=1e-5)
    assert torch.allclose(out.z_q["image"].norm(dim=-1), torch.ones(4, 10), atol=1e-5)
    best = (F.normalize(z, dim=-1).reshape(-1, 8) @ book.t()).argmax(1)  # max cosine
    assert torch.equal(cb.lookup(z).reshape(-1), best)


def test_lookup_dim_variant() -> None:
    torch.manual_seed(0)
    encoder = nn.Linear(4, 8)
    cb = make(lookup_dim=3, kmeans_init=True).train()
    z = encoder(torch.randn(2, 6, 4))
    cb({"image": z.detach()})  # k-means init + one EMA step
    assert cb.code_vectors.shape == (32, 3) and cb.codebook.shape == (32, 8)
    out = cb.eval()({"image": z})
    assert out.z_q["image"].shape == (2, 6, 8)
    assert torch.allclose(out.z_q["image"], cb.embed(out.codes["image"]), atol=1e-5)
    assert torch.equal(cb.lookup(z), out.codes["image"])
    out = cb.train()({"image": z})
    (out.z_q["image"].sum() + out.loss["image"]).backward()
    for p in (encoder.weight, cb.project_in.weight, cb.project_out.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # padding keeps the input, and NaN padding never reaches the projections' gradients
    mask = torch.tensor([[True] * 5 + [False]] * 2)
    zp = z.detach().clone()
    zp[~mask] = float("nan")
    zp.requires_grad_(True)
    cb.zero_grad()
    out = cb({"image": zp}, mask={"image": mask})
    assert out.z_q["image"][~mask].isnan().all() and out.codes["image"][~mask].eq(-1).all()
    (out.z_q["image"][mask].sum() + out.loss["image"]).backward()
    assert (
        torch.isfinite(cb.project_in.weight.grad).all()
        and torch.isfinite(cb.project_out.weight.grad).all()
    )
    # bf16 encoder output without autocast: cast to the projection's dtype, output stays bf16
    out = cb({"image": z.detach().bfloat16()})
    assert out.z_q["image"].dtype == torch.bfloat16


def test_half_cast_keeps_statistics_fp32() -> None:
    cb = make().half()
    assert cb.code_vectors.dtype == cb.cluster_size.dtype == cb.code_sums.dtype == torch.float32
    assert cb.reservoir.dtype == torch.float32


# ------------------------------------------------------------------------ persistence
def test_state_dict_round_trip_resumes_identically(tmp_path) -> None:
    cfg = {"kmeans_init": True, "restart_every": 3, "reservoir_size": 16}
    torch.manual_seed(0)
    a = make(**cfg).train()
    data = [{"image": torch.randn(2, 12, 8), "text": torch.randn(2, 4, 8)} for _ in range(9)]
    for batch in data[:4]:
        a(batch)
    save_file(a.state_dict(), str(tmp_path / "cb.safetensors"))
    torch.manual_seed(123)
    b = make(**cfg).train()
    b.load_state_dict(load_file(str(tmp_path / "cb.safetensors")))
    assert bool(b.initialized) and int(b.steps) == 4
    for batch in data[4:]:  # includes a restart at step 6 and 9
        torch.manual_seed(7)
        out_a = a(batch)
        torch.manual_seed(7)
        out_b = b(batch)
        assert torch.equal(out_a.codes["image"], out_b.codes["image"])
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


# ------------------------------------------------------------------------ bad inputs
GOOD = torch.randn(2, 3, 8)


@pytest.mark.parametrize(
    "z, mask, weights, match",
    [
        ([GOOD], None, None, "z must be a dict"),
        ({}, None, None, "z is empty"),
        ({"video": GOOD}, None, None, "unknown modality 'video'"),
        ({"image": GOOD.numpy()}, None, None, r"z\['image'\] must be a Tensor"),
        ({"image": GOOD[0]}, None, None, r"expected 3-D \[B, N, 8\]"),
        (
            {"image": torch.randn(2, 3, 32)},
            None,
            None,
            (
                "adapter 'image' outputs dim 32 but the codebook's code_dim is 8: "
                "set the adapter's code_dim to 8"
            ),
        ),
        ({"image": torch.zeros(2, 3, 8, dtype=torch.long)}, None, None, "dtype torch.int64"),
        ({"image": torch.randn(0, 3, 8)}, None, None, "batch size 0"),
        ({"image": torch.randn(2, 0, 8)}, None, None, "0 tokens per sample"),
        (
            {"image": GOOD, "text": torch.randn(3, 3, 8)},
            None,
            None,
            "batch size 3 but z\\['image'\\] has 2",
        ),
        ({"image": GOOD}, [True], None, "mask must be None or a dict"),
        (
            {"image": GOOD},
            {"text": torch.ones(2, 3, dtype=torch.bool)},
            None,
            "mask has modality 'text' that z lacks",
        ),
        (
            {"image": GOOD},
            {"image": torch.ones(2, 4, dtype=torch.bool)},
            None,
            r"mask\['image'\] has shape \(2, 4\)",
        ),
        ({"image": GOOD}, {"image": torch.ones(2, 3)}, None, "expected a bool Tensor"),
        (
            {"text": GOOD},
            {"text": torch.tensor([[True] * 3, [False] * 3])},
            None,
            "sample 1 of modality 'text' is all padding",
        ),
        ({"image": GOOD}, None, {"video": 1.0}, "weights has unknown modality 'video'"),
        ({"image": GOOD}, None, {"image": 0.0}, r"weights\['image'\] = 0.0"),
        ({"image": GOOD}, None, {"image": float("inf")}, "finite number > 0"),
        ({"image": GOOD}, None, [1.0], "weights must be None or a dict"),
    ],
)
def test_forward_bad_inputs(z, mask, weights, match: str) -> None:
    cb = make().train()
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    with pytest.raises(AdapterInputError, match=match):
        cb(z, mask=mask, weights=weights)
    for key, value in cb.state_dict().items():  # a rejected batch changes nothing
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    "present, mask, match",
    [
        ([True, True], None, "present must be None or a dict"),
        (
            {"text": torch.ones(2, dtype=torch.bool)},
            None,
            "present has modality 'text' that z lacks",
        ),
        (
            {"image": torch.ones(3, dtype=torch.bool)},
            None,
            r"present\['image'\] must be a bool Tensor \[2\]",
        ),
        ({"image": torch.ones(2)}, None, "torch.float32"),
        (
            {"image": torch.tensor([True, True])},
            {"image": torch.tensor([[True] * 3, [False] * 3])},
            r"sample 1 of modality 'image' is all padding .* present\['image'\]\[1\] = False",
        ),
    ],
)
def test_forward_bad_present(present, mask, match: str) -> None:
    cb = make().train()
    with pytest.raises(AdapterInputError, match=match):
        cb({"image": GOOD}, mask=mask, present=present)


def test_non_finite_first_batch_leaves_codebook_uninitialised() -> None:
    cb = make(kmeans_init=True).train()
    before = cb.code_vectors.clone()
    z = torch.randn(2, 4, 8)
    z[1, 2, 3] = float("inf")
    # A plain forward refuses it, in training mode too (a NaN loss would go unnoticed) ...
    with pytest.raises(AdapterInputError, match=r"z\['image'\] holds 1 non-finite value"):
        cb({"image": z})
    # ... but in the training loop (which sets tolerate_nonfinite) a diverging batch is a step to
    # skip, not an input error: the loss says so.
    cb.tolerate_nonfinite = True
    out = cb({"image": z})
    assert not torch.isfinite(out.loss["image"])
    assert not bool(cb.initialized) and torch.equal(cb.code_vectors, before)
    # Outside training it is an input error.
    with pytest.raises(AdapterInputError, match=r"z\['image'\] holds 1 non-finite value"):
        cb.eval()({"image": z})
    cb.train()
    # NaN in padding is not data: it is ignored
    z[1, 2, 3] = float("nan")
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    out = cb({"image": z}, mask={"image": mask})
    assert bool(cb.initialized) and out.codes["image"][1, 2] == -1
    assert torch.isfinite(cb.code_vectors).all()


def test_non_finite_training_batch_leaves_every_buffer_untouched() -> None:
    cb = make(kmeans_init=True, restart_every=1).train()
    cb.tolerate_nonfinite = True  # as the training loop sets it
    cb({"image": torch.randn(4, 4, 8)})
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    z = torch.randn(4, 4, 8)
    z[0, 0, 0] = float("nan")
    out = cb({"image": z})
    assert not torch.isfinite(out.loss["image"])
    after = cb.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # and training goes on afterwards
    cb({"image": torch.randn(4, 4, 8)})
    assert int(cb.steps) == int(before["steps"]) + 1


def test_lookup_and_embed_bad_inputs() -> None:
    cb = make()
    with pytest.raises(AdapterInputError, match="last dim must be the codebook's code_dim 8"):
        cb.lookup(torch.randn(4, 5))
    with pytest.raises(AdapterInputError, match="1 non-finite value"):
        cb.lookup(torch.tensor([[0.0] * 7 + [float("nan")]]))
    with pytest.raises(AdapterInputError, match="not indices"):
        cb.lookup(torch.zeros(4, 8, dtype=torch.long))
    with pytest.raises(AdapterInputError, match="-1 marks padding"):
        cb.embed(torch.tensor([[0, 3, -1]]))
    with pytest.raises(AdapterInputError, match="num_codes=32"):
        cb.embed(torch.tensor([32]))
    with pytest.raises(AdapterInputError, match="expected integer code indices"):
        cb.embed(torch.tensor([1.0]))
    assert cb.embed(torch.tensor([[0, 3]])).shape == (1, 2, 8)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_codes", 0),
        ("num_codes", 2.5),
        ("code_dim", -1),
        ("beta", -0.1),
        ("beta", float("nan")),
        ("ema", 1),
        ("decay", 1.0),
        ("decay", 0.0),
        ("eps", 0.0),
        ("l2_normalize", "yes"),
        ("lookup_dim", 0),
        ("kmeans_init", None),
        ("kmeans_iters", -1),
        ("dead_code_threshold", -1.0),
        ("restart_every", -5),
        ("reservoir_size", 0),
        ("rotation_trick", 0),
        ("memory_budget_mb", 0),
    ],
)
def test_config_validation_names_field_and_value(field: str, value) -> None:
    with pytest.raises(
        ValueError, match=rf"CodebookConfig\.{field} = {__import__('re').escape(repr(value))}"
    ):
        CodebookConfig(**{field: value})


def test_constructor_bad_modalities() -> None:
    with pytest.raises(ValueError, match="non-empty sequence"):
        SharedCodebook(CodebookConfig(), "image")
    with pytest.raises(ValueError, match="repeat a name"):
        SharedCodebook(CodebookConfig(), ["image", "image"])
    with pytest.raises(ValueError, match="without '/'"):
        SharedCodebook(CodebookConfig(), ["image/rgb"])
    with pytest.raises(TypeError, match="CodebookConfig"):
        SharedCodebook({"num_codes": 8}, ["image"])


def test_config_dict_round_trip() -> None:
    cfg = CodebookConfig(num_codes=16, lookup_dim=4)
    assert CodebookConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        CodebookConfig.from_dict({"codes": 4})


def test_cpu_lookup_block_is_capped_and_reused() -> None:
    from mmvq.quantize import lookup_workspace_bytes

    k = 4096
    cap_rows = CPU_BLOCK_BYTES // (4 * k)
    assert chunk_rows(k, 256.0) > cap_rows  # the budget alone would allow more rows
    assert chunk_rows(k, 256.0, "cpu") == cap_rows
    assert chunk_rows(k, 0.001, "cpu") == chunk_rows(k, 0.001)  # a smaller budget still rules
    assert lookup_workspace_bytes(10**6, k, 256.0, "cpu") == 4 * (cap_rows * k + k)
    assert lookup_workspace_bytes(10, k, 256.0, "cpu") == 4 * (10 * k + k)
    # several capped chunks through one reused block: still the brute-force answer
    torch.manual_seed(3)
    cb = make(num_codes=k, code_dim=8).eval()
    z = torch.randn(1, 3 * cap_rows + 5, 8)
    assert_nearest(cb.lookup(z), z, cb.codebook)
