"""Benchmark: SharedCodebook train step vs a plain GEMM lookup vs vector-quantize-pytorch.

Each method runs one training step on the same ``N x D`` input against ``K`` codes: forward,
then backward through ``z`` of ``commitment + mean(z_q ** 2)``:

* ``mmvq``: :class:`mmvq.quantize.SharedCodebook` in train mode (EMA update, stats, reservoir).
* ``gemm``: the floor any VQ pays: ``z @ E.T``, argmin, gather, straight-through, backward.
* ``vqpt``: ``vector_quantize_pytorch.VectorQuantize`` (EMA, straight-through, no k-means).

Times are medians over ``--repeats`` rounds after a warm-up; the methods are interleaved in every
round, in alternating order, so that the ratios come from the same moments of a noisy machine and
no method always runs after the same neighbour. In each round every method runs one untimed step
right before its timed one: otherwise whichever runs right after vector-quantize-pytorch pays for
its gigabytes of freed memory (on CPU, page faults while the heap grows back), which measures the
neighbour, not the method.

On a CPU shared with other jobs, ``--threads 1`` gives steadier figures: with more threads than
idle cores every parallel op may wait a scheduler slice for a descheduled thread, so the timing
measures the machine's load (and each method's count of parallel ops) more than the method.

Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated()`` during the step minus the
memory allocated before it. On CPU there is no allocator counter, so the figure is the
*theoretical* size of what each method allocates for the lookup, computed from the shapes, not
measured: for mmvq the ``chunk x K`` fp32 distance block (the chunk is sized by
``memory_budget_mb``, 256 MB by default, and on CPU also capped at 32 MiB), the ``K`` code norms
and the ``N`` int64 codes
(:func:`mmvq.quantize.lookup_workspace_bytes`); for the GEMM the ``N x K`` fp32 block and the
``N`` int64 codes. Smaller per-token tensors (z_q, grads)
are left out of both. vector-quantize-pytorch is not estimated on CPU (printed as n/a).

The last line printed is one JSON object:
``{"ratio_vs_gemm": [...], "speedup_vs_vqpytorch": [...], "peak_extra_mb": [...], ...}``
with one entry per shape (ratio = mmvq time / gemm time, speedup = vqpt time / mmvq time,
peak = mmvq's peak extra memory). Targets: ratio <= 1.3, speedup >= 3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmvq.quantize import CodebookConfig, SharedCodebook, lookup_workspace_bytes

FULL_SHAPES = [(16384, 256, 8192), (65536, 64, 1024)]  # N, D, K
QUICK_SHAPES = [(2048, 256, 8192), (8192, 64, 1024)]
TOKENS_PER_SAMPLE = 256  # z is fed as [N / 256, 256, D]


def _mb(value: float | None) -> str:
    """A memory figure in MB for the table (``n/a`` when not measured)."""
    return "n/a" if value is None else f"{value:.1f}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_mmvq(n: int, d: int, k: int, device: torch.device) -> Callable[[torch.Tensor], None]:
    cb = (
        SharedCodebook(CodebookConfig(num_codes=k, code_dim=d, kmeans_init=False), ["x"])
        .to(device)
        .train()
    )

    def step(z: torch.Tensor) -> None:
        out = cb({"x": z.view(-1, TOKENS_PER_SAMPLE, d)})
        (out.loss["x"] + out.z_q["x"].square().mean()).backward()

    return step


def make_gemm(n: int, d: int, k: int, device: torch.device) -> Callable[[torch.Tensor], None]:
    codes = torch.randn(k, d, device=device)

    def step(z: torch.Tensor) -> None:
        idx = (z @ codes.t()).argmin(1)
        q = codes[idx]
        z_q = z + (q - z).detach()
        (0.25 * F.mse_loss(z, q) + z_q.square().mean()).backward()

    return step


def make_vqpt(n: int, d: int, k: int, device: torch.device) -> Callable[[torch.Tensor], None]:
    from vector_quantize_pytorch import VectorQuantize  # benchmark-only dependency

    vq = (
        VectorQuantize(
            dim=d,
            codebook_size=k,
            decay=0.99,
            commitment_weight=0.25,
            kmeans_init=False,
            rotation_trick=False,
        )
        .to(device)
        .train()
    )

    def step(z: torch.Tensor) -> None:
        quantized, _, loss = vq(z.view(-1, TOKENS_PER_SAMPLE, d))
        (loss.sum() + quantized.square().mean()).backward()

    return step


def run_once(
    step: Callable[[torch.Tensor], None], z0: torch.Tensor, device: torch.device
) -> tuple[float, float | None]:
    """One timed step; returns (seconds, peak extra MB on CUDA or None)."""
    z = z0.clone().requires_grad_(True)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    step(z)
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = (
        (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    )
    return seconds, peak


def gemm_peak_mb(n: int, k: int) -> float:
    """The baseline's ``N x K`` fp32 score block plus its int64 argmin."""
    return (n * k * 4 + n * 8) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per method (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--quick", action="store_true", help="smaller N, 3 repeats (a smoke run)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 0:
        parser.error(
            f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}"
        )
    device = torch.device(args.device)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = min(args.repeats, 3) if args.quick else args.repeats
    budget = CodebookConfig().memory_budget_mb

    ratios, speedups, peaks = [], [], []
    print(
        f"device={device} threads={torch.get_num_threads()} repeats={repeats} warmup={args.warmup}"
    )
    header = (
        f"{'N x D, K':>22} | {'mmvq s':>8} {'gemm s':>8} {'vqpt s':>8} | "
        f"{'mmvq/gemm':>9} {'vqpt/mmvq':>9} | {'peak MB mmvq':>12} {'gemm':>8} {'vqpt':>8}"
    )
    print(header)
    print("-" * len(header))
    for n, d, k in shapes:
        torch.manual_seed(0)
        z0 = torch.randn(n, d, device=device)
        methods = {
            "mmvq": make_mmvq(n, d, k, device),
            "gemm": make_gemm(n, d, k, device),
            "vqpt": make_vqpt(n, d, k, device),
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        peak: dict[str, float | None] = dict.fromkeys(methods)
        names = list(methods)
        for r in range(args.warmup + repeats):
            # alternate the order every round, so that no method always follows the same one
            for name in names if r % 2 == 0 else names[::-1]:
                step = methods[name]
                # an untimed step right before the timed one, so that no method pays for the
                # previous method's allocations and frees (on CPU: page faults re-growing the heap
                # after vqpt's GB-sized frees) or for a cold cache: it measures itself only
                run_once(step, z0, device)
                seconds, p = run_once(step, z0, device)
                if r >= args.warmup:
                    times[name].append(seconds)
                    if p is not None:
                        peak[name] = max(p, peak[name] or 0.0)
        if device.type != "cuda":
            peak["mmvq"] = (lookup_workspace_bytes(n, k, budget, device) + n * 8) / 2**20
            peak["gemm"] = gemm_peak_mb(n, k)
        med = {m: statistics.median(t) for m, t in times.items()}
        ratio, speedup = med["mmvq"] / med["gemm"], med["vqpt"] / med["mmvq"]
        ratios.append(round(ratio, 3))
        speedups.append(round(speedup, 3))
        peaks.append(round(peak["mmvq"], 1))
        print(
            f"{f'{n} x {d}, {k}':>22} | {med['mmvq']:8.4f} {med['gemm']:8.4f} {med['vqpt']:8.4f} | "
            f"{ratio:9.3f} {speedup:9.3f} | {_mb(peak['mmvq']):>12} {_mb(peak['gemm']):>8} "
            f"{_mb(peak['vqpt']):>8}"
        )
    print("targets: mmvq/gemm <= 1.3, vqpt/mmvq >= 3")
    print(
        "peak memory: "
        + (
            "torch.cuda.max_memory_allocated minus allocated before the step"
            if device.type == "cuda"
            else "theoretical lookup workspace from the shapes (CPU has no allocator counter)"
        )
    )
    print(
        json.dumps(
            {
                "ratio_vs_gemm": ratios,
                "speedup_vs_vqpytorch": speedups,
                "peak_extra_mb": peaks,
                "shapes": [list(s) for s in shapes],
                "device": str(device),
                "peak_method": "cuda_max_memory_allocated"
                if device.type == "cuda"
                else "theoretical_lookup_workspace",
            }
        )
    )


if __name__ == "__main__":
    main()
