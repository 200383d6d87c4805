"""Dead-code restarts: per-modality reservoirs of recent encoder outputs, and codes whose EMA
usage fell below the threshold moved onto them, round-robin over modalities so that a small
modality is not starved.

Everything here is a function of rank-identical state (the all-reduced candidates, the buffers,
a generator seeded by the step counter), so ranks stay identical without a collective and
without a host sync.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmvq.quantize.config import RANK_SEED
from mmvq.utils import distributed

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.quantize.codebook import SharedCodebook

__all__ = ["push_reservoir", "reservoir_take", "restart_dead_codes"]


def reservoir_take(cb: SharedCodebook) -> int:
    """Reservoir candidates each rank contributes per modality per training forward.

    Sized so that the reservoir is refilled about twice between two restart checks.
    """
    r, world = cb.reservoir.shape[1], distributed.world_size()
    per_rank = math.ceil(2 * r / (cb.config.restart_every * world))
    return max(1, min(per_rank, r // world if r >= world else 1))


def push_reservoir(cb: SharedCodebook, cand: Tensor, cand_n: Tensor) -> None:
    """Append every rank's candidates to the per-modality ring buffers (no host sync)."""
    world, n_mod, s, dl = cand.shape
    r = cb.reservoir.shape[1]
    arange_s = torch.arange(s, device=cand.device)
    for i in range(n_mod):
        rows = cand[:, i].reshape(world * s, dl)
        valid = (arange_s.unsqueeze(0) < cand_n[:, i].unsqueeze(1)).reshape(-1)
        order = torch.argsort((~valid).to(torch.uint8), stable=True)[:r]  # real rows first
        rows, valid = rows[order], valid[order]
        pos = (cb.reservoir_ptr[i] + torch.arange(rows.shape[0], device=cand.device)) % r
        cb.reservoir[i, pos] = torch.where(valid.unsqueeze(1), rows, cb.reservoir[i, pos])
        n_valid = valid.sum()
        cb.reservoir_ptr[i] = (cb.reservoir_ptr[i] + n_valid) % r
        cb.reservoir_filled[i] = torch.clamp(cb.reservoir_filled[i] + n_valid, max=r)


def restart_dead_codes(cb: SharedCodebook) -> None:
    """Move codes whose EMA usage is below the threshold onto recent encoder outputs.

    Dead codes are given modalities round-robin (over modalities whose reservoir holds data),
    and distinct random rows of that modality's reservoir.
    """
    n_mod, r = len(cb.modalities), cb.reservoir.shape[1]
    dev = cb.device
    dead = cb.cluster_size < cb.config.dead_code_threshold
    filled = cb.reservoir_filled
    avail = filled > 0
    n_avail = avail.sum()
    mod_order = torch.argsort((~avail).to(torch.uint8), stable=True)  # available first
    dead_rank = (torch.cumsum(dead.long(), 0) - 1).clamp_min(0)
    slot = dead_rank % n_avail.clamp_min(1)
    mod = mod_order[slot]
    nth = dead_rank // n_avail.clamp_min(1)  # how many codes this modality got before
    gen = torch.Generator().manual_seed(RANK_SEED + cb.host_steps())
    keys = torch.rand(n_mod, r, generator=gen).to(dev)
    keys = torch.where(torch.arange(r, device=dev).unsqueeze(0) < filled.unsqueeze(1), keys, 2.0)
    perms = torch.argsort(keys, dim=1)  # [M, R]: a random order of each reservoir's real rows
    row = perms[mod, nth % filled[mod].clamp_min(1)]
    sample = cb.reservoir[mod, row]
    do = (dead & (n_avail > 0)).unsqueeze(1)
    cb.code_vectors.data.copy_(torch.where(do, sample, cb.code_vectors.data))
    pseudo = cb.pseudo_count
    cb.cluster_size.copy_(
        torch.where(do.squeeze(1), torch.full_like(cb.cluster_size, pseudo), cb.cluster_size)
    )
    if cb.config.ema:
        cb.code_sums.copy_(torch.where(do, sample * pseudo, cb.code_sums))
