"""Training checkpoints (mmvq/training/checkpoint.py): resume equivalence after a crash, atomic
writes, keep-last-k, and resuming into a model of another shape."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import (  # clean_accelerate: an autouse fixture
    clean_accelerate,  # noqa: F401
    reset_accelerate,
    tiny_config,
    tiny_data,
    tiny_model,
    torch_dataset,
)

from mmvq.training import train
from mmvq.training.checkpoint import (
    CheckpointMismatchError,
    CheckpointWriteError,
    check_fingerprint,
    model_fingerprint,
    resolve_checkpoint,
    save_checkpoint,
)
from mmvq.training.run_dir import RunDirectory
from mmvq.training.run_identity import OutputDirError


@pytest.fixture(scope="module")
def data():
    return tiny_data(num_train=24, num_eval=4)


class _CrashAfter(torch.utils.data.Dataset):
    """The real examples; raises (like a killed job) once ``limit`` examples have been read."""

    def __init__(self, base, limit):
        self.base, self.limit, self.reads = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.limit:
            raise RuntimeError("simulated crash")
        return self.base[i]


@pytest.mark.parametrize("balancer", ["static", "gradnorm"])
def test_resumed_run_reproduces_the_uninterrupted_loss_trajectory(tmp_path, data, balancer):
    train_ds, eval_ds = data
    opts = dict(
        max_steps=8,
        save_every=4,
        gan_start_step=2,
        ema_decay=0.9,
        alignment="weight=0.1",
        balancer=balancer,
        lr_warmup_steps=2,
        num_sample_rows=0,
        shuffle=True,
    )
    straight = train(tiny_model(), train_ds, tiny_config(tmp_path / "straight", **opts), eval_ds)

    # The same run, killed while reading step 6's batch (accelerate reads one batch ahead), ...
    model = tiny_model()
    crashing = _CrashAfter(torch_dataset(model, train_ds), limit=5 * 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(model, crashing, tiny_config(tmp_path / "resumed", **opts), eval_ds)
    assert [step for step, _ in RunDirectory(tmp_path / "resumed").list_checkpoints()] == [4]
    reset_accelerate()
    # ... then resumed from its last checkpoint with a fresh model (the same data, in the same
    # wrapper: the run's identity includes the data's).
    model = tiny_model()
    resumed = train(
        model,
        _CrashAfter(torch_dataset(model, train_ds), limit=10**9),
        tiny_config(tmp_path / "resumed", resume_from_checkpoint="latest", **opts),
        eval_ds,
    )

    assert [h["step"] for h in resumed.history] == [5, 6, 7, 8]
    expected = [h["loss"] for h in straight.history[4:]]
    assert [h["loss"] for h in resumed.history] == pytest.approx(expected, abs=1e-6)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:  # weights and codebook buffers
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    ea, eb = straight.ema_model.state_dict(), resumed.ema_model.state_dict()
    for name in ea:
        torch.testing.assert_close(ea[name], eb[name], rtol=0, atol=1e-6, msg=name)
    assert resumed.metrics["steps"] == 8
    assert resumed.metrics["image_psnr"] == pytest.approx(straight.metrics["image_psnr"], abs=1e-4)


def test_resuming_a_finished_run_continues_to_the_new_max_steps(tmp_path, data, capsys):
    train_ds, _ = data
    train(tiny_model(), train_ds, tiny_config(tmp_path, max_steps=2, num_sample_rows=0))
    reset_accelerate()
    capsys.readouterr()
    more = train(
        tiny_model(),
        train_ds,
        tiny_config(tmp_path, max_steps=4, num_sample_rows=0, resume_from_checkpoint="latest"),
    )
    assert [h["step"] for h in more.history] == [3, 4]
    state = json.loads(
        (tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text()
    )
    assert state["step"] == 4 and state["epoch"] == 0 and state["batch_in_epoch"] == 4
    # at the default verbosity, the resume says what it restored
    err = capsys.readouterr().err
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    assert f"INFO mmvq.training.setup: Resumed from checkpoint {checkpoint}: step 2, epoch 0" in err
    assert err.count("Resumed from checkpoint") == 1


def test_keep_last_checkpoints_and_incomplete_directories_are_ignored(tmp_path, data):
    train_ds, _ = data
    train(
        tiny_model(),
        train_ds,
        tiny_config(
            tmp_path, max_steps=4, save_every=1, keep_last_checkpoints=2, num_sample_rows=0
        ),
    )
    assert [step for step, _ in RunDirectory(tmp_path).list_checkpoints()] == [3, 4]
    root = tmp_path / "checkpoints"
    (root / "checkpoint-9.tmp").mkdir()  # an interrupted save
    (root / "checkpoint-7").mkdir()  # no trainer_state.json: not complete
    assert RunDirectory(tmp_path).latest_checkpoint() == root / "checkpoint-4"
    assert resolve_checkpoint(RunDirectory(tmp_path), "latest") == root / "checkpoint-4"
    files = {p.name for p in (root / "checkpoint-4").iterdir()}
    assert {
        "model.safetensors",
        "model_1.safetensors",
        "optimizer.bin",
        "trainer_state.json",
        "fingerprint.json",
    } <= files
    # RNG states are mmvq's own (safetensors + JSON); accelerate's pickle is not kept
    assert "rng_state_0.safetensors" in files and "random_states_0.pkl" not in files


def test_a_save_that_fails_midway_leaves_no_complete_looking_checkpoint(tmp_path):
    from accelerate import Accelerator

    model = tiny_model()
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(model)
    shared = torch.zeros(4)
    with pytest.raises(  # safetensors refuses, after save_state wrote
        CheckpointWriteError, match=r"could not write checkpoint 3 .*share memory.*intact"
    ):
        save_checkpoint(
            accelerator,
            RunDirectory(tmp_path),
            3,
            state={"epoch": 0},
            fingerprint=model_fingerprint(model),
            tensors={"extra": {"a": shared, "b": shared}},
        )
    # nothing of it is left (the half-written folder was discarded), nothing looks complete
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []
    assert RunDirectory(tmp_path).latest_checkpoint() is None
    final = save_checkpoint(
        accelerator,
        RunDirectory(tmp_path),
        3,
        state={"epoch": 0},
        fingerprint=model_fingerprint(model),
        keep_last=1,
    )
    assert (
        final == tmp_path / "checkpoints" / "checkpoint-3"
        and RunDirectory(tmp_path).latest_checkpoint() == final
    )
    assert not (tmp_path / "checkpoints" / "checkpoint-3.tmp").exists()


def test_resuming_into_a_model_of_another_shape_fails_before_training(tmp_path, data):
    train_ds, _ = data
    train(tiny_model(), train_ds, tiny_config(tmp_path, max_steps=2, num_sample_rows=0))
    log_before = (tmp_path / "train_log.jsonl").read_text()
    reset_accelerate()
    with pytest.raises(
        OutputDirError,
        match=r"another run(.|\n)*model differ(.|\n)*another shape(.|\n)*codebook\.(.|\n)*"
        r"\[64, 16\] vs model \[32, 16\]",
    ):
        train(
            tiny_model(num_codes=32),
            train_ds,
            tiny_config(tmp_path, max_steps=4, resume_from_checkpoint="latest"),
        )
    assert (tmp_path / "train_log.jsonl").read_text() == log_before
    assert [step for step, _ in RunDirectory(tmp_path).list_checkpoints()] == [2]


def test_bad_resume_paths_are_clear_errors(tmp_path, data):
    with pytest.raises(CheckpointMismatchError, match="is not a directory"):
        resolve_checkpoint(RunDirectory(tmp_path), str(tmp_path / "nowhere"))
    (tmp_path / "not_a_checkpoint").mkdir()
    with pytest.raises(CheckpointMismatchError, match="holds no readable trainer_state.json"):
        resolve_checkpoint(RunDirectory(tmp_path), str(tmp_path / "not_a_checkpoint"))
    with pytest.raises(CheckpointMismatchError, match="has no fingerprint.json"):
        check_fingerprint(tmp_path / "not_a_checkpoint", model_fingerprint(tiny_model()))
    assert resolve_checkpoint(RunDirectory(tmp_path), None) is None
    assert resolve_checkpoint(RunDirectory(tmp_path), "latest") is None
    train_ds, _ = data
    with pytest.raises(CheckpointMismatchError, match="is not a directory"):
        train(
            tiny_model(),
            train_ds,
            tiny_config(tmp_path / "run", resume_from_checkpoint=str(tmp_path / "nowhere")),
        )


def test_latest_without_any_checkpoint_starts_fresh(tmp_path, data):
    train_ds, _ = data
    result = train(
        tiny_model(),
        train_ds,
        tiny_config(tmp_path, max_steps=2, num_sample_rows=0, resume_from_checkpoint="latest"),
    )
    assert [h["step"] for h in result.history] == [1, 2]
