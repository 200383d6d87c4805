"""Generation metrics of a prior (:mod:`mmvq.prior`) on the built-in shapes data (issue 10's
targets).

* :func:`unconditional_image_metrics`: **validity** (the attribute reader
  :func:`~mmvq_adapters.shapes.predict_attributes` reads all four attributes, and the
  foreground's mask IoU with the true rendering of the read attributes is at least 0.7) and
  **diversity** (distinct attribute combinations among the valid samples; 100 uniform draws of
  the 240 give about 82).
* :func:`conditional_image_metrics`: text -> image; the read attributes equal the caption's (all
  four, and each one).
* :func:`pairwise_pixel_distance`: how much samples of one prompt differ (mean absolute difference
  per pixel and channel, in [0, 1], over all pairs).
* :func:`text_metrics`: exact match, BLEU-4 and ROUGE-L (F-measure) from ``torchmetrics.text``.

The prior's code-level metric is :func:`mmvq.prior.metrics.code_metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmvq_adapters.shapes.attributes import ShapeAttributes
from mmvq_adapters.shapes.scoring import predict_attributes, text_to_image_score

__all__ = [
    "VALIDITY_IOU",
    "conditional_image_metrics",
    "image_validity",
    "pairwise_pixel_distance",
    "text_metrics",
    "unconditional_image_metrics",
]

#: Mask IoU with the true rendering of the read attributes that makes a sample valid.
VALIDITY_IOU = 0.7


def image_validity(image: Any, iou_threshold: float = VALIDITY_IOU) -> tuple[bool, Any, float]:
    """``(valid, read attributes or None, mask IoU)`` of one generated image."""
    attrs = predict_attributes(image)
    if attrs is None:
        return False, None, 0.0
    iou = text_to_image_score([image], [attrs])["mask_iou"]
    return iou >= iou_threshold, attrs, float(iou)


def unconditional_image_metrics(
    images: Sequence[Any], iou_threshold: float = VALIDITY_IOU
) -> dict[str, float]:
    """``validity``, ``distinct_combinations`` (among valid samples), ``distinct_read`` (among
    all samples whose attributes were read), ``mean_mask_iou`` and ``num_samples``."""
    if not images:
        raise ValueError("unconditional_image_metrics needs at least one image")
    results = [image_validity(img, iou_threshold) for img in images]
    valid = [a for ok, a, _ in results if ok]
    read = [a for _, a, _ in results if a is not None]
    return {
        "validity": len(valid) / len(images),
        "distinct_combinations": float(len(set(valid))),
        "distinct_read": float(len(set(read))),
        "mean_mask_iou": float(np.mean([iou for _, _, iou in results])),
        "num_samples": float(len(images)),
    }


def conditional_image_metrics(
    images: Sequence[Any], attrs: Sequence[ShapeAttributes]
) -> dict[str, float]:
    """Text -> image: ``all_attributes_accuracy`` (all four read correctly), each attribute's
    accuracy, ``text_to_image_score`` (their mean), ``psnr`` and ``mask_iou`` against the true
    rendering (:func:`~mmvq_adapters.shapes.text_to_image_score`)."""
    if len(images) != len(attrs) or not images:
        raise ValueError(
            f"conditional_image_metrics needs one ShapeAttributes per image, got {len(images)} "
            f"images and {len(attrs)} attribute sets"
        )
    scores = text_to_image_score(list(images), list(attrs))
    exact = [predict_attributes(img) == a for img, a in zip(images, attrs)]
    return {"all_attributes_accuracy": float(np.mean(exact)), **scores}


def pairwise_pixel_distance(images: Sequence[Any]) -> float:
    """Mean absolute difference per pixel and channel (in [0, 1]) over all pairs of images."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    if len(arrays) < 2:
        raise ValueError("pairwise_pixel_distance needs at least two images")
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(arrays, 2)]))


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``exact_match``, ``bleu4`` (corpus BLEU-4) and ``rougeL`` (mean F-measure)."""
    from torchmetrics.text import BLEUScore, ROUGEScore

    preds = ["" if p is None else str(p) for p in predictions]
    refs = [str(r) for r in references]
    if len(preds) != len(refs) or not refs:
        raise ValueError(
            f"text_metrics needs one reference per prediction, got {len(preds)} predictions and "
            f"{len(refs)} references"
        )
    bleu = BLEUScore(n_gram=4)(preds, [[r] for r in refs])
    rouge = ROUGEScore(rouge_keys=("rougeL",))(preds, refs)["rougeL_fmeasure"]
    return {
        "exact_match": float(np.mean([p == r for p, r in zip(preds, refs)])),
        "bleu4": float(bleu),
        "rougeL": float(rouge),
    }
