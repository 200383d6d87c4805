"""Plumbing of (nested) batches of tensors: their batch size, a subset of rows, a device move.

A *batch* here is a mapping whose tensors have the batch size as their first dimension: one
adapter's collated batch ``{key: Tensor}``, or a model batch ``{modality: {key: Tensor}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_size", "select_rows", "to_device"]


def batch_size(batch: Mapping[str, Any], error: type[Exception] = ValueError) -> int:
    """The first dimension of the first tensor with one, looking into nested mappings.

    Raises:
        error: no tensor with a batch dimension anywhere in ``batch``.
    """
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
        if isinstance(value, Mapping):
            try:
                return batch_size(value, error)
            except error:
                continue
    raise error("batch holds no tensor with a batch dimension")


def select_rows(batch: Mapping[str, Any], rows: Tensor) -> dict[str, Any]:
    """The rows ``rows`` (bool ``[B]`` or indices) of every ``[B, ...]`` tensor of a flat batch;
    other values are kept as they are."""
    size = int(rows.shape[0])
    return {
        k: v[rows] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == size else v
        for k, v in batch.items()
    }


def to_device(
    batch: Any, device: torch.device | str, *, float_dtype: torch.dtype | None = None
) -> Any:
    """Every tensor of a nested batch moved to ``device`` (``non_blocking``), floating-point
    ones cast to ``float_dtype`` when given; mappings become dicts, other values are kept."""
    if isinstance(batch, Tensor):
        if float_dtype is not None and batch.is_floating_point():
            return batch.to(device, dtype=float_dtype, non_blocking=True)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, float_dtype=float_dtype) for k, v in batch.items()}
    return batch
