"""`validate_dataset`: fail fast, before training, on data that cannot be trained on.

It catches a mapped column missing from the dataset (naming the flag to set), an empty dataset,
a batch that can never be filled, rows without any modality (from Arrow null masks, without
reading the data) and values that cannot be read: every row of a map-style dataset goes through
``preprocess`` and the collator (in DataLoader workers when asked for), so a corrupt image at row
150 stops the run before its first step, not at step 47. The error names the file and line when
the data came from a local file (:mod:`mmvq.data.sources`), the row, the column and the fix. With
``on_bad_row="skip"`` bad rows are reported (:attr:`DatasetSummary.bad_rows`) instead, for the
caller to leave out. A stream is checked on its first rows here, and row by row on arrival
(:class:`~mmvq.data.pipeline.MultimodalIterableDataset`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from mmvq.adapter import AdapterInputError, ModalityAdapter
from mmvq.data.columns import (
    adapter_dict,
    cast_for_adapters,
    check_adapters,
    check_columns,
    column_names,
    is_iterable,
)
from mmvq.data.config import DataError
from mmvq.data.pipeline import ON_BAD_ROW, MultimodalCollator, MultimodalDataset, preprocess_row
from mmvq.utils.checks import check_positive_int

__all__ = ["DatasetSummary", "good_rows", "validate_dataset"]

logger = logging.getLogger(__name__)
_SHOWN = 5  # bad rows named in one message


class DatasetSummary(NamedTuple):
    """What :func:`validate_dataset` found.

    Attributes:
        num_rows: rows in the dataset (``None`` for a stream).
        rows_per_modality: rows that have each modality (counted over the whole map-style
            dataset; over the checked rows of a stream).
        checked_rows: rows that went through ``preprocess`` and ``collate``.
        bad_rows: rows that cannot be read (only with ``on_bad_row="skip"``; else an error).
    """

    num_rows: int | None
    rows_per_modality: dict[str, int]
    checked_rows: int
    bad_rows: tuple[int, ...] = ()


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


class _Checked(torch.utils.data.Dataset):
    """Row ``i`` preprocessed, or the message of why it cannot be (for a DataLoader pass)."""

    def __init__(self, dataset: MultimodalDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, self.dataset[i], None
        except (AdapterInputError, DataError) as exc:
            return i, None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _check_rows(
    torch_ds: MultimodalDataset, batch_size: int, on_bad_row: str, num_workers: int
) -> list[int]:
    """Every row through preprocess and, ``batch_size`` at a time, the collator; the bad rows
    (with ``"skip"``), or the first bad row's error (with ``"error"``)."""
    loader = torch.utils.data.DataLoader(
        _Checked(torch_ds), batch_size=batch_size, collate_fn=list, num_workers=num_workers
    )
    collator = MultimodalCollator(torch_ds.adapters)
    bad: list[tuple[int, str]] = []
    for chunk in loader:
        good = [example for _, example, error in chunk if error is None]
        for i, _, error in chunk:
            if error is not None:
                if on_bad_row == "error":
                    kind, _, message = error.partition(": ")
                    raise (AdapterInputError if kind == "AdapterInputError" else DataError)(
                        f"{message} (bad data stops the run before its first step; fix or drop "
                        "the row, or pass --on_bad_row skip to leave such rows out)"
                    )
                bad.append((i, error))
        if good:
            collator(good)
    if bad:
        shown = "; ".join(message for _, message in bad[:_SHOWN])
        logger.warning(
            "on_bad_row='skip': leaving out %d bad row(s) of %d: %s%s",
            len(bad),
            len(torch_ds),
            shown,
            " ..." if len(bad) > _SHOWN else "",
        )
    return [i for i, _ in bad]


def _check_stream(
    ds: Any,
    column_map: Mapping[str, str],
    adapters: Mapping[str, ModalityAdapter],
    num_check_rows: int,
    on_bad_row: str,
) -> DatasetSummary:
    rows = list(ds.select_columns(list(dict.fromkeys(column_map.values()))).take(num_check_rows))
    if not rows:
        raise DataError("the dataset stream is empty: it yields no rows.")
    examples, bad = [], []
    for i, row in enumerate(rows):
        try:
            examples.append(preprocess_row(row, adapters, column_map, f"example {i} of the stream"))
        except (AdapterInputError, DataError):
            if on_bad_row == "error":
                raise
            bad.append(i)
    if examples:
        MultimodalCollator(adapters)(examples)
    counts = {m: sum(row.get(c) is not None for row in rows) for m, c in column_map.items()}
    return DatasetSummary(None, counts, len(rows), tuple(bad))


def validate_dataset(
    ds: Any,
    column_map: Mapping[str, str],
    adapters: Mapping[str, ModalityAdapter],
    *,
    batch_size: int,
    drop_last: bool,
    num_check_rows: int | None = None,
    on_bad_row: str = "error",
    num_workers: int = 0,
) -> DatasetSummary:
    """Check a split before training; raise :class:`DataError` / :class:`AdapterInputError`.

    Catches: a mapped column missing from the dataset (lists the available columns and the flag
    to set); an empty dataset; a batch larger than the dataset with ``drop_last`` (zero
    batches); rows with no modality at all (map-style: every row, from Arrow null masks; a
    stream: the first rows); values that cannot be read: every row of a map-style dataset (or
    its first ``num_check_rows``) goes through ``preprocess`` and the collator, over
    ``num_workers`` DataLoader workers; a stream's first ``num_check_rows`` (default 8). Errors
    name the file and line (local files), the row, the column and the fix.

    Args:
        on_bad_row: ``"error"`` raises on the first bad row; ``"skip"`` returns the bad rows in
            :attr:`DatasetSummary.bad_rows` (an error when no good row is left).
    """
    import datasets

    if not isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        raise DataError(
            f"validate_dataset expects a datasets.Dataset/IterableDataset, got {type(ds).__name__}."
        )
    adapters = adapter_dict(adapters)
    check_positive_int("batch_size", batch_size, fix=".", error=DataError)
    if num_check_rows is not None:
        check_positive_int("num_check_rows", num_check_rows, fix=".", error=DataError)
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}.")
    check_adapters(adapters, column_map)
    check_columns(column_names(ds), column_map)
    if is_iterable(ds):
        ds = cast_for_adapters(ds, column_map, adapters)
        return _check_stream(ds, column_map, adapters, num_check_rows or 8, on_bad_row)

    num_rows = len(ds)
    if num_rows == 0:
        raise DataError(
            "the dataset is empty (0 rows); check the split, the files and max_*_samples."
        )
    _check_batch_fits(batch_size, num_rows, drop_last)
    counts, empty_rows, num_empty = _presence_counts(ds, column_map)
    if num_empty:
        raise DataError(
            f"{num_empty} row(s) have no modality (all of the columns {dict(column_map)} are "
            f"None), e.g. rows {empty_rows}; drop them (dataset.filter) or map another column."
        )
    checked = num_rows if num_check_rows is None else min(num_check_rows, num_rows)
    torch_ds = MultimodalDataset(ds, adapters, column_map, indices=range(checked))
    bad = _check_rows(torch_ds, batch_size, on_bad_row, num_workers)
    if len(bad) == checked:
        raise DataError(
            f"every checked row ({checked}) of the dataset is bad (on_bad_row='skip' left none); "
            "see the warnings for why, and fix the data or the column mapping."
        )
    _check_batch_fits(batch_size, num_rows - len(bad), drop_last)
    return DatasetSummary(num_rows, counts, checked, tuple(bad))


def _check_batch_fits(batch_size: int, num_rows: int, drop_last: bool) -> None:
    if drop_last and batch_size > num_rows:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({num_rows} usable rows) and "
            f"drop_last=True, so there would be no batch at all; lower batch_size to at most "
            f"{num_rows}, set drop_last=False, or add data."
        )


def good_rows(summary: DatasetSummary, num_rows: int) -> Sequence[int] | None:
    """The rows to train on after a check: all (``None``) or all but the bad ones."""
    if not summary.bad_rows:
        return None
    bad = set(summary.bad_rows)
    return [i for i in range(num_rows) if i not in bad]
