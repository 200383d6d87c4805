"""SharedCodebook under torch.distributed: two gloo processes whose batches hold different
modalities must end with bit-identical codebooks, and nothing may hang."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from mmvq.quantize import CodebookConfig, SharedCodebook
from mmvq.utils import distributed

WORLD = 2
RESTART_EVERY = 3
THRESHOLD = 4.0
# which modalities each rank's batch holds at each step: rank 0 {a, b}, rank 1 only {a}, except
# step 4 (rank 1 holds b only) and step 6 (rank 0 holds b only); at step 2 rank 1 passes b with
# every sample marked absent ("b-"). "nan" puts a NaN in that rank's real tokens: at step 1
# (before k-means) on rank 1 and at step 8 on rank 0, both ranks must skip the update together.
SCHEDULE = {
    0: [
        ("a", "b"),
        ("a", "b"),
        ("a", "b"),
        ("a", "b"),
        ("a", "b"),
        ("b",),
        ("a", "b"),
        ("a", "b"),
        ("a", "nan"),
        ("a", "b"),
    ],
    1: [("a", "nan"), ("a",), ("a", "b-"), ("a",), ("b",), ("a",), ("a",), ("a",), ("a",), ("a",)],
}
STEPS = len(SCHEDULE[0])
SKIPPED = 2
CONFIGS = {
    "ema": {"num_codes": 32, "code_dim": 6, "kmeans_iters": 3},
    "cosine_factorised": {
        "num_codes": 16,
        "code_dim": 6,
        "lookup_dim": 3,
        "l2_normalize": True,
        "rotation_trick": True,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(mods: tuple[str, ...], gen: torch.Generator) -> tuple[dict, dict, dict]:
    z, mask, present = {}, {}, {}
    if "a" in mods:  # 20 tokens per sample, around (+3, ...)
        z["a"] = 3.0 + torch.randn(4, 20, 6, generator=gen)
        if "nan" in mods:
            z["a"][0, 0, 0] = float("nan")
    if "b" in mods or "b-" in mods:  # 5 tokens per sample (last one padding), around (-3, ...)
        z["b"] = -3.0 + torch.randn(4, 5, 6, generator=gen)
        mask["b"] = torch.tensor([True, True, True, True, False]).expand(4, 5).clone()
        if "b-" in mods:
            present["b"] = torch.zeros(4, dtype=torch.bool)
    return z, mask, present


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        assert distributed.is_distributed() and distributed.world_size() == WORLD
        result = {}
        for name, overrides in CONFIGS.items():
            torch.manual_seed(0)  # identical initial parameters on both ranks (as DDP would ensure)
            cfg = CodebookConfig(
                restart_every=RESTART_EVERY,
                reservoir_size=32,
                dead_code_threshold=THRESHOLD,
                **overrides,
            )
            cb = SharedCodebook(cfg, ["a", "b"]).train()
            cb.tolerate_nonfinite = True  # as the training loop sets it: a NaN step is skipped
            gen = torch.Generator().manual_seed(1000 + rank)  # different data on each rank
            torch.manual_seed(rank)  # and different local sampling
            for step, mods in enumerate(SCHEDULE[rank], start=1):
                z, mask, present = _batch(mods, gen)
                for t in z.values():
                    t.requires_grad_(True)
                out = cb(z, mask=mask, present=present or None)
                sum(out.z_q[m].sum() + out.loss[m] for m in out.z_q).backward()
                if int(cb.steps) == RESTART_EVERY and f"{name}.restarted" not in result:
                    # restarted codes carry exactly the pseudo count right after a restart
                    result[f"{name}.restarted"] = (
                        (cb.cluster_size == THRESHOLD).sum().reshape(1).float()
                    )
                if step == STEPS:
                    result[f"{name}.last_codes_a"] = out.codes["a"].float()
            for key, value in cb.state_dict().items():
                result[f"{name}.state.{key}"] = value.contiguous()
        save_file(result, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_across_ranks_with_different_modalities(tmp_path) -> None:
    ctx = mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            raise AssertionError("distributed codebook test hung (ranks disagree on collectives?)")
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    for name in CONFIGS:
        state_keys = [k for k in r0 if k.startswith(f"{name}.state.")]
        assert {k.split(".state.")[1] for k in state_keys} >= {
            "code_vectors",
            "code_sums",
            "cluster_size",
            "initialized",
            "steps",
            "reservoir",
            "reservoir_filled",
            "reservoir_ptr",
        }
        for key in state_keys:  # every buffer, bit for bit
            assert torch.equal(r0[key], r1[key]), f"{key} differs across ranks"
        assert (
            bool(r0[f"{name}.state.initialized"])
            and int(r0[f"{name}.state.steps"]) == STEPS - SKIPPED
        )
        assert r0[f"{name}.restarted"].item() > 0, f"{name}: no dead code was restarted"
        # both modalities reached the reservoirs though rank 1 rarely had b
        assert (r0[f"{name}.state.reservoir_filled"] > 0).all()
        # the ranks really saw different data (otherwise identity would prove nothing)
        assert not torch.equal(r0[f"{name}.last_codes_a"], r1[f"{name}.last_codes_a"])


def test_helpers_are_noops_without_process_group() -> None:
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    t = torch.arange(3.0)
    assert distributed.all_reduce_(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    assert distributed.broadcast_(t, src=0) is t and t.tolist() == [0.0, 1.0, 2.0]
    distributed.broadcast_tensors_([t])
    assert t.tolist() == [0.0, 1.0, 2.0]
