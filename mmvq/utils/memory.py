"""Refuse, before allocating, a configuration whose tensors would not fit in this machine.

A typo such as ``num_codes=2_000_000_000`` otherwise ends in the allocator's raw "can't allocate
memory" (or in the machine swapping to a halt); :func:`check_fits` says which option asks for how
much, against the machine's physical memory, and what to lower.
"""

from __future__ import annotations

import os

__all__ = ["check_fits", "machine_memory_bytes", "format_bytes"]


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (``None`` when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX platforms
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"1.5 GB"`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def check_fits(what: str, nbytes: float, fix: str, *, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` when ``nbytes`` exceeds this machine's physical memory.

    Args:
        what: the option(s) and how the size follows from them, e.g.
            ``"CodebookConfig.num_codes=2000000000 x code_dim=64 (4 float32 copies)"``.
        nbytes: the bytes they would allocate.
        fix: what to lower.
    """
    total = machine_memory_bytes()
    if total is not None and nbytes > total:
        raise error(
            f"{what} needs about {format_bytes(nbytes)}, more than this machine's "
            f"{format_bytes(total)} of memory; {fix}"
        )
