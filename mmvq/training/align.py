"""Cross-modal code matching (CMCM): pull paired samples of different modalities onto the same
codes.

After Liu et al., "Cross-Modal Discrete Representation Learning" (ACL 2022). For each sample and
modality, a *code distribution* over the K codes is the mean, over the sample's real tokens, of a
soft assignment of each token to the codes. For each pair of modalities, the similarity of sample
``i`` of one and sample ``j`` of the other is the cosine of their code distributions; a symmetric
cross-entropy over the batch (paired samples are the positives, the other samples the negatives)
is the loss. Without it, a shared codebook tends to split into per-modality regions.

The soft assignment is **scale-free** by default (``scale="std"``): each token's squared distances
to the K codes are divided by their standard deviation over the codes (a per-token constant,
detached) before ``softmax(-d / temperature)``. ``temperature`` then means the same whatever the
code dimension, the codebook's scale, or how far training has moved it: at ``temperature = 1`` a
code one standard deviation closer than another gets ``e`` times its weight. In raw squared-distance
units (``scale="none"``, the paper's form) a fixed temperature is one-hot as soon as codes are a
few units apart; the code distributions of modalities that use disjoint codes are then orthogonal,
every similarity is 0, the logits are constant and the loss (``ln B``) has no gradient at all: the
failure that left the split codebook of the default recipe unaligned. With the scale-free
assignment at temperatures around 0.5-1 every token keeps some mass on the other modality's codes,
so the similarities of disjoint modalities are small but not constant, and the gradient pulls paired
samples' tokens toward the codes their partner uses.

Measured on the built-in image-text recipe (CPU, 300-600 steps): the loss now trains (its
retrieval accuracy rises far above chance), but the hard codes the modalities share stay few
(eval overlap 0.03-0.13, same-code agreement under 0.04), and every setting that moved them cost
image PSNR (about 3 dB) and image-to-text translation. The recipes therefore leave it off
(``weight = 0``); it is there to turn on (``--alignment weight=0.3``) where sharing matters more
than those costs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvq.utils.checks import check_int

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.quantize import SharedCodebook

__all__ = [
    "SCALES",
    "AlignmentConfig",
    "alignment_loss",
    "code_distributions",
    "code_matching_loss",
]

#: How :func:`code_distributions` scales each token's distances before the softmax.
SCALES = ("std", "none")


@dataclass
class AlignmentConfig:
    """Options of the alignment loss.

    Attributes:
        weight: weight of the loss in the generator's objective (0 turns it off).
        temperature: temperature of the soft code assignment ``softmax(-d / temperature)``. With
            ``scale="std"`` (the default) ``d`` is each token's squared distances in units of their
            standard deviation over the codes, so the value does not depend on the code dimension
            or the codebook's scale. Lower is closer to the hard nearest code, higher reaches
            further codes: in the default image-text recipe, where the codebook splits into one
            region per modality, ``0.2`` leaves almost no mass on the other modality's codes
            (little gradient), ``0.5`` (default) a little, ``1`` a lot (but then paired code
            distributions can agree through their soft tails while the hard codes stay apart).
            With ``scale="none"`` it is in raw squared-distance units (the paper's form; then it
            must be tuned to the codebook's scale).
        contrast_temperature: temperature of the contrastive logits (cosine similarities of code
            distributions) over the batch.
        normalize: l2-normalise tokens and codes before the soft assignment, when the codebook is
            given as a ``[K, D]`` tensor (a :class:`~mmvq.quantize.SharedCodebook` uses its own
            lookup space, l2-normalisation included).
        scale: ``"std"`` (scale-free distances, see ``temperature``) or ``"none"`` (raw squared
            distances).
        warmup_steps: the weight ramps linearly from 0 to ``weight`` over this many optimizer steps
            (:meth:`weight_at`); 0 applies the full weight from the first step.
        anchor: a modality whose tokens the loss does not move (its code distributions are
            detached targets): the other modalities are pulled onto its codes. ``""`` (default)
            moves every modality.
    """

    weight: float = 0.0
    temperature: float = 0.5
    contrast_temperature: float = 0.1
    normalize: bool = False
    scale: str = "std"
    warmup_steps: int = 0
    anchor: str = ""

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"AlignmentConfig.weight must be >= 0, got {self.weight!r}")
        for name in ("temperature", "contrast_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AlignmentConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.scale not in SCALES:
            raise ValueError(f"AlignmentConfig.scale must be one of {SCALES}, got {self.scale!r}")
        if not isinstance(self.anchor, str):
            raise TypeError(
                f"AlignmentConfig.anchor must be a modality name or '', got {self.anchor!r}"
            )
        check_int("AlignmentConfig.warmup_steps", self.warmup_steps, minimum=0)

    def weight_at(self, step: int) -> float:
        """The loss weight at optimizer step ``step`` (0-based), warm-up included."""
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return float(self.weight)
        return float(self.weight) * (step + 1) / (self.warmup_steps + 1)


def _scaled(dist: Tensor, scale: str) -> Tensor:
    """Distances ``[..., K]`` divided by their (detached) standard deviation over the codes."""
    if scale == "none":
        return dist
    spread = dist.detach().std(dim=-1, keepdim=True, unbiased=False)
    # a token equidistant from every code (or K == 1) has no spread: any finite scale will do
    return dist / spread.clamp_min(torch.finfo(dist.dtype).tiny ** 0.5)


def code_distributions(
    z: Tensor,
    token_mask: Tensor,
    codebook: SharedCodebook | Tensor,
    temperature: float = 0.5,
    normalize: bool = False,
    scale: str = "std",
) -> Tensor:
    """Per-sample soft code distributions ``[B, K]`` (rows sum to 1 where a sample has tokens).

    ``codebook`` is the model's :class:`~mmvq.quantize.SharedCodebook` (distances are then taken
    in its lookup space, projection and l2-normalisation included) or a plain ``[K, D]`` tensor of
    code vectors (``normalize`` then l2-normalises both sides). Each token's assignment is
    ``softmax(-d / temperature)`` over the codes, where ``d`` are its squared distances divided by
    their standard deviation over the codes (``scale="std"``: invariant to the scale of ``z`` and
    the codes) or the raw squared distances (``scale="none"``). Computed in fp32 whatever the
    autocast state; the gradient flows into ``z``, not into the codes.
    """
    if z.dim() != 3 or token_mask.shape != z.shape[:2]:
        raise ValueError(
            f"code_distributions expects z [B, N, D] and token_mask [B, N], got {tuple(z.shape)} "
            "and "
            f"{tuple(token_mask.shape)}"
        )
    if scale not in SCALES:
        raise ValueError(f"code_distributions: scale must be one of {SCALES}, got {scale!r}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        if isinstance(codebook, Tensor):
            zf = z.float()
            codes = codebook.detach().float()
            if normalize:
                zf = F.normalize(zf, dim=-1)
                codes = F.normalize(codes, dim=-1)
            dist = (
                zf.pow(2).sum(-1, keepdim=True) - 2 * zf @ codes.t() + codes.pow(2).sum(-1)
            ).clamp_min(0)
        else:
            dist = codebook.distances(z)
        assign = torch.softmax(-_scaled(dist, scale) / temperature, dim=-1)  # [B, N, K]
        weight = token_mask.float()
        return (assign * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1.0)


def code_matching_loss(
    z: Mapping[str, Tensor],
    token_mask: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    codebook: SharedCodebook | Tensor,
    config: AlignmentConfig,
) -> tuple[Tensor, dict[str, float]]:
    """Symmetric contrastive cross-entropy between paired modalities' code distributions.

    Args:
        z, token_mask, present: per modality, as in :class:`mmvq.MultimodalVQOutput`.
        codebook: the model's :class:`~mmvq.quantize.SharedCodebook` or its code vectors ``[K, D]``.
        config: temperatures and the distance scale (the weight is applied by the caller).

    Returns:
        the mean loss over modality pairs with at least two paired rows (0 when there are none),
        and a log dict ``align/<a>-<b>`` of each pair's loss, ``align/acc/<a>-<b>`` of its
        retrieval accuracy (how often a sample's own partner is the most similar) and
        ``align/sim/<a>-<b>`` of the mean cosine similarity of paired samples' code distributions.
    """
    names = sorted(z)
    dists = {
        m: code_distributions(
            z[m].detach() if m == config.anchor else z[m],
            token_mask[m],
            codebook,
            config.temperature,
            config.normalize,
            config.scale,
        )
        for m in names
    }
    losses, log = [], {}
    for a, b in itertools.combinations(names, 2):
        both = present[a].bool() & present[b].bool()
        if int(both.sum()) < 2:
            continue
        pa = F.normalize(dists[a][both], dim=-1)
        pb = F.normalize(dists[b][both], dim=-1)
        sim = pa @ pb.t()
        logits = sim / config.contrast_temperature
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        losses.append(loss)
        log[f"align/{a}-{b}"] = float(loss.detach())
        log[f"align/acc/{a}-{b}"] = float((logits.argmax(1) == target).float().mean())
        log[f"align/sim/{a}-{b}"] = float(sim.detach().diagonal().mean())
    if not losses:
        anchor = next(iter(z.values()))
        return anchor.sum() * 0.0, log
    return torch.stack(losses).mean(), log


def alignment_loss(
    out, codebook: SharedCodebook | Tensor, config: AlignmentConfig
) -> tuple[Tensor, dict[str, float]]:
    """:func:`code_matching_loss` on a :class:`mmvq.MultimodalVQOutput`.

    Pass the model's :class:`~mmvq.quantize.SharedCodebook` (``model.codebook``) so that the soft
    assignment uses the same distances as the nearest-code lookup.
    """
    return code_matching_loss(out.z, out.token_mask, out.present, codebook, config)
