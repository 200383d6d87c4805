"""`CodebookConfig`: the options of :class:`~mmvq.quantize.SharedCodebook`, validated on
construction (each error names the field, the value, what it must be and the usual value)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mmvq.utils.checks import is_int, is_real
from mmvq.utils.configs import check_known_fields

__all__ = ["RANK_SEED", "CodebookConfig"]

RANK_SEED = 0x6D6D7671
"""Base seed of the generators every rank draws identically from (k-means, restarts): "mmvq"."""


def _fail(field: str, value: Any, need: str, fix: str) -> None:
    raise ValueError(f"CodebookConfig.{field} = {value!r}: {need}; {fix}.")


@dataclass
class CodebookConfig:
    """Options of :class:`SharedCodebook` (validated on construction).

    Attributes:
        num_codes: ``K``, the number of code vectors.
        code_dim: ``D``, the adapters' output dimension.
        beta: commitment weight, on the encoder side: ``beta * ||z - sg(e)||^2``.
        ema: update codes by EMA (with Laplace smoothing); ``False`` learns them by gradient
            through the codebook loss ``||sg(z) - e||^2``.
        decay: EMA decay.
        eps: Laplace smoothing of the EMA cluster sizes.
        l2_normalize: cosine-similarity codes (``z`` and ``e`` l2-normalised).
        lookup_dim: factorised codes: project ``D -> lookup_dim`` for the search (and back).
            The codebook, the commitment loss and the EMA live in the lookup space.
        kmeans_init: initialise the codes by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: a code whose EMA usage (tokens per batch) falls below this is dead.
        restart_every: check for dead codes every this many training forwards (0 = never).
        restart_until: stop restarting after this many training forwards (0 = never stop).
            A restart moves a code onto one modality's recent output; once paired modalities
            agree on their codes, that can split pairs (the concept codebook stops early).
        reservoir_size: recent encoder outputs kept per modality to restart dead codes from.
        rotation_trick: the rotation trick (Fifty et al. 2024) instead of plain straight-through.
        memory_budget_mb: extra memory for the distance block; the lookup is chunked under it.
    """

    num_codes: int = 1024
    code_dim: int = 64
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    l2_normalize: bool = False
    lookup_dim: int | None = None
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float = 1.0
    restart_every: int = 100
    restart_until: int = 0
    reservoir_size: int = 4096
    rotation_trick: bool = False
    memory_budget_mb: float = 256.0

    def __post_init__(self) -> None:
        if not is_int(self.num_codes) or self.num_codes < 1:
            _fail("num_codes", self.num_codes, "must be a positive int", "e.g. 1024")
        if not is_int(self.code_dim) or self.code_dim < 1:
            _fail(
                "code_dim",
                self.code_dim,
                "must be a positive int",
                "set it to the adapters' code_dim, e.g. 64",
            )
        if not is_real(self.beta) or self.beta < 0:
            _fail("beta", self.beta, "must be a finite number >= 0", "the usual value is 0.25")
        for name in ("ema", "l2_normalize", "kmeans_init", "rotation_trick"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                _fail(name, value, "must be a bool", "pass True or False")
        if not is_real(self.decay) or not 0.0 < self.decay < 1.0:
            _fail("decay", self.decay, "must be in (0, 1)", "the usual value is 0.99")
        if not is_real(self.eps) or self.eps <= 0:
            _fail("eps", self.eps, "must be a finite number > 0", "the usual value is 1e-5")
        if self.lookup_dim is not None and (not is_int(self.lookup_dim) or self.lookup_dim < 1):
            _fail(
                "lookup_dim",
                self.lookup_dim,
                "must be None or a positive int",
                "e.g. 8 or 32, or None",
            )
        if not is_int(self.kmeans_iters) or self.kmeans_iters < 0:
            _fail("kmeans_iters", self.kmeans_iters, "must be an int >= 0", "e.g. 10")
        if not is_real(self.dead_code_threshold) or self.dead_code_threshold < 0:
            _fail(
                "dead_code_threshold",
                self.dead_code_threshold,
                "must be a finite number >= 0",
                "e.g. 1.0",
            )
        if not is_int(self.restart_every) or self.restart_every < 0:
            _fail(
                "restart_every",
                self.restart_every,
                "must be an int >= 0",
                "e.g. 100, or 0 to never restart",
            )
        if not is_int(self.restart_until) or self.restart_until < 0:
            _fail(
                "restart_until",
                self.restart_until,
                "must be an int >= 0",
                "e.g. 300, or 0 to restart for the whole run",
            )
        if not is_int(self.reservoir_size) or self.reservoir_size < 1:
            _fail("reservoir_size", self.reservoir_size, "must be a positive int", "e.g. 4096")
        if not is_real(self.memory_budget_mb) or self.memory_budget_mb <= 0:
            _fail(
                "memory_budget_mb", self.memory_budget_mb, "must be a finite number > 0", "e.g. 256"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodebookConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        check_known_fields(cls, data, "CodebookConfig.from_dict")
        return cls(**data)
