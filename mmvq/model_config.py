"""`MultimodalVQConfig` (the model-level options) and `MultimodalVQOutput` (what a forward
returns) of :class:`mmvq.MultimodalVQ`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from mmvq.concept import ConceptConfig, ConceptOutput
from mmvq.fusion import FusionDecoderConfig
from mmvq.quantize import CodebookConfig
from mmvq.utils.configs import check_known_fields

__all__ = ["MultimodalVQConfig", "MultimodalVQOutput"]


@dataclass
class MultimodalVQConfig:
    """Model-level options (the adapters carry their own configs).

    Attributes:
        codebook: options of the shared (detail) codebook.
        decoder: options of the fusion decoder.
        concept: options of the concept level (``num_concepts=0`` turns it off).
        modality_dropout: in training, the probability that a present modality is hidden from the
            decoder for a row (it is then reconstructed from the other modalities' codes). A row
            always keeps at least one visible modality.
        modality_weights: modality -> weight of its share in the codebooks' statistics (EMA
            updates at both levels) and of its losses in :attr:`MultimodalVQOutput.loss`.
            Missing modalities weigh 1.
    """

    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    decoder: FusionDecoderConfig = field(default_factory=FusionDecoderConfig)
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    modality_dropout: float = 0.5
    modality_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.codebook, Mapping):
            self.codebook = CodebookConfig(**self.codebook)
        if isinstance(self.decoder, Mapping):
            self.decoder = FusionDecoderConfig(**self.decoder)
        if isinstance(self.concept, Mapping):
            self.concept = ConceptConfig.from_dict(self.concept)
        if not 0.0 <= float(self.modality_dropout) < 1.0:
            raise ValueError(
                "MultimodalVQConfig.modality_dropout must be in [0, 1), got "
                f"{self.modality_dropout!r}"
            )
        for m, w in self.modality_weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(
                    f"MultimodalVQConfig.modality_weights[{m!r}] must be a non-negative number, "
                    f"got {w!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultimodalVQConfig:
        """Build from :meth:`to_dict` output (or any subset of its keys); unknown keys are an
        error."""
        check_known_fields(cls, data, "MultimodalVQConfig.from_dict")
        return cls(**dict(data))


@dataclass
class MultimodalVQOutput:
    """What :meth:`MultimodalVQ.forward` returns. Every dict is keyed by modality.

    Attributes:
        loss: weighted sum of the mean reconstruction and codebook losses, plus the concept
            level's losses (a convenience; the training loop combines ``rec_loss``/``vq_loss``
            through a modality balancer instead).
        rec_loss: per-sample reconstruction loss ``[B]`` (0 where the modality is absent).
        rec_loss_mean: mean of ``rec_loss`` over rows where the modality is present (scalar).
        vq_loss: detail codebook loss (commitment, plus the codebook term for a learned codebook).
        recon: reconstructions, as returned by ``adapter.decode``.
        codes: detail code indices ``[B, N_m]``; ``-1`` at padding and in absent rows.
        z: continuous encoder tokens ``[B, N_m, D]`` (before quantisation).
        token_mask: bool ``[B, N_m]``: real tokens of present rows.
        present: bool ``[B]``: rows that hold the modality.
        visible: bool ``[B]``: rows whose codes the decoder saw (present and not dropped).
        stats: detail codebook statistics of the batch (``usage/<m>``, ``perplexity/<m>``,
            ``overlap/<a>-<b>``, ``agreement/<a>-<b>``).
        concept: the concept level's output (codes, losses, statistics), ``None`` without one.
    """

    loss: Tensor
    rec_loss: dict[str, Tensor]
    rec_loss_mean: dict[str, Tensor]
    vq_loss: dict[str, Tensor]
    recon: dict[str, Tensor]
    codes: dict[str, Tensor]
    z: dict[str, Tensor]
    token_mask: dict[str, Tensor]
    present: dict[str, Tensor]
    visible: dict[str, Tensor]
    stats: dict[str, Tensor]
    concept: ConceptOutput | None = None

    @property
    def concept_codes(self) -> dict[str, Tensor]:
        """Concept codes ``{m: long [B, S]}`` (empty without a concept level)."""
        return dict(self.concept.codes) if self.concept is not None else {}
