"""`validate_dataset`: fail fast, before training, on data that cannot be trained on.

It catches a mapped column missing from the dataset (naming the flag to set), an empty dataset,
a batch that can never be filled, rows without any modality (from Arrow null masks, without
reading the data) and values of the wrong type (the first rows go through ``preprocess`` and the
collator; the error names the row, the column and the value's type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from mmvq.adapter import ModalityAdapter
from mmvq.data.columns import (
    adapter_dict,
    cast_for_adapters,
    check_adapters,
    check_columns,
    column_names,
    is_iterable,
)
from mmvq.data.config import DataError
from mmvq.data.pipeline import MultimodalCollator, MultimodalDataset, preprocess_row
from mmvq.utils.checks import check_positive_int

__all__ = ["DatasetSummary", "validate_dataset"]


class DatasetSummary(NamedTuple):
    """What :func:`validate_dataset` found.

    Attributes:
        num_rows: rows in the dataset (``None`` for a stream).
        rows_per_modality: rows that have each modality (counted over the whole map-style
            dataset; over the checked rows of a stream).
        checked_rows: rows that went through ``preprocess`` and ``collate``.
    """

    num_rows: int | None
    rows_per_modality: dict[str, int]
    checked_rows: int


def _presence_counts(
    ds: Any, column_map: Mapping[str, str]
) -> tuple[dict[str, int], list[int], int]:
    """Rows having each modality, the first rows having none, and how many have none (Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = list(dict.fromkeys(column_map.values()))
    table = ds.select_columns(columns).with_format("arrow")
    counts = dict.fromkeys(column_map, 0)
    empty_rows: list[int] = []
    num_empty = 0
    chunk = 8192
    for start in range(0, len(ds), chunk):
        part: pa.Table = table[start : start + chunk]
        valid = {c: pc.is_valid(part.column(c)) for c in columns}
        for modality, column in column_map.items():
            counts[modality] += int(pc.sum(valid[column]).as_py() or 0)
        any_valid = valid[columns[0]]
        for c in columns[1:]:
            any_valid = pc.or_(any_valid, valid[c])
        missing = pc.invert(any_valid)
        n = int(pc.sum(missing).as_py() or 0)
        if n:
            num_empty += n
            if len(empty_rows) < 5:
                idx = pc.indices_nonzero(missing).to_pylist()
                empty_rows += [start + i for i in idx[: 5 - len(empty_rows)]]
    return counts, empty_rows, num_empty


def validate_dataset(
    ds: Any,
    column_map: Mapping[str, str],
    adapters: Mapping[str, ModalityAdapter],
    *,
    batch_size: int,
    drop_last: bool,
    num_check_rows: int = 8,
) -> DatasetSummary:
    """Check a split before training; raise :class:`DataError` / :class:`AdapterInputError`.

    Catches: a mapped column missing from the dataset (lists the available columns and the flag
    to set); an empty dataset; a batch larger than the dataset with ``drop_last`` (zero
    batches); rows with no modality at all (map-style: every row, from Arrow null masks; a
    stream: the first ``num_check_rows``); values of the wrong type (the first
    ``num_check_rows`` rows go through ``preprocess`` and the collator; the error names row,
    column and value type).
    """
    import datasets

    if not isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        raise DataError(
            f"validate_dataset expects a datasets.Dataset/IterableDataset, got {type(ds).__name__}."
        )
    adapters = adapter_dict(adapters)
    check_positive_int("batch_size", batch_size, fix=".", error=DataError)
    check_positive_int("num_check_rows", num_check_rows, fix=".", error=DataError)
    check_adapters(adapters, column_map)
    check_columns(column_names(ds), column_map)
    collator = MultimodalCollator(adapters)

    if is_iterable(ds):
        ds = cast_for_adapters(ds, column_map, adapters)
        rows = list(
            ds.select_columns(list(dict.fromkeys(column_map.values()))).take(num_check_rows)
        )
        if not rows:
            raise DataError("the dataset stream is empty: it yields no rows.")
        examples = [
            preprocess_row(row, adapters, column_map, f"row {i}") for i, row in enumerate(rows)
        ]
        collator(examples)
        counts = {m: sum(row.get(c) is not None for row in rows) for m, c in column_map.items()}
        return DatasetSummary(None, counts, len(rows))

    num_rows = len(ds)
    if num_rows == 0:
        raise DataError(
            "the dataset is empty (0 rows); check the split, the files and max_*_samples."
        )
    if drop_last and batch_size > num_rows:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({num_rows} rows) and "
            f"drop_last=True, so there would be no batch at all; lower batch_size to at most "
            f"{num_rows}, set drop_last=False, or add data."
        )
    counts, empty_rows, num_empty = _presence_counts(ds, column_map)
    if num_empty:
        raise DataError(
            f"{num_empty} row(s) have no modality (all of the columns {dict(column_map)} are "
            f"None), e.g. rows {empty_rows}; drop them (dataset.filter) or map another column."
        )
    torch_ds = MultimodalDataset(ds, adapters, column_map)
    checked = min(num_check_rows, num_rows)
    collator([torch_ds[i] for i in range(checked)])
    return DatasetSummary(num_rows, counts, checked)
