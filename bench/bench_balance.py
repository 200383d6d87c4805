"""Modality imbalance, measured: which balancer rescues a starved modality of the shapes data.

Three imbalanced scenarios of the built-in shapes data (image + caption), each trained with every
balancer and compared with the same model trained without balancing (``none``: static weights of
1, the default), and with a balanced reference run:

* ``tokens``: the image has 256 tokens per sample (no downsampling), the caption 16 (a text latent
  of 16 tokens); starved: text. (Reference: 64 image tokens, 48 text tokens.)
* ``pairing``: captions in only 10% of the training rows (evaluation rows all paired); starved:
  text.
* ``difficulty``: low-contrast images (pixels pulled to grey, contrast ``--contrast``), a small
  loss with a small gradient; starved: image.

For every balancer (``none``, ``static`` (the starved modality's weight ``--static_weight``),
``uncertainty``, ``gradnorm``, ``dwa``, ``pareto``) it reports per modality: its reconstruction
metric (image PSNR, caption token accuracy), translation into it and out of it (text -> image
PSNR, image -> text token accuracy), its share of the codebook usage (its usage over the sum of
the modalities' usages) and its share of the weighted gradient on the shared layer (mean of the
logged ``balance/grad_share/<m>`` over the run). The verdict per scenario: does the best balancer
improve the starved modality's reconstruction and translation into it by >= 10% relative to
``none``, while no other modality's reconstruction or translation into it loses more than 2%?
Relative changes are of the error for PSNR figures (``MSE_none / MSE - 1`` with
``MSE = 10^(-PSNR/10)``: +10% means the error fell to 1/1.1 of ``none``'s) and of the value for
accuracies (``acc / acc_none - 1``).

It also checks the codebook's modality weighting end to end: a one-code codebook fed the trained
token-scenario model's real encoder outputs (256 image tokens, 16 text tokens per sample) through
its EMA update with weights ``w``; the code settles at ``s * mean(image) + (1 - s) * mean(text)``,
and ``s`` (each modality's share of the EMA statistics) should be ``w_image / (w_image + w_text)``,
not the token share 256 / 272.

Not a test (it trains 19 models); its table goes in README::

    python bench/bench_balance.py                  # default: 100 steps each
    python bench/bench_balance.py --steps 600 --num_train 2048 --num_eval 256   # larger
    python bench/bench_balance.py --scenarios tokens --balancers none,pareto --steps 40   # quick

One torch thread by default (``--threads``): on a shared 2-core machine two threads ran the
training step several times slower. The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BALANCERS = ("none", "static", "uncertainty", "gradnorm", "dwa", "pareto")
MODALITIES = ("image", "text")
# per modality: (reconstruction, translation into it, translation out of it); PSNR or accuracy
METRICS = {
    "image": ("image_psnr", "text_to_image_psnr", "image_to_text_token_accuracy"),
    "text": ("text_token_accuracy", "image_to_text_token_accuracy", "text_to_image_psnr"),
}


@dataclass(frozen=True)
class Scenario:
    """One data/model setting; ``starved`` is the modality it disadvantages."""

    name: str
    starved: str | None = None
    image_tokens: int = 64  # 64: downsampling 2 at 16 px; 256: none
    text_tokens: int = 0  # 0: one token per byte (48)
    caption_fraction: float = 1.0
    contrast: float = 1.0
    notes: dict[str, Any] = field(default_factory=dict)


def scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    return {
        "balanced": Scenario("balanced"),
        "tokens": Scenario("tokens", "text", image_tokens=256, text_tokens=16),
        "pairing": Scenario("pairing", "text", caption_fraction=args.caption_fraction),
        "difficulty": Scenario("difficulty", "image", contrast=args.contrast),
    }


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--num_train", type=int, default=512)
    p.add_argument("--num_eval", type=int, default=64)
    p.add_argument("--scenarios", default="tokens,pairing,difficulty")
    p.add_argument("--balancers", default=",".join(BALANCERS))
    p.add_argument("--static_weight", type=float, default=3.0, help="starved weight, 'static'")
    p.add_argument("--caption_fraction", type=float, default=0.1, help="pairing scenario")
    p.add_argument("--contrast", type=float, default=0.15, help="difficulty scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args()
    known = scenarios(args)
    for name in args.scenarios.split(","):
        if name not in known or name == "balanced":
            p.error(
                f"--scenarios: unknown scenario {name!r}; choose from tokens,pairing,difficulty"
            )
    for name in args.balancers.split(","):
        if name not in BALANCERS:
            p.error(f"--balancers: unknown balancer {name!r}; choose from {','.join(BALANCERS)}")
    if args.steps < 1 or args.num_train < args.batch_size or args.num_eval < 1:
        p.error("--steps >= 1, --num_train >= --batch_size and --num_eval >= 1 are needed")
    if not 0 < args.caption_fraction <= 1 or not 0 < args.contrast <= 1:
        p.error("--caption_fraction and --contrast must be in (0, 1]")
    return args


# ------------------------------------------------------------------------------ data, model
def _low_contrast(ds: Any, contrast: float) -> Any:
    import numpy as np
    from PIL import Image

    def fade(row: dict) -> dict:
        x = np.asarray(row["image"].convert("RGB"), dtype=np.float32)
        y = 127.5 + contrast * (x - 127.5)
        return {"image": Image.fromarray(np.clip(y, 0, 255).round().astype(np.uint8))}

    return ds.map(fade, features=ds.features)


def make_data(sc: Scenario, args: argparse.Namespace) -> tuple[Any, Any]:
    """The shapes data at 16 px, transformed for the scenario."""
    from mmvq.data import DataConfig, load_data

    train_ds, eval_ds = load_data(
        DataConfig(
            builtin_num_train=args.num_train,
            builtin_num_eval=args.num_eval,
            builtin_options={"resolution": 16},
        ),
        list(MODALITIES),
    )
    if sc.caption_fraction < 1:
        keep = max(1, round(sc.caption_fraction * len(train_ds)))
        texts = [t if i < keep else None for i, t in enumerate(train_ds["text"])]
        train_ds = train_ds.remove_columns("text").add_column("text", texts)
    if sc.contrast < 1:
        train_ds, eval_ds = (_low_contrast(d, sc.contrast) for d in (train_ds, eval_ds))
    return train_ds, eval_ds


def build_model(sc: Scenario, seed: int) -> Any:
    """A small image + text model (1-layer fusion trunk), seeded: every balancer starts equal."""
    from mmvq.model import MultimodalVQ, MultimodalVQConfig

    torch.manual_seed(seed)
    image_cfg = dict(
        resolution=16,
        base_channels=8,
        channel_mult=(1,) if sc.image_tokens == 256 else (1, 2),
        num_groups=4,
        disc_base_channels=8,
        disc_num_layers=2,
        loss="l2",
    )
    text_cfg = {"max_length": 48, "d_model": 32, "num_layers": 1, "num_heads": 2}
    text_cfg.update(decoder_layers=1, latent_tokens=sc.text_tokens)
    config = MultimodalVQConfig(
        codebook={"num_codes": 128, "code_dim": 16},
        decoder={"dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
    )
    model = MultimodalVQ.build({"image": ("image", image_cfg), "text": ("text", text_cfg)}, config)
    tokens = model.num_tokens()
    if tokens["image"] != sc.image_tokens or (sc.text_tokens and tokens["text"] != sc.text_tokens):
        raise RuntimeError(f"scenario {sc.name}: the model has {tokens} tokens per sample")
    return model


def balancer_config(name: str, sc: Scenario, args: argparse.Namespace) -> Any:
    from mmvq.training.balance import BalancerConfig

    if name == "none":
        return BalancerConfig(name="static")
    if name == "static":
        return BalancerConfig(name="static", weights={sc.starved: args.static_weight})
    return BalancerConfig(name=name)


# ------------------------------------------------------------------------------ one run
def train_once(sc: Scenario, balancer: str, data: tuple[Any, Any], args: argparse.Namespace):
    """Train one model; ``(metrics, train log records, model)``."""
    from mmvq.training import TrainConfig, train
    from mmvq_adapters.shapes.dataset import shapes_text_to_image_scorer

    model = build_model(sc, args.seed)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            output_dir=out,
            overwrite_output_dir=True,
            max_steps=args.steps,
            per_device_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lr_warmup_steps=10,
            gan_weight=0.0,
            gan_start_step=10**9,
            balancer=balancer_config(balancer, sc, args),
            balancer_window=10,
            log_every=5,
            eval_every=0,
            save_every=0,
            num_sample_rows=0,
            max_eval_samples=args.num_eval,
            report_to="none",
            cpu=True,
            tqdm=False,
            seed=args.seed,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the loop's evaluation line
            result = train(
                model,
                data[0],
                cfg,
                data[1],
                translation_scorers={"text->image": shapes_text_to_image_scorer},
            )
        lines = (Path(out) / "train_log.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "eval" not in r]
    return result.metrics, records, result.model


def summarise(metrics: dict, records: list[dict]) -> dict[str, dict[str, float]]:
    """Per modality: reconstruction, into, out of, usage share, gradient share, mean weight."""
    usage = metrics.get("codebook_usage_per_modality", {})
    usage_sum = sum(usage.get(m, 0.0) for m in MODALITIES) or 1.0
    row: dict[str, dict[str, float]] = {}
    for m in MODALITIES:
        rec, into, out = (float(metrics.get(k, math.nan)) for k in METRICS[m])
        shares = [r[f"balance/grad_share/{m}"] for r in records if f"balance/grad_share/{m}" in r]
        weights = [r[f"balance/weight/{m}"] for r in records if f"balance/weight/{m}" in r]
        row[m] = {
            "rec": rec,
            "into": into,
            "out": out,
            "usage_share": usage.get(m, 0.0) / usage_sum,
            "grad_share": sum(shares) / len(shares) if shares else math.nan,
            "weight": sum(weights) / len(weights) if weights else math.nan,
        }
    return row


def relative(metric: str, value: float, base: float) -> float:
    """Relative improvement over ``base``: of the error (MSE) for PSNR, of the value otherwise."""
    if "psnr" in metric:
        return 10 ** ((value - base) / 10) - 1  # MSE_base / MSE - 1
    return value / base - 1 if base > 0 else math.nan


# ------------------------------------------------------------------------------ codebook check
@torch.no_grad()
def ema_shares(model: Any, eval_ds: Any, weights_list: list[dict[str, float]]) -> list[dict]:
    """Each modality's share of a one-code codebook's EMA statistics, fed the model's real
    encoder outputs, for each weighting (see the module docstring)."""
    from mmvq.data import MultimodalDataset
    from mmvq.quantize import CodebookConfig, SharedCodebook

    model.eval()
    ds = MultimodalDataset(eval_ds, dict(model.adapters), {m: m for m in MODALITIES})
    rows = [ds[i] for i in range(min(len(ds), 32))]
    z, mask, means = {}, {}, {}
    for m, adapter in model.adapters.items():
        tokens = adapter.encode(adapter.collate([r[m] for r in rows]))
        z[m] = tokens.z.float()
        mask[m] = (
            tokens.mask.bool()
            if tokens.mask is not None
            else torch.ones(z[m].shape[:2], dtype=torch.bool)
        )
        means[m] = z[m][mask[m]].mean(0)
    counts = {m: int(mask[m].sum()) for m in MODALITIES}
    a, b = means["image"], means["text"]
    out = []
    for w in weights_list:
        cb = SharedCodebook(
            CodebookConfig(
                num_codes=1,
                code_dim=z["image"].shape[-1],
                decay=0.8,
                kmeans_init=False,
                restart_every=0,
            ),
            list(MODALITIES),
        ).train()
        for _ in range(60):
            cb(z, mask=mask, weights=w)
        code = cb.codebook[0].float()
        share = float((code - b) @ (a - b) / (a - b).pow(2).sum())
        expected = w["image"] / (w["image"] + w["text"])
        pooled = counts["image"] / (counts["image"] + counts["text"])
        out.append({"weights": w, "image_share": share, "expected": expected, "pooled": pooled})
    return out


# ------------------------------------------------------------------------------ report
def verdict(sc: Scenario, rows: dict[str, dict]) -> dict[str, Any]:
    """The best balancer of a scenario: the largest worst-case gain on the starved modality's
    reconstruction and translation into it, among those costing no other modality > 2%."""
    base = rows["none"]
    best: dict[str, Any] = {"balancer": None, "gain": -math.inf}
    for name, row in rows.items():
        if name == "none":
            continue
        gains = {
            m: {
                k: relative(METRICS[m][i], row[m][k], base[m][k])
                for i, k in enumerate(("rec", "into"))
            }
            for m in MODALITIES
        }
        starved_gain = min(gains[sc.starved].values())
        others_loss = min(v for m in MODALITIES if m != sc.starved for v in gains[m].values())
        entry = {"balancer": name, "gain": starved_gain, "others": others_loss, "gains": gains}
        if others_loss >= -0.02 and starved_gain > best["gain"]:
            best = entry
        row["_verdict"] = entry
    best["met"] = best["balancer"] is not None and best["gain"] >= 0.10
    return best


def print_table(results: dict[str, dict[str, dict]], reference: dict[str, dict]) -> None:
    head = (
        f"{'scenario':10s} {'balancer':11s} {'mod':5s} {'rec':>7s} {'into':>7s} {'out of':>7s} "
        f"{'usage':>6s} {'grad':>6s} {'weight':>6s} {'d rec':>7s} {'d into':>7s}"
    )
    print(head)
    print("-" * len(head))
    for m in MODALITIES:
        r = reference[m]
        print(
            f"{'balanced':10s} {'none':11s} {m:5s} {r['rec']:7.3f} {r['into']:7.3f} "
            f"{r['out']:7.3f} {r['usage_share']:6.2f} {r['grad_share']:6.2f} {r['weight']:6.2f}"
        )
    for sc_name, rows in results.items():
        for name, row in rows.items():
            gains = row.get("_verdict", {}).get("gains")
            for m in MODALITIES:
                r = row[m]
                delta = (
                    f" {100 * gains[m]['rec']:+6.1f}% {100 * gains[m]['into']:+6.1f}%"
                    if gains
                    else ""
                )
                print(
                    f"{sc_name:10s} {name:11s} {m:5s} {r['rec']:7.3f} {r['into']:7.3f} "
                    f"{r['out']:7.3f} {r['usage_share']:6.2f} {r['grad_share']:6.2f} "
                    f"{r['weight']:6.2f}{delta}"
                )


def main() -> None:
    args = _args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmvq.utils.logging import get_logger

    get_logger("mmvq").setLevel("WARNING")
    t0 = time.perf_counter()
    known = scenarios(args)
    balancers = args.balancers.split(",")
    ref_sc = known["balanced"]
    metrics, records, _ = train_once(ref_sc, "none", make_data(ref_sc, args), args)
    reference = summarise(metrics, records)
    print(
        f"[balanced / none: {time.perf_counter() - t0:.0f} s] {json.dumps(reference)}", flush=True
    )
    results: dict[str, dict[str, dict]] = {}
    figures: dict[str, Any] = {"steps": args.steps, "reference": reference}
    for sc_name in args.scenarios.split(","):
        sc = known[sc_name]
        data = make_data(sc, args)
        results[sc_name] = {}
        for name in ["none"] + [b for b in balancers if b != "none"]:
            t = time.perf_counter()
            metrics, records, model = train_once(sc, name, data, args)
            results[sc_name][name] = row = summarise(metrics, records)
            print(
                f"[{sc_name} / {name}: {time.perf_counter() - t:.0f} s] {json.dumps(row)}",
                flush=True,
            )
            if sc_name == "tokens" and name == "none":
                weights = [{"image": 1.0, "text": 1.0}, {"image": 3.0, "text": 1.0}]
                figures["codebook_ema_shares"] = ema_shares(model, data[1], weights)
        figures[sc_name] = {"best": verdict(sc, results[sc_name]), "rows": results[sc_name]}
    print(
        f"\nmodality balance on the shapes data: {args.steps} steps, batch {args.batch_size}, "
        f"{args.num_train} training rows, {args.num_eval} evaluation rows (all paired)"
    )
    print(
        "rec: image PSNR (dB) / caption token accuracy; into / out of: text->image PSNR and "
        "image->text token accuracy; usage, grad: the modality's share of codebook usage and of "
        "the weighted gradient on the shared layer; weight: its mean balancer weight; d: change "
        "against 'none' (PSNR as MSE removed)\n"
    )
    print_table(results, reference)
    print()
    for sc_name in results:
        best, starved = figures[sc_name]["best"], known[sc_name].starved
        if best["balancer"] is None:
            print(f"{sc_name}: no balancer kept every other modality within 2% ({starved} starved)")
            continue
        print(
            f"{sc_name} ({starved} starved): best {best['balancer']}: {starved} "
            f"{100 * best['gain']:+.1f}% (worst of rec/into), others {100 * best['others']:+.1f}%"
            f" -> criterion (>= +10%, others >= -2%) {'MET' if best['met'] else 'NOT met'}"
        )
    for c in figures.get("codebook_ema_shares", []):
        print(
            f"codebook EMA, weights {c['weights']}: image share {c['image_share']:.3f} "
            f"(expected {c['expected']:.3f}; pooling tokens would give {c['pooled']:.3f})"
        )
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"total {figures['seconds']:.0f} s")
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
