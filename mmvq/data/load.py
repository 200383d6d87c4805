"""`load_data`: a :class:`~mmvq.data.config.DataConfig` to raw ``datasets`` train/eval splits.

Sources, in order: ``dataset_name`` (``datasets.load_dataset``: a Hub dataset, a packaged builder
such as ``imagefolder``/``audiofolder`` with ``data_dir``, or a local folder, whose builder
``datasets`` infers, or a folder written by ``save_to_disk``; a folder builder whose files need a
decoder ``datasets`` lacks is read undecoded, :func:`mmvq.data.files.load_folder_undecoded`),
``train_file`` (+ ``validation_file``), or the built-in dataset ``builtin``
(:mod:`mmvq.data.builtin`). Error messages name the :class:`DataConfig` field and, in brackets,
the recipes' flag.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mmvq.adapter import DataColumn
from mmvq.data.builtin import get_builtin_dataset
from mmvq.data.columns import (
    AdapterSpecs,
    cast_undecoded,
    check_columns,
    column_names,
    column_specs,
    is_iterable,
)
from mmvq.data.config import DataConfig, DataError, config_column_option
from mmvq.data.files import load_file, load_folder_undecoded
from mmvq.data.sources import copy_rows
from mmvq.utils.logging import get_logger

__all__ = ["load_data", "load_splits"]

logger = get_logger(__name__)

_AUTO_EVAL_SPLITS = ("validation", "test")


def _is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset(Dict).save_to_disk``."""
    return any(
        os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
    )


def _load_named(config: DataConfig, specs: Mapping[str, DataColumn]) -> dict[str, Any]:
    import datasets

    name = str(config.dataset_name)
    if os.path.isdir(name) and _is_saved_dataset(name):
        saved = datasets.load_from_disk(name)
        raw = dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
        if config.streaming:
            raw = {k: v.to_iterable_dataset() for k, v in raw.items()}
        return raw
    builder = name
    if os.path.isdir(name) and not config.data_dir:
        # a local folder: the builder datasets infers from its files (imagefolder, audiofolder,
        # json...); building it reads no file
        builder = datasets.load_dataset_builder(name, config.dataset_config_name).name
        config = dataclasses.replace(config, dataset_name=builder, data_dir=name)
    undecoded_builders = {s.folder_builder for s in specs.values() if s.folder_builder}
    if builder in undecoded_builders and not datasets.config.TORCHCODEC_AVAILABLE:
        return load_folder_undecoded(config)  # datasets>=4 needs torchcodec to encode such files
    raw = datasets.load_dataset(
        config.dataset_name,
        config.dataset_config_name,
        data_dir=config.data_dir,
        streaming=config.streaming,
        cache_dir=config.cache_dir,
    )
    return dict(raw)


def _load_builtin(config: DataConfig, modalities: Sequence[str]) -> dict[str, Any]:
    if config.builtin is None:
        raise DataError(
            "No data source: set DataConfig.dataset_name, train_file or builtin='shapes' (the "
            "built-in generated dataset); flags --dataset_name, --train_file, --builtin."
        )
    dataset = get_builtin_dataset(config.builtin)
    dd = dataset.build(
        num_train=config.builtin_num_train,
        num_eval=config.builtin_num_eval,
        seed=config.seed,
        modalities=list(modalities),
        options=dataset.options(config.builtin_options),
    )
    raw = dict(dd)
    if config.builtin_num_eval == 0:
        raw.pop("validation")
    if config.streaming:  # a few shards, so that ranks and workers can split by shard
        raw = {k: v.to_iterable_dataset(num_shards=min(8, len(v))) for k, v in raw.items()}
    return raw


def _load_raw(
    config: DataConfig, column_map: Mapping[str, str], specs: Mapping[str, DataColumn]
) -> dict[str, Any]:
    if config.dataset_name:
        return _load_named(config, specs)
    if config.train_file:
        if config.train_split != "train":
            raise DataError(
                f"DataConfig.train_split={config.train_split!r} (--train_split) does not apply to "
                "train_file (its split is 'train'); leave train_split at its default."
            )
        raw = {"train": load_file(config.train_file, config, column_map, specs)}
        if config.validation_file:
            raw["validation"] = load_file(config.validation_file, config, column_map, specs)
        return raw
    return _load_builtin(config, list(specs))


def _limit(ds: Any, n: int | None) -> Any:
    if n is None:
        return ds
    if is_iterable(ds):
        return ds.take(n)
    return copy_rows(ds, ds.select(range(min(n, len(ds)))))


def _eval_split(config: DataConfig, raw: Mapping[str, Any]) -> str:
    splits = sorted(raw)
    if config.train_split not in raw:
        raise DataError(
            f"train split {config.train_split!r} not found; the data has splits {splits}. "
            "Set DataConfig.train_split (--train_split) to one of them."
        )
    if config.eval_split is None:
        return next((s for s in _AUTO_EVAL_SPLITS if s in raw and s != config.train_split), "")
    if config.eval_split and config.eval_split not in raw:
        raise DataError(
            f"eval split {config.eval_split!r} not found; the data has splits {splits}. Set "
            "DataConfig.eval_split (--eval_split) to one of them, or to '' for no evaluation."
        )
    return config.eval_split


def _check_request(config: Any, modalities: AdapterSpecs) -> None:
    if isinstance(modalities, str) or not modalities:
        raise DataError(f"load_data needs a non-empty list of modality names, got {modalities!r}.")
    if not isinstance(config, DataConfig):
        raise TypeError(f"load_data expects a DataConfig, got {type(config).__name__}.")


def load_splits(config: DataConfig, modalities: AdapterSpecs) -> dict[str, Any]:
    """Every split of ``config``'s source, keyed by split name, with the columns of
    ``modalities`` read as their adapters declare (undecoded media cast with ``decode=False``,
    paths of local files resolved). :func:`load_data` picks the train and eval splits from it;
    ``mmvq eval`` picks the one it evaluates."""
    _check_request(config, modalities)
    specs = column_specs(modalities)
    cmap = config.column_map(list(specs))
    if not cmap:
        raise DataError(
            f"No requested modality {list(specs)} is mapped to a column: set "
            + ", ".join(config_column_option(m) for m in specs)
            + "."
        )
    raw = _load_raw(config, cmap, specs)
    # copy_rows keeps each row's file and line (for errors) through the cast
    return {
        name: copy_rows(split, cast_undecoded(split, cmap, specs)) for name, split in raw.items()
    }


def _rows(ds: Any) -> str:
    return "a stream" if is_iterable(ds) else f"{len(ds)} rows"


def load_data(config: DataConfig, modalities: AdapterSpecs) -> tuple[Any, Any | None]:
    """Load the train and eval splits as ``datasets.Dataset`` (or ``IterableDataset`` when
    ``config.streaming``); eval is ``None`` when there is no eval split.

    Args:
        config: the data options.
        modalities: the modalities to load, as names, or as ``{modality: adapter}`` (instances
            or classes). Each modality's column is read as its adapter declares
            (:class:`~mmvq.adapter.DataColumn`); given names, the adapter registered under the
            modality's name declares it.

    Rows keep all their columns (e.g. the built-in dataset's attribute columns, used for
    scoring); :class:`~mmvq.data.pipeline.MultimodalDataset` reads only the mapped ones. Columns
    declared undecoded are cast to their ``datasets`` feature with ``decode=False``; paths in
    local files are made absolute and checked to exist; every mapped column must exist (the
    error names ``DataConfig.columns`` and the flag).
    """
    _check_request(config, modalities)
    raw = load_splits(config, modalities)
    cmap = config.column_map(list(column_specs(modalities)))
    eval_split = _eval_split(config, raw)
    train = _limit(raw[config.train_split], config.max_train_samples)
    check_columns(column_names(train), cmap, config_column_option)
    if config.streaming and config.shuffle_buffer_size:
        train = train.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer_size)
    evaluation = None
    if eval_split:
        evaluation = _limit(raw[eval_split], config.max_eval_samples)
        check_columns(column_names(evaluation), cmap, config_column_option)
    logger.info(
        "Loaded train split %r (%s)%s; column map %s",
        config.train_split,
        _rows(train),
        f", eval split {eval_split!r} ({_rows(evaluation)})" if eval_split else ", no eval split",
        cmap,
    )
    return train, evaluation
