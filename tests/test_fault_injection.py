"""Fault injection with real processes: a training run killed with SIGKILL while it writes a
checkpoint, while it rotates old ones out, while it replaces one, and one process of a 2-process
gloo run killed mid-step. Each then resumes (a new process, ``resume_from_checkpoint``) and its
loss trajectory is the uninterrupted run's, step for step, bit for bit.

The worker is ``fault_worker.py`` (the run and where each fault is injected are documented there).
The checks of run identity and checkpoint damage that need no killed process (a fresh run refused
in an old run's directory, a truncated, deleted or replaced RNG state failing the resume) are cases
of the catalogue, in-process: ``tests/bad_inputs/checkpoint.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WORKER = HERE / "fault_worker.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run(out: Path, mode: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), str(out), mode, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, mode: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "--max_restarts", "0"]
    cmd += [str(WORKER), str(out), mode, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())


def _losses(run_dir: Path) -> dict[int, float]:
    """``step -> loss/total`` of ``train_log.jsonl`` (the last record of a step re-run after a
    resume)."""
    losses = {}
    for line in (run_dir / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss/total" in record:
            losses[record["step"]] = record["loss/total"]
    return losses


def _names(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "checkpoints").iterdir()}


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -9, (proc.returncode, proc.stdout[-1000:] + proc.stderr[-3000:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    """The uninterrupted run (one process): its directory and its losses at steps 1..6."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    _ok(_run(out, "none"))
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    return out, losses


def test_sigkill_while_writing_a_checkpoint(tmp_path: Path, reference) -> None:
    _, expected = reference
    out = tmp_path / "run"
    _killed(_run(out, "write"))
    # the half-written checkpoint is a .tmp folder: invisible to 'latest'
    assert _names(out) == {"checkpoint-2", "checkpoint-4.tmp"}
    assert not (out / "checkpoints" / "checkpoint-4.tmp" / "trainer_state.json").exists()
    proc = _run(out, "none", "--resume", "latest")
    _ok(proc)
    assert "steps [3, 4, 5, 6]" in proc.stdout  # resumed from checkpoint-2
    assert _losses(out) == expected
    assert "checkpoint-4.tmp" not in _names(out)


def test_sigkill_during_rotation(tmp_path: Path, reference) -> None:
    _, expected = reference
    out = tmp_path / "run"
    _killed(_run(out, "rotate", "--keep", "1"))
    names = _names(out)
    assert "checkpoint-4" in names and "checkpoint-2" not in names
    assert "checkpoint-2.deleting" in names  # renamed out of sight, not yet deleted
    assert not (out / "checkpoints" / "checkpoint-2.deleting" / "trainer_state.json").exists()
    proc = _run(out, "none", "--resume", "latest", "--keep", "1")
    _ok(proc)
    assert "steps [5, 6]" in proc.stdout  # resumed from checkpoint-4
    assert _losses(out) == expected
    assert _names(out) == {"checkpoint-6"}  # the leftover is gone, keep-last 1 held


def test_sigkill_while_replacing_a_checkpoint(tmp_path: Path, reference) -> None:
    ref_dir, expected = reference
    out = tmp_path / "run"
    shutil.copytree(ref_dir, out)  # a finished run: checkpoints 2, 4 and 6
    (out / ".lock").unlink()
    # resumed from checkpoint-2, it replaces checkpoint-4 at step 4 and is killed in between
    _killed(_run(out, "replace", "--resume", str(out / "checkpoints" / "checkpoint-2")))
    names = _names(out)
    assert "checkpoint-4" not in names
    assert {"checkpoint-4.old", "checkpoint-4.tmp", "checkpoint-2", "checkpoint-6"} <= names
    assert _losses(out)[4] == expected[4]  # steps 3 and 4 ran again, identically
    # the next start restores checkpoint-4 (the complete new copy) before resolving the path
    proc = _run(out, "none", "--resume", str(out / "checkpoints" / "checkpoint-4"))
    _ok(proc)
    assert "restored checkpoint-4 from checkpoint-4.tmp" in proc.stderr
    assert "steps [5, 6]" in proc.stdout
    assert _losses(out) == expected
    assert _names(out) == {"checkpoint-2", "checkpoint-4", "checkpoint-6"}


def test_sigkill_of_one_rank_of_a_two_process_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    _ok(_torchrun(straight, "none"))
    expected = _losses(straight)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    out = tmp_path / "run"
    proc = _torchrun(out, "rank1")
    assert proc.returncode != 0
    assert "rank1" in proc.stderr.lower() or "signal" in proc.stderr.lower(), proc.stderr[-3000:]
    assert "checkpoint-4" in _names(out) and "checkpoint-6" not in _names(out)
    resumed = _torchrun(out, "none", "--resume", "latest")
    _ok(resumed)
    assert "steps [5, 6]" in resumed.stdout
    assert _losses(out) == expected
    assert (out / "checkpoints" / "checkpoint-6" / "rng_state_1.safetensors").is_file()
