"""Flattening nested metric dicts (mmvq/utils/metrics.py)."""

from __future__ import annotations

import math

from mmvq.utils.metrics import flatten_metrics


def test_flatten_metrics_keeps_every_leaf() -> None:
    assert flatten_metrics({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a/b/c": 1, "d": [1, 2]}


def test_flatten_metrics_nests_names_and_drops_non_numbers():
    flat = flatten_metrics(
        {"perplexity": {"image": 3.0, "text": 2}, "usage": 0.5, "name": "x", "ok": True},
        "eval/",
        numbers_only=True,
    )
    assert flat == {"eval/perplexity/image": 3.0, "eval/perplexity/text": 2.0, "eval/usage": 0.5}
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())
