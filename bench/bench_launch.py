"""``accelerate launch`` against ``python`` for the same recipe run, measured in the same session.

Runs ``accelerate launch recipes/fuse_image_text.py --max_steps 30`` and
``python recipes/fuse_image_text.py --max_steps 30`` (each in its own output directory under a
temporary folder; every other option at the recipe's defaults) ``--rounds`` times, interleaved
and alternating which goes first, and reports the wall time of each (the whole command: start-up,
data generation, training, the final evaluation and save), the CPU threads each run logged, and
the ratio of the medians. ``accelerate launch`` without a config sets ``OMP_NUM_THREADS=1``; the
recipe runner gives a CPU run every physical core back (``mmvq.training.cpu_threads``), so the
ratio should be about 1. The environment's own ``OMP_NUM_THREADS`` is removed for both commands
(a user's setting would be respected, which is not what is measured here).

    python bench/bench_launch.py                 # 3 rounds, --max_steps 30
    python bench/bench_launch.py --rounds 5 --max_steps 60

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fuse_image_text.py"
_THREADS = re.compile(r"CPU threads: (\d+)")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="runs of each command (interleaved)")
    p.add_argument("--max_steps", type=int, default=30, help="the recipe's --max_steps")
    return p.parse_args()


def _commands(max_steps: int, out: Path) -> dict[str, list[str]]:
    # each round starts the same run over in the bench's own folders
    recipe = [
        str(RECIPE),
        "--max_steps",
        str(max_steps),
        "--report_to",
        "none",
        "--overwrite_output_dir",
    ]
    return {
        "accelerate launch": [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *recipe,
            "--output_dir",
            str(out / "launch"),
        ],
        "python": [sys.executable, *recipe, "--output_dir", str(out / "python")],
    }


def _run(cmd: list[str], cwd: Path) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    found = _THREADS.search(proc.stderr)
    return seconds, int(found.group(1)) if found else -1


def main() -> None:
    args = _args()
    times: dict[str, list[float]] = {}
    threads: dict[str, set[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        commands = _commands(args.max_steps, Path(tmp))
        names = list(commands)
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                seconds, used = _run(commands[name], Path(tmp))
                times.setdefault(name, []).append(seconds)
                threads.setdefault(name, set()).add(used)
                print(f"round {round_index + 1} {name:18s} {seconds:7.1f} s  threads {used}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["accelerate launch"] / medians["python"]
    print(f"\n| command (--max_steps {args.max_steps}) | median s | runs (s) | CPU threads |")
    print("|---|---|---|---|")
    for name in names:
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        used = ",".join(map(str, sorted(threads[name])))
        print(f"| {name} | {medians[name]:.1f} | {runs} | {used} |")
    print(f"\naccelerate launch / python: {ratio:.3f} (target: within 10%)")
    print(
        json.dumps(
            {
                "max_steps": args.max_steps,
                "rounds": args.rounds,
                "seconds": times,
                "median_seconds": medians,
                "threads": {k: sorted(v) for k, v in threads.items()},
                "ratio": round(ratio, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
