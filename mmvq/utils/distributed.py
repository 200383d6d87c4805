"""Small :mod:`torch.distributed` helpers that are no-ops outside a multi-process run.

The codebook calls these unconditionally; they only issue a collective when a process group is
initialised *and* its world size is above one, so single-process code pays nothing and needs no
``if distributed`` branches of its own.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_",
    "broadcast_",
    "broadcast_tensors_",
    "is_distributed",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """``True`` when a default process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_(tensor: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """Sum (or ``op``) ``tensor`` in place over all processes; a no-op when not distributed.

    Returns ``tensor`` so that calls can be chained.
    """
    if is_distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy; a no-op when not distributed."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


@torch.no_grad()
def broadcast_tensors_(tensors: list[Tensor], src: int = 0) -> None:
    """Broadcast several same-dtype tensors from ``src`` with one collective (packed flat)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.broadcast(flat, src=src)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n
