"""Cross-modal code matching (CMCM): pull paired samples of different modalities onto the same codes.

After Liu et al., "Cross-Modal Discrete Representation Learning" (ACL 2022). For each sample and
modality, a *code distribution* over the K codes is the mean, over the sample's real tokens, of a
soft assignment ``softmax(-||z - e_k||^2 / temperature)``. For each pair of modalities, the
similarity of sample ``i`` of one and sample ``j`` of the other is the cosine of their code
distributions; a symmetric cross-entropy over the batch (paired samples are the positives, the
other samples the negatives) is the loss. Without it, a shared codebook tends to split into
per-modality regions.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.quantize import SharedCodebook

__all__ = ["AlignmentConfig", "alignment_loss", "code_distributions", "code_matching_loss"]


@dataclass
class AlignmentConfig:
    """Options of the alignment loss.

    Attributes:
        weight: weight of the loss in the generator's objective (0 turns it off).
        temperature: temperature of the soft code assignment (in squared-distance units).
        contrast_temperature: temperature of the contrastive logits over the batch.
        normalize: l2-normalise tokens and codes before the soft assignment (use with an
            l2-normalised codebook).
    """

    weight: float = 0.0
    temperature: float = 1.0
    contrast_temperature: float = 0.1
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"AlignmentConfig.weight must be >= 0, got {self.weight!r}")
        for name in ("temperature", "contrast_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AlignmentConfig.{name} must be > 0, got {getattr(self, name)!r}")


def code_distributions(
    z: Tensor,
    token_mask: Tensor,
    codebook: "SharedCodebook | Tensor",
    temperature: float = 1.0,
    normalize: bool = False,
) -> Tensor:
    """Per-sample soft code distributions ``[B, K]`` (rows sum to 1 where a sample has tokens).

    ``codebook`` is the model's :class:`~mmvq.quantize.SharedCodebook` (distances are then taken
    in its lookup space, projection and l2-normalisation included) or a plain ``[K, D]`` tensor of
    code vectors (``normalize`` then l2-normalises both sides). Distances are computed in fp32
    whatever the autocast state; the gradient flows into ``z``, not into the codes.
    """
    if z.dim() != 3 or token_mask.shape != z.shape[:2]:
        raise ValueError(
            f"code_distributions expects z [B, N, D] and token_mask [B, N], got {tuple(z.shape)} and "
            f"{tuple(token_mask.shape)}"
        )
    with torch.autocast(device_type=z.device.type, enabled=False):
        if isinstance(codebook, Tensor):
            zf = z.float()
            codes = codebook.detach().float()
            if normalize:
                zf = F.normalize(zf, dim=-1)
                codes = F.normalize(codes, dim=-1)
            dist = (zf.pow(2).sum(-1, keepdim=True) - 2 * zf @ codes.t() + codes.pow(2).sum(-1)).clamp_min(0)
        else:
            dist = codebook.distances(z)
        assign = torch.softmax(-dist / temperature, dim=-1)  # [B, N, K]
        weight = token_mask.float()
        return (assign * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1.0)


def code_matching_loss(
    z: Mapping[str, Tensor],
    token_mask: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    codebook: "SharedCodebook | Tensor",
    config: AlignmentConfig,
) -> tuple[Tensor, dict[str, float]]:
    """Symmetric contrastive cross-entropy between paired modalities' code distributions.

    Args:
        z, token_mask, present: per modality, as in :class:`mmvq.MultimodalVQOutput`.
        codebook: the model's :class:`~mmvq.quantize.SharedCodebook` or its code vectors ``[K, D]``.
        config: temperatures.

    Returns:
        the mean loss over modality pairs with at least two paired rows (0 when there are none),
        and a log dict ``align/<a>-<b>`` of each pair's loss and ``align/acc/<a>-<b>`` of its
        retrieval accuracy (how often a sample's own partner is the most similar).
    """
    names = sorted(z)
    dists = {
        m: code_distributions(z[m], token_mask[m], codebook, config.temperature, config.normalize)
        for m in names
    }
    losses, log = [], {}
    for a, b in itertools.combinations(names, 2):
        both = present[a].bool() & present[b].bool()
        if int(both.sum()) < 2:
            continue
        pa = F.normalize(dists[a][both], dim=-1)
        pb = F.normalize(dists[b][both], dim=-1)
        logits = pa @ pb.t() / config.contrast_temperature
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        losses.append(loss)
        log[f"align/{a}-{b}"] = float(loss.detach())
        log[f"align/acc/{a}-{b}"] = float((logits.argmax(1) == target).float().mean())
    if not losses:
        anchor = next(iter(z.values()))
        return anchor.sum() * 0.0, log
    return torch.stack(losses).mean(), log


def alignment_loss(out, codebook: "SharedCodebook | Tensor", config: AlignmentConfig) -> tuple[Tensor, dict[str, float]]:
    """:func:`code_matching_loss` on a :class:`mmvq.MultimodalVQOutput`."""
    return code_matching_loss(out.z, out.token_mask, out.present, codebook, config)
