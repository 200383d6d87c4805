"""CPU threads under ``accelerate launch`` (mmvq/training/cpu_threads.py), through the real
launcher: its default OMP_NUM_THREADS=1 is replaced by every physical core, a user's own choice
is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvq.training.cpu_threads import _is_accelerate_launch, physical_cores, use_physical_cores

PROBE = """
import os
from mmvq.training.cpu_threads import use_physical_cores
decision = use_physical_cores(True)
print("THREADS", decision.threads, os.environ.get("OMP_NUM_THREADS"), decision.reason)
"""


def _launch(tmp_path: Path, *launch_flags: str, omp: str | None = None) -> tuple[int, str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_flags, str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("THREADS"))
    _, threads, omp_seen, reason = line.split(" ", 3)
    return int(threads), f"{omp_seen} {reason}"


@pytest.mark.slow
@pytest.mark.skipif(physical_cores() < 2, reason="one core: accelerate's default is already all")
def test_accelerate_launch_default_gets_every_physical_core(tmp_path: Path) -> None:
    threads, said = _launch(tmp_path)
    assert threads == physical_cores()
    assert said.startswith("1 accelerate launch set OMP_NUM_THREADS=1 by default")


@pytest.mark.slow
@pytest.mark.skipif(physical_cores() < 2, reason="one core: cannot tell a choice of 1 apart")
def test_a_users_own_thread_setting_is_respected(tmp_path: Path) -> None:
    threads, said = _launch(tmp_path, "--num_cpu_threads_per_process", "1")
    assert threads == 1 and "--num_cpu_threads_per_process was given: respected" in said
    threads, said = _launch(tmp_path, omp="1")
    assert threads == 1 and "OMP_NUM_THREADS was set for accelerate launch: respected" in said


def test_outside_accelerate_launch_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()  # conftest sets 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    decision = use_physical_cores(True)  # this process was started by pytest, not accelerate
    assert decision.threads == before == torch.get_num_threads()
    assert decision.reason == "OMP_NUM_THREADS=1"
    assert use_physical_cores(False).reason == "not a CPU run: thread count left as it is"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/venv/bin/python", "/venv/bin/accelerate", "launch", "train.py"], True),
        (["python", "-m", "accelerate.commands.launch", "train.py"], True),
        (["/venv/bin/accelerate-launch", "train.py"], True),
        (["python", "train.py", "launch"], False),
        (["/venv/bin/python", "/venv/bin/accelerate", "config"], False),
        (["torchrun", "--nproc_per_node", "2", "train.py"], False),
    ],
)
def test_which_parents_are_accelerate_launch(cmdline: list[str], expected: bool) -> None:
    assert _is_accelerate_launch(cmdline) is expected
