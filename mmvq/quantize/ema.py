"""The codebook's statistics: modality-weighted, all-reduced counts and sums, the EMA update of
the code vectors, and the k-means initialisation that uses the same statistics.

Every function here is called with the same arguments, in the same order, on every rank
(absent modalities contribute zeros), so the collectives match and the codebook's buffers stay
bit-identical across ranks. Statistics are fp32.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvq.quantize.config import RANK_SEED
from mmvq.quantize.kernel import nearest
from mmvq.utils import distributed

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.quantize.codebook import SharedCodebook

__all__ = [
    "Assigned",
    "Reduced",
    "all_ranks_agree",
    "kmeans_init",
    "reduce_statistics",
    "refresh_ema_codes",
]


class Assigned(NamedTuple):
    """One modality's real tokens of a step and their nearest codes."""

    x: Tensor  # [n, Dl] fp32 tokens in lookup space (detached)
    idx: Tensor  # [n] long nearest codes
    counts: Tensor  # [K] how many tokens each code got (int64)


class Reduced(NamedTuple):
    """Statistics of one step after the all-reduce, with modality weighting applied."""

    counts: Tensor  # [K] weighted assignment counts, in tokens of this (global) batch
    sums: Tensor | None  # [K, Dl] weighted sums of the assigned vectors
    candidates: Tensor | None  # [world, M, s, Dl] reservoir candidates of every rank
    candidate_counts: Tensor | None  # [world, M] how many rows of each are real


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (one all-reduce when distributed)."""
    if not distributed.is_distributed():
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    return float(distributed.all_reduce_(t)) == 0.0


def _modality_scales(
    cb: SharedCodebook, assigned: dict[str, Assigned], weight: dict[str, float], finite: bool
) -> Tensor | None:
    """Each modality's scale ``w_m / sum(w) * T / T_m`` (``T`` the global tokens, ``T_m``
    modality m's), from one all-reduce of the per-modality token counts, weights and presence;
    ``None`` when some rank saw non-finite tokens (identical on every rank)."""
    n_mod = len(cb.modalities)
    meta = torch.zeros(3 * n_mod + 1)  # tokens, weight, present per modality; non-finite
    for m, (xf, _, _) in assigned.items():
        i = cb.modalities.index(m)
        meta[[i, n_mod + i, 2 * n_mod + i]] = torch.tensor([float(xf.shape[0]), weight[m], 1.0])
    meta[-1] = 0.0 if finite else 1.0
    meta = distributed.all_reduce_(meta.to(cb.device))
    if float(meta[-1]) > 0:  # identical on every rank, so every rank returns here
        return None
    tokens, wsum, n_present = meta[:-1].view(3, n_mod)
    w = torch.where(n_present > 0, wsum / n_present.clamp_min(1), torch.zeros_like(wsum))
    return w / w.sum() * tokens.sum() / tokens.clamp_min(1)


def _add_sums(sums: Tensor, j: int, idx: Tensor, xf: Tensor, scale: Tensor) -> None:
    """``sums += scale * (sum of xf per code)``, scaling whichever is smaller: the tokens or the
    ``[K, Dl]`` sums."""
    if xf.shape[0] <= sums.shape[0]:
        sums.index_add_(0, idx, xf * scale)
    elif j == 0:  # sums is still all zeros: accumulate in place, no scratch copy
        sums.index_add_(0, idx, xf).mul_(scale)
    else:
        sums.add_(torch.zeros_like(sums).index_add_(0, idx, xf).mul_(scale))


@torch.no_grad()
def reduce_statistics(
    cb: SharedCodebook,
    assigned: dict[str, Assigned],
    weight: dict[str, float],
    with_sums: bool,
    candidates: int = 0,
    finite: bool = True,
    candidate_source: dict[str, Tensor] | None = None,
) -> Reduced | None:
    """Modality-weighted counts/sums (+ reservoir candidates), summed over all ranks.

    Two all-reduces, the same on every rank whatever modalities its batch holds (absent
    modalities contribute zeros): first the per-modality token counts, weights and presence,
    from which each modality's scale ``w_m / sum(w) * T / T_m`` follows (``T`` the global
    tokens, ``T_m`` modality m's); then the scaled counts, sums and candidates. Candidates are
    drawn from ``candidate_source[m]`` (``[n, Dl]``, row for row with modality m's tokens) where
    given, else from the tokens themselves.
    """
    scale = _modality_scales(cb, assigned, weight, finite)
    if scale is None:
        return None
    k, dl, n_mod = cb.config.num_codes, cb.lookup_dim, len(cb.modalities)
    dev = cb.device
    world, rank = distributed.world_size(), distributed.rank()
    counts = torch.zeros(k, device=dev)
    sums = torch.zeros(k, dl, device=dev) if with_sums else None
    cand = torch.zeros(world, n_mod, candidates, dl, device=dev) if candidates else None
    cand_n = torch.zeros(world, n_mod, device=dev) if candidates else None
    for j, (m, (xf, idx, hist)) in enumerate(assigned.items()):
        i = cb.modalities.index(m)
        counts.add_(hist * scale[i])
        if sums is not None:
            _add_sums(sums, j, idx, xf, scale[i])
        if cand is not None:
            n = xf.shape[0]
            take = min(candidates, n)
            pick = (
                torch.randperm(n, device=dev)[:take]
                if n <= 4 * take
                else torch.randint(n, (take,), device=dev)
            )
            source = xf if candidate_source is None else candidate_source.get(m, xf)
            cand[rank, i, :take] = source[pick]
            cand_n[rank, i] = take
    parts = [t for t in (counts, sums, cand, cand_n) if t is not None]
    if distributed.is_distributed():
        packed = distributed.all_reduce_(torch.cat([t.reshape(-1) for t in parts]))
        offset = 0
        for t in parts:
            t.copy_(packed[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
    return Reduced(counts, sums, cand, cand_n)


def refresh_ema_codes(cb: SharedCodebook) -> None:
    """Code vectors = EMA sums / Laplace-smoothed EMA cluster sizes (VQ-VAE-2)."""
    k, eps = cb.config.num_codes, cb.config.eps
    total = cb.cluster_size.sum()
    smoothed = (cb.cluster_size + eps) / (total + k * eps) * total
    torch.div(cb.code_sums, smoothed.unsqueeze(1), out=cb.code_vectors)
    if cb.config.l2_normalize:
        cb.code_vectors.copy_(F.normalize(cb.code_vectors, dim=-1))


def _initial_centroids(cb: SharedCodebook, flat: dict[str, Tensor]) -> Tensor:
    """``K`` centroids drawn equally from each modality present on any rank (each rank
    contributes a sample, gathered with an all-reduce into per-rank slots)."""
    k, dl, n_mod = cb.config.num_codes, cb.lookup_dim, len(cb.modalities)
    dev = cb.device
    world, rank = distributed.world_size(), distributed.rank()
    per_rank = math.ceil(k / world)
    cand = torch.zeros(world, n_mod, per_rank, dl, device=dev)
    cand_n = torch.zeros(world, n_mod, device=dev)
    for m, xf in flat.items():
        i = cb.modalities.index(m)
        take = min(per_rank, xf.shape[0])
        cand[rank, i, :take] = xf[torch.randperm(xf.shape[0], device=dev)[:take]]
        cand_n[rank, i] = take
    distributed.all_reduce_(cand)
    distributed.all_reduce_(cand_n)
    n_rows = cand_n.long().cpu()
    globally_present = [i for i in range(n_mod) if int(n_rows[:, i].sum()) > 0]
    base, extra = divmod(k, len(globally_present))
    gen = torch.Generator().manual_seed(RANK_SEED)
    pieces = []
    for j, i in enumerate(globally_present):
        pool = torch.cat([cand[w, i, : n_rows[w, i]] for w in range(world)])
        share = base + (1 if j < extra else 0)
        if pool.shape[0] >= share:
            pick = torch.randperm(pool.shape[0], generator=gen)[:share]
        else:  # fewer tokens than codes: repeats, which restarts will move later
            pick = torch.randint(pool.shape[0], (share,), generator=gen)
        pieces.append(pool[pick.to(dev)])
    return torch.cat(pieces)


@torch.no_grad()
def kmeans_init(cb: SharedCodebook, flat: dict[str, Tensor], weight: dict[str, float]) -> None:
    """k-means over the first training batch, every modality equally weighted.

    Initial centroids are drawn equally from each modality present on any rank; Lloyd iterations
    use the all-reduced, modality-weighted statistics; rank 0's result is broadcast at the end.
    """
    cfg = cb.config
    k = cfg.num_codes
    centroids = _initial_centroids(cb, flat)
    counts = torch.full((k,), cb.pseudo_count, device=cb.device)
    for _ in range(cfg.kmeans_iters):
        assigned = {}
        for m, xf in flat.items():
            idx = nearest(xf, centroids, cfg.memory_budget_mb)
            assigned[m] = Assigned(xf, idx, torch.bincount(idx, minlength=k))
        red = reduce_statistics(cb, assigned, weight, with_sums=True)
        assert red is not None  # the data were checked finite on every rank
        used = red.counts > 0
        means = red.sums / red.counts.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
        centroids = torch.where(used.unsqueeze(1), means, centroids)
        if cfg.l2_normalize:
            centroids = F.normalize(centroids, dim=-1)
        counts = torch.where(used, red.counts, torch.full_like(red.counts, cb.pseudo_count))
    cb.code_vectors.data.copy_(centroids)
    cb.cluster_size.copy_(counts)
    synced = [cb.code_vectors.data, cb.cluster_size]
    if cfg.ema:
        cb.code_sums.copy_(centroids * counts.unsqueeze(1))
        synced.append(cb.code_sums)
    distributed.broadcast_tensors_(synced)
    cb.initialized.fill_(True)
    cb.mark_initialized()
