"""Training-step cost of mmvq against the bare networks it trains, measured in the same run.

Every variant trains on the same collated batch of the built-in shapes data (the default recipe's
model), in one process with the same torch threads, with AdamW and gradient clipping:

* ``train_step``: one real optimizer step of :func:`mmvq.train`'s loop (``Loop.micro_step`` +
  ``Loop.end_of_step``, built by the same setup code as ``train``; the GAN head off unless
  ``--gan``;
  no evaluation or checkpoints; logging every ``--log_every`` steps as in the recipe): the
  model's forward (adapters, the shared codebook with its EMA update and statistics, masks,
  modality dropout, the fusion decoder, losses), the balancer, the finiteness checks and NaN
  snapshot, backward, clipping, the optimizer and LR-schedule steps, the metric window;
* ``model_step``: the same without the loop's machinery: ``model(batch)``, the balancer, backward,
  clipping and AdamW (tells the model's forward apart from the loop around it);
* ``bare_fused``: the bare networks of the model: for each modality the adapter's encoder, then
  the fusion decoder's trunk over every modality's tokens fed ``z`` directly (no quantisation,
  every modality visible), then the adapter's decoder and its plain reconstruction loss;
  backward, clipping, AdamW over the adapters' and the trunk's parameters;
* ``bare_adapters``: ``decode(encode(batch))`` per adapter, no trunk at all.

Ratios (medians of the timed steps):

* (a) ``train_step / bare_fused``: what mmvq's machinery adds on top of the networks it trains
  (codebook lookup/EMA/statistics, masks, modality dropout, loss bookkeeping, balancer,
  NaN-safety, logging). The target (<= 1.15) applies here.
* (b) ``train_step / bare_adapters``: informational: it includes the cost of having a fusion
  trunk at all.

The codebook and the fusion trunk are also timed alone (forward + backward on the same encoder
outputs). Variants are interleaved: each round runs every variant (one untimed warm-up step right
before its timed steps), alternating the order from round to round. The last line printed is a
JSON object of the figures.

    python bench/bench_train.py                 # the default recipe's model, batch 32, CPU
    python bench/bench_train.py --quick
    python bench/bench_train.py --device cuda --batch_size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))

TARGET = 1.15


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    p.add_argument("--per_round", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--modalities", default="image,text")
    p.add_argument("--log_every", type=int, default=0, help="0: the recipe's log_every")
    p.add_argument("--gan", action="store_true", help="also time the train step with the GAN head")
    p.add_argument("--profile", action="store_true", help="print a torch profile of train_step")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 steps, batch 16")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.per_round, args.warmup, args.batch_size = 2, 2, 1, 16
    if args.batch_size < 1 or args.rounds < 1 or args.per_round < 1 or args.warmup < 0:
        p.error("--batch_size, --rounds and --per_round must be >= 1, --warmup >= 0")
    return args


def _data(model: torch.nn.Module, modalities: list[str], batch_size: int):
    from mmvq.data import DataConfig, MultimodalDataset, load_data

    data = DataConfig(builtin_num_train=batch_size, builtin_num_eval=0)
    train, _ = load_data(data, modalities)
    return MultimodalDataset(train, dict(model.adapters), data.column_map(modalities))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step, n: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(n):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _loop(
    recipe, dataset, batch_size: int, device: torch.device, gan: bool, log_every: int, out: str
):
    """The real training loop of ``mmvq.train`` (its own model copy), ready to step on a batch."""
    import dataclasses

    from mmvq.training.loop import Loop
    from mmvq.training.recipe import build_model
    from mmvq.training.setup import setup_training

    torch.manual_seed(0)
    model = build_model(recipe.model)
    cfg = dataclasses.replace(
        recipe.train,
        output_dir=out,
        per_device_batch_size=batch_size,
        max_steps=10**9,
        eval_every=0,
        save_every=0,
        report_to="none",
        tqdm=False,
        cpu=device.type == "cpu",
        gan_weight=recipe.train.gan_weight if gan else 0.0,
        gan_start_step=0,
        log_every=log_every or recipe.train.log_every,
    )
    loop = Loop(setup_training(model, dataset, cfg))
    from tqdm.auto import tqdm

    loop.progress = tqdm(disable=True)
    acc = loop.accelerator

    def step(batch) -> None:
        with acc.accumulate(loop.modules.model):
            loop.micro_step(batch)
        loop.state["step"] += 1
        loop.end_of_step()

    return loop, step


def _model_step(model, balancer, batch):
    """The model and the balancer, without the loop's machinery."""
    g_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def model_step() -> None:
        out = model(batch)
        loss = balancer.combine(dict(out.rec_loss_mean)).loss + sum(out.vq_loss.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        g_opt.step()
        g_opt.zero_grad(set_to_none=True)

    return model_step


def _bare_steps(model, batch, modalities, all_visible):
    """The bare networks: encoders -> (fusion trunk) -> decoders, plain reconstruction losses."""
    adapters = [model.adapters[m] for m in modalities]
    adapter_params = [p for a in adapters for p in a.parameters()]
    fused_params = adapter_params + list(model.decoder.parameters())
    fused_opt = torch.optim.AdamW(fused_params, lr=1e-4)
    adapters_opt = torch.optim.AdamW(adapter_params, lr=1e-4)

    def bare_fused_step() -> None:
        tokens = {m: a.encode(batch[m]) for m, a in zip(modalities, adapters)}
        h = model.decoder(
            {m: t.z for m, t in tokens.items()},
            all_visible,
            {m: t.mask for m, t in tokens.items()},
            modalities,
        )
        loss = 0.0
        for m, a in zip(modalities, adapters):
            loss = loss + a.reconstruction_loss(batch[m], a.decode(h[m], batch[m])).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fused_params, 1.0)
        fused_opt.step()
        fused_opt.zero_grad(set_to_none=True)

    def bare_adapters_step() -> None:
        loss = 0.0
        for m, a in zip(modalities, adapters):
            recon = a.decode(a.encode(batch[m]).z, batch[m])
            loss = loss + a.reconstruction_loss(batch[m], recon).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter_params, 1.0)
        adapters_opt.step()
        adapters_opt.zero_grad(set_to_none=True)

    return bare_fused_step, bare_adapters_step


def _component_steps(model, batch, modalities, all_visible):
    """The codebook and the fusion trunk alone (forward + backward on fixed encoder outputs)."""
    with torch.no_grad():
        tokens = {m: model.adapters[m].encode(batch[m]) for m in modalities}
    z = {m: t.z.detach().requires_grad_(True) for m, t in tokens.items()}
    masks = {m: t.mask for m, t in tokens.items()}

    def codebook_step() -> None:
        q = model.codebook(z, masks)
        (sum(v.float().sum() for v in q.z_q.values()) + sum(q.loss.values())).backward()

    def fusion_step() -> None:
        h = model.decoder(z, all_visible, masks, modalities)
        sum(v.float().sum() for v in h.values()).backward()

    return codebook_step, fusion_step


def _profile(loop_step, batch) -> None:
    for _ in range(3):
        loop_step(batch)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            loop_step(batch)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))


def _timings(variants, args, device) -> dict[str, list[float]]:
    """Interleaved rounds; a warm-up step right before each variant's timed steps."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            _time(variants[name], args.warmup if r == 0 else 1, device)
            times[name] += _time(variants[name], args.per_round, device)
    return times


_WHAT = {
    "train_step": "mmvq.train's real generator step (loop machinery included)",
    "model_step": "model(batch) + balancer + backward + clip + AdamW",
    "bare_fused": "encoders -> fusion trunk (z, no VQ) -> decoders, rec losses",
    "bare_adapters": "encoders -> decoders, rec losses (no trunk)",
    "codebook": "shared codebook alone, fwd+bwd",
    "fusion": "fusion trunk alone, fwd+bwd",
    "train_step_gan": "real step with the GAN head (generator + discriminator)",
}


def _report(times, med, recipe, model, loop, args, device) -> None:
    ratio_fused = med["train_step"] / med["bare_fused"]
    ratio_adapters = med["train_step"] / med["bare_adapters"]
    print(
        f"model: {recipe.model.preset} preset with the default recipe's overrides; "
        f"tokens per sample {model.num_tokens()}; codebook K={model.config.codebook.num_codes}; "
        f"fusion dim={model.config.decoder.dim} depth={model.config.decoder.depth}; "
        f"balancer={recipe.train.balancer.name}; alignment weight={recipe.train.alignment.weight}; "
        f"log_every={loop.cfg.log_every}; GAN {'timed separately' if args.gan else 'off'}"
    )
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"rounds={args.rounds} timed steps per variant={args.rounds * args.per_round}"
    )
    print(f"{'variant':<15}{'median ms':>11}{'min ms':>9}{'max ms':>9}  what")
    for name, t in times.items():
        print(
            f"{name:<15}{med[name]:>11.1f}{min(t) * 1e3:>9.1f}{max(t) * 1e3:>9.1f}  {_WHAT[name]}"
        )
    loop_overhead = med["train_step"] - med["model_step"]
    model_overhead = med["model_step"] - med["bare_fused"]
    print(
        f"breakdown: trunk adds {med['bare_fused'] - med['bare_adapters']:.1f} ms to the adapters; "
        f"mmvq's model forward (codebook, masks, dropout, bookkeeping) adds {model_overhead:.1f} "
        "ms "
        f"(codebook alone {med['codebook']:.1f} ms); the training loop's machinery adds "
        f"{loop_overhead:.1f} ms"
    )
    print(
        f"(a) train_step / bare_fused    = {ratio_fused:.3f}  "
        f"(target <= {TARGET}: {'met' if ratio_fused <= TARGET else 'NOT met'})"
    )
    print(
        f"(b) train_step / bare_adapters = {ratio_adapters:.3f}  (informational: includes the "
        "fusion trunk)"
    )


def main() -> None:
    warnings.filterwarnings("ignore")
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from fuse_image_text import DEFAULTS

    from mmvq.data import MultimodalCollator
    from mmvq.training.balance import build_balancer
    from mmvq.training.recipe import build_model
    from mmvq.training.recipe_args import parse_recipe_args

    modalities = [m.strip() for m in args.modalities.split(",")]
    recipe = parse_recipe_args(["--modalities", args.modalities], DEFAULTS)
    torch.manual_seed(0)
    model = build_model(recipe.model).to(device).train()
    dataset = _data(model, modalities, args.batch_size)
    batch = MultimodalCollator(dict(model.adapters))([dataset[i] for i in range(args.batch_size)])
    batch = {m: {k: v.to(device) for k, v in sub.items()} for m, sub in batch.items()}

    tmp = tempfile.TemporaryDirectory(prefix="mmvq_bench_")
    loop, loop_step = _loop(
        recipe, dataset, args.batch_size, device, False, args.log_every, tmp.name + "/a"
    )
    with torch.no_grad():
        model(batch)  # k-means initialisation of the codebook happens once, outside the timing
        loop.modules.net(batch)

    balancer = build_balancer(recipe.train.balancer, model.modalities).to(device)
    all_visible = {
        m: torch.ones(args.batch_size, dtype=torch.bool, device=device) for m in modalities
    }
    bare_fused_step, bare_adapters_step = _bare_steps(model, batch, modalities, all_visible)
    codebook_step, fusion_step = _component_steps(model, batch, modalities, all_visible)
    variants = {
        "train_step": lambda: loop_step(batch),
        "model_step": _model_step(model, balancer, batch),
        "bare_fused": bare_fused_step,
        "bare_adapters": bare_adapters_step,
        "codebook": codebook_step,
        "fusion": fusion_step,
    }
    if args.gan:
        gan_loop, gan_step = _loop(
            recipe, dataset, args.batch_size, device, True, args.log_every, tmp.name + "/g"
        )
        with torch.no_grad():
            gan_loop.modules.net(batch)
        variants["train_step_gan"] = lambda: gan_step(batch)
    if args.profile:
        _profile(loop_step, batch)

    times = _timings(variants, args, device)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    _report(times, med, recipe, model, loop, args, device)
    ratio_fused = med["train_step"] / med["bare_fused"]
    figures = {
        "ratio_vs_bare_fused": round(ratio_fused, 4),
        "ratio_vs_bare_adapters": round(med["train_step"] / med["bare_adapters"], 4),
        "target": TARGET,
        "target_met": ratio_fused <= TARGET,
        **{f"{name}_ms": round(v, 2) for name, v in med.items()},
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "modalities": modalities,
        "timed_steps_per_variant": args.rounds * args.per_round,
    }
    tmp.cleanup()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
