"""Nested metric dicts flattened to ``"a/b/c"`` keys (for trackers, model cards and summaries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["flatten_metrics"]


def flatten_metrics(
    metrics: Mapping[str, Any], prefix: str = "", *, numbers_only: bool = False
) -> dict[str, Any]:
    """``{"perplexity": {"image": 3.0}}`` -> ``{"<prefix>perplexity/image": 3.0}``.

    ``prefix`` is prepended as given (``"eval/"``). Leaves that are not mappings are kept as they
    are (lists included); with ``numbers_only`` only numbers are kept, as floats (bools dropped),
    which is what trackers accept.
    """
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "/", numbers_only=numbers_only))
        elif not numbers_only:
            flat[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
