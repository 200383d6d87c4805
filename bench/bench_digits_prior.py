"""A prior over the codes of real handwritten digits: does it draw digits, and do samples differ?

On the shapes data a caption has exactly one rendering, so samples of one caption cannot differ
without being wrong. Handwritten digits have what shapes lack: many ways to write one word. This
bench trains a prior (:func:`mmvq.prior.train_prior`) over the codes of the tokenizer model that
``python bench/bench_digits.py`` trains (scikit-learn's ``load_digits`` paired with the digit's
word; the same split, rebuilt from the same ``--test_fraction`` and ``--seed``), then measures
generation with a *reader*: the best supervised classifier of ``bench_digits`` (an RBF SVM on the
training rows' 8x8 pixels; a generated 32x32 image is box-filtered back to 8x8):

* **text -> image**: ``--samples_per_word`` samples of each word; the reader's accuracy (the
  sample shows the word's digit), next to the reader on real test digits (its ceiling), on the
  tokenizer's reconstructions of them, and on the tokenizer's deterministic translation;
* **diversity**: mean pairwise pixel distance among samples of one word, next to that among real
  test digits of one class (how much handwriting varies);
* **copies**: how far each sample is from its nearest training image (mean absolute pixel
  difference), next to the same for real test digits, and the fraction of samples whose image
  codes are exactly those of a training image;
* **unconditional**: 100 images; the digits the reader sees in them (classes covered, normalised
  entropy of their histogram);
* **image -> text**: test images captioned through the prior (greedy), exact match.

Figures go to ``OUTPUT_DIR/generation_metrics.json`` (also printed), a grid of samples (one row per
word) to ``OUTPUT_DIR/text_to_image.png``. Not a test (it trains for minutes)::

    python bench/bench_digits.py                # the tokenizer model: outputs/bench_digits/final
    python bench/bench_digits_prior.py --model outputs/bench_digits/final
    python bench/bench_digits_prior.py --prior outputs/bench_digits_prior/final \\
        --guidance_scale 2 --output_dir outputs/bench_digits_prior_cfg2   # other sampling
"""

from __future__ import annotations

import argparse
import itertools
import json
import runpy
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="outputs/bench_digits/final")
    p.add_argument("--output_dir", default="outputs/bench_digits_prior")
    p.add_argument("--prior", default=None, help="evaluate this saved prior instead of training")
    p.add_argument("--test_fraction", type=float, default=0.3, help="as bench_digits.py was run")
    p.add_argument("--seed", type=int, default=0, help="as bench_digits.py was run")
    p.add_argument("--max_steps", type=int, default=800)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--condition_dropout", type=float, default=0.15)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--guidance_scale", type=float, default=1.0)
    p.add_argument("--samples_per_word", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p.parse_args()


def reader_pixels(images: list[Any]) -> np.ndarray:
    """Generated/decoded 32x32 images -> the reader's input: 8x8 grey levels 0..16, flattened
    (the inverse of ``bench_digits``' 8x8 -> 32x32 upscaling, up to its blur)."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(img.convert("L").resize((8, 8), Image.BOX), dtype=np.float64).ravel()
            * (16 / 255)
            for img in images
        ]
    )


def grey(images: list[Any]) -> np.ndarray:
    """Images as float ``[N, 32 * 32]`` grey levels in [0, 1]."""
    return np.stack([np.asarray(img.convert("L"), np.float32).ravel() / 255 for img in images])


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean absolute pixel difference over all pairs of rows of ``x``."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    return float(np.mean([np.abs(x[i] - x[j]).mean() for i, j in pairs]))


def nearest_distance(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row of ``x``: mean absolute pixel difference to its nearest row of ``reference``."""
    return np.stack([np.abs(reference - row).mean(axis=1).min() for row in x])


def class_entropy(labels: np.ndarray, num_classes: int = 10) -> float:
    """Entropy of the label histogram over ``log(num_classes)`` (1: uniform)."""
    p = np.bincount(labels, minlength=num_classes) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(num_classes))


def _decode(model: Any, rows: list[dict], sources: tuple[str, ...], target: str) -> list[Any]:
    """The tokenizer model alone: decode ``target`` from every code level of ``sources``."""
    from mmvq.prior.glue import decode_span_codes, encode_examples

    span = encode_examples(model, rows)
    given = {key: c for key, c in span.items() if key[0] in sources}
    return model.postprocess(decode_span_codes(model, given, [target]))[target]


@dataclass
class Digits:
    """The bench's split (as ``bench_digits`` builds it) and its reader."""

    train: Any
    test: Any
    y_test: np.ndarray
    reader: Any
    words: list[str]

    @cached_property
    def test_images(self) -> list[Any]:
        """Decoded once: reference, text -> image and captions all read them."""
        return [self.test[i]["image"] for i in range(len(self.test))]

    @cached_property
    def train_images(self) -> list[Any]:
        return [self.train[i]["image"] for i in range(len(self.train))]


def load_digits_split(test_fraction: float, seed: int) -> Digits:
    digits = runpy.run_path(str(ROOT / "bench" / "bench_digits.py"))
    train, test, y_train, y_test, x_train, _ = digits["make_data"](test_fraction, seed, False)
    reader = digits["classifiers"](x_train, y_train)["svm_rbf"]
    return Digits(train, test, y_test, reader, list(digits["WORDS"]))


def reference(model: Any, data: Digits) -> dict[str, float]:
    """The reader on real test digits, on the tokenizer model's reconstructions of them and on
    its deterministic text -> image translation of each word."""
    images = data.test_images
    recon = _decode(model, [{"image": im} for im in images], ("image",), "image")
    det = _decode(model, [{"text": w} for w in data.words], ("text",), "image")
    return {
        "reader_on_real_test_resized": float(data.reader.score(reader_pixels(images), data.y_test)),
        "reader_on_reconstructions": float(data.reader.score(reader_pixels(recon), data.y_test)),
        "reader_on_translation": float(data.reader.score(reader_pixels(det), np.arange(10))),
    }


def text_to_image(prior: Any, data: Digits, n: int, sampling: Any) -> tuple[dict, list[Any]]:
    """``n`` samples of each word: the reader's accuracy, diversity and copies (module doc)."""
    from mmvq.prior.glue import encode_examples

    t = time.perf_counter()
    out = prior.generate(
        n, source=[{"text": w} for w in data.words], target="image", config=sampling
    )
    m: dict[str, Any] = {"sample_seconds": time.perf_counter() - t}
    samples = out.outputs["image"]
    labels = np.repeat(np.arange(10), n)
    read = data.reader.predict(reader_pixels(samples))
    m["reader_accuracy"] = float((read == labels).mean())
    m["reader_accuracy_per_word"] = {
        w: float((read[labels == d] == d).mean()) for d, w in enumerate(data.words)
    }
    sample_grey, test_grey = grey(samples), grey(data.test_images)
    train_grey = grey(data.train_images)
    m["diversity_samples_of_one_word"] = float(
        np.mean([mean_pairwise_distance(sample_grey[labels == d]) for d in range(10)])
    )
    m["diversity_real_test_digits_of_one_class"] = float(
        np.mean([mean_pairwise_distance(test_grey[data.y_test == d][:n]) for d in range(10)])
    )
    m["nearest_training_image_distance_samples"] = float(
        nearest_distance(sample_grey, train_grey).mean()
    )
    m["nearest_training_image_distance_real_test"] = float(
        nearest_distance(test_grey, train_grey).mean()
    )
    train_codes = encode_examples(
        prior.tokenizer.model, [{"image": im} for im in data.train_images]
    )
    seen = {tuple(c) for c in train_codes[("image", "detail")].tolist()}
    copies = [tuple(c) in seen for c in out.codes.codes[("image", "detail")].tolist()]
    m["samples_copying_a_training_image_codes"] = float(np.mean(copies))
    return m, samples


def unconditional(prior: Any, data: Digits, sampling: Any) -> dict[str, float]:
    """100 unconditional images: the digits the reader sees in them."""
    images = prior.generate(100, modalities=["image"], config=sampling).outputs["image"]
    read = data.reader.predict(reader_pixels(images))
    return {"classes_covered": len(set(read.tolist())), "class_entropy": class_entropy(read)}


def captions(prior: Any, data: Digits, seed: int) -> float:
    """Test images captioned through the prior (greedy): exact match with the digit's word."""
    from mmvq.prior import PriorSamplingConfig

    greedy = PriorSamplingConfig(do_sample=False, seed=seed)
    source = [{"image": im} for im in data.test_images]
    text = prior.generate(1, source=source, target="text", config=greedy).outputs["text"]
    return float(np.mean([c == data.words[d] for c, d in zip(text, data.y_test)]))


def save_grid(samples: list[Any], n: int, path: Path) -> None:
    from torchvision.transforms.functional import pil_to_tensor
    from torchvision.utils import save_image

    grid = torch.stack([pil_to_tensor(img.convert("RGB")) for img in samples]).float() / 255
    save_image(grid, path, nrow=n, padding=1)


def main() -> None:
    warnings.filterwarnings("ignore")
    args = _args()
    torch.set_num_threads(args.threads)
    from mmvq.model import MultimodalVQ
    from mmvq.prior import MultimodalPrior, PriorSamplingConfig

    data = load_digits_split(args.test_fraction, args.seed)
    model = MultimodalVQ.from_pretrained(args.model).eval()
    t0 = time.perf_counter()
    if args.prior:
        prior = MultimodalPrior.from_pretrained(args.prior, model=model)
    else:
        bench = runpy.run_path(str(ROOT / "bench" / "bench_prior_quality.py"))
        prior = bench["train_bench_prior"](args, model, data.train, data.test).prior
    figures: dict[str, Any] = {"args": vars(args), "train_seconds": time.perf_counter() - t0}
    figures["reference"] = reference(model, data)
    sampling = PriorSamplingConfig(
        temperature=args.temperature, guidance_scale=args.guidance_scale, seed=args.seed
    )
    figures["text_to_image"], samples = text_to_image(prior, data, args.samples_per_word, sampling)
    # guidance needs a condition: unconditional samples are drawn without it
    figures["unconditional"] = unconditional(prior, data, replace(sampling, guidance_scale=1.0))
    figures["image_to_text_exact_match"] = captions(prior, data, args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(samples, args.samples_per_word, out / "text_to_image.png")
    (out / "generation_metrics.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
