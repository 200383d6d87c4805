"""`ConceptLevel`: the summariser and the concept codebook, and what one forward of them gives.

The model (:class:`mmvq.MultimodalVQ`) owns one ``ConceptLevel`` when
``MultimodalVQConfig.concept.num_concepts > 0``. Its codebook is a
:class:`~mmvq.quantize.SharedCodebook` like the detail codebook, so the concept codes get the
same modality-weighted EMA, dead-code restarts, fp32 lookups and DDP all-reduces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mmvq.concept.config import ConceptConfig
from mmvq.concept.losses import concept_losses, joint_assignment, row_groups
from mmvq.concept.summariser import ConceptSummariser
from mmvq.quantize import SharedCodebook

__all__ = ["ConceptLevel", "ConceptOutput", "concept_stream"]

_STREAM_SUFFIX = "/concept"


def concept_stream(modality: str) -> str:
    """The fusion decoder's name for a modality's concept tokens (``"<modality>/concept"``;
    modality names cannot hold ``/``, so it never collides with a modality)."""
    return modality + _STREAM_SUFFIX


class ConceptOutput(NamedTuple):
    """What :meth:`ConceptLevel.forward` returns; every dict is keyed by modality.

    Attributes:
        z: concept tokens ``[B, S, D]`` before quantisation.
        z_q: quantised concept tokens ``[B, S, D]`` (straight-through).
        codes: concept codes ``long [B, S]``; ``-1`` in absent rows. In training these are the
            joint codes of paired rows.
        loss: the concept codebook's commitment loss (``"commit"``) and the weighted alignment
            terms (``"contrastive"``, ``"match"``, ``"decorrelation"``), scalars.
        stats: the concept codebook's batch statistics (``usage/<m>``, ``perplexity/<m>``,
            ``overlap/<a>-<b>``, ``agreement/<a>-<b>``) and the alignment terms' log.
    """

    z: dict[str, Tensor]
    z_q: dict[str, Tensor]
    codes: dict[str, Tensor]
    loss: dict[str, Tensor]
    stats: dict[str, Tensor]


class ConceptLevel(nn.Module):
    """``S`` concept codes per sample from a codebook every modality shares.

    Args:
        config: the concept level's options.
        code_dim: the shared code dimension ``D``.
        layout: modality -> tokens per sample (the adapters' ``num_tokens()``).
    """

    def __init__(self, config: ConceptConfig, code_dim: int, layout: Mapping[str, int]) -> None:
        super().__init__()
        if config.anchor and config.anchor not in layout:
            raise ValueError(
                f"ConceptConfig.anchor={config.anchor!r} is not a modality of the model "
                f"{list(layout)}; use one of them or ''."
            )
        self.config = config
        self.num_concepts = config.num_concepts
        self.summariser = ConceptSummariser(config, code_dim, layout)
        self.codebook = SharedCodebook(config.codebook_config(code_dim), tuple(layout))

    def summarise(self, z: Mapping[str, Tensor], token_mask: Mapping[str, Tensor]) -> dict:
        """Concept tokens ``{m: [B, S, D]}`` of each modality's tokens."""
        return {m: self.summariser(m, z[m], token_mask[m]) for m in z}

    def forward(
        self,
        z: Mapping[str, Tensor],
        token_mask: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        weights: Mapping[str, float],
        batch: Mapping[str, Mapping[str, Tensor]],
    ) -> ConceptOutput:
        """Summarise, quantise (jointly for paired rows in training) and score the alignment.

        ``batch`` is the model batch: rows with identical inputs in some modality are
        contrastive positives of each other.
        """
        concepts = self.summarise(z, token_mask)
        assign = restart_from = None
        if self.training and self.config.joint_assignment and len(concepts) > 1:
            assign, restart_from = joint_assignment(
                concepts, present, self.codebook, self.config.anchor
            )
        quant = self.codebook(
            concepts,
            None,
            weights=dict(weights),
            present=dict(present),
            assign=assign,
            restart_from=restart_from,
        )
        groups = {m: row_groups(batch[m], present[m]) for m in concepts}
        losses, log = concept_losses(
            concepts, quant.codes, present, groups, self.codebook, self.config
        )
        losses = {"commit": sum(quant.loss.values()), **losses}
        return ConceptOutput(
            concepts, dict(quant.z_q), dict(quant.codes), losses, {**quant.stats, **log}
        )

    @torch.no_grad()
    def encode(self, modality: str, z: Tensor, token_mask: Tensor, present: Tensor) -> Tensor:
        """Concept codes ``long [B, S]`` of one modality (nearest codes; ``-1`` where absent)."""
        concepts = self.summariser(modality, z, token_mask & present[:, None])
        codes = self.codebook.lookup(concepts)
        return codes.masked_fill(~present[:, None], -1)

    def embed(self, codes: Tensor) -> Tensor:
        """Concept code vectors ``[B, S, D]`` of ``codes`` (``-1`` gives zeros)."""
        real = codes >= 0
        return self.codebook.embed(codes.clamp_min(0)) * real[..., None]

    def parameters_with_scaled_lr(self) -> Sequence[nn.Parameter]:
        """The parameters trained at ``lr * config.lr_scale`` (the summariser's)."""
        return list(self.summariser.parameters())
