"""Training-step cost of mmvq against the bare encoders/decoders, measured in the same run.

Both sides train on the same collated batch of the built-in shapes data with AdamW:

* ``mmvq``: one generator step of :func:`mmvq.train` without the discriminator: the model's
  forward (adapters' encoders, the shared codebook with its EMA update and statistics, the fusion
  decoder, the adapters' decoders and losses), the balancer, backward, gradient clipping and
  the optimizer step;
* ``bare``: for each adapter, ``decode(encode(batch))`` and its reconstruction loss, backward and
  the optimizer step over the adapters' parameters: what the adapters cost without the codebook
  and the fusion decoder.

The ratio ``mmvq / bare`` (median of ``--repeats`` timed steps after ``--warmup``) is the price of
the shared codebook and the fusion trunk; the codebook and the fusion trunk are also timed alone
(forward + backward on the same encoder outputs) to show where it goes. The last line printed is
a JSON object of the figures.

    python bench/bench_train.py                 # the default recipe's model, batch 32, CPU
    python bench/bench_train.py --quick
    python bench/bench_train.py --device cuda --batch_size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--modalities", default="image,text")
    p.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up, batch 16")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.batch_size = 5, 1, 16
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch_size and --repeats must be >= 1, --warmup >= 0")
    return args


def _batch(
    model: torch.nn.Module, modalities: list[str], batch_size: int, device: torch.device
) -> dict:
    from mmvq.data import DataConfig, MultimodalCollator, MultimodalDataset, load_data

    data = DataConfig(
        builtin_num_train=batch_size, builtin_num_eval=0, builtin_with_audio="audio" in modalities
    )
    train, _ = load_data(data, modalities)
    dataset = MultimodalDataset(train, dict(model.adapters), data.column_map(modalities))
    batch = MultimodalCollator(dict(model.adapters))([dataset[i] for i in range(batch_size)])
    return {m: {k: v.to(device) for k, v in sub.items()} for m, sub in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step, repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    warnings.filterwarnings("ignore")
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from fuse_image_text import DEFAULTS

    from mmvq.balance import BalancerConfig, build_balancer
    from mmvq.recipe_config import build_model, parse_recipe_args

    modalities = [m.strip() for m in args.modalities.split(",")]
    recipe = parse_recipe_args(["--modalities", args.modalities], DEFAULTS)
    torch.manual_seed(0)
    model = build_model(recipe.model).to(device).train()
    batch = _batch(model, modalities, args.batch_size, device)
    with torch.no_grad():
        model(batch)  # k-means initialisation of the codebook happens once, outside the timing

    balancer = build_balancer(BalancerConfig(), model.modalities)
    g_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def mmvq_step() -> None:
        out = model(batch)
        loss = balancer.combine(dict(out.rec_loss_mean)).loss + sum(out.vq_loss.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        g_opt.step()
        g_opt.zero_grad(set_to_none=True)

    adapters = [model.adapters[m] for m in modalities]
    bare_opt = torch.optim.AdamW([p for a in adapters for p in a.parameters()], lr=1e-4)

    def bare_step() -> None:
        loss = 0.0
        for m, adapter in zip(modalities, adapters):
            tokens = adapter.encode(batch[m])
            recon = adapter.decode(tokens.z, batch[m])
            loss = loss + adapter.reconstruction_loss(batch[m], recon).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    # Where the difference goes: the codebook and the fusion trunk alone (forward + backward).
    with torch.no_grad():
        tokens = {m: model.adapters[m].encode(batch[m]) for m in modalities}
    z = {m: t.z.detach().requires_grad_(True) for m, t in tokens.items()}
    masks = {m: t.mask for m, t in tokens.items()}
    visible = {m: torch.ones(args.batch_size, dtype=torch.bool, device=device) for m in modalities}

    def codebook_step() -> None:
        q = model.codebook(z, masks)
        (sum(v.float().sum() for v in q.z_q.values()) + sum(q.loss.values())).backward()

    def fusion_step() -> None:
        h = model.decoder(z, visible, masks, modalities)
        sum(v.float().sum() for v in h.values()).backward()

    # Interleave the sides in rounds so that machine noise hits them alike.
    rounds = 3
    per_round = max(1, args.repeats // rounds)
    mmvq_times, bare_times, codebook_times, fusion_times = [], [], [], []
    for r in range(rounds):
        warm = args.warmup if r == 0 else 1
        bare_times += _time(bare_step, per_round, warm, device)
        mmvq_times += _time(mmvq_step, per_round, warm, device)
        codebook_times += _time(codebook_step, per_round, warm, device)
        fusion_times += _time(fusion_step, per_round, warm, device)
    g_ms = statistics.median(mmvq_times) * 1e3
    bare_ms = statistics.median(bare_times) * 1e3
    ratio = g_ms / bare_ms
    print(
        f"model: {recipe.model.preset} preset with the default recipe's overrides; "
        f"tokens per sample {model.num_tokens()}; "
        f"codebook K={model.config.codebook.num_codes}; fusion dim={model.config.decoder.dim} depth={model.config.decoder.depth}"
    )
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} timed steps per side={len(mmvq_times)}"
    )
    print(f"{'side':<8}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    for name, times in (
        ("bare", bare_times), ("mmvq", mmvq_times), ("codebook", codebook_times), ("fusion", fusion_times)
    ):
        print(
            f"{name:<8}{statistics.median(times) * 1e3:>12.1f}{min(times) * 1e3:>10.1f}{max(times) * 1e3:>10.1f}"
        )
    print(f"ratio mmvq/bare = {ratio:.3f} (target <= 1.15)")
    print(
        json.dumps(
            {
                "g_step_ms": round(g_ms, 2),
                "bare_ms": round(bare_ms, 2),
                "ratio": round(ratio, 4),
                "codebook_ms": round(statistics.median(codebook_times) * 1e3, 2),
                "fusion_ms": round(statistics.median(fusion_times) * 1e3, 2),
                "batch_size": args.batch_size,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "modalities": modalities,
                "repeats": len(mmvq_times),
            }
        )
    )


if __name__ == "__main__":
    main()
