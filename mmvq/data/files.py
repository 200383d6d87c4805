"""Local data: ``.json``/``.jsonl``/``.csv``/``.parquet`` files, and folders of media files read
without a decoder.

* :func:`load_file`: one file as a split; columns of file-reading modalities (their adapters'
  :class:`~mmvq.adapter.DataColumn` says so) have their paths resolved against the file's folder
  and checked to exist.
* :func:`load_folder_undecoded`: what a packaged folder builder (``audiofolder``...) reads, for
  when ``datasets`` has no decoder for those files: the same split folders, files and
  ``metadata.*`` columns, the media column kept as ``{"path", "bytes"}``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from mmvq.adapter import DataColumn
from mmvq.data.columns import cast_undecoded, path_columns, resolve_paths
from mmvq.data.config import FILE_BUILDERS, DataConfig, DataError
from mmvq.data.sources import RowSource, is_json_file, register_rows, scan_json_file

__all__ = ["load_file", "load_folder_undecoded"]


def load_file(
    path: str, config: DataConfig, column_map: Mapping[str, str], specs: Mapping[str, DataColumn]
) -> Any:
    """One local data file as a ``Dataset`` (or ``IterableDataset`` when streaming).

    A JSON(-lines) file is checked line by line first (a line that is not a JSON object, or no
    row at all, fails naming the file and line) and the line of every row is remembered for
    later messages (:mod:`mmvq.data.sources`); what ``datasets`` cannot read fails as a
    :class:`DataError` naming the file.
    """
    import datasets

    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist; check --train_file/--validation_file.")
    source = RowSource(path)
    if is_json_file(path) and not config.streaming:
        source = scan_json_file(path)
    builder = FILE_BUILDERS[os.path.splitext(path)[1].lower()]
    try:
        ds = datasets.load_dataset(
            builder,
            data_files={"data": os.path.abspath(path)},
            split="data",
            streaming=config.streaming,
            cache_dir=config.cache_dir,
        )
    except Exception as exc:  # noqa: BLE001 - pyarrow/pandas/datasets errors, named once here
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause):
            reason += f" ({' '.join(str(cause).split())[:200]})"
        raise DataError(
            f"data file {path!r} could not be read as {builder}: {reason}; fix the file (an empty "
            "file, a broken row, mixed column types?) or pass another one."
        ) from exc
    if not config.streaming and len(ds) == 0:
        raise DataError(f"data file {path!r} holds no rows; give a file with at least one row.")
    base_dir = os.path.dirname(os.path.abspath(path))
    ds = cast_undecoded(ds, column_map, specs)  # before resolving: a stream cannot cast later
    columns = path_columns(column_map, specs, config.path_columns)
    ds = resolve_paths(ds, columns, base_dir, path, config.preprocessing_num_workers, source)
    register_rows(ds, source)
    return ds


_SPLIT_DIRS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _folder_builder(name: str) -> type:
    """The packaged ``datasets`` folder builder class called ``name`` (``audiofolder``...)."""
    from datasets.packaged_modules.folder_based_builder.folder_based_builder import (
        FolderBasedBuilder,
    )

    module = importlib.import_module(f"datasets.packaged_modules.{name}.{name}")
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, FolderBasedBuilder)
            and obj is not FolderBasedBuilder
        ):
            return obj
    raise DataError(f"datasets has no folder builder {name!r}")  # pragma: no cover


def _folder_split(folder: str, builder: type, config: DataConfig) -> Any:
    """One split folder: its ``metadata.*`` file (paths in ``file_name``), or every file with
    one of the builder's extensions."""
    import datasets

    column = builder.BASE_COLUMN_NAME
    metadata = [
        os.path.join(folder, m) for m in _METADATA_FILES if os.path.isfile(os.path.join(folder, m))
    ]
    if not metadata:
        files = sorted(
            os.path.join(d, f)
            for d, _, names in os.walk(folder)
            for f in names
            if os.path.splitext(f)[1].lower() in builder.EXTENSIONS
        )
        return datasets.Dataset.from_dict({column: files})
    meta_path = metadata[0]
    file_builder = FILE_BUILDERS[os.path.splitext(meta_path)[1].lower()]
    ds = datasets.load_dataset(
        file_builder, data_files={"data": meta_path}, split="data", cache_dir=config.cache_dir
    )
    if "file_name" not in ds.column_names:
        raise DataError(
            f"{meta_path} has no 'file_name' column (columns: {ds.column_names}); "
            f"{config.dataset_name} metadata must name each file in 'file_name'."
        )
    if column in ds.column_names:
        raise DataError(f"{meta_path} already has a column {column!r}; rename it.")
    ds = ds.rename_column("file_name", column)
    return resolve_paths(ds, [column], folder, meta_path, config.preprocessing_num_workers)


def load_folder_undecoded(config: DataConfig) -> dict[str, Any]:
    """``config.dataset_name``'s folder (``data_dir``) read as its builder would, undecoded.

    ``data_dir`` holds split folders (train/, validation/, test/...) or is one "train" split;
    each holds the files and optionally ``metadata.jsonl``/``.csv``/``.parquet`` with a
    ``file_name`` column (paths relative to the metadata file) plus other columns. The media
    column (the builder's, e.g. ``audio``) is the builder's feature with ``decode=False``.
    Folder-name labels are not inferred.
    """
    import datasets

    root = config.data_dir
    if not root or not os.path.isdir(root):
        raise DataError(
            f"dataset_name={config.dataset_name!r} needs --data_dir pointing at a folder, got "
            f"{root!r}."
        )
    builder = _folder_builder(str(config.dataset_name))
    split_dirs = {
        _SPLIT_DIRS[name.lower()]: os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if name.lower() in _SPLIT_DIRS and os.path.isdir(os.path.join(root, name))
    } or {"train": root}
    feature = builder.BASE_FEATURE(decode=False)
    splits = {
        split: _folder_split(folder, builder, config).cast_column(builder.BASE_COLUMN_NAME, feature)
        for split, folder in split_dirs.items()
    }
    dd = datasets.DatasetDict(splits)
    if config.streaming:
        return dict(
            datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in dd.items()})
        )
    return dict(dd)
