"""Training checkpoints: atomic ``accelerator.save_state``, keep-last-k, resume, shape fingerprint.

(The Hub save format of a trained model is :mod:`mmvq.hub.format`; where checkpoints live in the
run's output directory is :class:`~mmvq.training.run_dir.RunDirectory`'s business.)

Layout of ``OUTPUT_DIR/checkpoints/checkpoint-N/`` (N = optimizer step)::

    model.safetensors, model_1.safetensors   accelerate: generator, discriminators (safetensors)
    optimizer.bin, optimizer_1.bin            accelerate: AdamW states (read with weights_only)
    random_states_<rank>.pkl                  accelerate: Python/NumPy/torch RNG states per process
    trainer_state.json                        step, epoch, batches consumed in the epoch (the data
                                              position), counters, LR-scheduler state
    fingerprint.json                          the model's shape: configs and parameter shapes
    <name>.safetensors                        extra tensor state (balancer, EMA weights)

A checkpoint is written into ``checkpoint-N.tmp`` and renamed to ``checkpoint-N`` by the main
process once every process has finished writing, so a crash mid-save never leaves a directory
that looks complete. ``.tmp`` directories are ignored when looking for the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmvq.training.run_dir import RunDirectory

__all__ = [
    "FINGERPRINT_NAME",
    "TRAINER_STATE_NAME",
    "CheckpointMismatchError",
    "CheckpointState",
    "check_fingerprint",
    "load_checkpoint",
    "model_fingerprint",
    "resolve_checkpoint",
    "save_checkpoint",
]

TRAINER_STATE_NAME = RunDirectory.TRAINER_STATE
FINGERPRINT_NAME = "fingerprint.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of another shape (or is not a checkpoint at all)."""


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


def resolve_checkpoint(run_dir: RunDirectory, spec: str | os.PathLike | None) -> Path | None:
    """Resolve ``resume_from_checkpoint``: ``None``, ``"latest"`` or a checkpoint directory.

    ``"latest"`` with no checkpoint yet returns ``None`` (a fresh start). A path that is not a
    complete checkpoint is an error.
    """
    if spec is None:
        return None
    if str(spec) == "latest":
        return run_dir.latest_checkpoint()
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointMismatchError(
            f"resume_from_checkpoint={str(spec)!r} is not a directory; pass 'latest' or a "
            f"checkpoint directory such as {run_dir.checkpoint(500)}"
        )
    if not (path / TRAINER_STATE_NAME).is_file():
        raise CheckpointMismatchError(
            f"resume_from_checkpoint={str(spec)!r} holds no {TRAINER_STATE_NAME}, so it is not a "
            "complete mmvq checkpoint (an interrupted save leaves a '.tmp' directory); pass a "
            "'checkpoint-N' directory written by mmvq.train, or 'latest'"
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


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 8) -> list[str]:
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
    details = "\n  ".join(_differences(saved, current))
    raise CheckpointMismatchError(
        f"cannot resume from {str(path)!r}: it was written by a model of another shape.\n  "
        f"{details}\n"
        "Build the model with the same adapters and configs as the checkpoint, or start a fresh "
        "run (resume_from_checkpoint=None, or another output_dir)."
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True))


def save_checkpoint(
    accelerator: Any,
    run_dir: RunDirectory,
    step: int,
    *,
    state: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    tensors: Mapping[str, Mapping[str, Tensor]] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; every process must call it.

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (its prepared models, optimizers and
            data loaders are saved by ``save_state``).
        run_dir: the run's output directory.
        step: the optimizer step (the directory's number).
        state: JSON-serialisable trainer state (written to ``trainer_state.json``).
        fingerprint: :func:`model_fingerprint` of the model.
        tensors: extra tensor groups, each written to ``<name>.safetensors``.
        keep_last: keep only the newest ``keep_last`` checkpoints (0 keeps all).

    Returns:
        the final checkpoint directory.
    """
    final, tmp = run_dir.checkpoint(step), run_dir.checkpoint_tmp(step)
    if accelerator.is_main_process:
        run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        for name, group in (tensors or {}).items():
            if group:
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in group.items()},
                    str(tmp / f"{name}.safetensors"),
                )
        _write_json(tmp / FINGERPRINT_NAME, fingerprint)
        # trainer_state.json is written last: its presence marks a complete checkpoint.
        _write_json(tmp / TRAINER_STATE_NAME, dict(state, step=step))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last > 0:
            for _, old in run_dir.list_checkpoints()[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | os.PathLike) -> CheckpointState:
    """Restore accelerate's state (models, optimizers, RNG, step) and read the rest.

    Every process must call it. The caller restores the returned trainer state and tensors.
    """
    path = Path(path)
    accelerator.load_state(str(path))
    state = json.loads((path / TRAINER_STATE_NAME).read_text())
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        if file.stem.startswith("model"):
            continue  # accelerate's model weights, already loaded
        tensors[file.stem] = load_file(str(file), device="cpu")
    return CheckpointState(path, state, tensors)
