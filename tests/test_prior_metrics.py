"""Generation metrics on the shapes data: true renderings score perfectly, broken ones do not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmvq_adapters.shapes import ShapeAttributes, all_attributes, caption, render_image
from mmvq_adapters.shapes.generation_metrics import (
    conditional_image_metrics,
    pairwise_pixel_distance,
    text_metrics,
    unconditional_image_metrics,
)


def test_true_renderings_are_valid_and_counted() -> None:
    combos = all_attributes()[:30]
    images = [render_image(a, 32) for a in combos] + [render_image(combos[0], 32)]
    m = unconditional_image_metrics(images)
    assert m["validity"] == 1.0 and m["distinct_combinations"] == 30.0
    assert m["num_samples"] == 31.0 and m["mean_mask_iou"] > 0.99


def test_blank_and_smeared_images_are_invalid() -> None:
    blank = Image.new("RGB", (32, 32))
    pixels = np.asarray(render_image(all_attributes()[0], 32)).copy()
    pixels[:, ::2] = 255  # stripes all over: attributes are read, the mask is not the shape's
    smeared = Image.fromarray(pixels)
    good = render_image(all_attributes()[5], 32)
    m = unconditional_image_metrics([blank, smeared, good, good])
    assert m["validity"] == 0.5 and m["distinct_combinations"] == 1.0


def test_conditional_accuracy_needs_all_four_attributes() -> None:
    a = ShapeAttributes("red", "circle", "large", "center")
    b = ShapeAttributes("red", "circle", "small", "center")  # the size differs
    m = conditional_image_metrics([render_image(a), render_image(b)], [a, a])
    assert m["all_attributes_accuracy"] == 0.5 and m["size_accuracy"] == 0.5
    assert m["colour_accuracy"] == 1.0
    with pytest.raises(ValueError, match="one ShapeAttributes per image"):
        conditional_image_metrics([render_image(a)], [a, b])


def test_pairwise_pixel_distance() -> None:
    black, white = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), (255, 255, 255))
    assert pairwise_pixel_distance([black, black]) == 0.0
    assert pairwise_pixel_distance([black, white, white]) == pytest.approx(2 / 3)


def test_text_metrics() -> None:
    refs = [caption(a) for a in all_attributes()[:4]]
    m = text_metrics(refs, refs)
    assert m == {"exact_match": 1.0, "bleu4": 1.0, "rougeL": 1.0}
    preds = [refs[0], refs[1].replace("circle", "sircle"), refs[2], None]
    m = text_metrics(preds, refs)
    assert m["exact_match"] == 0.5 and 0.3 < m["bleu4"] < 0.95 and 0.5 < m["rougeL"] < 1.0


def test_code_metrics() -> None:
    import torch

    from mmvq.prior.metrics import code_metrics

    table = {(1, 2, 3): "a", (4, 5, 6): "b", (7, 8, 9): "c"}
    codes = torch.tensor([[1, 2, 3], [1, 2, 3], [4, 5, 0], [7, 8, 9]])
    targets = torch.tensor([[1, 2, 3], [4, 5, 6], [4, 5, 6], [7, 8, 9]])
    m = code_metrics(codes, table, targets)
    assert m["exact_rate"] == 0.75 and m["distinct_labels"] == 2.0
    assert m["target_exact_rate"] == 0.5
    assert m["target_token_accuracy"] == pytest.approx((1 + 0 + 2 / 3 + 1) / 4)
