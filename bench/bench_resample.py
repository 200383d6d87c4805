"""Resampling a 10 s clip at awkward rates: time and peak memory, per rate, in fresh processes.

    python bench/bench_resample.py                      # 44101 and 96001 Hz (+ the range ends)
    python bench/bench_resample.py --rates 44101 --target 24000

Each rate runs in its own Python process (so that its peak resident memory is its own): the clip
is built, then ``mmvq_adapters.audio_resample.resample_window`` resamples it to ``--target`` Hz
(the cpu-small preset's 8 kHz by default); the process reports the wall time of the resampling and
how far it raised the peak resident set size above what it held before (``ru_maxrss``). For
comparison, the size of the kernel torchaudio's ``resample`` would build for the same rates is
computed from its formula (it is not run: 44101 Hz took 53 s and 6.3 GB). The bound mmvq
promises: under 1 s and under 200 MB for any rate in 4 kHz .. 384 kHz. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

DEFAULT_RATES = (44101, 96001, 4000, 384000)


def _child(rate: int, target: int, seconds: float) -> dict[str, float]:
    import resource
    import time

    import torch

    from mmvq_adapters.audio_resample import resample_window

    torch.set_num_threads(1)
    clip = torch.randn(int(rate * seconds)) * 0.1
    resample_window(torch.randn(rate // 10), rate, target)  # warm-up (kernels, allocator)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = resample_window(clip, rate, target)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rate": rate,
        "target": target,
        "seconds": round(elapsed, 4),
        "peak_extra_mb": round((peak - before) / 1024, 1),
        "outputs": out.numel(),
    }


def _torchaudio_kernel_mb(rate: int, target: int) -> float:
    """Bytes of torchaudio's float32 resampling kernel for these rates (its formula)."""
    g = math.gcd(rate, target)
    orig, new = rate // g, target // g
    width = math.ceil(6 * orig / (0.99 * min(orig, new)))
    return new * (2 * width + orig) * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="*", default=list(DEFAULT_RATES))
    parser.add_argument("--target", type=int, default=8000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child, args.target, args.seconds)))
        return
    rows = []
    for rate in args.rates:
        cmd = [sys.executable, __file__, "--child", str(rate), "--target", str(args.target)]
        cmd += ["--seconds", str(args.seconds)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["torchaudio_kernel_mb"] = round(_torchaudio_kernel_mb(rate, args.target), 1)
        rows.append(row)
    print(f"{args.seconds:g} s clip -> {args.target} Hz, one thread")
    print(f"{'rate':>8} {'time (s)':>9} {'peak +MB':>9} {'torchaudio kernel MB':>21}")
    for row in rows:
        print(
            f"{row['rate']:>8} {row['seconds']:>9.3f} {row['peak_extra_mb']:>9.1f} "
            f"{row['torchaudio_kernel_mb']:>21.1f}"
        )
    print(json.dumps({"resample": rows}))


if __name__ == "__main__":
    main()
