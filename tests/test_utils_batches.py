"""Batch plumbing (mmvq/utils/batches.py): batch size, rows, device moves of nested batches."""

from __future__ import annotations

import pytest
import torch

from mmvq.utils.batches import batch_size, select_rows, to_device


def test_batch_size_looks_into_nested_mappings() -> None:
    nested = {"a": {"flag": torch.tensor(1.0), "x": torch.zeros(3, 2)}, "b": {"y": torch.ones(3)}}
    assert batch_size(nested) == 3
    assert batch_size({"empty": {}, "b": {"y": torch.ones(5)}}) == 5
    with pytest.raises(ValueError, match="holds no tensor with a batch dimension"):
        batch_size({"a": {"scalar": torch.tensor(1.0)}, "b": "text"})
    with pytest.raises(KeyError):
        batch_size({}, error=KeyError)


def test_select_rows_keeps_what_is_not_per_row() -> None:
    batch = {"x": torch.arange(4), "m": torch.zeros(4, 2), "scale": torch.tensor(2.0), "name": "n"}
    rows = select_rows(batch, torch.tensor([True, False, True, False]))
    assert rows["x"].tolist() == [0, 2] and rows["m"].shape == (2, 2)
    assert rows["scale"] is batch["scale"] and rows["name"] == "n"


def test_to_device_moves_every_tensor_of_a_nested_batch() -> None:
    batch = {"a": {"x": torch.zeros(2)}, "note": [1, 2]}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["a"]["x"].device.type == "cpu" and moved["note"] == [1, 2]
    assert isinstance(moved, dict) and isinstance(moved["a"], dict)


def test_to_device_casts_only_floating_tensors_when_asked() -> None:
    batch = {"a": {"x": torch.zeros(2), "ids": torch.ones(2, dtype=torch.long)}}
    cast = to_device(batch, "cpu", float_dtype=torch.bfloat16)
    assert cast["a"]["x"].dtype == torch.bfloat16 and cast["a"]["ids"].dtype == torch.long
    assert to_device(batch, "cpu")["a"]["x"].dtype == torch.float32
