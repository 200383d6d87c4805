"""A training run that can be killed (SIGKILL) at a chosen instant: the worker of
``test_fault_injection.py`` (run as ``python fault_worker.py OUT MODE [--resume SPEC]``, or under
``torchrun`` for two processes).

The run is always the same (tiny image+text model, the shapes data, 6 steps of batch 4, a
checkpoint every 2 steps, the GAN from step 2), so every run writes the same loss trajectory to
``OUT/train_log.jsonl``. ``MODE`` chooses the fault, injected from outside mmvq's code: the
worker wraps a library call that mmvq makes (``torch.save`` inside accelerate's ``save_state``,
``os.replace``, ``shutil.rmtree``) or a data read, and kills its own process with ``SIGKILL`` at
that instant, as the kernel's OOM killer or a pre-empted node would:

* ``write``: while ``checkpoint-4`` is being written (the model weights are in
  ``checkpoint-4.tmp``, the optimizer state is not);
* ``rotate``: during keep-last rotation at step 4, after ``checkpoint-2`` was renamed to
  ``checkpoint-2.deleting`` and its marker removed, before its files are deleted;
* ``replace``: while ``checkpoint-4`` is being replaced (a run resumed from ``checkpoint-2``),
  after the old copy was renamed to ``checkpoint-4.old``, before the new one is renamed in;
* ``rank1``: process 1 of 2, while it reads its data for step 6;
* ``none``: no fault.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _inject(mode: str) -> None:
    import torch

    if mode == "write":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):  # accelerate writes optimizer.bin with torch.save
            if Path(str(f)).parent.name == "checkpoint-4.tmp":
                _die()
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    elif mode == "rotate":
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            if Path(path).name == "checkpoint-2.deleting":
                _die()
            return real_rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree
    elif mode == "replace":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(src).name == "checkpoint-4.tmp" and Path(str(dst) + ".old").exists():
                _die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("mode", choices=["none", "write", "rotate", "replace", "rank1"])
    parser.add_argument("--resume", default=None)
    parser.add_argument("--keep", type=int, default=0)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    warnings.filterwarnings("ignore")
    import torch
    from train_helpers import tiny_config, tiny_data, tiny_model

    from mmvq.data import MultimodalDataset
    from mmvq.training import train

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    train_ds, eval_ds = tiny_data(num_train=24, num_eval=4)
    model = tiny_model()
    base = MultimodalDataset(train_ds, dict(model.adapters), {"image": "image", "text": "text"})
    reads = [0]

    class Rows(torch.utils.data.Dataset):
        """The shapes rows; process 1 of a ``rank1`` run dies reading its data for step 6."""

        def __len__(self) -> int:
            return len(base)

        def __getitem__(self, i: int):
            reads[0] += 1
            if args.mode == "rank1" and rank == 1 and reads[0] > 4 * 5:
                _die()
            return base[i]

    _inject(args.mode)
    cfg = tiny_config(
        args.out,
        max_steps=6,
        save_every=2,
        keep_last_checkpoints=args.keep,
        gan_start_step=2,
        num_sample_rows=0,
        max_eval_samples=4,
        resume_from_checkpoint=args.resume,
    )
    result = train(model, Rows(), cfg, eval_ds)
    print("steps", [h["step"] for h in result.history])


if __name__ == "__main__":
    main()
