"""The two-level codes of a batch (:class:`MultimodalCodes`), their layout (:class:`CodeSpan`),
and cross-modal similarity and retrieval by concept codes.

Layout of :meth:`mmvq.MultimodalVQ.encode`'s result::

    codes.concept[m]   long [B, S]     S concept codes per sample, from the concept codebook
                                       (Kc codes) that every modality shares; -1 in absent rows
    codes.detail[m]    long [B, N_m]   one detail code per adapter token, from the detail
                                       codebook (K codes); -1 at padding and in absent rows

:meth:`mmvq.MultimodalVQ.code_layout` lists the spans in the order a sequence model sees them
(for each modality: its concept span, then its detail span).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LEVELS", "CodeSpan", "MultimodalCodes", "concept_similarity", "retrieve"]

LEVELS: tuple[str, ...] = ("concept", "detail")
"""The code levels, in sequence order."""


class CodeSpan(NamedTuple):
    """One span of a model's codes: ``length`` codes of ``modality`` at ``level``, each in
    ``[0, num_codes)``."""

    modality: str
    level: str
    length: int
    num_codes: int


@dataclass
class MultimodalCodes:
    """Codes of a batch at both levels (see the module docstring); either may be empty.

    ``decode`` accepts any subset: concept codes alone, detail codes alone, or both.
    """

    concept: dict[str, Tensor] = field(default_factory=dict)
    detail: dict[str, Tensor] = field(default_factory=dict)

    def levels(self) -> Iterator[tuple[str, dict[str, Tensor]]]:
        """``(level, {modality: codes})`` for both levels, concept first."""
        yield "concept", self.concept
        yield "detail", self.detail

    @property
    def modalities(self) -> list[str]:
        """Modalities with codes at some level (concept order first)."""
        return list(dict.fromkeys([*self.concept, *self.detail]))

    def to(self, device: torch.device | str) -> MultimodalCodes:
        return MultimodalCodes(
            {m: c.to(device) for m, c in self.concept.items()},
            {m: c.to(device) for m, c in self.detail.items()},
        )

    def select(self, modalities: list[str] | tuple[str, ...]) -> MultimodalCodes:
        """The codes of ``modalities`` only (both levels)."""
        keep = set(modalities)
        return MultimodalCodes(
            {m: c for m, c in self.concept.items() if m in keep},
            {m: c for m, c in self.detail.items() if m in keep},
        )

    def rows(self, index: Tensor) -> MultimodalCodes:
        """The rows ``index`` (a bool mask or indices) of every tensor."""
        return MultimodalCodes(
            {m: c[index] for m, c in self.concept.items()},
            {m: c[index] for m, c in self.detail.items()},
        )

    def to_dict(self) -> dict[str, dict[str, list[list[int]]]]:
        """``{"concept": {m: rows}, "detail": {m: rows}}`` of Python ints (JSON-ready)."""
        return {level: {m: c.tolist() for m, c in codes.items()} for level, codes in self.levels()}

    @classmethod
    def from_mapping(cls, codes: MultimodalCodes | Mapping[str, Tensor]) -> MultimodalCodes:
        """A :class:`MultimodalCodes`, or a plain ``{modality: codes}`` read as detail codes
        (the layout of models without a concept level)."""
        if isinstance(codes, MultimodalCodes):
            return codes
        if not isinstance(codes, Mapping):
            raise TypeError(
                "codes must be a MultimodalCodes or a dict {modality: detail codes}, got "
                f"{type(codes).__name__}"
            )
        return cls(detail=dict(codes))


def concept_similarity(codes_a: Tensor, codes_b: Tensor) -> Tensor:
    """``[Na, Nb]``: the fraction of concept slots on which two rows chose the same code.

    ``codes_a [Na, S]`` and ``codes_b [Nb, S]`` are concept codes (``-1`` = absent: matches
    nothing). Slot ``s`` of one row is compared with slot ``s`` of the other, since every
    modality's concepts come from the same learned queries.
    """
    if codes_a.dim() != 2 or codes_b.dim() != 2 or codes_a.shape[1] != codes_b.shape[1]:
        raise ValueError(
            "concept_similarity expects concept codes [Na, S] and [Nb, S] with the same S, got "
            f"{tuple(codes_a.shape)} and {tuple(codes_b.shape)}"
        )
    equal = (codes_a[:, None, :] == codes_b[None, :, :]) & (codes_a[:, None, :] >= 0)
    return equal.float().mean(dim=-1)


def retrieve(query: Tensor, gallery: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """The ``k`` gallery rows most similar to each query row by :func:`concept_similarity`:
    ``(scores [Nq, k], indices [Nq, k])``; ties go to the lower index."""
    sim = concept_similarity(query, gallery)
    k = min(k, sim.shape[1])
    # stable order on ties: sort by (-score, index)
    order = torch.sort(-sim, dim=1, stable=True)
    return -order.values[:, :k], order.indices[:, :k]
