"""Feasibility of the prior on the shapes data (issue 10's targets), measured end to end.

Trains a prior (:func:`mmvq.prior.train_prior`) on the codes of a trained tokenizer model (by
default the one ``python recipes/fuse_image_text.py`` writes to ``outputs/fuse_image_text/final``)
over the same built-in shapes data, then measures, with :mod:`mmvq.prior.metrics`:

* 100 unconditional images (prompt ``[bos] <image>``): validity (all four attributes read and
  mask IoU >= 0.7 with the true rendering of the read attributes), distinct combinations among
  the valid ones. Targets: validity >= 0.9, >= 70 combinations.
* text -> image through the prior on ``--num_eval`` validation captions: all-four-attribute
  accuracy (target >= 0.9); ten samples of one caption: their accuracy and mean pairwise pixel
  distance.
* image -> text captions through the prior on the same rows: exact match and BLEU-4 (targets
  >= 0.95), ROUGE-L.

For reference, the same metrics of the tokenizer model alone: its reconstruction of the true
codes (the ceiling any prior can reach through this decoder) and its deterministic translation
(``model.translate``: the "before"). And the prior alone, at the level of codes
(:func:`mmvq.prior.metrics.code_metrics`): the true image codes of all 240 renderings form a
table; a generated image is *exact* when its codes are one of them, which identifies its
combination whatever the decoder then draws. Everything goes to
``OUTPUT_DIR/generation_metrics.json``.

    python bench/bench_prior_quality.py --model outputs/fuse_image_text/final \\
        --output_dir outputs/prior_quality
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="outputs/fuse_image_text/final")
    p.add_argument("--output_dir", default="outputs/prior_quality")
    p.add_argument("--prior", default=None, help="evaluate this saved prior instead of training")
    p.add_argument("--num_train", type=int, default=2048, help="shapes rows (the recipe's)")
    p.add_argument("--num_eval", type=int, default=100)
    p.add_argument("--max_steps", type=int, default=800)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--condition_dropout", type=float, default=0.15)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--caption_temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--guidance_scale", type=float, default=1.0, help="text -> image CFG")
    p.add_argument("--sample_batch_size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)"
    )
    return p.parse_args()


def _sampling(args: argparse.Namespace, temperature: float | None = None, **kw: Any):
    from mmvq.prior.generation import PriorSamplingConfig

    t = args.temperature if temperature is None else temperature
    return PriorSamplingConfig(
        temperature=t if t > 0 else 1.0,
        do_sample=t > 0,
        top_k=args.top_k or None,
        top_p=args.top_p if args.top_p < 1 else None,
        seed=args.seed,
        batch_size=args.sample_batch_size,
        **kw,
    )


def train_bench_prior(args: argparse.Namespace, model: Any, train: Any, evals: Any) -> Any:
    """The prior over ``model``'s image and text codes of ``train``, at the options in ``args``
    (also ``bench/bench_digits_prior.py``'s)."""
    from mmvq.prior import PriorConfig, PriorTrainConfig, train_prior

    cfg = PriorTrainConfig(
        output_dir=args.output_dir,
        seed=args.seed,
        max_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_warmup_steps=args.warmup,
        condition_dropout=args.condition_dropout,
        report_to="none",
        log_every=25,
        eval_every=max(args.max_steps // 4, 1),
        cpu=True,
    )
    size = PriorConfig(
        hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads
    )
    return train_prior(
        model, train, cfg, size, evals, column_map={"image": "image", "text": "text"}
    )


def _reference(model: Any, rows: Any) -> dict[str, float]:
    """The tokenizer model alone: reconstruction of the true codes, deterministic translation.
    Every code level the model has (concept and detail) of the given modalities is decoded, as
    the prior's samples are."""
    from mmvq.prior.glue import decode_span_codes, encode_batch
    from mmvq_adapters.shapes import ShapeAttributes
    from mmvq_adapters.shapes.generation_metrics import conditional_image_metrics, text_metrics

    attrs = [ShapeAttributes(r["colour"], r["shape"], r["size"], r["position"]) for r in rows]
    batch = model.prepare([{"image": r["image"], "text": r["text"]} for r in rows])
    span = encode_batch(model, batch)

    def decode(sources: tuple[str, ...], target: str) -> dict[str, Any]:
        given = {key: c for key, c in span.items() if key[0] in sources}
        return model.postprocess(decode_span_codes(model, given, [target]))

    out = {}
    rec = decode(("image", "text"), "image")
    img_from_img = decode(("image",), "image")
    txt_from_txt = decode(("text",), "text")
    t2i = decode(("text",), "image")
    i2t = decode(("image",), "text")
    refs = [r["text"] for r in rows]
    out["recon_image_all_attributes"] = conditional_image_metrics(img_from_img["image"], attrs)[
        "all_attributes_accuracy"
    ]
    out["recon_text_exact_match"] = text_metrics(txt_from_txt["text"], refs)["exact_match"]
    out["recon_both_image_all_attributes"] = conditional_image_metrics(rec["image"], attrs)[
        "all_attributes_accuracy"
    ]
    out["translate_text_to_image_all_attributes"] = conditional_image_metrics(t2i["image"], attrs)[
        "all_attributes_accuracy"
    ]
    out.update(
        {f"translate_image_to_text_{k}": v for k, v in text_metrics(i2t["text"], refs).items()}
    )
    return out


def _code_table(model: Any) -> dict[tuple[int, ...], Any]:
    """The tokenizer model's image codes of every rendering -> its attributes."""
    from mmvq.prior.glue import encode_batch
    from mmvq_adapters.shapes import all_attributes, render_image

    combos = all_attributes()
    batch = model.prepare([{"image": render_image(a)} for a in combos])
    codes = encode_batch(model, batch)[("image", "detail")].tolist()
    return {tuple(c): a for c, a in zip(codes, combos)}


def _evaluate(args: argparse.Namespace, prior: Any, rows: Any, table: dict) -> dict[str, Any]:
    from mmvq.prior.glue import encode_examples
    from mmvq.prior.metrics import code_metrics
    from mmvq_adapters.shapes import ShapeAttributes
    from mmvq_adapters.shapes.generation_metrics import (
        conditional_image_metrics,
        pairwise_pixel_distance,
        text_metrics,
        unconditional_image_metrics,
    )

    attrs = [ShapeAttributes(r["colour"], r["shape"], r["size"], r["position"]) for r in rows]
    model = prior.tokenizer.model
    true_codes = encode_examples(model, [{"image": r["image"]} for r in rows])[("image", "detail")]
    m: dict[str, Any] = {}
    t = time.perf_counter()
    unc = prior.generate(100, modalities=["image"], config=_sampling(args))
    m["sample_seconds_100_images"] = round(time.perf_counter() - t, 2)
    m.update(
        {
            f"unconditional_{k}": v
            for k, v in unconditional_image_metrics(unc.outputs["image"]).items()
        }
    )
    unc_codes = code_metrics(unc.codes.codes[("image", "detail")], table)
    m.update({f"unconditional_codes_{k}": v for k, v in unc_codes.items()})
    out_dir = Path(args.output_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(unc.outputs["image"][:16]):
        img.save(out_dir / f"unconditional_{i:02d}.png")

    texts = [{"text": r["text"]} for r in rows]
    t2i = prior.generate(
        1, source=texts, target="image", config=_sampling(args, guidance_scale=args.guidance_scale)
    )
    m.update(
        {
            f"text_to_image_{k}": v
            for k, v in conditional_image_metrics(t2i.outputs["image"], attrs).items()
        }
    )
    t2i_codes = code_metrics(t2i.codes.codes[("image", "detail")], table, true_codes)
    m.update({f"text_to_image_codes_{k}": v for k, v in t2i_codes.items()})
    ten = prior.generate(
        10,
        source=texts[:1],
        target="image",
        config=_sampling(args, guidance_scale=args.guidance_scale),
    )
    m["ten_samples_caption"] = rows[0]["text"]
    m["ten_samples_all_attributes"] = conditional_image_metrics(
        ten.outputs["image"], attrs[:1] * 10
    )["all_attributes_accuracy"]
    m["ten_samples_mean_pairwise_pixel_distance"] = pairwise_pixel_distance(ten.outputs["image"])
    m["ten_samples_codes_target_exact_rate"] = code_metrics(
        ten.codes.codes[("image", "detail")], table, true_codes[:1].expand(10, -1)
    )["target_exact_rate"]
    for i, img in enumerate(ten.outputs["image"]):
        img.save(out_dir / f"caption0_sample{i}.png")

    images = [{"image": r["image"]} for r in rows]
    i2t = prior.generate(
        1,
        source=images,
        target="text",
        config=_sampling(args, temperature=args.caption_temperature),
    )
    m.update(
        {
            f"image_to_text_{k}": v
            for k, v in text_metrics(i2t.outputs["text"], [r["text"] for r in rows]).items()
        }
    )
    m["image_to_text_examples"] = list(zip(i2t.outputs["text"][:5], [r["text"] for r in rows][:5]))
    return m


def main() -> None:
    warnings.filterwarnings("ignore")
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmvq.model import MultimodalVQ
    from mmvq.prior import MultimodalPrior
    from mmvq_adapters.shapes import make_shapes_dataset

    model = MultimodalVQ.from_pretrained(args.model).eval()
    data = make_shapes_dataset(num_train=args.num_train, num_eval=max(args.num_eval, 128))
    train, evals = data["train"], data["validation"]
    rows = [evals[i] for i in range(args.num_eval)]
    figures: dict[str, Any] = {"args": vars(args)}
    if args.prior:
        prior = MultimodalPrior.from_pretrained(args.prior, model=model)
    else:
        result = train_bench_prior(args, model, train, evals)
        prior = result.prior
        figures["training"] = result.metrics
    figures["prior_parameters"] = prior.num_parameters()
    figures["reference"] = _reference(model, rows)
    t = time.perf_counter()
    figures["prior"] = _evaluate(args, prior, rows, _code_table(model))
    figures["evaluation_seconds"] = round(time.perf_counter() - t, 1)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation_metrics.json").write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
