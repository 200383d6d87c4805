"""bench/bench_digits_prior.py's measures (the bench trains for minutes and is not a test)."""

from __future__ import annotations

import io
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PRIOR = runpy.run_path(str(ROOT / "bench" / "bench_digits_prior.py"))
DIGITS = runpy.run_path(str(ROOT / "bench" / "bench_digits.py"))


def _as_trained(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit as bench_digits gives it to the model (a 32x32 RGB PNG)."""
    return Image.open(io.BytesIO(DIGITS["_image_bytes"](pixels)["bytes"]))


def test_the_reader_sees_the_8x8_pixels_the_classifiers_were_trained_on() -> None:
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 17, size=(20, 8, 8)).astype(np.float64)
    read = PRIOR["reader_pixels"]([_as_trained(d) for d in digits])
    assert read.shape == (20, 64)
    assert read.min() >= 0.0 and read.max() <= 16.0
    flat = digits.reshape(20, 64)
    # the same pixels up to the upscaling's blur; not transposed, not rescaled
    assert np.abs(read - flat).mean() < 2.0
    assert np.corrcoef(read.ravel(), flat.ravel())[0, 1] > 0.9
    flipped = digits.transpose(0, 2, 1).reshape(20, 64)
    assert np.corrcoef(read.ravel(), flipped.ravel())[0, 1] < 0.5


def test_pairwise_and_nearest_distances() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    # pairs: (0,1) 1.0, (0,2) 0.5, (1,2) 0.5
    assert PRIOR["mean_pairwise_distance"](x) == pytest.approx(2.0 / 3.0)
    assert PRIOR["mean_pairwise_distance"](np.ones((4, 3))) == 0.0
    ref = np.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(PRIOR["nearest_distance"](x, ref), [0.0, 0.0, 0.5])


def test_class_entropy_is_one_when_uniform_and_zero_for_one_class() -> None:
    entropy = PRIOR["class_entropy"]
    assert entropy(np.arange(10).repeat(3)) == pytest.approx(1.0)
    assert entropy(np.full(7, 4)) == pytest.approx(0.0)
    assert 0.0 < entropy(np.array([0, 0, 0, 1])) < 1.0
