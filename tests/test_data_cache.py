"""``MultimodalDataset(cache=True)`` / ``TrainConfig.cache_examples``: preprocessed examples kept
in memory, only where every adapter's preprocessing is deterministic."""

from __future__ import annotations

import logging

import datasets
import torch
from PIL import Image

from mmvq import MultimodalVQ, MultimodalVQConfig
from mmvq.data import MultimodalCollator, MultimodalDataset, as_torch_dataset
from mmvq.quantize import CodebookConfig
from mmvq.training.config import TrainConfig
from mmvq.training.inputs import as_dataset
from mmvq_adapters.image import ImageAdapter
from mmvq_adapters.text import TextAdapter

COLOURS = ["red", "green", "blue", "yellow"]


def _rows() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (20, 20), c) for c in COLOURS],
            "text": [f"a {c} square" for c in COLOURS],
        }
    )


def _adapters(random_crop: bool) -> dict:
    return {
        "image": ImageAdapter(
            resolution=16, base_channels=8, num_groups=4, random_crop=random_crop
        ),
        "text": TextAdapter(d_model=32, num_layers=1, num_heads=2),
    }


def _same(a, b) -> bool:
    return set(a) == set(b) and all(
        set(a[m]) == set(b[m]) and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a
    )


def test_cached_examples_are_reused_and_equal_to_fresh_ones() -> None:
    ads = _adapters(random_crop=False)
    cmap = {"image": "image", "text": "text"}
    cached = MultimodalDataset(_rows(), ads, cmap, cache=True)
    fresh = MultimodalDataset(_rows(), ads, cmap)
    assert cached.caching and not fresh.caching
    for i in range(len(cached)):
        first = cached[i]
        assert cached[i] is first  # kept, not preprocessed again
        assert fresh[i] is not fresh[i]
        assert _same(first, fresh[i])
        assert first.references == fresh[i].references
    # a batch built from cached examples is the batch built from fresh ones
    collate = MultimodalCollator(ads)
    a, b = collate([cached[i] for i in range(4)]), collate([fresh[i] for i in range(4)])
    assert _same(a, b) and a.references == b.references
    # indices select rows of the underlying dataset; the cache is keyed by that row
    sub = MultimodalDataset(_rows(), ads, cmap, indices=[3, 1], cache=True)
    assert _same(sub[0], fresh[3]) and _same(sub[1], fresh[1])


def test_random_preprocessing_is_never_cached(caplog) -> None:
    ads = _adapters(random_crop=True)
    assert not ads["image"].preprocess_is_deterministic()
    assert ads["text"].preprocess_is_deterministic()
    with caplog.at_level(logging.INFO, logger="mmvq.data.pipeline"):
        ds = as_torch_dataset(_rows(), ads, {"image": "image", "text": "text"}, cache=True)
    assert not ds.caching
    assert "['image']" in caplog.text and "random" in caplog.text
    assert ds[0] is not ds[0]
    # the text column alone is deterministic: cached
    assert as_torch_dataset(_rows(), ads, {"text": "text"}, cache=True).caching


def test_train_config_cache_examples_reaches_the_training_data(tmp_path) -> None:
    ads = _adapters(random_crop=False)
    model = MultimodalVQ(
        ads, MultimodalVQConfig(codebook=CodebookConfig(num_codes=16, code_dim=64))
    )
    cmap = {"image": "image", "text": "text"}
    for flag in (True, False):
        cfg = TrainConfig(
            output_dir=str(tmp_path), per_device_batch_size=2, cache_examples=flag, cpu=True
        )
        data = as_dataset(_rows(), model, cmap, "train_dataset", cfg, True).data
        assert data.caching is flag
