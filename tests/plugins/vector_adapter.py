"""A minimal third-party adapter: the "vector" modality, reusable by any test.

A fixed-length float vector is cut into ``num_chunks`` equal chunks; each chunk is one token.
An MLP maps a chunk to the shared code dimension and another maps a hidden state back. It is
written only against the public contract (:mod:`mmvq.adapter`), as a plugin author would, and
is provided to the registry through the entry point of the fixture distribution in
``tests/fixtures/vector_plugin`` (``vector = plugins.vector_adapter:VectorAdapter``).

It registers nothing when imported; tests that need the name in-process can call
``mmvq.register_adapter("vector", VectorAdapter, exist_ok=True)`` or use
:func:`plugin_utils.plugin_path`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvq.adapter import AdapterConfig, AdapterInputError, BadInput, ModalityAdapter, Tokens

__all__ = ["VectorAdapter", "VectorAdapterConfig"]


@dataclass
class VectorAdapterConfig(AdapterConfig):
    """Options of :class:`VectorAdapter`.

    Attributes:
        length: values per example; must be divisible by ``num_chunks``.
        num_chunks: tokens per example.
        hidden: width of the encoder and decoder MLPs.
    """

    code_dim: int = 16
    length: int = 8
    num_chunks: int = 4
    hidden: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("length", "num_chunks", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"VectorAdapterConfig.{name} must be a positive int, got {value!r}"
                )
        if self.length % self.num_chunks:
            raise ValueError(
                f"VectorAdapterConfig.length ({self.length}) must be divisible by num_chunks "
                f"({self.num_chunks}); pick num_chunks among the divisors of length."
            )


class VectorAdapter(ModalityAdapter):
    """Adapter for fixed-length float vectors (lists, tuples or 1-D tensors of numbers)."""

    config_class = VectorAdapterConfig
    config: VectorAdapterConfig

    def __init__(self, config: VectorAdapterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        chunk = cfg.length // cfg.num_chunks
        self.encoder = nn.Sequential(
            nn.Linear(chunk, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.code_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.code_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, chunk)
        )

    # ------------------------------------------------------------------ data side
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        """``{"values": float32 [length]}`` from a list/tuple of numbers or a 1-D tensor."""
        length = self.config.length
        if isinstance(example, Tensor):
            if example.dim() != 1 or not example.is_floating_point():
                raise AdapterInputError(
                    f"vector: field 'values' must be a 1-D float tensor of length {length}, got a "
                    f"{example.dtype} tensor of shape {tuple(example.shape)}; pass "
                    "tensor.flatten().float()."
                )
            values = example.detach().to(torch.float32).cpu()
        elif isinstance(example, (list, tuple)):
            bad = [v for v in example if not isinstance(v, Real) or isinstance(v, bool)]
            if bad:
                raise AdapterInputError(
                    f"vector: field 'values' must hold numbers, got {bad[0]!r} "
                    f"({type(bad[0]).__name__}); convert the entries to float."
                )
            values = torch.tensor([float(v) for v in example], dtype=torch.float32)
        else:
            raise AdapterInputError(
                "vector: field 'values' must be a list/tuple of numbers or a 1-D float tensor, "
                f"got {type(example).__name__} {example!r:.60}; pass e.g. [0.1, 0.2, ...]."
            )
        if values.numel() != length:
            raise AdapterInputError(
                f"vector: field 'values' must have length {length}, got {values.numel()}; "
                f"pad/crop it or set VectorAdapterConfig.length={values.numel()}."
            )
        if not torch.isfinite(values).all():
            raise AdapterInputError(
                "vector: field 'values' holds NaN or inf; replace non-finite values before "
                "encoding."
            )
        return {"values": values}

    def bad_inputs(self) -> list[BadInput]:
        length = self.config.length
        return [
            BadInput("too short", [0.0] * (length - 1), "must have length"),
            BadInput("not a sequence", "1 2 3", "list/tuple of numbers"),
            BadInput("non-numeric entry", ["a"] * length, "must hold numbers"),
            BadInput("NaN", [math.nan] * length, "NaN"),
            BadInput("2-D tensor", torch.zeros(2, length), "1-D float tensor"),
        ]

    # ----------------------------------------------------------------- model side
    def num_tokens(self) -> int:
        return self.config.num_chunks

    def _chunks(self, values: Tensor) -> Tensor:
        return values.reshape(values.shape[0], self.config.num_chunks, -1)

    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        values = batch["values"].to(self.target_device())
        z = self.encoder(self._chunks(values))
        mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        return Tokens(z, mask)

    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        expected = (self.config.num_chunks, self.config.code_dim)
        if h.dim() != 3 or tuple(h.shape[1:]) != expected:
            raise AdapterInputError(
                f"vector.decode: h must have shape [B, {expected[0]}, {expected[1]}], got "
                f"{tuple(h.shape)}"
            )
        return self.decoder(h).reshape(h.shape[0], self.config.length)

    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        target = batch["values"].to(recon.device)
        return F.mse_loss(recon, target, reduction="none").mean(dim=1)

    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        target = batch["values"].to(recon.device)
        err = (recon.detach() - target).float()
        return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean())}

    def postprocess(self, recon: Tensor) -> list[list[float]]:
        return [row.tolist() for row in recon.detach().float().cpu()]

    def discriminator(self) -> nn.Module:
        cfg = self.config
        return nn.Sequential(
            nn.Linear(cfg.length, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 1)
        )

    def gan_inputs(self, batch: dict[str, Tensor], recon: Tensor) -> tuple[Tensor, Tensor]:
        return batch["values"].to(recon.device), recon

    def last_layer(self) -> Tensor:
        return self.decoder[-1].weight
