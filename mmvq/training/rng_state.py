"""Random-number-generator states of a training process, saved without pickle.

Accelerate saves each process's RNG states as ``random_states_<rank>.pkl`` (a pickle) and, on
resume, skips a file it cannot read with a log line at INFO level: a resumed run then silently
draws different random numbers. mmvq saves them itself instead, one safetensors file per process
(``rng_state_<rank>.safetensors``: the torch CPU and accelerator generator states and NumPy's
MT19937 key as tensors; Python's ``random`` state and NumPy's position as JSON metadata), and a
file that is missing, damaged or of another shape fails the resume with
:class:`RngStateError`, naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["RNG_FORMAT", "RngStateError", "load_rng_state", "rng_state_name", "save_rng_state"]

RNG_FORMAT = "mmvq-rng-1"
"""The ``format`` metadata of an RNG state file."""


class RngStateError(ValueError):
    """An RNG state file cannot restore this process's generators exactly."""


def rng_state_name(rank: int) -> str:
    """The file name of process ``rank``'s RNG states: ``rng_state_<rank>.safetensors``."""
    return f"rng_state_{rank}.safetensors"


def _accelerator_states() -> dict[str, torch.Tensor]:
    states: dict[str, torch.Tensor] = {}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda_{i}"] = state
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def save_rng_state(directory: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Write this process's generator states to ``directory/rng_state_<rank>.safetensors``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        **_accelerator_states(),
    }
    metadata = {
        "format": RNG_FORMAT,
        "rank": str(rank),
        "world_size": str(world_size),
        "python": json.dumps([version, list(internal), gauss_next]),
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)]),
    }
    path = Path(directory) / rng_state_name(rank)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise RngStateError(
            f"{path} is not a readable RNG state file ({exc}); the checkpoint is damaged, so the "
            "resumed run could not repeat the uninterrupted one: resume from another checkpoint "
            "(--resume_from_checkpoint PATH) or delete this one."
        ) from None
    if metadata.get("format") != RNG_FORMAT:
        raise RngStateError(
            f"{path} has format {metadata.get('format')!r}, not {RNG_FORMAT!r}: it was not "
            "written by mmvq's checkpointing; resume from a checkpoint written by mmvq.train."
        )
    return tensors, metadata


def load_rng_state(directory: str | os.PathLike, rank: int, world_size: int) -> None:
    """Restore this process's generators from ``directory``; raise :class:`RngStateError` when
    the file is missing, damaged, or was written by a run with another number of processes."""
    path = Path(directory) / rng_state_name(rank)
    if not path.is_file():
        found = sorted(p.name for p in Path(directory).glob("rng_state_*.safetensors"))
        raise RngStateError(
            f"{directory} has no RNG state for process {rank} ({path.name}; found {found}): "
            f"it was written by a run with another number of processes (this run has "
            f"{world_size}) or is damaged. Resume with the number of processes that wrote it."
        )
    tensors, metadata = _read(path)
    if metadata.get("world_size") != str(world_size):
        raise RngStateError(
            f"{path} was written by a run of {metadata.get('world_size')} process(es), this run "
            f"has {world_size}; resume with the same number of processes (the data order and "
            "random streams depend on it)."
        )
    try:
        version, internal, gauss_next = json.loads(metadata["python"])
        kind, pos, has_gauss, cached = json.loads(metadata["numpy"])
        random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
        keys = tensors["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((kind, keys, int(pos), int(has_gauss), float(cached)))
        torch.set_rng_state(tensors["torch"])
        _restore_accelerators(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RngStateError(
            f"{path} does not hold valid generator states ({type(exc).__name__}: {exc}); the "
            "checkpoint is damaged: resume from another checkpoint or delete this one."
        ) from None


def _restore_accelerators(tensors: dict[str, Any]) -> None:
    cuda = sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    if "mps" in tensors and torch.backends.mps.is_available():
        torch.mps.set_rng_state(tensors["mps"])
