"""CPU threads of a run started by ``accelerate launch``: every physical core unless the user chose.

``accelerate launch`` without a config or ``--num_cpu_threads_per_process`` sets
``OMP_NUM_THREADS=1`` for the process it starts (it raises the count only with ``--cpu`` on a
machine whose physical cores outnumber the processes), so a plain ``accelerate launch
recipe.py`` on a laptop trains on one core while ``python recipe.py`` uses all of them.
:func:`use_physical_cores` undoes that default, and only that: when ``OMP_NUM_THREADS`` came from
the user (set in the launcher's own environment, or through ``--num_cpu_threads_per_process``),
it is respected. Who set it is read from the launcher process (``psutil``): its environment and
its command line. When that cannot be read, nothing is changed.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

__all__ = ["ThreadDecision", "physical_cores", "use_physical_cores"]

_THREADS_FLAG = "--num_cpu_threads_per_process"


class ThreadDecision(NamedTuple):
    """What :func:`use_physical_cores` did: the threads now in use and why, in words."""

    threads: int
    reason: str


def physical_cores() -> int:
    """Physical cores this process may run on (``psutil``, bounded by the CPU affinity mask)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores)


def _is_accelerate_launch(cmdline: list[str]) -> bool:
    """Whether a command line is ``accelerate launch`` (the console script, ``accelerate-launch``
    or ``python -m accelerate.commands.launch``), judged by its first words."""
    head = cmdline[:5]
    names = [os.path.basename(part) for part in head]
    if "accelerate-launch" in names or "accelerate.commands.launch" in head:
        return True
    cli = "accelerate" in names or any(p.startswith("accelerate.commands") for p in head)
    return cli and "launch" in head


def _launcher() -> Any:
    """The ``accelerate launch`` process above this one (parent or grandparent), or ``None``."""
    import psutil

    try:
        process = psutil.Process().parent()
        for _ in range(3):
            if process is None:
                return None
            if _is_accelerate_launch(process.cmdline()):
                return process
            process = process.parent()
    except (psutil.Error, OSError):
        return None
    return None


def _user_choice(launcher: Any) -> str | None:
    """How the user set the thread count for ``launcher``, or ``None`` if accelerate chose it."""
    import psutil

    try:
        if "OMP_NUM_THREADS" in launcher.environ():
            return "OMP_NUM_THREADS was set for accelerate launch"
        if any(arg.split("=")[0] == _THREADS_FLAG for arg in launcher.cmdline()):
            return f"accelerate launch {_THREADS_FLAG} was given"
    except (psutil.Error, OSError):
        return "the launcher's settings could not be read"
    return None


def use_physical_cores(cpu_run: bool) -> ThreadDecision:
    """On a CPU run under ``accelerate launch`` whose ``OMP_NUM_THREADS`` is accelerate's
    default, use every physical core (shared among the processes of this machine); otherwise
    leave the thread count as it is. Returns what was decided."""
    threads = torch.get_num_threads()
    if not cpu_run:
        return ThreadDecision(threads, "not a CPU run: thread count left as it is")
    if "OMP_NUM_THREADS" not in os.environ:
        return ThreadDecision(threads, "PyTorch's default (OMP_NUM_THREADS not set)")
    launcher = _launcher()
    if launcher is None:
        return ThreadDecision(threads, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    chosen = _user_choice(launcher)
    if chosen is not None:
        return ThreadDecision(threads, f"{chosen}: respected")
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    wanted = max(1, physical_cores() // local_processes)
    if wanted > threads:
        torch.set_num_threads(wanted)
    return ThreadDecision(
        torch.get_num_threads(),
        f"accelerate launch set OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} by default; "
        f"using the {physical_cores()} physical core(s) over {local_processes} local "
        f"process(es) (choose with accelerate launch {_THREADS_FLAG} N or OMP_NUM_THREADS)",
    )
