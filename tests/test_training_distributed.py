"""Real 2-process DDP training on CPU (gloo), launched with torchrun.

This file is both the test and the worker: run by torchrun, ``__main__`` trains a tiny model in
each process and writes its final weights and what it saw; the test compares the processes.
Rank 1's batches hold no caption at all (the collator leaves the text modality out of its
batches), and one of rank 0's batches holds NaN pixels, which every rank must skip together.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path
    )


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["uncertainty", "gradnorm", "pareto"])
def test_ddp_replicas_stay_identical_when_a_rank_lacks_a_modality(tmp_path, balancer):
    import torch
    from safetensors.torch import load_file

    proc = _torchrun([str(Path(__file__).resolve()), str(tmp_path), balancer], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert any(k.startswith("model.codebook.") for k in weights[0])
    assert any(k.startswith("model.concept.codebook.") for k in weights[0])  # concept level too
    assert any(k.startswith("balancer.") for k in weights[0])
    for name in weights[0]:  # parameters, codebook buffers, balancer state: bit-identical
        assert torch.equal(weights[0][name], weights[1][name]), name
    if balancer == "pareto":  # its weights came from all-reduced gradients at every step
        assert float(weights[0]["balancer.steps"]) > 0
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[1]["captioned_rows_read"] == 0 and reports[1]["rows_read"] > 0
    assert reports[0]["captioned_rows_read"] > 0
    for report in reports:
        # two epochs of two steps: rank 0's NaN batch comes second in each, and both ranks skip it
        assert report["nonfinite_steps"] == 2
        assert report["skipped"] == [False, True, False, True]
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-4" / "rng_state_1.safetensors").is_file()


@pytest.mark.slow
def test_recipe_runs_under_torchrun(tmp_path):
    proc = _torchrun(
        [
            str(ROOT / "recipes" / "fuse_image_text.py"),
            "--cpu",
            "--max_steps",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
            "--builtin_num_train",
            "64",
            "--builtin_num_eval",
            "8",
            "--per_device_batch_size",
            "4",
            "--max_eval_samples",
            "8",
            "--report_to",
            "none",
            "--tqdm",
            "false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and "image_psnr" in metrics
    assert proc.stdout.count("==== mmvq training finished ====") == 1  # the main process reports


# ---------------------------------------------------------------------------- the worker
def _worker(out_dir: str, balancer: str) -> None:
    import warnings

    import torch
    from safetensors.torch import save_file
    from train_helpers import tiny_config, tiny_data, tiny_model

    from mmvq.data import MultimodalDataset
    from mmvq.training import train

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    train_ds, eval_ds = tiny_data(num_train=16, num_eval=4)
    # Batches of 4 without shuffling go to the ranks in turn: rows 4-7 and 12-15 (rank 1's) have
    # no caption, rows 8-11 (rank 0's second batch) get NaN pixels.
    texts = [t if (i // 4) % 2 == 0 else None for i, t in enumerate(train_ds["text"])]
    train_ds = train_ds.remove_columns("text").add_column("text", texts)
    model = tiny_model()
    base = MultimodalDataset(train_ds, dict(model.adapters), {"image": "image", "text": "text"})
    read: list[int] = []

    class Recorded(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            read.append(i)
            example = base[i]
            if 8 <= i < 12:
                example["image"]["pixel_values"][:] = float("nan")
            return example

    cfg = tiny_config(
        Path(out_dir) / "out",
        max_steps=4,
        shuffle=False,
        gan_start_step=0,
        balancer=balancer,
        save_every=4,
        num_sample_rows=2,
        max_eval_samples=4,
    )
    result = train(model, Recorded(), cfg, eval_ds)
    state = {
        f"model.{k}": v.detach().clone().contiguous() for k, v in result.model.state_dict().items()
    }
    state.update(
        {
            f"balancer.{k}": v.detach().clone().contiguous()
            for k, v in result.balancer.state_dict().items()
        }
    )
    save_file(state, str(Path(out_dir) / f"rank{rank}.safetensors"))
    report = {
        "rows_read": len(read),
        "captioned_rows_read": sum(texts[i] is not None for i in read),
        "nonfinite_steps": sum(h["skipped"] for h in result.history),
        "skipped": [h["skipped"] for h in result.history],
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    _worker(sys.argv[1], sys.argv[2])
