"""Tiny real models for the Hub, model card, sampling and CLI tests (CPU, well under a second each).

The ``vector`` modality comes from the fixture distribution ``mmvq-vector-plugin 0.1`` (entry
point ``vector``, see :mod:`plugin_utils`), so saved configs record a real distribution and
version; the built-in adapters (``text``, ``image``) come through mmvq's own entry points.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from plugin_utils import VECTOR_DIST_NAME, VECTOR_DIST_VERSION, VECTOR_PLUGIN_DIR, plugin_path

from mmvq.fusion import FusionDecoderConfig
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.quantize import CodebookConfig

__all__ = [
    "IMAGE_SPEC",
    "TEXT_SPEC",
    "VECTOR_DIST_NAME",
    "VECTOR_DIST_VERSION",
    "perturb",
    "tiny_config",
    "tiny_model",
    "vector_batch",
    "vector_plugin_fixture",
    "vector_values",
]

TEXT_SPEC: tuple[str, dict[str, Any]] = (
    "text",
    {
        "max_length": 16,
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "decoder_layers": 1,
        "truncation": "error",
    },
)
IMAGE_SPEC: tuple[str, dict[str, Any]] = (
    "image",
    {
        "resolution": 16,
        "base_channels": 8,
        "channel_mult": (1, 2),
        "num_groups": 4,
        "disc_num_layers": 1,
    },
)


@pytest.fixture(name="vector_plugin")
def vector_plugin_fixture() -> Iterator[None]:
    """The ``vector`` adapter's distribution is installed (on ``sys.path``) for the test."""
    with plugin_path(VECTOR_PLUGIN_DIR):
        yield


def tiny_config(num_codes: int = 32) -> MultimodalVQConfig:
    return MultimodalVQConfig(
        codebook=CodebookConfig(
            num_codes=num_codes, code_dim=16, kmeans_init=False, restart_every=0
        ),
        decoder=FusionDecoderConfig(dim=32, depth=1, heads=2),
    )


def tiny_model(
    seed: int = 0, extra: dict[str, Any] | None = None, num_codes: int = 32
) -> MultimodalVQ:
    """Modalities ``a`` (vector, 8 values / 4 tokens) and ``b`` (vector, 12 / 3), plus ``extra``.

    Needs the :func:`vector_plugin` fixture. Every tensor, buffers included, is random.
    """
    torch.manual_seed(seed)
    specs: dict[str, Any] = {"a": ("vector", {}), "b": ("vector", {"length": 12, "num_chunks": 3})}
    specs.update(extra or {})
    model = MultimodalVQ.build(specs, tiny_config(num_codes))
    perturb(model, seed)
    return model.eval()


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Give every floating tensor of the state dict random values (round trips must prove it)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point() and tensor.numel():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)


def vector_values(length: int, n: int, seed: int = 0) -> list[list[float]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, length, generator=gen).tolist()


def vector_batch(
    model: MultimodalVQ, n: int = 3, seed: int = 0
) -> dict[str, dict[str, torch.Tensor]]:
    """A collated batch of both vector modalities."""
    batch = {}
    for i, m in enumerate(("a", "b")):
        adapter = model.adapters[m]
        rows = vector_values(adapter.config.length, n, seed + i)
        batch[m] = adapter.collate([adapter.preprocess(r) for r in rows])
    return batch
