"""Run directories and checkpoints: another run's directory, a second writer, damaged or foreign
checkpoints, a full disk. ``ctx.run_dir()`` is a fresh copy of a finished 2-step run
(checkpoints 1 and 2) made with :data:`~bad_inputs.helpers.RUN`."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys

import pytest

from bad_inputs.helpers import (
    CheckpointDamagedError,
    CheckpointMismatchError,
    CheckpointWriteError,
    OutputDirError,
    case,
    checkpoint_file,
    resume,
    train_tiny,
    truncate,
)


def _resume_with_file_of_step_1(ctx, name):
    """Resume ``latest`` (checkpoint-2) after its ``name`` was replaced by checkpoint-1's: a valid
    file, of the same run, with other content."""
    run = ctx.run_dir()
    checkpoint_file(run, name).write_bytes(checkpoint_file(run, name, step=1).read_bytes())
    resume(ctx, run)


@case("checkpoint", OutputDirError, r"belongs to another run .*: its config, seed differ")
def another_run_in_an_old_runs_directory(ctx):
    run = ctx.run_dir()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}
    try:
        train_tiny(ctx, run, seed=7, learning_rate=5e-4)
    finally:  # refused before writing anything (but its lock): the old run is untouched
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"} == before


@case(
    "checkpoint",
    OutputDirError,
    r"output_dir '.*run' belongs to another run .*: its config, model differ.*"
    r"--overwrite_output_dir",
)
def a_prior_trained_into_the_tokenizer_models_run_directory(ctx):
    """``recipes/train_prior.py --output_dir`` naming the tokenizer model's own run: refused
    before anything is written (not even the codes cache)."""
    from train_helpers import tiny_model

    from mmvq.prior import PriorTrainConfig, train_prior

    run = ctx.run_dir()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}
    cfg = PriorTrainConfig(output_dir=str(run), max_steps=1, report_to="none", cpu=True)
    try:
        train_prior(tiny_model().eval(), ctx.data[0], cfg)
    finally:
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"} == before


@case("checkpoint", OutputDirError, r"already holds this run's progress .*--resume_from_checkpoint")
def the_same_run_again_without_resume(ctx):
    train_tiny(ctx, ctx.run_dir())


@case("checkpoint", OutputDirError, r"belongs to another run.*resumes only the same run")
def latest_of_another_run(ctx):
    train_tiny(ctx, ctx.run_dir(), seed=3, resume_from_checkpoint="latest")


@case("checkpoint", OutputDirError, r"outputs of an earlier run \(checkpoints, .*no run\.json")
def outputs_of_an_unknown_earlier_run(ctx):
    run = ctx.run_dir()
    (run / "run.json").unlink()
    train_tiny(ctx, run)


@case("checkpoint", OutputDirError, r"run\.json is damaged .*--overwrite_output_dir")
def damaged_run_json(ctx):
    run = ctx.run_dir()
    (run / "run.json").write_text("{not json")
    resume(ctx, run)


@case("checkpoint", OutputDirError, r"is being written by another run \(process \d+ on ")
def a_second_concurrent_writer(ctx):
    run = ctx.run_dir()
    holder = (
        "import sys, time; from mmvq.training.run_dir import RunDirectory; "
        "from mmvq.training.run_identity import RunLock; "
        "RunLock(RunDirectory(sys.argv[1])).acquire(); print('locked', flush=True); "
        "time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(run)], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ),
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        resume(ctx, run)
    finally:
        proc.kill()
        proc.wait()


@case(
    "checkpoint", CheckpointDamagedError, r"checkpoint-2 is damaged: optimizer\.bin has \d+ bytes"
)
def truncated_optimizer_state(ctx):
    run = ctx.run_dir()
    truncate(checkpoint_file(run, "optimizer.bin"), 64)
    resume(ctx, run)


@case(
    "checkpoint",
    CheckpointDamagedError,
    r"checkpoint-2' is damaged: the 'scheduler' entry of its trainer_state\.json has keys",
)
def damaged_scheduler_state(ctx):
    """The LR scheduler's state lives in trainer_state.json (JSON, no pickle): a garbled entry."""
    run = ctx.run_dir()
    marker = checkpoint_file(run, "trainer_state.json")
    state = json.loads(marker.read_text())
    state["scheduler"] = {"last_epoch": "two"}
    marker.write_text(json.dumps(state))
    resume(ctx, run)


@case("checkpoint", CheckpointDamagedError, r"model\.safetensors has other content")
def weights_replaced_by_another_checkpoints(ctx):
    _resume_with_file_of_step_1(ctx, "model.safetensors")


@case("checkpoint", CheckpointDamagedError, r"rng_state_0\.safetensors is missing")
def deleted_rng_state(ctx):
    run = ctx.run_dir()
    checkpoint_file(run, "rng_state_0.safetensors").unlink()
    resume(ctx, run)


@case("checkpoint", CheckpointDamagedError, r"rng_state_0\.safetensors has 10 bytes")
def truncated_rng_state(ctx):
    run = ctx.run_dir()
    truncate(checkpoint_file(run, "rng_state_0.safetensors"), 10)
    resume(ctx, run)


@case("checkpoint", CheckpointDamagedError, r"rng_state_0\.safetensors has other content")
def rng_state_replaced_by_another_checkpoints(ctx):
    """A valid RNG file, from another checkpoint of the run: restoring it would resume silently
    with other random numbers."""
    _resume_with_file_of_step_1(ctx, "rng_state_0.safetensors")


@case("checkpoint", CheckpointMismatchError, r"written by a run of 2 process\(es\); this run has 1")
def checkpoint_of_a_two_process_run(ctx):
    run = ctx.run_dir()
    marker = checkpoint_file(run, "trainer_state.json")
    state = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(state, world_size=2)))
    resume(ctx, run)


@case("checkpoint", CheckpointDamagedError, r"has no file manifest: .*older mmvq")
def checkpoint_of_an_older_mmvq(ctx):
    run = ctx.run_dir()
    marker = checkpoint_file(run, "trainer_state.json")
    state = json.loads(marker.read_text())
    state.pop("files")
    marker.write_text(json.dumps(state))
    resume(ctx, run, str(marker.parent))


@case("checkpoint", CheckpointMismatchError, r"holds no readable trainer_state\.json")
def truncated_marker_given_as_path(ctx):
    run = ctx.run_dir()
    marker = checkpoint_file(run, "trainer_state.json")
    marker.write_text(marker.read_text()[:20])
    resume(ctx, run, str(marker.parent))


@case("checkpoint", CheckpointMismatchError, r"resume_from_checkpoint='.*nowhere' is not a dir")
def resume_path_that_does_not_exist(ctx):
    resume(ctx, ctx.run_dir(), str(ctx.tmp / "nowhere"))


@case("checkpoint", ValueError, r"TrainConfig\.output_dir='.*a_file/run' is not a writable dir")
def output_dir_under_a_file(ctx):
    (ctx.tmp / "a_file").write_text("x")
    train_tiny(ctx, ctx.tmp / "a_file" / "run")


@case(
    "checkpoint", CheckpointWriteError, r"could not write checkpoint \d .*(No space left|too large)"
)
def full_disk_at_a_checkpoint(ctx):
    """The output directory on a 2 MB tmpfs (root), else a process whose files may not exceed
    96 kB (RLIMIT_FSIZE): the first checkpoint does not fit."""
    small = ctx.tmp / "small"
    small.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True
    ).returncode == 0  # fmt: skip
    if not mounted:
        return _full_disk_in_a_process(ctx, small)
    failure = None
    try:
        try:
            train_tiny(ctx, small / "run")
        except CheckpointWriteError as exc:  # re-raised below, without the frames that hold
            failure = CheckpointWriteError(exc.errno, exc.strerror)  # files of the tmpfs open
        gc.collect()
        names = [p.name for p in (small / "run" / "checkpoints").iterdir()]
    finally:
        subprocess.run(["umount", str(small)], check=False)
    # nothing half-written is left; the checkpoints kept are complete
    assert all(re.fullmatch(r"checkpoint-\d+", n) for n in names), names
    if failure is not None:
        raise failure


def _full_disk_in_a_process(ctx, out):
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (96000, 96000)); "
        "sys.path.insert(0, sys.argv[2]); from bad_inputs.helpers import train_config; "
        "from train_helpers import tiny_data, tiny_model; from mmvq.training import train; "
        "train(tiny_model(), tiny_data(24, 4)[0], train_config(sys.argv[1]))"
    )
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out / "run"), tests], capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if not last.startswith("mmvq.training.checkpoint.CheckpointWriteError"):
        pytest.fail(f"expected a CheckpointWriteError, got: {proc.stderr[-2000:]}")
    raise CheckpointWriteError(last.split(": ", 1)[1])
