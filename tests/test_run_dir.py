"""The layout of a run's output directory (mmvq/training/run_dir.py)."""

from __future__ import annotations

from mmvq.training.run_dir import RunDirectory


def test_paths_of_the_layout(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    assert run.root == tmp_path
    assert run.checkpoint(5) == tmp_path / "checkpoints" / "checkpoint-5"
    assert run.checkpoint_tmp(5) == tmp_path / "checkpoints" / "checkpoint-5.tmp"
    assert run.samples(200) == tmp_path / "samples" / "step-200"
    assert run.logs == tmp_path / "logs" and run.train_log == tmp_path / "train_log.jsonl"
    assert run.metrics == tmp_path / "metrics.json" and run.final == tmp_path / "final"
    assert not tmp_path.joinpath("checkpoints").exists()  # paths only: nothing is created


def test_complete_checkpoints_in_step_order(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    assert run.list_checkpoints() == [] and run.latest_checkpoint() is None
    for step in (10, 2, 30):
        run.checkpoint(step).mkdir(parents=True)
        (run.checkpoint(step) / "trainer_state.json").write_text("{}")
    run.checkpoint(40).mkdir()  # no trainer_state.json: interrupted, not complete
    run.checkpoint_tmp(50).mkdir()
    (run.checkpoints / "notes").mkdir()
    assert [step for step, _ in run.list_checkpoints()] == [2, 10, 30]
    assert run.latest_checkpoint() == run.checkpoint(30)


def test_the_newest_sample_grid_of_the_first_modality_that_has_one(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    assert run.latest_sample_grid(["image"]) is None
    for step, names in ((2, ["image.png", "depth.png"]), (10, ["text.txt"]), (4, ["depth.png"])):
        run.samples(step).mkdir(parents=True)
        for name in names:
            (run.samples(step) / name).write_bytes(b"")
    assert [step for step, _ in run.sample_steps()] == [2, 4, 10]
    assert run.latest_sample_grid(["image", "depth"]) == run.samples(4) / "depth.png"
    assert run.latest_sample_grid(["image"]) == run.samples(2) / "image.png"
    assert run.latest_sample_grid(["text"]) is None
