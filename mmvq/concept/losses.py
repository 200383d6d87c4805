"""What trains the concept level to agree across modalities.

For every pair of modalities ``(a, b)`` and the rows holding both:

* **joint assignment** (:func:`joint_assignment`): in training both partners are quantised to
  one code per concept slot, the code nearest to all of them (smallest summed distance), or to
  the anchor modality's own nearest code. The commitment loss then pulls both onto the same
  code vector, and the decoder only ever sees codes the pair shares; dead codes restart onto
  the pairs' centroids, where such a shared code sits;
* **contrastive** term: an InfoNCE over the batch between the pair's concept tokens (cosine of
  the l2-normalised tokens, all slots together). Rows whose inputs are identical in some
  modality (the same caption written twice, two renderings of the same attributes) are
  positives too, not negatives (:func:`row_groups`);
* **code matching**: each partner's concept tokens are classified over the concept codebook into
  the joint code (a cross-entropy over ``-distance / spread / temperature``): a margin, so that
  at evaluation, when each modality is quantised on its own, both still land on the same code;
* **decorrelation** of the concept slots of one modality (linear CKA between slots over the
  batch): without it the ``S`` slots learn the same summary and the codes carry one slot's
  worth of information.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvq.concept.config import ConceptConfig

__all__ = ["JointAssignment", "concept_losses", "joint_assignment", "row_groups", "slot_cka"]


class JointAssignment(NamedTuple):
    """What :func:`joint_assignment` gives; each dict holds one tensor for every modality (the
    form :class:`~mmvq.quantize.SharedCodebook`'s ``assign`` / ``restart_from`` take)."""

    codes: dict[str, Tensor]  # long [B, S]: the code each (row, slot) shares
    centroids: dict[str, Tensor]  # [B, S, Dl]: where that code should sit, in lookup space


@torch.no_grad()
def joint_assignment(
    concepts: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    codebook: Any,
    anchor: str = "",
) -> JointAssignment:
    """One code per (row, slot) shared by the row's present modalities, and its centroid.

    The code minimises the summed squared distance (in the codebook's lookup space) to every
    present modality's concept token, i.e. it is the code nearest to their mean (for cosine
    codes, to the mean's direction: the centroid is l2-normalised). Rows holding ``anchor`` take
    the anchor's own nearest code, and its token as the centroid. Absent rows get whatever the
    others chose (the codebook ignores them).

    Dead concept codes restart onto the centroids (``SharedCodebook(restart_from=...)``): a code
    restarted onto one modality's token would win that modality's own lookup at evaluation
    without ever being the joint choice in training, so paired samples would stop agreeing.
    """
    dist = point = count = None
    for m, c in concepts.items():
        w = present[m][:, None, None].to(torch.float32)
        d = codebook.distances(c.detach())
        u = codebook.lookup_space(c.detach()).float()
        if m == anchor:
            own_code, own_point = d.argmin(-1), u
        dist = d * w if dist is None else dist + d * w
        point = u * w if point is None else point + u * w
        count = w if count is None else count + w
    idx = dist.argmin(-1)
    centre = point / count.clamp_min(1.0)
    if codebook.config.l2_normalize:
        centre = F.normalize(centre, dim=-1)
    if anchor in concepts:
        holds = present[anchor]
        idx = torch.where(holds[:, None], own_code, idx)
        centre = torch.where(holds[:, None, None], own_point, centre)
    return JointAssignment(dict.fromkeys(concepts, idx), dict.fromkeys(concepts, centre))


@torch.no_grad()
def row_groups(sub: Mapping[str, Tensor], present: Tensor) -> Tensor:
    """``long [B]``: rows of a modality's collated batch with identical tensors share an id;
    absent rows get ``-1``."""
    parts = [
        v.detach().reshape(v.shape[0], -1).to(torch.float32)
        for k, v in sorted(sub.items())
        if k != "present" and isinstance(v, Tensor) and v.dim() > 0
    ]
    if not parts:
        return torch.full(present.shape, -1, dtype=torch.long, device=present.device)
    _, ids = torch.unique(torch.cat(parts, dim=1), dim=0, return_inverse=True)
    return ids.to(present.device).masked_fill(~present, -1)


def _positives(groups: Mapping[str, Tensor], rows: Tensor) -> Tensor:
    """``bool [n, n]`` over the selected rows: the same row, or identical inputs somewhere."""
    n = int(rows.sum())
    pos = torch.eye(n, dtype=torch.bool, device=rows.device)
    for g in groups.values():
        g = g[rows]
        pos |= (g[:, None] == g[None, :]) & (g[:, None] >= 0)
    return pos


def _nce(logits: Tensor, positives: Tensor) -> Tensor:
    """InfoNCE with several positives per row: ``-log sum_pos softmax``."""
    logp = logits.log_softmax(dim=1)
    return -logp.masked_fill(~positives, float("-inf")).logsumexp(dim=1).mean()


def _contrastive(ua: Tensor, ub: Tensor, positives: Tensor, temperature: float) -> Tensor:
    logits = ua @ ub.t() / temperature
    return 0.5 * (_nce(logits, positives) + _nce(logits.t(), positives.t()))


def _match(da: Tensor, db: Tensor, codes: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of both partners' distances ``[n, S, K]`` against the joint codes."""

    def scaled(d: Tensor) -> Tensor:
        spread = d.detach().std(dim=-1, keepdim=True, unbiased=False)
        return -d / spread.clamp_min(1e-6) / temperature

    target = codes.flatten()
    return 0.5 * (
        F.cross_entropy(scaled(da).flatten(0, 1), target)
        + F.cross_entropy(scaled(db).flatten(0, 1), target)
    )


def slot_cka(concepts: Tensor) -> Tensor:
    """Mean linear CKA between the slots of ``concepts [B, S, D]`` over the batch: 1 when two
    slots carry the same information (up to rotation and scale), near 0 when unrelated."""
    s = concepts.shape[1]
    if s < 2 or concepts.shape[0] < 2:
        return concepts.sum() * 0.0
    x = concepts - concepts.mean(dim=0, keepdim=True)
    cross = torch.einsum("bsd,bte->sted", x, x).pow(2).sum(dim=(-1, -2))  # [S, S]
    scale = cross.diagonal().clamp_min(1e-12).sqrt()
    cka = cross / (scale[:, None] * scale[None, :])
    return cka[~torch.eye(s, dtype=torch.bool, device=concepts.device)].mean()


def concept_losses(
    concepts: Mapping[str, Tensor],
    codes: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    groups: Mapping[str, Tensor],
    codebook: Any,
    config: ConceptConfig,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The concept level's alignment losses (already weighted) and a log dict.

    Args:
        concepts: modality -> concept tokens ``[B, S, D]`` (before quantisation).
        codes: modality -> the codes they were quantised to ``[B, S]`` (the joint codes in
            training).
        present: modality -> bool ``[B]``.
        groups: modality -> :func:`row_groups` ids, for the contrastive positives.
        codebook: the concept :class:`~mmvq.quantize.SharedCodebook`.
        config: weights and temperatures.

    Returns:
        ``({"contrastive": ..., "match": ..., "decorrelation": ...}, log)``: only terms with a
        weight > 0 and data (pairs need two rows holding both modalities).
    """
    unit = {m: F.normalize(codebook.lookup_space(c.float()), dim=-1) for m, c in concepts.items()}
    terms: dict[str, list[Tensor]] = {"contrastive": [], "match": [], "decorrelation": []}
    log: dict[str, Tensor] = {}
    for a, b in itertools.combinations(sorted(concepts), 2):
        rows = present[a] & present[b]
        if int(rows.sum()) < 2:
            continue
        ua, ub = unit[a][rows], unit[b][rows]
        if config.contrastive_weight > 0:
            pos = _positives(groups, rows)
            s = ua.shape[1]
            fa, fb = ua.flatten(1) / s**0.5, ub.flatten(1) / s**0.5
            terms["contrastive"].append(_contrastive(fa, fb, pos, config.contrastive_temperature))
            hit = pos.gather(1, (fa @ fb.t()).argmax(1, keepdim=True)).float().mean()
            log[f"batch_retrieval/{a}-{b}"] = hit.detach()
        if config.match_weight > 0:
            da = codebook.distances(concepts[a][rows])
            db = codebook.distances(concepts[b][rows])
            terms["match"].append(_match(da, db, codes[a][rows], config.match_temperature))
    if config.decorrelation_weight > 0:
        for m, u in unit.items():
            if int(present[m].sum()) > 1:
                terms["decorrelation"].append(slot_cka(u[present[m]]))
    weights = {
        "contrastive": config.contrastive_weight,
        "match": config.match_weight,
        "decorrelation": config.decorrelation_weight,
    }
    losses = {}
    for name, values in terms.items():
        if values and weights[name] > 0:
            mean = torch.stack(values).mean()
            losses[name] = weights[name] * mean
            log[f"concept/{name}"] = mean.detach()
    return losses, log
