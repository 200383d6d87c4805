"""Crash-proof file operations of training checkpoints: manifest, atomic marker, renames.

A checkpoint is complete when its marker, ``trainer_state.json``, is present and the files its
``files`` manifest lists (name -> bytes and SHA-256) are all there with their sizes. The rules
that make a ``SIGKILL`` at any instant harmless:

* **written last**: the files are written (and fsynced) into ``checkpoint-N.tmp``, then the
  marker, itself written to a temporary name and renamed; then the folder is renamed to
  ``checkpoint-N``;
* **replaced through renames**: an existing ``checkpoint-N`` is first renamed to
  ``checkpoint-N.old``, then the new one renamed into place, then the old one deleted;
* **deleted through a rename**: ``checkpoint-N`` is renamed to ``checkpoint-N.deleting``, its
  marker removed, then the folder deleted.

Only names ``checkpoint-<digits>`` count as checkpoints, so anything half-written or
half-deleted is invisible to ``latest``; :func:`recover` (run under the output directory's lock
when a run starts) promotes a complete ``.tmp``/``.old`` whose ``checkpoint-N`` is missing or
incomplete, and deletes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER",
    "CheckpointDamagedError",
    "discard",
    "fsync_dir",
    "fsync_tree",
    "is_complete",
    "manifest",
    "read_marker",
    "recover",
    "verify",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

MARKER = "trainer_state.json"
"""The completeness marker (written last, removed first)."""

_LEFTOVER = re.compile(r"^checkpoint-(\d+)\.(tmp|old|deleting)$")
_CHUNK = 1 << 20


class CheckpointDamagedError(ValueError):
    """A checkpoint's files do not match its manifest (truncated, replaced, missing)."""


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories holding them."""
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(folder)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``path`` through a temporary name, fsync, rename: never seen half-written."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(directory: Path, exclude: tuple[str, ...] = (MARKER,)) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": n, "sha256": hex}}`` of every file under ``directory``."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name not in exclude:
            files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return files


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The parsed marker of ``directory``, or ``None`` when it is absent or not a JSON object."""
    try:
        data = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(directory: Path) -> bool:
    """Cheap check: a marker with a manifest, every listed file present with its size."""
    marker = read_marker(directory)
    files = marker.get("files") if marker else None
    if not isinstance(files, dict):
        return False
    for name, entry in files.items():
        path = directory / name
        try:
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def verify(directory: Path) -> dict[str, Any]:
    """Full check before a resume: every listed file's size and SHA-256; returns the marker.

    Raises:
        CheckpointDamagedError: the marker is missing/invalid, or a file is missing, of another
            size or of other content (the error lists them and the fix).
    """
    marker = read_marker(directory)
    if marker is None:
        raise CheckpointDamagedError(
            f"{directory} has no readable {MARKER}: it is not a complete checkpoint; resume "
            "from another one (--resume_from_checkpoint PATH) or 'latest'."
        )
    files = marker.get("files")
    if not isinstance(files, dict):
        raise CheckpointDamagedError(
            f"{directory / MARKER} has no file manifest: the checkpoint was written by an older "
            "mmvq (before crash-proof checkpoints); resume it with that version, or start the "
            "run again in a new --output_dir."
        )
    problems = []
    for name, entry in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (size := path.stat().st_size) != entry.get("bytes"):
            problems.append(f"{name} has {size} bytes, expected {entry.get('bytes')}")
        elif _sha256(path) != entry.get("sha256"):
            problems.append(f"{name} has other content than was written (SHA-256 differs)")
    if problems:
        raise CheckpointDamagedError(
            f"checkpoint {directory} is damaged: " + "; ".join(problems) + ". It cannot restore "
            "the run exactly: delete it to resume from the previous checkpoint, or pass "
            "--resume_from_checkpoint PATH of another checkpoint."
        )
    return marker


def discard(path: Path) -> None:
    """Delete a checkpoint folder crash-safely: rename it out of the checkpoint namespace,
    remove its marker, then the rest."""
    if not path.exists():
        return
    doomed = path
    if not path.name.endswith(".deleting"):
        base = re.sub(r"\.(tmp|old)$", "", path.name)
        doomed = path.with_name(base + ".deleting")
        if doomed.exists():
            shutil.rmtree(doomed, ignore_errors=True)
        os.replace(path, doomed)
        fsync_dir(path.parent)
    marker = doomed / MARKER
    if marker.exists():
        marker.unlink()
    shutil.rmtree(doomed, ignore_errors=True)


def recover(checkpoints: Path) -> list[str]:
    """Clean up after an interrupted save, replacement or deletion (main process, under the
    output directory's lock); returns what was done, one line each."""
    if not checkpoints.is_dir():
        return []
    actions: list[str] = []
    by_step: dict[int, dict[str, Path]] = {}
    for child in checkpoints.iterdir():
        match = _LEFTOVER.match(child.name)
        if match and child.is_dir():
            by_step.setdefault(int(match.group(1)), {})[match.group(2)] = child
    for step, leftovers in sorted(by_step.items()):
        final = checkpoints / f"checkpoint-{step}"
        for kind in ("tmp", "old"):
            candidate = leftovers.get(kind)
            if candidate is None:
                continue
            if is_complete(candidate) and not is_complete(final):
                if final.exists():
                    discard(final)
                os.replace(candidate, final)
                fsync_dir(checkpoints)
                actions.append(f"restored {final.name} from {candidate.name}")
            else:
                discard(candidate)
                actions.append(f"removed {candidate.name}")
        if "deleting" in leftovers:
            discard(leftovers["deleting"])
            actions.append(f"finished deleting {leftovers['deleting'].name}")
    for line in actions:
        logger.warning("checkpoint recovery in %s: %s", checkpoints, line)
    return actions
