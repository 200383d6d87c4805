"""Run identity: an output directory belongs to one run, and one process writes it at a time.

A run's fingerprint hashes what decides its trajectory: the training options (a
:class:`~mmvq.training.config.TrainConfig`, or any :class:`RunOptions` such as the prior's
:class:`~mmvq.prior.train_config.PriorTrainConfig`; minus those that only say where and how often
to write: ``output_dir``, ``log_every``, ``save_every``... and the
length, ``max_steps``/``num_epochs``, so that a run can be extended), the training data (the
``datasets`` fingerprint of a ``Dataset``; files, sizes and modification times of a stream), the
seed and the model (configs and shapes). ``OUTPUT_DIR/run.json`` records it when a run starts.

:func:`claim_output_dir` (main process, under ``OUTPUT_DIR/.lock``, an exclusive ``flock`` held
until the run ends) decides, before anything is written:

* an empty directory, or one holding no earlier output: the run takes it;
* another run's directory (another fingerprint, or outputs without ``run.json``): refused, unless
  ``overwrite_output_dir`` (then the earlier run's outputs are deleted; other files are kept);
* this run's directory holding progress (checkpoints, logs): refused unless resuming
  (``resume_from_checkpoint``) or ``overwrite_output_dir``;
* a second process writing into it at the same time: refused (the lock is held).

Leftovers of an interrupted checkpoint write are cleaned up (:func:`recover`) under the lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mmvq.training.checkpoint_files import discard, recover, write_json_atomic
from mmvq.training.run_dir import RunDirectory

__all__ = [
    "NOT_IDENTITY",
    "OutputDirError",
    "RunIdentity",
    "RunLock",
    "RunOptions",
    "claim_output_dir",
    "data_fingerprint",
    "run_identity",
]

NOT_IDENTITY = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "max_steps",
        "num_epochs",
        "report_to",
        "tracker_project_name",
        "tqdm",
        "log_every",
        "eval_every",
        "save_every",
        "keep_last_checkpoints",
        "max_eval_samples",
        "num_sample_rows",
        "per_device_eval_batch_size",
        "dataloader_num_workers",
        "cache_examples",
        "max_consecutive_nonfinite",
        "encode_batch_size",
    }
)
"""Training options that do not change a run's trajectory (not part of its identity): fields of
``TrainConfig`` and of the prior's ``PriorTrainConfig``."""


class RunOptions(Protocol):
    """What run identity reads of a training config (``TrainConfig``, ``PriorTrainConfig``)."""

    seed: int
    resume_from_checkpoint: str | None
    overwrite_output_dir: bool

    def to_dict(self) -> dict[str, Any]: ...


class OutputDirError(ValueError):
    """The output directory belongs to another run, or another process is writing it."""


def _digest(data: Any) -> str:
    encoded = json.dumps(data, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]


def _files_of_stream(ds: Any) -> list[Any]:
    files: list[Any] = []
    node = getattr(ds, "_ex_iterable", None)
    while node is not None:
        kwargs = getattr(node, "kwargs", None) or {}
        for name in kwargs.get("base_files", []) or []:
            try:
                stat = os.stat(name)
                files.append([str(name), stat.st_size, stat.st_mtime_ns])
            except (OSError, TypeError):
                files.append([str(name)])
        files.append(type(node).__name__)
        node = getattr(node, "ex_iterable", None)
    return files


def data_fingerprint(data: Any) -> str:
    """A fingerprint of training data: ``datasets``' own for a ``Dataset`` (content and
    transforms), the files (sizes, modification times) and features of a stream; for other
    torch datasets only their type and length (pass a ``datasets.Dataset`` for a content
    fingerprint)."""
    import datasets
    import torch

    inner = getattr(data, "dataset", None)
    if isinstance(inner, (datasets.Dataset, datasets.IterableDataset)):  # MultimodalDataset(s)
        return _digest(["mmvq", data_fingerprint(inner), getattr(data, "column_map", None)])
    if isinstance(data, datasets.Dataset):
        return _digest(["dataset", data._fingerprint, len(data)])
    if isinstance(data, datasets.IterableDataset):
        features = data.features.to_dict() if data.features is not None else None
        return _digest(["stream", features, _files_of_stream(data)])
    if isinstance(data, torch.utils.data.DataLoader):
        return _digest(["loader", data_fingerprint(data.dataset), data.batch_size])
    try:
        size: int | None = len(data)
    except TypeError:
        size = None
    return _digest(["object", type(data).__module__, type(data).__qualname__, size])


@dataclass(frozen=True)
class RunIdentity:
    """A run's fingerprint and its components (``config``, ``data``, ``seed``, ``model``);
    ``model`` is the model's fingerprint itself (to list shape differences in messages)."""

    fingerprint: str
    components: dict[str, str]
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def differences(self, other: Mapping[str, Any]) -> list[str]:
        """The components that differ from a recorded ``run.json``'s."""
        theirs = other.get("components") or {}
        return [k for k in self.components if theirs.get(k) != self.components[k]]


def run_identity(cfg: RunOptions, model_fp: Mapping[str, Any], train_data: Any) -> RunIdentity:
    """The identity of a run of ``cfg`` on ``train_data`` with a model of fingerprint
    ``model_fp`` (see the module docstring; its ``model_class`` says which checkpoints' model
    fingerprints it can be compared with, shape by shape, in a refusal's message)."""
    options = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IDENTITY and k != "seed"}
    components = {
        "config": _digest(options),
        "data": data_fingerprint(train_data),
        "seed": str(cfg.seed),
        "model": _digest(model_fp),
    }
    return RunIdentity(_digest(components), components, dict(model_fp))


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``OUTPUT_DIR/.lock`` (released when the process
    ends, even by ``SIGKILL``). The file records who holds it, for the refusal message."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.path = run_dir.lock_file
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputDirError(
                f"output_dir {str(self.path.parent)!r} is being written by another run "
                f"({holder}); two runs must not write one directory: wait for it to finish, "
                "or choose another --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {stamp}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_run_file(run_dir: RunDirectory) -> dict[str, Any] | None:
    if not run_dir.run_file.is_file():
        return None
    try:
        data = json.loads(run_dir.run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or "fingerprint" not in data:
        raise OutputDirError(
            f"{run_dir.run_file} is damaged (not the JSON mmvq writes), so the run that owns "
            f"{str(run_dir.root)!r} is unknown; pass --overwrite_output_dir to replace its "
            "outputs, or choose another --output_dir"
        )
    return data


def _progress(run_dir: RunDirectory) -> list[str]:
    found = [f"checkpoints up to step {s}" for s, _ in run_dir.list_checkpoints()[-1:]]
    found += [p.name for p in run_dir.owned() if p.name not in (run_dir.RUN, run_dir.CHECKPOINTS)]
    return found


def _model_details(run_dir: RunDirectory, identity: RunIdentity) -> str:
    """How the newest checkpoint's model differs from this run's (shapes first)."""
    from mmvq.training.checkpoint import FINGERPRINT_NAME, model_differences

    found = run_dir.list_checkpoints()
    if not found or not identity.model:
        return ""
    try:
        saved = json.loads((found[-1][1] / FINGERPRINT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if saved.get("model_class") != identity.model.get("model_class"):
        return ""  # another kind of fingerprint (a prior's run vs its LM's checkpoints)
    lines = model_differences(saved, identity.model)
    return (": its checkpoints hold a model of another shape: " + "; ".join(lines)) if lines else ""


def _check_owner(
    run_dir: RunDirectory, identity: RunIdentity, cfg: RunOptions, recorded: Any
) -> None:
    where = f"output_dir {str(run_dir.root)!r}"
    fix = "pass --overwrite_output_dir to discard them, or choose another --output_dir"
    if recorded is None:
        earlier = [p.name for p in run_dir.owned()]
        if earlier:
            raise OutputDirError(
                f"{where} holds the outputs of an earlier run ({', '.join(sorted(earlier))}) "
                f"whose identity is unknown (no {run_dir.RUN}); {fix}"
            )
        return
    if recorded["fingerprint"] != identity.fingerprint:
        differ = identity.differences(recorded) or ["identity"]
        raise OutputDirError(
            f"{where} belongs to another run (started {recorded.get('created', '?')}): its "
            f"{', '.join(differ)} differ(s) from this run's, so its checkpoints cannot be "
            f"resumed or mixed with this run's (resume_from_checkpoint resumes only the same "
            f"run){_model_details(run_dir, identity) if 'model' in differ else ''}; {fix}"
        )
    progress = _progress(run_dir)
    if progress and cfg.resume_from_checkpoint is None:
        raise OutputDirError(
            f"{where} already holds this run's progress ({', '.join(progress)}); resume it "
            "with --resume_from_checkpoint latest, or start it over with --overwrite_output_dir"
        )


def claim_output_dir(run_dir: RunDirectory, identity: RunIdentity, cfg: RunOptions) -> RunLock:
    """Lock ``run_dir`` and make it this run's (main process only; see the module docstring).

    Returns the held :class:`RunLock` (release it when the run ends).

    Raises:
        OutputDirError: another process holds the lock, or the directory belongs to another run
            (or holds this run's progress and neither resuming nor overwriting was asked for).
    """
    lock = RunLock(run_dir).acquire()
    try:
        if cfg.overwrite_output_dir:
            for path in run_dir.owned():
                if path.is_dir():
                    discard(path)
                else:
                    path.unlink()
        recover(run_dir.checkpoints)
        _check_owner(run_dir, identity, cfg, _read_run_file(run_dir))
        from mmvq import __version__

        record = {
            "fingerprint": identity.fingerprint,
            "components": identity.components,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "mmvq_version": __version__,
            "config": cfg.to_dict(),
        }
        previous = _read_run_file(run_dir)
        if previous is not None:
            record["created"] = previous.get("created", record["created"])
        write_json_atomic(run_dir.run_file, json.loads(json.dumps(record, default=str)))
    except BaseException:
        lock.release()
        raise
    return lock
