"""How the mapped columns of a dataset are read: the adapters' declarations applied.

Each modality's adapter declares a :class:`mmvq.adapter.DataColumn` (file paths to resolve, a
``datasets`` feature to keep undecoded, a folder builder); this module finds each modality's
declaration (from its adapter, or from the registered adapter of the modality's name when only
names are given) and applies it: :func:`cast_undecoded`, :func:`resolve_paths`. It also holds the
checks of a column map against adapters and a dataset's columns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmvq.adapter import DataColumn, ModalityAdapter
from mmvq.data.config import DataError
from mmvq.registry import AdapterRegistryError, UnknownAdapterError, get_adapter

__all__ = [
    "AdapterSpecs",
    "adapter_dict",
    "cast_undecoded",
    "cast_for_adapters",
    "check_adapters",
    "check_columns",
    "column_names",
    "column_specs",
    "is_iterable",
    "path_columns",
    "resolve_paths",
]

AdapterSpecs = Sequence[str] | Mapping[str, "ModalityAdapter | type[ModalityAdapter]"]
"""Modality names, or ``{modality: adapter instance or class}``."""


def is_iterable(ds: Any) -> bool:
    """Whether ``ds`` is a streaming ``datasets.IterableDataset``."""
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def column_names(ds: Any) -> list[str] | None:
    """A dataset's columns (a stream without known features is peeked at: one row)."""
    names = ds.column_names
    if names is None and is_iterable(ds):
        for row in ds.take(1):
            return list(row)
        return []
    return list(names) if names is not None else None


def column_specs(modalities: AdapterSpecs) -> dict[str, DataColumn]:
    """Each modality's :class:`DataColumn`: its adapter's declaration; for a bare modality name,
    the declaration of the adapter registered under that name (``DataColumn()`` when none is)."""
    if isinstance(modalities, Mapping):
        return {m: a.data_column for m, a in modalities.items()}
    specs = {}
    for m in modalities:
        try:
            specs[m] = get_adapter(m).data_column
        except (UnknownAdapterError, AdapterRegistryError, ValueError, TypeError):
            specs[m] = DataColumn()
    return specs


def path_columns(
    column_map: Mapping[str, str], specs: Mapping[str, DataColumn], extra: str | None
) -> list[str]:
    """Columns of local files whose values are file paths (resolved on load)."""
    columns = [c for m, c in column_map.items() if specs.get(m, DataColumn()).file_paths]
    if extra:
        columns += [c.strip() for c in extra.split(",") if c.strip()]
    return list(dict.fromkeys(columns))


def cast_undecoded(ds: Any, column_map: Mapping[str, str], specs: Mapping[str, DataColumn]) -> Any:
    """Cast the columns whose adapters read a ``datasets`` feature undecoded to it with
    ``decode=False`` (``{"path", "bytes"}`` values): a decoding feature of that type keeps its
    other settings, a column of path strings becomes that feature."""
    import dataclasses

    import datasets

    features = ds.features or {}
    for modality, column in column_map.items():
        kind = specs.get(modality, DataColumn()).undecoded
        feature = features.get(column)
        if kind is None or feature is None:
            continue
        feature_type = getattr(datasets, kind)
        if isinstance(feature, feature_type):
            if feature.decode:
                ds = ds.cast_column(column, dataclasses.replace(feature, decode=False))
        elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            ds = ds.cast_column(column, feature_type(decode=False))
    return ds


def cast_for_adapters(
    ds: Any, column_map: Mapping[str, str], adapters: Mapping[str, ModalityAdapter]
) -> Any:
    """``ds`` ready to be read row by row for ``adapters``: the columns their
    :class:`~mmvq.adapter.DataColumn` keeps undecoded are cast with ``decode=False`` before
    anything decodes a row (a decoded ``Audio()`` column needs ``torchcodec`` to decode; the
    adapter decodes ``{"path", "bytes"}`` itself, with or without it). Other columns, e.g. a
    decoded ``Image()`` (PIL images), are left as they are."""
    return cast_undecoded(ds, column_map, column_specs(adapters))


def _holds_paths(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    return getattr(feature, "decode", None) is False  # undecoded media: {"path", "bytes"}


def _checked_path(value: str, column: str, where: str, base_dir: str) -> str:
    path = os.path.expanduser(str(value))
    if not os.path.isabs(path) and "://" not in path:
        path = os.path.normpath(os.path.join(base_dir, path))
    if "://" not in path and not os.path.isfile(path):
        raise DataError(
            f"{where}, column {column!r} names file {value!r}, which does not "
            f"exist (looked for {path!r}); relative paths are resolved against {base_dir!r}. "
            "Fix the path or drop the row."
        )
    return path


def resolve_paths(
    ds: Any,
    columns: list[str],
    base_dir: str,
    source: str,
    num_proc: int | None,
    rows: Any = None,
) -> Any:
    """Make relative paths absolute (against ``base_dir``) and check that every file exists.

    ``rows`` (a :class:`~mmvq.data.sources.RowSource`) names the line of a bad row."""
    features = ds.features
    if features is not None:
        columns = [c for c in columns if _holds_paths(features.get(c))]
    else:  # a stream of unknown features: resolve the string values of the columns it has
        available = column_names(ds) or []
        columns = [c for c in columns if c in available]
    if not columns:
        return ds

    def resolve(row: dict[str, Any], index: int) -> dict[str, Any]:
        where = rows.describe(index) if rows is not None else f"{source}: row {index}"
        out = {}
        for column in columns:
            value = row[column]
            if (
                isinstance(value, dict)
                and value.get("bytes") is None
                and isinstance(value.get("path"), str)
            ):
                path = _checked_path(value["path"], column, where, base_dir)
                out[column] = {**value, "path": path}
            elif isinstance(value, str):
                out[column] = _checked_path(value, column, where, base_dir)
            else:
                out[column] = value
        return out

    kwargs: dict[str, Any] = {"with_indices": True}
    if is_iterable(ds):
        kwargs.update(features=features)  # keep the features known (map would drop them)
    else:
        kwargs.update(num_proc=num_proc, desc="Resolving file paths")
    return ds.map(resolve, **kwargs)


def adapter_dict(adapters: Any) -> dict[str, ModalityAdapter]:
    """``adapters`` as a plain dict: a mapping, or a model's ``adapters`` (an ``nn.ModuleDict``)."""
    if isinstance(adapters, Mapping):
        return dict(adapters)
    if hasattr(adapters, "items") and hasattr(adapters, "keys"):
        return dict(adapters.items())
    return adapters


def check_adapters(adapters: Mapping[str, ModalityAdapter], column_map: Mapping[str, str]) -> None:
    """``adapters`` must be ``{modality: ModalityAdapter}`` (or a model's ``adapters``) covering
    every mapped modality."""
    adapters = adapter_dict(adapters)
    if not isinstance(adapters, Mapping) or not adapters:
        raise DataError(
            f"adapters must be a non-empty {{modality: ModalityAdapter}} dict, got {adapters!r}."
        )
    for name, adapter in adapters.items():
        if not isinstance(adapter, ModalityAdapter):
            raise DataError(
                f"adapters[{name!r}] must be a ModalityAdapter, got {type(adapter).__name__}."
            )
    if not isinstance(column_map, Mapping) or not column_map:
        raise DataError(
            f"column_map must be a non-empty {{modality: column}} dict, got {column_map!r}; "
            "DataConfig.column_map(modalities) builds it."
        )
    unknown = [m for m in column_map if m not in adapters]
    if unknown:
        raise DataError(
            f"column_map maps modalities {unknown} that have no adapter; adapters are "
            f"{sorted(adapters)}. Remove them from the map or add their adapters."
        )


def python_column_option(modality: str) -> str:
    """How the Python API maps ``modality`` to a column (the default of :func:`check_columns`)."""
    return f"column_map[{modality!r}]"


def check_columns(
    available: list[str] | None,
    column_map: Mapping[str, str],
    option: Callable[[str], str] = python_column_option,
) -> None:
    """Every mapped column must be among ``available`` (``None``: unknown, not checked).

    ``option(modality)`` names the setting that maps the modality in the error (the Python
    argument by default; :func:`mmvq.data.load_data` names ``DataConfig.columns`` and the flag).
    """
    if available is None:
        return
    for modality, column in column_map.items():
        if column not in available:
            setting = option(modality)
            raise DataError(
                f"column {column!r} (modality {modality!r}) is not in the dataset; available "
                f"columns: {available}. Set {setting} to one of them, or leave {modality!r} "
                "unmapped to not use it."
            )
