"""Training checkpoints: crash-proof ``accelerator.save_state``, keep-last-k, exact resume.

(The Hub save format of a trained model is :mod:`mmvq.hub.format`; where checkpoints live in the
run's output directory is :class:`~mmvq.training.run_dir.RunDirectory`'s business; the file
operations that make a checkpoint crash-proof are :mod:`mmvq.training.checkpoint_files`.)

Layout of ``OUTPUT_DIR/checkpoints/checkpoint-N/`` (N = optimizer step)::

    model.safetensors, model_1.safetensors   accelerate: generator, discriminators (safetensors)
    optimizer.bin, optimizer_1.bin            accelerate: AdamW states (read with weights_only)
    rng_state_<rank>.safetensors              mmvq: every process's RNG states (no pickle)
    fingerprint.json                          the model's shape: configs and parameter shapes
    <name>.safetensors                        extra tensor state (balancer, EMA weights)
    trainer_state.json                        the marker, written last: step, epoch, batches
                                              consumed in the epoch, counters, LR-scheduler
                                              state, the run's fingerprint, the number of
                                              processes and the manifest of every file above
                                              (bytes and SHA-256)

A checkpoint is written into ``checkpoint-N.tmp`` and renamed to ``checkpoint-N`` once every
process has finished writing; an existing ``checkpoint-N`` is replaced and old ones are rotated
out through renames (see :mod:`~mmvq.training.checkpoint_files`), so a ``SIGKILL`` at any
instant leaves either a complete checkpoint or something ``latest`` ignores. A resume verifies
the manifest (sizes and hashes) and restores every process's RNG states itself: a checkpoint that
would not restore the run exactly fails loudly. Accelerate's pickled ``random_states_<rank>.pkl``
is not kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmvq.training.checkpoint_files import (
    CheckpointDamagedError,
    discard,
    fsync_dir,
    fsync_tree,
    manifest,
    read_marker,
    verify,
    write_json_atomic,
)
from mmvq.training.rng_state import RngStateError, load_rng_state, save_rng_state
from mmvq.training.run_dir import RunDirectory

__all__ = [
    "FINGERPRINT_NAME",
    "TRAINER_STATE_NAME",
    "CheckpointDamagedError",
    "CheckpointMismatchError",
    "CheckpointState",
    "CheckpointWriteError",
    "RngStateError",
    "check_fingerprint",
    "load_checkpoint",
    "model_differences",
    "model_fingerprint",
    "resolve_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = RunDirectory.TRAINER_STATE
FINGERPRINT_NAME = "fingerprint.json"
_ACCELERATE_RNG = "random_states_*.pkl"
_FULL_BELOW = 16 << 20  # a failed write with less free space than this: the disk is full


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of another shape, another run or another number of
    processes (or is not a checkpoint at all)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a permission...): nothing of it was kept
    and the earlier checkpoints are intact."""


class CheckpointState(NamedTuple):
    """What :func:`load_checkpoint` restores besides accelerate's own state.

    Attributes:
        path: the checkpoint directory.
        state: the ``trainer_state.json`` dict.
        tensors: name -> tensor dict of each extra ``<name>.safetensors`` file.
    """

    path: Path
    state: dict[str, Any]
    tensors: dict[str, dict[str, Tensor]]


def _latest_of_run(run_dir: RunDirectory, run_id: str | None) -> Path | None:
    """The newest checkpoint (marker present) of run ``run_id`` (any run when ``None``)."""
    found = run_dir.list_checkpoints()
    others = []
    for step, path in reversed(found):
        marker = read_marker(path) or {}
        if run_id is None or marker.get("run") == run_id:
            if others:
                logger.warning("ignored checkpoints of another run: %s", ", ".join(others))
            return path
        others.append(f"checkpoint-{step}")
    if others:
        logger.warning("ignored checkpoints of another run: %s", ", ".join(others))
    return None


def resolve_checkpoint(
    run_dir: RunDirectory, spec: str | os.PathLike | None, run_id: str | None = None
) -> Path | None:
    """Resolve ``resume_from_checkpoint``: ``None``, ``"latest"`` or a checkpoint directory.

    ``"latest"`` is the newest checkpoint of the run ``run_id`` (every run when ``None``); with
    none yet it returns ``None`` (a fresh start). A path that is not a checkpoint is an error.
    """
    if spec is None:
        return None
    if str(spec) == "latest":
        return _latest_of_run(run_dir, run_id)
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointMismatchError(
            f"resume_from_checkpoint={str(spec)!r} is not a directory; pass 'latest' or a "
            f"checkpoint directory such as {run_dir.checkpoint(500)}"
        )
    if read_marker(path) is None:
        raise CheckpointMismatchError(
            f"resume_from_checkpoint={str(spec)!r} holds no readable {TRAINER_STATE_NAME}, so it "
            "is not a complete mmvq checkpoint (an interrupted save leaves a '.tmp' directory); "
            "pass a 'checkpoint-N' directory written by mmvq.train, or 'latest'"
        )
    return path


def model_fingerprint(model: nn.Module, discriminators: nn.Module | None = None) -> dict[str, Any]:
    """What must match between a checkpoint and the model that resumes from it.

    The model's config (``model.config.to_dict()`` when it has one), each adapter's config and the
    name and shape of every parameter and buffer of the model and the discriminators.
    """

    def shapes(module: nn.Module | None) -> dict[str, list[int]]:
        if module is None:
            return {}
        return {k: list(v.shape) for k, v in module.state_dict().items()}

    config = getattr(model, "config", None)
    adapters = getattr(model, "adapters", {})
    return {
        "model_class": type(model).__name__,
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "adapters": {
            m: {"class": type(a).__name__, "config": a.config.to_dict()}
            for m, a in dict(adapters).items()
            if hasattr(getattr(a, "config", None), "to_dict")
        },
        "shapes": shapes(model),
        "discriminator_shapes": shapes(discriminators),
    }


def _json_safe(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def model_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 8
) -> list[str]:
    """How two :func:`model_fingerprint` dicts differ: tensors of another shape first, then
    configs (at most ``limit`` lines)."""
    current = _json_safe(dict(current))
    diffs: list[str] = []
    for group in ("shapes", "discriminator_shapes"):
        a, b = saved.get(group, {}), current.get(group, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(
                    f"{group[:-7] or 'model'} tensor {key!r}: checkpoint {a.get(key)} vs model "
                    f"{b.get(key)}"
                )
    for key in ("model_class", "config", "adapters"):
        if saved.get(key) != current.get(key):
            diffs.append(
                f"{key} differs: checkpoint {str(saved.get(key))[:200]} vs model "
                f"{str(current.get(key))[:200]}"
            )
    return diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else [])


def check_fingerprint(path: str | os.PathLike, fingerprint: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointMismatchError` when the checkpoint's model is not ``fingerprint``.

    Only shapes decide (config fields that do not change a shape, such as dropout, may differ);
    the error lists the differing tensors and configs.
    """
    file = Path(path) / FINGERPRINT_NAME
    if not file.is_file():
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} has no {FINGERPRINT_NAME}; it was not written by mmvq.train "
            "and cannot be checked against the model"
        )
    saved = json.loads(file.read_text())
    current = _json_safe(dict(fingerprint))
    if saved.get("shapes") == current.get("shapes") and saved.get(
        "discriminator_shapes"
    ) == current.get("discriminator_shapes"):
        return
    details = "\n  ".join(model_differences(saved, current))
    raise CheckpointMismatchError(
        f"cannot resume from {str(path)!r}: it was written by a model of another shape.\n  "
        f"{details}\n"
        "Build the model with the same adapters and configs as the checkpoint, or start a fresh "
        "run (resume_from_checkpoint=None, or another output_dir)."
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True))


def _attempt(action: Callable[[], Any]) -> Exception | None:
    """Run a file-writing action; its error is returned (to be agreed on), not raised. Writers
    report a full disk as ``OSError`` (``ENOSPC``), torch's zip writer as ``RuntimeError``,
    safetensors as ``SafetensorError``."""
    try:
        action()
    except (OSError, RuntimeError, SafetensorError) as exc:
        return exc
    return None


def _disk_full(error: Exception, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BELOW
    except OSError:
        return False


def _agree(accelerator: Any, error: Exception | None, step: int, tmp: Path) -> None:
    """Every process learns whether any failed to write (one all-reduce); all then raise."""
    from mmvq.utils.distributed import all_reduce_, is_distributed

    failed = error is not None
    if is_distributed():
        flag = torch.tensor([float(failed)], device=accelerator.device)
        failed = bool(all_reduce_(flag, torch.distributed.ReduceOp.MAX).item())
    if not failed:
        return
    if accelerator.is_main_process:
        discard(tmp)
    if error is None:
        raise CheckpointWriteError(
            f"another process failed writing checkpoint {step} (see its error); nothing of it "
            "was kept"
        )
    full = _disk_full(error, tmp.parent)
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
    if full and not (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        reason = f"No space left on device ({type(error).__name__}: {reason})"
    fix = (
        "free disk space (or set --output_dir on a larger disk), or lower "
        "--keep_last_checkpoints / raise --save_every"
        if full
        else "check that the output directory is writable and the state can be saved"
    )
    raise CheckpointWriteError(
        errno.ENOSPC if full else getattr(error, "errno", None) or errno.EIO,
        f"could not write checkpoint {step} into {tmp.parent} ({reason}); nothing of it was "
        f"kept and the earlier checkpoints are intact: {fix}",
    ) from error


def _fresh_tmp(run_dir: RunDirectory, tmp: Path) -> None:
    run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
    discard(tmp)
    tmp.mkdir()


def _finish(
    tmp: Path,
    tensors: Mapping[str, Mapping[str, Tensor]] | None,
    fingerprint: Mapping[str, Any],
    state: Mapping[str, Any],
) -> None:
    """Main process: the extra files, fsync, then the marker (with the manifest) last."""
    for stale in tmp.glob(_ACCELERATE_RNG):  # pickled; mmvq keeps rng_state_<rank>.safetensors
        stale.unlink()
    for name, group in (tensors or {}).items():
        if group:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in group.items()},
                str(tmp / f"{name}.safetensors"),
            )
    _write_json(tmp / FINGERPRINT_NAME, fingerprint)
    fsync_tree(tmp)
    write_json_atomic(tmp / TRAINER_STATE_NAME, _json_safe(dict(state, files=manifest(tmp))))


def _commit(run_dir: RunDirectory, tmp: Path, final: Path, step: int, keep_last: int) -> None:
    """Main process: ``tmp`` -> ``final`` (an existing one set aside first), then rotation."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        discard(old)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(run_dir.checkpoints)
    discard(old)
    if keep_last > 0:
        run_id = (read_marker(final) or {}).get("run")
        mine = [
            (s, p)
            for s, p in run_dir.list_checkpoints()
            if s <= step and (read_marker(p) or {}).get("run") == run_id
        ]
        for _, path in mine[:-keep_last]:  # never a newer checkpoint of this run
            discard(path)


def save_checkpoint(
    accelerator: Any,
    run_dir: RunDirectory,
    step: int,
    *,
    state: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    tensors: Mapping[str, Mapping[str, Tensor]] | None = None,
    keep_last: int = 0,
    run_id: str | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` crash-proof (see the module docstring); every process must
    call it.

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (its prepared models, optimizers and
            data loaders are saved by ``save_state``).
        run_dir: the run's output directory.
        step: the optimizer step (the directory's number).
        state: JSON-serialisable trainer state (written to ``trainer_state.json``).
        fingerprint: :func:`model_fingerprint` of the model.
        tensors: extra tensor groups, each written to ``<name>.safetensors``.
        keep_last: keep only the newest ``keep_last`` checkpoints of this run up to ``step``
            (0 keeps all; a newer checkpoint is never deleted).
        run_id: the run's fingerprint, recorded so that ``latest`` resumes only this run.

    Returns:
        the final checkpoint directory.

    Raises:
        CheckpointWriteError: a process could not write (a full disk...); on every process.
    """
    final, tmp = run_dir.checkpoint(step), run_dir.checkpoint_tmp(step)
    world = accelerator.num_processes
    main = accelerator.is_main_process
    _agree(accelerator, _attempt(lambda: _fresh_tmp(run_dir, tmp)) if main else None, step, tmp)

    def write_own() -> None:
        accelerator.save_state(str(tmp))
        save_rng_state(tmp, accelerator.process_index, world)

    _agree(accelerator, _attempt(write_own), step, tmp)
    marker = dict(state, step=step, run=run_id, world_size=world, accelerator_step=accelerator.step)
    error = _attempt(lambda: _finish(tmp, tensors, fingerprint, marker)) if main else None
    _agree(accelerator, error, step, tmp)
    error = _attempt(lambda: _commit(run_dir, tmp, final, step, keep_last)) if main else None
    _agree(accelerator, error, step, tmp)
    return final


def load_checkpoint(accelerator: Any, path: str | os.PathLike) -> CheckpointState:
    """Verify and restore a checkpoint: accelerate's state (models, optimizers), every
    process's RNG states, and the rest (returned). Every process must call it.

    Raises:
        CheckpointDamagedError: a file is missing, truncated or replaced (manifest check).
        CheckpointMismatchError: written by a run with another number of processes.
        RngStateError: this process's RNG states cannot be restored.
    """
    path = Path(path)
    state = verify(path)
    world = accelerator.num_processes
    if state.get("world_size", world) != world:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by a run of {state.get('world_size')} process(es); "
            f"this run has {world}: resume with the same number of processes (the data order "
            "and the random streams depend on it)"
        )
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise CheckpointDamagedError(
            f"checkpoint {path} could not be restored by accelerate ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); resume from another checkpoint"
        ) from None
    load_rng_state(path, accelerator.process_index, world)
    if "accelerator_step" in state:
        accelerator.step = int(state["accelerator_step"])
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        if file.stem.startswith(("model", "rng_state_")):
            continue  # accelerate's model weights, already loaded; RNG states, restored
        tensors[file.stem] = load_file(str(file), device="cpu")
    return CheckpointState(path, state, tensors)
