"""No code from a model repo, ever.

A saved mmvq model is data: ``config.json``, ``model.safetensors`` and the adapters' files
(tokenizer JSON, vocabularies, SentencePiece models). What a Hub download fetches is limited to
those file types (:data:`DOWNLOAD_PATTERNS`), and a repo or directory that carries code is refused
before anything in it is loaded, with :class:`RemoteCodeError`:

* a file of a code type (:data:`CODE_SUFFIXES`: ``.py``, compiled modules, shared libraries,
  scripts, pickles) anywhere in the repo, or in the model directory / its ``adapters/`` folder;
* an ``auto_map`` entry in ``config.json`` or in any JSON file under ``adapters/`` (what makes
  ``transformers`` import a repo's module, e.g. a tokenizer's ``tokenization_x.py``).

Every ``transformers`` load in mmvq passes ``trust_remote_code=False`` as well, so no prompt
("run the custom code? [y/N]") can ever appear, with or without a terminal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ADAPTERS_DIR",
    "CODE_SUFFIXES",
    "DATA_SUFFIXES",
    "DOWNLOAD_PATTERNS",
    "RemoteCodeError",
    "check_data_folder",
    "check_no_code",
    "check_repo_files",
]

ADAPTERS_DIR = "adapters"
CODE_SUFFIXES = (
    ".py",
    ".pyc",
    ".pyo",
    ".pyd",
    ".so",
    ".dll",
    ".dylib",
    ".sh",
    ".bat",
    ".cmd",
    ".ps1",
    ".exe",
    ".pkl",
    ".pickle",
)
"""File types that hold (or, unpickled, run) code."""
DATA_SUFFIXES = (".json", ".txt", ".model", ".safetensors")
"""File types an adapter's folder may hold (tokenizer JSON, vocabularies, SentencePiece)."""
DOWNLOAD_PATTERNS = [
    "config.json",
    "model.safetensors",
    *(f"{ADAPTERS_DIR}/*{suffix}" for suffix in DATA_SUFFIXES),
]
"""The files of a Hub repo that loading downloads (never code)."""
_MAX_FILES = 10_000


class RemoteCodeError(ValueError):
    """A model repo or directory carries code; mmvq never runs (or downloads) it."""


def _refuse(where: str, what: str) -> RemoteCodeError:
    return RemoteCodeError(
        f"{where} carries code ({what}); mmvq never runs code from a model repo, so it is not "
        "loaded. A model saved by mmvq holds only config.json, model.safetensors and data files "
        "under adapters/: re-save it with save_pretrained, or load a repo you trust that holds "
        "no code."
    )


def check_repo_files(files: Iterable[str], where: str) -> None:
    """Refuse a repo whose file listing has a code file (anywhere)."""
    code = sorted(f for f in files if f.lower().endswith(CODE_SUFFIXES))
    if code:
        shown = ", ".join(code[:5]) + (f" (+{len(code) - 5} more)" if len(code) > 5 else "")
        raise _refuse(where, f"code file(s) {shown}")


def _auto_map(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError):
        return False  # not JSON: whoever reads it reports that
    return isinstance(data, dict) and "auto_map" in data


def check_no_code(directory: str | os.PathLike, where: str | None = None) -> None:
    """Refuse a model directory with a code file at its top level or under ``adapters/``, or an
    ``auto_map`` in ``config.json`` or in a JSON file under ``adapters/``; before anything in it
    is loaded."""
    root = Path(directory)
    where = where or str(root)
    top = [p for p in root.iterdir() if p.is_file()] if root.is_dir() else []
    nested: list[Path] = []
    adapters = root / ADAPTERS_DIR
    if adapters.is_dir():
        for folder, _, names in os.walk(adapters):
            nested += [Path(folder) / n for n in names]
            if len(nested) > _MAX_FILES:
                break
    files = top + nested
    check_repo_files((p.relative_to(root).as_posix() for p in files), where)
    for path in [root / "config.json", *(p for p in nested if p.suffix.lower() == ".json")]:
        if path.is_file() and _auto_map(path):
            raise _refuse(where, f"an 'auto_map' in {path.relative_to(root).as_posix()}")


def check_data_folder(folder: str | os.PathLike, where: str | None = None) -> None:
    """Refuse a folder of data files (an adapter's, e.g. a tokenizer's) holding a code file or a
    JSON file with an ``auto_map``, anywhere under it."""
    root = Path(folder)
    where = where or str(root)
    files: list[Path] = []
    for current, _, names in os.walk(root):
        files += [Path(current) / n for n in names]
        if len(files) > _MAX_FILES:
            break
    check_repo_files((p.relative_to(root).as_posix() for p in files), where)
    for path in files:
        if path.suffix.lower() == ".json" and _auto_map(path):
            raise _refuse(where, f"an 'auto_map' in {path.relative_to(root).as_posix()}")
