"""From ``datasets`` rows to model batches: torch datasets that run ``adapter.preprocess`` (in
DataLoader workers) and the collator that builds the batch layout.

A model batch is ``{modality: {**adapter.collate([...]), "present": bool [B]}}``: for each
modality, the adapter's collated batch plus ``"present"``, which rows really have that modality.
Rows lacking a modality get a placeholder (a zeroed copy of a present row's tensors) with
``present=False``; a modality absent from every row of a batch is left out of the batch dict.

Raw values travel with the data: an :class:`Example` keeps the raw values of the row it came from
(``references``), and the collator keeps them, row by row, in :attr:`ModelBatch.references`, so
evaluation can hand translation scorers and samples the originals of exactly the rows it
evaluates, whatever the loader's order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

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
from mmvq.data.sources import source_of

__all__ = [
    "ON_BAD_ROW",
    "Example",
    "ModelBatch",
    "MultimodalCollator",
    "MultimodalDataset",
    "MultimodalIterableDataset",
    "as_torch_dataset",
    "preprocess_row",
]


logger = logging.getLogger(__name__)

ON_BAD_ROW = ("error", "skip")
"""What a stream does with a row that cannot be read: raise, or leave it out and count it."""


class Example(dict):
    """One preprocessed example ``{modality: {key: Tensor}}``.

    Attributes:
        references: ``{modality: raw value}`` of the row it was made from (``None``: unknown).
        skipped_before: bad rows a stream left out just before this example (``on_bad_row=
            "skip"``); an empty example only carries such a count (the end of a stream).
    """

    references: dict[str, Any] | None = None
    skipped_before: int = 0


class ModelBatch(dict):
    """A model batch ``{modality: {key: Tensor, "present": bool [B]}}``.

    Attributes:
        references: per row, ``{modality: raw value}`` of the example it was made from, when
            every example carried them and the collator keeps them; else ``None``.
        skipped_rows: bad rows a stream left out while this batch was read (the batch is empty
            when every row it read was bad).
    """

    references: list[dict[str, Any]] | None = None
    skipped_rows: int = 0


def preprocess_row(
    row: Mapping[str, Any],
    adapters: Mapping[str, ModalityAdapter],
    column_map: Mapping[str, str],
    where: str,
) -> Example:
    """``{modality: adapter.preprocess(row[column])}`` over ``column_map`` (``None`` values
    skipped), keeping the row's raw values as :attr:`Example.references`; ``where`` names the row
    in errors."""
    out = Example()
    for modality, column in column_map.items():
        value = row.get(column)
        if value is None:
            continue
        try:
            tensors = adapters[modality].preprocess(value)
        except AdapterInputError as err:
            raise AdapterInputError(
                f"{where}, column {column!r} (modality {modality!r}, value of type "
                f"{type(value).__name__}): {err}"
            ) from err
        except Exception as err:  # noqa: BLE001 - an adapter's bug still names the row
            raise DataError(
                f"{where}, column {column!r} (modality {modality!r}, value of type "
                f"{type(value).__name__}): {type(adapters[modality]).__name__}.preprocess raised "
                f"{type(err).__name__}: {' '.join(str(err).split())[:300]} (a value the adapter "
                "does not handle: fix or drop the row)"
            ) from err
        if not isinstance(tensors, dict) or not all(
            isinstance(v, Tensor) for v in tensors.values()
        ):
            raise DataError(
                f"{type(adapters[modality]).__name__}.preprocess must return dict[str, Tensor], "
                f"got {type(tensors).__name__} ({where}, column {column!r})."
            )
        out[modality] = tensors
    if not out:
        raise DataError(
            f"{where} has no modality: every mapped column {dict(column_map)} is None. Drop such "
            "rows (e.g. dataset.filter) or map another column."
        )
    out.references = {m: row.get(c) for m, c in column_map.items()}
    return out


class MultimodalDataset(torch.utils.data.Dataset):
    """A map-style ``datasets.Dataset`` as per-modality preprocessed tensors.

    Columns that an adapter reads undecoded (its :class:`~mmvq.adapter.DataColumn`, e.g. a
    decoded ``Audio()`` column) are cast with ``decode=False`` first, so rows never need a
    decoder ``datasets`` may lack.

    ``dataset[i]`` is ``{modality: adapter.preprocess(row[column])}`` over the column map,
    skipping ``None`` values. Bad values raise :class:`AdapterInputError` naming the row, the
    column, the modality and the value's type.

    With ``cache=True`` each example is preprocessed once and kept in memory (every later epoch
    reuses it): for data small enough to hold, where reading and preprocessing take a real share
    of each step. It applies only when every adapter of the column map declares its
    preprocessing deterministic (:meth:`~mmvq.adapter.ModalityAdapter.preprocess_is_deterministic`;
    a random crop would otherwise be frozen), and it is logged and ignored otherwise
    (:attr:`caching` says which). Each DataLoader worker keeps its own cache: use
    ``persistent_workers`` with workers, or none.
    """

    def __init__(
        self,
        dataset: Any,
        adapters: Mapping[str, ModalityAdapter],
        column_map: Mapping[str, str],
        *,
        indices: Sequence[int] | None = None,
        cache: bool = False,
    ) -> None:
        import datasets

        if isinstance(dataset, datasets.IterableDataset):
            raise DataError(
                "MultimodalDataset needs a map-style datasets.Dataset; for streaming use "
                "MultimodalIterableDataset (or as_torch_dataset, which picks)."
            )
        if not isinstance(dataset, datasets.Dataset):
            raise DataError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}.")
        check_adapters(adapters, column_map)
        check_columns(dataset.column_names, column_map)
        self.adapters = adapter_dict(adapters)
        self.column_map = dict(column_map)
        self.rows = source_of(dataset)  # the file and line of each row, when known
        self.indices = None if indices is None else [int(i) for i in indices]
        dataset = cast_for_adapters(dataset, self.column_map, self.adapters)
        self.dataset = dataset.select_columns(list(dict.fromkeys(self.column_map.values())))
        self._cache: dict[int, Example] | None = None
        if cache:
            random = sorted(
                m for m in self.column_map if not self.adapters[m].preprocess_is_deterministic()
            )
            if random:
                logger.info(
                    "Not caching preprocessed examples: the preprocessing of %s is random "
                    "(preprocess_is_deterministic() is False).",
                    random,
                )
            else:
                self._cache = {}

    @property
    def caching(self) -> bool:
        """Whether preprocessed examples are kept in memory (``cache=True`` and deterministic
        preprocessing)."""
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def describe(self, row: int) -> str:
        """``"FILE line L (row i)"`` when the file is known, else ``"row i"``."""
        return self.rows.describe(row) if self.rows is not None else f"row {row}"

    def __getitem__(self, index: int) -> Example:
        row = int(index) if self.indices is None else self.indices[int(index)]
        if self._cache is not None and row in self._cache:
            return self._cache[row]
        example = preprocess_row(
            self.dataset[row], self.adapters, self.column_map, self.describe(row)
        )
        if self._cache is not None:
            self._cache[row] = example
        return example

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        """The examples of a batch (what a ``DataLoader`` asks for): the rows not cached are read
        from the dataset in one call instead of one per row, then preprocessed in order, as
        :meth:`__getitem__` does. A batch read that fails falls back to reading row by row, so
        that it fails at the failing row, as reading rows one by one did."""
        rows = [int(i) if self.indices is None else self.indices[int(i)] for i in indices]
        cached = [self._cache is not None and r in self._cache for r in rows]
        todo = [r for r, hit in zip(rows, cached) if not hit]
        try:
            read = self.dataset[todo] if todo else {}
        except Exception:  # noqa: BLE001 - raised again by the row that fails
            return [self[i] for i in indices]
        values = zip(*read.values())
        out = []
        for row, hit in zip(rows, cached):
            if hit:
                out.append(self._cache[row])  # type: ignore[index]
                continue
            raw = dict(zip(read.keys(), next(values)))
            example = preprocess_row(raw, self.adapters, self.column_map, self.describe(row))
            if self._cache is not None:
                self._cache[row] = example
            out.append(example)
        return out


class MultimodalIterableDataset(torch.utils.data.IterableDataset):
    """A streaming ``datasets.IterableDataset`` as per-modality preprocessed tensors.

    Split across ranks at construction with ``datasets.distributed.split_dataset_by_node``
    (``rank``/``world_size`` default to ``accelerate.PartialState()``), and across DataLoader
    workers when iterated (each worker takes its own share; no example is seen twice).

    Because the stream is already split per rank, do not let ``accelerator.prepare`` shard this
    DataLoader again (it would dispatch or slice batches a second time): move batches to the
    device yourself. ``split_by_node=False`` leaves rank splitting to the caller.

    Each row is checked on arrival: with ``on_bad_row="error"`` (default) a bad row raises
    (naming the example); with ``"skip"`` it is left out, logged, and counted in the next
    example's :attr:`Example.skipped_before` (summed per batch by the collator into
    :attr:`ModelBatch.skipped_rows`).
    """

    def __init__(
        self,
        dataset: Any,
        adapters: Mapping[str, ModalityAdapter],
        column_map: Mapping[str, str],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        split_by_node: bool = True,
        on_bad_row: str = "error",
    ) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        if not isinstance(dataset, datasets.IterableDataset):
            raise DataError(
                f"MultimodalIterableDataset needs a datasets.IterableDataset (load with "
                f"streaming=True or Dataset.to_iterable_dataset()), got {type(dataset).__name__}."
            )
        check_adapters(adapters, column_map)
        check_columns(column_names(dataset), column_map)
        if (rank is None) != (world_size is None):
            raise DataError("pass both rank and world_size, or neither (then accelerate decides).")
        if rank is None:
            from accelerate import PartialState

            state = PartialState()
            rank, world_size = state.process_index, state.num_processes
        if not (
            isinstance(world_size, int)
            and world_size >= 1
            and isinstance(rank, int)
            and 0 <= rank < world_size
        ):
            raise DataError(
                f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}."
            )
        if on_bad_row not in ON_BAD_ROW:
            raise DataError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}.")
        self.adapters = adapter_dict(adapters)
        self.column_map = dict(column_map)
        self.rank, self.world_size = rank, world_size
        self.split_by_node = split_by_node
        self.on_bad_row = on_bad_row
        dataset = cast_for_adapters(dataset, self.column_map, self.adapters)
        dataset = dataset.select_columns(list(dict.fromkeys(self.column_map.values())))
        if split_by_node and world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the stream for ``epoch`` (shuffle buffer and shard order)."""
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Example]:
        from datasets.distributed import split_dataset_by_node

        dataset = self.dataset
        info = torch.utils.data.get_worker_info()
        worker = ""
        if info is not None and info.num_workers > 1:
            dataset = split_dataset_by_node(dataset, rank=info.id, world_size=info.num_workers)
            worker = f", worker {info.id}/{info.num_workers}"
        # ``iter`` (not ``__iter__``) so datasets does not split by worker a second time.
        rows = dataset.iter(batch_size=1)
        skipped, i = 0, 0
        while True:
            where = f"example {i} of the stream (rank {self.rank}/{self.world_size}{worker})"
            try:
                batch = next(rows)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - a source that cannot be read, named once
                raise DataError(
                    f"reading {where} failed ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}); fix the data source"
                ) from exc
            i += 1
            try:
                example = preprocess_row(
                    {k: v[0] for k, v in batch.items()}, self.adapters, self.column_map, where
                )
            except (AdapterInputError, DataError) as exc:
                if self.on_bad_row == "error":
                    raise
                skipped += 1
                logger.warning("on_bad_row='skip': left out %s", " ".join(str(exc).split()))
                continue
            example.skipped_before, skipped = skipped, 0
            yield example
        if skipped:  # an empty example that only carries the count (the collator drops it)
            marker = Example()
            marker.skipped_before = skipped
            yield marker


def as_torch_dataset(
    dataset: Any,
    adapters: Mapping[str, ModalityAdapter],
    column_map: Mapping[str, str],
    *,
    rank: int | None = None,
    world_size: int | None = None,
    on_bad_row: str = "error",
    indices: Sequence[int] | None = None,
    cache: bool = False,
) -> MultimodalDataset | MultimodalIterableDataset:
    """:class:`MultimodalDataset` for a ``Dataset`` (over ``indices`` only, when given; with
    ``cache``, keeping preprocessed examples in memory), :class:`MultimodalIterableDataset` for an
    ``IterableDataset`` (with ``on_bad_row``; a stream is never cached)."""
    if is_iterable(dataset):
        return MultimodalIterableDataset(
            dataset, adapters, column_map, rank=rank, world_size=world_size, on_bad_row=on_bad_row
        )
    return MultimodalDataset(dataset, adapters, column_map, indices=indices, cache=cache)


class MultimodalCollator:
    """``collate_fn`` building the model batch ``{modality: {**adapter.collate(...), "present"}}``.

    Rows lacking a modality get a zeroed copy of the first present row's tensors and
    ``present=False``; a modality no row has is omitted. With ``references`` (default) the
    examples' raw values are kept in :attr:`ModelBatch.references` (what evaluation needs; a
    training loader passes ``False`` so that workers do not ship raw values). Picklable
    (DataLoader workers).
    """

    def __init__(self, adapters: Mapping[str, ModalityAdapter], *, references: bool = True) -> None:
        adapters = adapter_dict(adapters)
        check_adapters(adapters, {name: name for name in adapters})
        self.adapters = adapter_dict(adapters)
        self.references = references

    def __call__(self, examples: Sequence[Mapping[str, Mapping[str, Tensor]]]) -> ModelBatch:
        skipped = sum(int(getattr(e, "skipped_before", 0) or 0) for e in examples)
        if skipped:  # a stream's bad rows: counted, and a marker of the count is no example
            examples = [e for e in examples if not (isinstance(e, Example) and not e)]
            if not examples:
                batch = ModelBatch()
                batch.skipped_rows = skipped
                return batch
        self._check(examples)
        batch = ModelBatch()
        batch.skipped_rows = skipped
        for modality, adapter in self.adapters.items():
            present = [modality in example for example in examples]
            if any(present):
                batch[modality] = self._collate(modality, adapter, examples, present)
        refs = [getattr(example, "references", None) for example in examples]
        if self.references and all(r is not None for r in refs):
            batch.references = refs
        return batch

    def _check(self, examples: Any) -> None:
        if not isinstance(examples, Sequence) or not examples:
            raise DataError(
                "MultimodalCollator got an empty batch; a batch needs at least one example."
            )
        for i, example in enumerate(examples):
            if not isinstance(example, Mapping) or not example:
                raise DataError(
                    f"batch example {i} must be a non-empty {{modality: tensors}} dict (the output "
                    f"of MultimodalDataset), got {example!r:.80}."
                )
            unknown = [m for m in example if m not in self.adapters]
            if unknown:
                raise DataError(
                    f"batch example {i} has modalities {unknown} without an adapter; adapters are "
                    f"{sorted(self.adapters)}."
                )

    @staticmethod
    def _collate(
        modality: str,
        adapter: ModalityAdapter,
        examples: Sequence[Mapping[str, Mapping[str, Tensor]]],
        present: list[bool],
    ) -> dict[str, Tensor]:
        """One modality's ``adapter.collate`` over the rows (placeholders where absent)."""
        size = len(examples)
        template = examples[present.index(True)][modality]
        placeholder = {k: torch.zeros_like(v) for k, v in template.items()}
        items = [example[modality] if p else placeholder for example, p in zip(examples, present)]
        collated = adapter.collate(items)
        name = type(adapter).__name__
        if not isinstance(collated, dict) or "present" in collated:
            raise DataError(
                f"{name}.collate must return a dict[str, Tensor] without the reserved key "
                f"'present', got {type(collated).__name__} with keys "
                f"{sorted(collated) if isinstance(collated, dict) else '-'}."
            )
        for key, value in collated.items():
            if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != size:
                got = (
                    f"shape {tuple(value.shape)}"
                    if isinstance(value, Tensor)
                    else f"type {type(value).__name__}"
                )
                raise DataError(
                    f"{name}.collate returned {key!r} of {got}; every value must be a tensor "
                    f"with the batch size {size} first."
                )
        collated["present"] = torch.tensor(present, dtype=torch.bool)
        return collated
