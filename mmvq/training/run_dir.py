"""`RunDirectory`: the one owner of a training run's output directory layout.

::

    OUTPUT_DIR/
      checkpoints/checkpoint-N/   training checkpoints (N = optimizer step; written atomically
                                  through checkpoint-N.tmp)
      samples/step-N/             evaluation samples of step N (PNG grids, text files, WAVs)
      logs/                       tracker logs (TensorBoard...)
      train_log.jsonl             one JSON record per log step and per evaluation
      metrics.json                the final evaluation, counters and timings
      final/                      the trained model (save_pretrained, model card included)
      run.json                    the run's identity (config + data + seed + model fingerprint)
      .lock                       held (flock) by the process writing the run

The training loop, the checkpoints, the recipe runner and the CLI ask it for these paths; nobody
else spells them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from mmvq.training.checkpoint_files import read_marker

__all__ = ["RunDirectory"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SAMPLES = re.compile(r"^step-(\d+)$")


class RunDirectory:
    """The layout of ``OUTPUT_DIR`` (see the module docstring); paths only, nothing is created.

    Args:
        root: the run's output directory.
    """

    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    LOGS = "logs"
    TRAIN_LOG = "train_log.jsonl"
    METRICS = "metrics.json"
    FINAL = "final"
    TRAINER_STATE = "trainer_state.json"
    """The file whose presence marks a checkpoint as complete (written last)."""
    RUN = "run.json"
    LOCK = ".lock"
    OWNED = (CHECKPOINTS, SAMPLES, LOGS, TRAIN_LOG, METRICS, FINAL, RUN)
    """What a run writes (what ``overwrite_output_dir`` removes); other files are left alone."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.root)!r})"

    # ------------------------------------------------------------------------ files
    @property
    def logs(self) -> Path:
        """``logs/``: what the trackers write."""
        return self.root / self.LOGS

    @property
    def train_log(self) -> Path:
        """``train_log.jsonl``: one JSON record per log step and per evaluation."""
        return self.root / self.TRAIN_LOG

    @property
    def metrics(self) -> Path:
        """``metrics.json``: the final evaluation, counters and timings."""
        return self.root / self.METRICS

    @property
    def final(self) -> Path:
        """``final/``: the trained model."""
        return self.root / self.FINAL

    @property
    def run_file(self) -> Path:
        """``run.json``: the identity of the run that owns the directory."""
        return self.root / self.RUN

    @property
    def lock_file(self) -> Path:
        """``.lock``: locked by the process writing the run (refuses a second writer)."""
        return self.root / self.LOCK

    def owned(self) -> list[Path]:
        """The entries of :attr:`OWNED` that exist."""
        return [self.root / name for name in self.OWNED if (self.root / name).exists()]

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / self.CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        """``checkpoints/checkpoint-<step>``."""
        return self.checkpoints / f"checkpoint-{step}"

    def checkpoint_tmp(self, step: int) -> Path:
        """``checkpoints/checkpoint-<step>.tmp``: where a checkpoint is written, then renamed."""
        return self.checkpoints / f"checkpoint-{step}.tmp"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Checkpoints as ``(step, path)``, oldest first: folders named ``checkpoint-N`` (never
        ``.tmp``/``.old``/``.deleting``) holding a readable marker (written last, removed
        first). A resume verifies the marker's file manifest before loading."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for child in self.checkpoints.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and child.is_dir() and read_marker(child) is not None:
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        found = self.list_checkpoints()
        return found[-1][1] if found else None

    # ---------------------------------------------------------------------- samples
    @property
    def samples_root(self) -> Path:
        """``samples/``."""
        return self.root / self.SAMPLES

    def samples(self, step: int) -> Path:
        """``samples/step-<step>``: the samples of the evaluation at ``step``."""
        return self.samples_root / f"step-{step}"

    def sample_steps(self) -> list[tuple[int, Path]]:
        """Sample folders as ``(step, path)``, oldest first."""
        if not self.samples_root.is_dir():
            return []
        found = []
        for child in self.samples_root.iterdir():
            match = _SAMPLES.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_sample_grid(self, modalities: Sequence[str]) -> Path | None:
        """The newest evaluation's PNG grid (``<modality>.png``) of the first of ``modalities``
        that has one, or ``None``."""
        for _, folder in reversed(self.sample_steps()):
            for modality in modalities:
                grid = folder / f"{modality}.png"
                if grid.is_file():
                    return grid
        return None
