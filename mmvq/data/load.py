"""`load_data`: a :class:`~mmvq.data.config.DataConfig` to raw ``datasets`` train/eval splits.

Sources, in order: ``dataset_name`` (``datasets.load_dataset``; a folder builder whose files need
a decoder ``datasets`` lacks is read undecoded, :func:`mmvq.data.files.load_folder_undecoded`),
``train_file`` (+ ``validation_file``), or the built-in dataset ``builtin``
(:mod:`mmvq.data.builtin`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mmvq.adapter import DataColumn
from mmvq.data.builtin import get_builtin_dataset
from mmvq.data.columns import AdapterSpecs, cast_undecoded, column_specs, is_iterable
from mmvq.data.config import DataConfig, DataError, column_flag
from mmvq.data.files import load_file, load_folder_undecoded
from mmvq.data.sources import copy_rows

__all__ = ["load_data"]

logger = logging.getLogger(__name__)

_AUTO_EVAL_SPLITS = ("validation", "test")


def _load_named(config: DataConfig, specs: Mapping[str, DataColumn]) -> dict[str, Any]:
    import datasets

    undecoded_builders = {s.folder_builder for s in specs.values() if s.folder_builder}
    if config.dataset_name in undecoded_builders and not datasets.config.TORCHCODEC_AVAILABLE:
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
            "No data source: set --dataset_name, --train_file, or --builtin shapes (the built-in "
            "generated dataset)."
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
                f"--train_split={config.train_split!r} does not apply to --train_file (its split "
                "is 'train'); leave train_split at its default."
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


def _cast(ds: Any, cmap: Mapping[str, str], specs: Mapping[str, DataColumn]) -> Any:
    return copy_rows(ds, cast_undecoded(ds, cmap, specs))


def _eval_split(config: DataConfig, raw: Mapping[str, Any]) -> str:
    splits = sorted(raw)
    if config.train_split not in raw:
        raise DataError(
            f"train split {config.train_split!r} not found; the data has splits {splits}. "
            "Set --train_split to one of them."
        )
    if config.eval_split is None:
        return next((s for s in _AUTO_EVAL_SPLITS if s in raw and s != config.train_split), "")
    if config.eval_split and config.eval_split not in raw:
        raise DataError(
            f"eval split {config.eval_split!r} not found; the data has splits {splits}. Set "
            "--eval_split to one of them, or to '' for no evaluation."
        )
    return config.eval_split


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
    local files are made absolute and checked to exist.
    """
    if isinstance(modalities, str) or not modalities:
        raise DataError(f"load_data needs a non-empty list of modality names, got {modalities!r}.")
    if not isinstance(config, DataConfig):
        raise TypeError(f"load_data expects a DataConfig, got {type(config).__name__}.")
    specs = column_specs(modalities)
    cmap = config.column_map(list(specs))
    if not cmap:
        raise DataError(
            f"No requested modality {list(specs)} is mapped to a column: set "
            + ", ".join(column_flag(m) for m in specs)
            + "."
        )
    raw = _load_raw(config, cmap, specs)
    eval_split = _eval_split(config, raw)
    train = _limit(_cast(raw[config.train_split], cmap, specs), config.max_train_samples)
    if config.streaming and config.shuffle_buffer_size:
        train = train.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer_size)
    evaluation = None
    if eval_split:
        evaluation = _limit(_cast(raw[eval_split], cmap, specs), config.max_eval_samples)
    logger.info(
        "Loaded train split %r%s with column map %s",
        config.train_split,
        f" and eval split {eval_split!r}" if eval_split else " (no eval split)",
        cmap,
    )
    return train, evaluation
