"""Code-level temperature sampling and generation (mmvq/generation.py)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    tiny_model,
    vector_batch,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
)

from mmvq.adapter import AdapterInputError
from mmvq.generation import SamplingConfig, code_distances, generate, sample_codes
from mmvq.quantize import CodebookConfig, SharedCodebook


@pytest.mark.parametrize(
    "options", [{}, {"l2_normalize": True}, {"lookup_dim": 4}, {"ema": False, "lookup_dim": 6}]
)
def test_distances_match_the_codebook_lookup(options: dict) -> None:
    torch.manual_seed(0)
    cb = SharedCodebook(
        CodebookConfig(num_codes=24, code_dim=8, kmeans_init=False, restart_every=0, **options),
        ["x"],
    )
    z = torch.randn(3, 5, 8)
    d = code_distances(cb, z)
    assert d.shape == (3, 5, 24) and d.dtype == torch.float32
    assert torch.equal(d.argmin(-1), cb.lookup(z))
    # against a brute-force reference in the lookup space
    x = cb.project_in(z) if cb.project_in is not None else z
    codes = cb.code_vectors
    if cb.config.l2_normalize:
        x, codes = (
            torch.nn.functional.normalize(x, dim=-1),
            torch.nn.functional.normalize(codes, dim=-1),
        )
    ref = ((x[..., None, :] - codes) ** 2).sum(-1)
    torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-4)


def test_distances_stay_fp32_under_autocast() -> None:
    cb = SharedCodebook(
        CodebookConfig(num_codes=8, code_dim=4, kmeans_init=False, restart_every=0), ["x"]
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = code_distances(cb, torch.randn(2, 4).bfloat16())
    assert d.dtype == torch.float32


def test_sampling_temperature_and_top_k() -> None:
    torch.manual_seed(1)
    cb = SharedCodebook(
        CodebookConfig(num_codes=16, code_dim=4, kmeans_init=False, restart_every=0), ["x"]
    )
    z = torch.randn(400, 4)
    nearest = cb.lookup(z)
    assert torch.equal(sample_codes(cb, z, SamplingConfig(temperature=0.0)), nearest)
    assert torch.equal(sample_codes(cb, z, SamplingConfig(temperature=50.0, top_k=1)), nearest)
    gen = torch.Generator().manual_seed(0)
    hot = sample_codes(cb, z, SamplingConfig(temperature=100.0, top_k=None), gen)
    assert (hot != nearest).float().mean() > 0.5  # near-uniform over 16 codes
    gen = torch.Generator().manual_seed(0)
    cool = sample_codes(cb, z, SamplingConfig(temperature=0.01, top_k=None), gen)
    assert (cool != nearest).float().mean() < (hot != nearest).float().mean()
    top3 = code_distances(cb, z).topk(3, largest=False).indices
    picked = sample_codes(
        cb, z, SamplingConfig(temperature=100.0, top_k=3), torch.Generator().manual_seed(2)
    )
    assert bool((top3 == picked[:, None]).any(-1).all())


@pytest.mark.usefixtures("vector_plugin")
def test_generate_rows_seed_and_deterministic_limit() -> None:
    model = tiny_model(seed=2)
    batch = {"a": vector_batch(model, n=2)["a"]}
    plain = generate(model, batch, ["b"], num_samples=3, config=SamplingConfig(temperature=0.0))
    assert plain.codes.detail["a"].shape == (6, 4) and plain.recon["b"].shape == (6, 12)
    expected = model.decode(model.encode(batch), targets=["b"])["b"]
    torch.testing.assert_close(plain.recon["b"], expected.repeat_interleave(3, dim=0))
    config = SamplingConfig(temperature=50.0, top_k=None, seed=7)
    first = generate(model, batch, ["b"], num_samples=4, config=config)
    again = generate(model, batch, ["b"], num_samples=4, config=config)
    assert torch.equal(first.codes.detail["a"], again.codes.detail["a"]) and torch.equal(
        first.recon["b"], again.recon["b"]
    )
    assert len({tuple(r) for r in first.codes.detail["a"].tolist()}) > 1  # variations
    # the sampled codes are what was translated
    torch.testing.assert_close(model.decode(first.codes, targets=["b"])["b"], first.recon["b"])


@pytest.mark.usefixtures("vector_plugin")
def test_generate_restores_training_mode() -> None:
    model = tiny_model().train()
    generate(model, {"a": vector_batch(model)["a"]}, ["b"])
    assert model.training


@pytest.mark.usefixtures("vector_plugin")
def test_generate_bad_inputs() -> None:
    model = tiny_model()
    batch = vector_batch(model)
    with pytest.raises(AdapterInputError, match=r"\['a'\] is both a source and a target"):
        generate(model, {"a": batch["a"]}, ["a"])
    with pytest.raises(AdapterInputError, match="unknown modality 'zzz'"):
        generate(model, {"a": batch["a"]}, ["zzz"])
    with pytest.raises(AdapterInputError, match="num_samples must be an int >= 1"):
        generate(model, {"a": batch["a"]}, ["b"], num_samples=0)
    with pytest.raises(AdapterInputError, match="at least one target"):
        generate(model, {"a": batch["a"]}, [])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"top_k": 0}, "top_k must be None or an int >= 1"),
        ({"seed": 1.5}, "seed must be None or an int"),
    ],
)
def test_sampling_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


def test_code_distances_rejects_wrong_width() -> None:
    cb = SharedCodebook(
        CodebookConfig(num_codes=8, code_dim=4, kmeans_init=False, restart_every=0), ["x"]
    )
    with pytest.raises(AdapterInputError, match=r"expects float vectors \[..., 4\]"):
        code_distances(cb, torch.randn(2, 5))
