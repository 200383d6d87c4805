"""The numerical kernel of the codebook: fp32 chunked nearest-code search and the gradient
estimators that carry the encoder's gradient through the (non-differentiable) lookup.

Distances: ``argmin_k ||z - e_k||^2 = argmin_k (||e_k||^2 - 2 z.e_k)``, one ``addmm`` per chunk.
The ``||z||^2`` term is the same for every code of a row, so it is left out: one ``N x K`` pass
less, and no large constant added before the comparison (which would only lose fp32 bits). The
search runs in fp32 with autocast and TF32 disabled, chunked so that the ``chunk x K`` distance
block fits in the memory budget (and, on CPU, in cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CPU_BLOCK_BYTES",
    "StraightThrough",
    "chunk_rows",
    "lookup_workspace_bytes",
    "nearest",
    "rotate_to",
]


@contextmanager
def _full_fp32_matmul() -> Iterator[None]:
    """fp32 matmuls at full precision inside (no TF32 / reduced-precision fp32 GEMMs)."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# On CPU the distance block is also kept under this size (at most the L3 cache of common server
# CPUs), whatever the budget: each chunk's GEMM output is then still in cache for its argmin, and
# the block is one reused buffer rather than a fresh allocation the size of the budget (on CPU,
# page faults on every call). GPUs take the budget as it is (their caching allocator makes the
# allocation free, and bigger GEMMs use them better).
CPU_BLOCK_BYTES = 32 * 2**20


def chunk_rows(num_codes: int, budget_mb: float, device: torch.device | str | None = None) -> int:
    """Rows per chunk so that a ``rows x num_codes`` fp32 block fits in ``budget_mb`` (and, on
    CPU, in :data:`CPU_BLOCK_BYTES`)."""
    rows = max(1, int(budget_mb * 2**20) // (4 * num_codes))
    if device is not None and torch.device(device).type == "cpu":
        rows = min(rows, max(1, CPU_BLOCK_BYTES // (4 * num_codes)))
    return rows


def lookup_workspace_bytes(
    num_rows: int, num_codes: int, budget_mb: float, device: torch.device | str | None = None
) -> int:
    """Extra memory :func:`nearest` allocates besides its int64 output: the fp32 distance block
    of one chunk (one buffer, reused by every chunk) and the ``[K]`` code norms. ``device``: where
    the lookup runs (on CPU the block is also capped at :data:`CPU_BLOCK_BYTES`); ``None`` gives
    the budget-only (GPU) figure."""
    rows = min(num_rows, chunk_rows(num_codes, budget_mb, device))
    return 4 * (rows * num_codes + num_codes)


def nearest(x: Tensor, codes: Tensor, budget_mb: float) -> Tensor:
    """Index of the nearest row of ``codes [K, d]`` for every row of ``x [n, d]``, in fp32.

    ``argmin_k ||x - e_k||^2 = argmin_k (||e_k||^2 - 2 x.e_k)`` with one ``addmm`` per chunk
    (``||x||^2`` is the same for every code of a row and is left out), chunked over ``n`` so that
    the ``chunk x K`` fp32 block stays under ``budget_mb`` (see :func:`chunk_rows`); every chunk
    writes into the same block buffer; autocast and TF32 are off.
    """
    n, k = x.shape[0], codes.shape[0]
    rows = min(n, chunk_rows(k, budget_mb, x.device))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    with torch.autocast(device_type=x.device.type, enabled=False), _full_fp32_matmul():
        x = x.float()
        codes = codes.float()
        norms = codes.pow(2).sum(1)
        codes_t = codes.t()
        block = torch.empty(rows, k, dtype=torch.float32, device=x.device)
        for start in range(0, n, rows):
            xs = x[start : start + rows]
            dist = block[: xs.shape[0]]
            torch.addmm(norms, xs, codes_t, alpha=-2.0, out=dist)
            torch.argmin(dist, dim=1, out=out[start : start + rows])
    return out


class StraightThrough(torch.autograd.Function):
    """Straight-through estimator: the value of ``e``, the gradient of ``x`` (passed unchanged).

    The same estimator as ``x + (e - x).detach()`` without its two elementwise passes over the
    tokens, and the value is exactly the code vector (not ``x + (e - x)`` rounded).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, e: Tensor) -> Tensor:
        return e.view_as(e)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def rotate_to(src: Tensor, tgt: Tensor) -> Tensor:
    """Rotation trick (Fifty et al. 2024, sec. 4.2): a value equal to ``tgt`` whose gradient
    reaches ``src`` through the rotation+rescaling that maps ``src`` onto ``tgt`` (held constant).
    """
    eps = torch.finfo(src.dtype).tiny
    src_norm = src.norm(dim=-1, keepdim=True)
    tgt_norm = tgt.norm(dim=-1, keepdim=True)
    u = (src / src_norm.clamp_min(eps)).detach()
    q = (tgt / tgt_norm.clamp_min(eps)).detach()
    w = F.normalize(u + q, dim=-1).detach()
    rotated = (
        src - 2 * w * (src * w).sum(-1, keepdim=True) + 2 * q * (src * u).sum(-1, keepdim=True)
    )
    rotated = rotated * (tgt_norm / src_norm.clamp_min(eps)).detach()
    # a zero input has no direction to rotate: fall back to straight-through there
    return torch.where(src_norm > eps, rotated, src + (tgt - src).detach())
