"""The data layer: Hugging Face ``datasets`` in, model batches out.

A model batch is ``dict[modality, dict[str, Tensor]]``: for each modality, the adapter's
collated batch (``adapter.collate([adapter.preprocess(raw), ...])``) plus ``"present"``, a bool
``[B]`` telling which rows really have that modality. Rows lacking a modality get a placeholder
(a zeroed copy of a present row's tensors) with ``present=False``; a modality absent from every
row of a batch is left out of the batch dict.

Pieces, in the order the training loop uses them:

* :class:`DataConfig` + :func:`load_data`: raw ``datasets.Dataset`` / ``IterableDataset`` splits
  from a Hub or packaged builder (``imagefolder``, ``audiofolder``), local ``.json``/``.jsonl``/
  ``.csv``/``.parquet`` files, or the built-in generated dataset (:mod:`mmvq.synthetic`).
* :func:`validate_dataset`: fails fast, before training, on a missing or mistyped column, an
  empty dataset, a batch that can never be filled, or rows without any modality.
* :class:`MultimodalDataset` / :class:`MultimodalIterableDataset` (:func:`as_torch_dataset`
  picks one): run ``adapter.preprocess`` per row, in DataLoader workers.
* :class:`MultimodalCollator`: the ``collate_fn`` producing the batch layout above.

The core knows no modality by name: the ``image``/``text``/``audio`` fields of
:class:`DataConfig` are only defaults of the column map; plugin modalities map through
``extra_columns``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mmvq.adapter import AdapterInputError, ModalityAdapter

__all__ = [
    "DataConfig",
    "DataError",
    "DatasetSummary",
    "MultimodalCollator",
    "MultimodalDataset",
    "MultimodalIterableDataset",
    "as_torch_dataset",
    "load_data",
    "validate_dataset",
]

logger = logging.getLogger(__name__)

ModelBatch = dict[str, dict[str, Tensor]]
Example = dict[str, dict[str, Tensor]]

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_BUILTINS = ("shapes",)
_AUTO_EVAL_SPLITS = ("validation", "test")
_DEFAULT_FLAGS = {"image": "image_column", "text": "text_column", "audio": "audio_column"}


class DataError(ValueError):
    """A data set or data configuration that cannot be used (raised before training starts)."""


# ------------------------------------------------------------------------------ config
def _parse_mapping(value: dict | str | None, name: str) -> dict[str, str]:
    """``{"depth": "depth_map"}``, a JSON object string, or ``"depth=depth_map,foo=bar"``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"DataConfig.{name} is not valid JSON ({err}): {value!r}") from err
        else:
            pairs = [p for p in (part.strip() for part in text.split(",")) if p]
            if not all(p.count("=") == 1 for p in pairs):
                raise DataError(
                    f"DataConfig.{name} must be 'modality=column[,modality=column...]' or a JSON "
                    f"object, got {value!r}."
                )
            value = dict(tuple(s.strip() for s in p.split("=")) for p in pairs)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise DataError(
            f"DataConfig.{name} must map modality names to column names (non-empty strings), "
            f"got {value!r}."
        )
    return dict(value)


def _check_optional_int(name: str, value: Any, minimum: int) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < minimum
    ):
        raise DataError(f"DataConfig.{name} must be None or an int >= {minimum}, got {value!r}.")


@dataclass
class DataConfig:
    """Where the data comes from and which column feeds which modality.

    Exactly one source is used: ``dataset_name`` (``datasets.load_dataset``: e.g.
    ``"imagefolder"`` / ``"audiofolder"`` with ``data_dir``, or a Hub name when online), else
    ``train_file`` (+ ``validation_file``), else the built-in generated dataset ``builtin``.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "datasets.load_dataset name: 'imagefolder', 'audiofolder' (with "
            "--data_dir) or a Hub dataset."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Builder config name."})
    data_dir: str | None = field(default=None, metadata={"help": "data_dir for load_dataset."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Local .json/.jsonl/.csv/.parquet training file. Image/audio columns "
            "hold file paths, relative ones resolved against the file's folder."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file."})
    image_column: str | None = field(
        default="image", metadata={"help": "Column of the 'image' modality ('' to not use it)."}
    )
    text_column: str | None = field(
        default="text", metadata={"help": "Column of the 'text' modality ('' to not use it)."}
    )
    audio_column: str | None = field(
        default="audio", metadata={"help": "Column of the 'audio' modality ('' to not use it)."}
    )
    extra_columns: dict | str | None = field(
        default=None,
        metadata={
            "help": "More modality->column pairs (plugin modalities, overrides): "
            "'depth=depth_map,foo=bar' or a JSON object. A modality without a "
            "mapping reads the column of its own name."
        },
    )
    path_columns: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated extra columns of local files holding file paths to "
            "resolve (the image and audio columns always are)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Split to evaluate on; default: 'validation' or 'test' when present. "
            "'' disables evaluation."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows."})
    streaming: bool = field(default=False, metadata={"help": "Stream (IterableDataset)."})
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "Streaming only: shuffle buffer of the train split (0: off)."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for datasets.map (path resolution)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache directory."})
    builtin: str | None = field(
        default="shapes",
        metadata={
            "help": "Generated dataset used when neither dataset_name nor train_file is set."
        },
    )
    builtin_num_train: int = field(default=2048, metadata={"help": "Built-in train examples."})
    builtin_num_eval: int = field(default=256, metadata={"help": "Built-in validation examples."})
    builtin_with_audio: bool | None = field(
        default=None,
        metadata={"help": "Built-in audio column; default: when 'audio' is a requested modality."},
    )
    builtin_resolution: int = field(default=32, metadata={"help": "Built-in image size."})
    builtin_sample_rate: int = field(default=8000, metadata={"help": "Built-in audio rate (Hz)."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the built-in data and stream shuffling."}
    )

    def __post_init__(self) -> None:
        self.extra_columns = _parse_mapping(self.extra_columns, "extra_columns")
        if self.dataset_name and self.train_file:
            raise DataError(
                f"DataConfig got both dataset_name={self.dataset_name!r} and train_file="
                f"{self.train_file!r}; set only one of them."
            )
        if self.validation_file and not self.train_file:
            raise DataError(
                f"DataConfig.validation_file={self.validation_file!r} needs train_file as well."
            )
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is not None:
                ext = os.path.splitext(path)[1].lower()
                if ext not in _FILE_BUILDERS:
                    raise DataError(
                        f"DataConfig.{name}={path!r} has extension {ext!r}; use one of "
                        f"{sorted(_FILE_BUILDERS)}."
                    )
        if self.builtin is not None and self.builtin not in _BUILTINS:
            raise DataError(
                f"DataConfig.builtin must be one of {list(_BUILTINS)} or None, got "
                f"{self.builtin!r}."
            )
        _check_optional_int("max_train_samples", self.max_train_samples, 1)
        _check_optional_int("max_eval_samples", self.max_eval_samples, 1)
        _check_optional_int("preprocessing_num_workers", self.preprocessing_num_workers, 1)
        _check_optional_int("shuffle_buffer_size", self.shuffle_buffer_size, 0)
        _check_optional_int("builtin_num_train", self.builtin_num_train, 1)
        _check_optional_int("builtin_num_eval", self.builtin_num_eval, 0)
        _check_optional_int("seed", self.seed, 0)

    def column_map(self, modalities: Sequence[str] | None = None) -> dict[str, str]:
        """``{modality: column}`` for ``modalities`` (default: every configured one).

        ``image``/``text``/``audio`` use their ``*_column`` fields (``""``/``None`` drops the
        modality); ``extra_columns`` adds or overrides pairs; any other requested modality reads
        the column of its own name.
        """
        defaults = {
            "image": self.image_column,
            "text": self.text_column,
            "audio": self.audio_column,
        }
        if modalities is None:
            modalities = [m for m, c in defaults.items() if c] + list(self.extra_columns)
        if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
            raise DataError(f"modalities must be a list of names, got {modalities!r}.")
        mapping: dict[str, str] = {}
        for modality in dict.fromkeys(modalities):
            if modality in self.extra_columns:
                mapping[modality] = self.extra_columns[modality]
            elif modality in defaults:
                if defaults[modality]:
                    mapping[modality] = defaults[modality]
            else:
                mapping[modality] = modality
        return mapping

    def path_column_names(self, modalities: Sequence[str] | None = None) -> list[str]:
        """Columns of local files whose values are file paths (resolved on load)."""
        cmap = self.column_map(modalities)
        columns = [cmap[m] for m in ("image", "audio") if m in cmap]
        if self.path_columns:
            columns += [c.strip() for c in self.path_columns.split(",") if c.strip()]
        return list(dict.fromkeys(columns))


def _flag_for(modality: str) -> str:
    if modality in _DEFAULT_FLAGS:
        return f"--{_DEFAULT_FLAGS[modality]}"
    return f"--extra_columns '{modality}=<column>'"


# ------------------------------------------------------------------------------ loading
def _is_iterable(ds: Any) -> bool:
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def _column_names(ds: Any) -> list[str] | None:
    names = ds.column_names
    if names is None and _is_iterable(ds):  # streaming without known features: peek one row
        for row in ds.take(1):
            return list(row)
        return []
    return list(names) if names is not None else None


def _features(ds: Any) -> Mapping[str, Any]:
    return ds.features or {}


def _resolve_paths(ds: Any, columns: list[str], base_dir: str, source: str, num_proc: int | None):
    """Make relative paths absolute (against ``base_dir``) and check that every file exists."""
    import datasets

    features = ds.features

    def holds_paths(feature: Any) -> bool:
        if isinstance(feature, datasets.Value):
            return feature.dtype in ("string", "large_string")
        return isinstance(feature, datasets.Audio) and not feature.decode  # {"path", "bytes"}

    if features is not None:
        columns = [c for c in columns if holds_paths(features.get(c))]
    else:  # a stream of unknown features: resolve the string values of the columns it has
        available = _column_names(ds) or []
        columns = [c for c in columns if c in available]
    if not columns:
        return ds

    def check(value: str, column: str, index: int) -> str:
        path = os.path.expanduser(str(value))
        if not os.path.isabs(path) and "://" not in path:
            path = os.path.normpath(os.path.join(base_dir, path))
        if "://" not in path and not os.path.isfile(path):
            raise DataError(
                f"{source}: row {index}, column {column!r} names file {value!r}, which does not "
                f"exist (looked for {path!r}); relative paths are resolved against {base_dir!r}. "
                "Fix the path or drop the row."
            )
        return path

    def resolve(row: dict[str, Any], index: int) -> dict[str, Any]:
        out = {}
        for column in columns:
            value = row[column]
            if (
                isinstance(value, dict)
                and value.get("bytes") is None
                and isinstance(value.get("path"), str)
            ):
                out[column] = {**value, "path": check(value["path"], column, index)}
            elif isinstance(value, str):
                out[column] = check(value, column, index)
            else:
                out[column] = value
        return out

    kwargs: dict[str, Any] = {"with_indices": True}
    if _is_iterable(ds):
        kwargs.update(features=features)  # keep the features known (map would drop them)
    else:
        kwargs.update(num_proc=num_proc, desc="Resolving file paths")
    return ds.map(resolve, **kwargs)


def _load_file(path: str, config: DataConfig, modalities: Sequence[str]):
    import datasets

    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist; check --train_file/--validation_file.")
    builder = _FILE_BUILDERS[os.path.splitext(path)[1].lower()]
    ds = datasets.load_dataset(
        builder,
        data_files={"data": os.path.abspath(path)},
        split="data",
        streaming=config.streaming,
        cache_dir=config.cache_dir,
    )
    base_dir = os.path.dirname(os.path.abspath(path))
    cmap = config.column_map(modalities)
    if "audio" in cmap:  # cast before resolving: a stream cannot cast values a map produced
        ds = _cast_audio_columns(ds, [cmap["audio"]])
    return _resolve_paths(
        ds, config.path_column_names(modalities), base_dir, path, config.preprocessing_num_workers
    )


_AUDIOFOLDER_SPLIT_DIRS = {
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


def _load_audiofolder_with_soundfile(config: DataConfig):
    """``audiofolder`` without torchcodec (datasets>=4 needs it to *encode* audio).

    Same layout as datasets' builder: ``data_dir`` holds split folders (train/, validation/,
    test/...) or is one "train" split; each holds audio files and optionally
    ``metadata.jsonl``/``.csv``/``.parquet`` with a ``file_name`` column (paths relative to the
    metadata file) plus other columns. The audio column is ``audio`` as
    ``Audio(decode=False)`` (``{"path", "bytes"}``). Folder-name labels are not inferred.
    """
    import datasets
    from datasets.packaged_modules.audiofolder.audiofolder import AUDIO_EXTENSIONS

    root = config.data_dir
    if not root or not os.path.isdir(root):
        raise DataError(
            f"dataset_name='audiofolder' needs --data_dir pointing at a folder, got {root!r}."
        )
    split_dirs = {
        _AUDIOFOLDER_SPLIT_DIRS[name.lower()]: os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if name.lower() in _AUDIOFOLDER_SPLIT_DIRS and os.path.isdir(os.path.join(root, name))
    } or {"train": root}
    splits = {}
    for split, folder in split_dirs.items():
        metadata = [
            os.path.join(folder, m)
            for m in _METADATA_FILES
            if os.path.isfile(os.path.join(folder, m))
        ]
        if metadata:
            meta_path = metadata[0]
            builder = _FILE_BUILDERS[os.path.splitext(meta_path)[1].lower()]
            ds = datasets.load_dataset(
                builder, data_files={"data": meta_path}, split="data", cache_dir=config.cache_dir
            )
            if "file_name" not in ds.column_names:
                raise DataError(
                    f"{meta_path} has no 'file_name' column (columns: {ds.column_names}); "
                    "audiofolder metadata must name each audio file in 'file_name'."
                )
            if "audio" in ds.column_names:
                raise DataError(f"{meta_path} already has an 'audio' column; rename it.")
            ds = ds.rename_column("file_name", "audio")
            ds = _resolve_paths(ds, ["audio"], folder, meta_path, config.preprocessing_num_workers)
        else:
            files = sorted(
                os.path.join(d, f)
                for d, _, names in os.walk(folder)
                for f in names
                if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS
            )
            ds = datasets.Dataset.from_dict({"audio": files})
        splits[split] = ds.cast_column("audio", datasets.Audio(decode=False))
    dd = datasets.DatasetDict(splits)
    if config.streaming:
        return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in dd.items()})
    return dd


def _load_raw(config: DataConfig, modalities: Sequence[str]) -> dict[str, Any]:
    import datasets

    if config.dataset_name:
        if config.dataset_name == "audiofolder" and not datasets.config.TORCHCODEC_AVAILABLE:
            return dict(_load_audiofolder_with_soundfile(config))
        raw = datasets.load_dataset(
            config.dataset_name,
            config.dataset_config_name,
            data_dir=config.data_dir,
            streaming=config.streaming,
            cache_dir=config.cache_dir,
        )
        return dict(raw)
    if config.train_file:
        if config.train_split != "train":
            raise DataError(
                f"--train_split={config.train_split!r} does not apply to --train_file (its split "
                "is 'train'); leave train_split at its default."
            )
        raw = {"train": _load_file(config.train_file, config, modalities)}
        if config.validation_file:
            raw["validation"] = _load_file(config.validation_file, config, modalities)
        return raw
    if config.builtin is None:
        raise DataError(
            "No data source: set --dataset_name, --train_file, or --builtin shapes (the built-in "
            "generated dataset)."
        )
    from mmvq.synthetic import make_shapes_dataset

    with_audio = config.builtin_with_audio
    if with_audio is None:
        with_audio = "audio" in modalities
    dd = make_shapes_dataset(
        num_train=config.builtin_num_train,
        num_eval=config.builtin_num_eval,
        seed=config.seed,
        resolution=config.builtin_resolution,
        with_audio=with_audio,
        sample_rate=config.builtin_sample_rate,
    )
    raw = dict(dd)
    if config.builtin_num_eval == 0:
        raw.pop("validation")
    if config.streaming:  # a few shards, so that ranks and workers can split by shard
        raw = {k: v.to_iterable_dataset(num_shards=min(8, len(v))) for k, v in raw.items()}
    return raw


def _cast_audio_columns(ds: Any, columns: list[str]):
    """Audio columns -> ``Audio(decode=False)``: ``{"path", "bytes"}`` dicts decoded by adapters."""
    import datasets

    features = _features(ds)
    for column in columns:
        feature = features.get(column)
        if isinstance(feature, datasets.Audio):
            if feature.decode:
                ds = ds.cast_column(
                    column, datasets.Audio(sampling_rate=feature.sampling_rate, decode=False)
                )
        elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            ds = ds.cast_column(column, datasets.Audio(decode=False))
    return ds


def _limit(ds: Any, n: int | None):
    if n is None:
        return ds
    if _is_iterable(ds):
        return ds.take(n)
    return ds.select(range(min(n, len(ds))))


def load_data(config: DataConfig, modalities: Sequence[str]) -> tuple[Any, Any | None]:
    """Load the train and eval splits as ``datasets.Dataset`` (or ``IterableDataset`` when
    ``config.streaming``); eval is ``None`` when there is no eval split.

    Rows keep all their columns (e.g. the built-in dataset's attribute columns, used for
    scoring); :class:`MultimodalDataset` reads only the mapped ones. The ``audio`` modality's
    column (and any ``datasets.Audio`` column mapped to a modality) is cast to
    ``Audio(decode=False)``; image columns keep ``datasets.Image`` (PIL) or file paths. Paths in
    local files are made absolute and checked to exist.
    """
    if isinstance(modalities, str) or not modalities:
        raise DataError(f"load_data needs a non-empty list of modality names, got {modalities!r}.")
    if not isinstance(config, DataConfig):
        raise TypeError(f"load_data expects a DataConfig, got {type(config).__name__}.")
    cmap = config.column_map(modalities)
    if not cmap:
        raise DataError(
            f"No requested modality {list(modalities)} is mapped to a column: set "
            + ", ".join(_flag_for(m) for m in modalities)
            + "."
        )
    raw = _load_raw(config, modalities)
    splits = sorted(raw)
    if config.train_split not in raw:
        raise DataError(
            f"train split {config.train_split!r} not found; the data has splits {splits}. "
            "Set --train_split to one of them."
        )
    eval_split = config.eval_split
    if eval_split is None:
        eval_split = next(
            (s for s in _AUTO_EVAL_SPLITS if s in raw and s != config.train_split), ""
        )
    elif eval_split and eval_split not in raw:
        raise DataError(
            f"eval split {eval_split!r} not found; the data has splits {splits}. Set --eval_split "
            "to one of them, or to '' for no evaluation."
        )

    audio_columns = [c for m, c in cmap.items() if m == "audio"]
    import datasets

    def prepare(ds: Any, limit: int | None) -> Any:
        feats = _features(ds)
        cols = audio_columns + [
            c
            for c in cmap.values()
            if isinstance(feats.get(c), datasets.Audio) and c not in audio_columns
        ]
        ds = _cast_audio_columns(ds, cols)
        return _limit(ds, limit)

    train = prepare(raw[config.train_split], config.max_train_samples)
    if config.streaming and config.shuffle_buffer_size:
        train = train.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer_size)
    evaluation = prepare(raw[eval_split], config.max_eval_samples) if eval_split else None
    logger.info(
        "Loaded train split %r%s with column map %s",
        config.train_split,
        f" and eval split {eval_split!r}" if eval_split else " (no eval split)",
        cmap,
    )
    return train, evaluation


# ----------------------------------------------------------------------- torch datasets
def _check_adapters(adapters: Mapping[str, ModalityAdapter], column_map: Mapping[str, str]) -> None:
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


def _check_columns(available: list[str] | None, column_map: Mapping[str, str]) -> None:
    if available is None:
        return
    for modality, column in column_map.items():
        if column not in available:
            raise DataError(
                f"column {column!r} (modality {modality!r}) is not in the dataset; available "
                f"columns: {available}. Set {_flag_for(modality)} to one of them"
                + (
                    f", or {_flag_for(modality)} '' to not use {modality}."
                    if modality in _DEFAULT_FLAGS
                    else "."
                )
            )


def _preprocess_row(
    row: Mapping[str, Any],
    adapters: Mapping[str, ModalityAdapter],
    column_map: Mapping[str, str],
    where: str,
) -> Example:
    out: Example = {}
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
    return out


class MultimodalDataset(torch.utils.data.Dataset):
    """A map-style ``datasets.Dataset`` as per-modality preprocessed tensors.

    ``dataset[i]`` is ``{modality: adapter.preprocess(row[column])}`` over the column map,
    skipping ``None`` values. Bad values raise :class:`AdapterInputError` naming the row, the
    column, the modality and the value's type.
    """

    def __init__(
        self,
        dataset: Any,
        adapters: Mapping[str, ModalityAdapter],
        column_map: Mapping[str, str],
    ) -> None:
        import datasets

        if isinstance(dataset, datasets.IterableDataset):
            raise DataError(
                "MultimodalDataset needs a map-style datasets.Dataset; for streaming use "
                "MultimodalIterableDataset (or as_torch_dataset, which picks)."
            )
        if not isinstance(dataset, datasets.Dataset):
            raise DataError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}.")
        _check_adapters(adapters, column_map)
        _check_columns(dataset.column_names, column_map)
        self.adapters = dict(adapters)
        self.column_map = dict(column_map)
        self.dataset = dataset.select_columns(list(dict.fromkeys(self.column_map.values())))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Example:
        index = int(index)
        return _preprocess_row(self.dataset[index], self.adapters, self.column_map, f"row {index}")


class MultimodalIterableDataset(torch.utils.data.IterableDataset):
    """A streaming ``datasets.IterableDataset`` as per-modality preprocessed tensors.

    Split across ranks at construction with ``datasets.distributed.split_dataset_by_node``
    (``rank``/``world_size`` default to ``accelerate.PartialState()``), and across DataLoader
    workers when iterated (each worker takes its own share; no example is seen twice).

    Because the stream is already split per rank, do not let ``accelerator.prepare`` shard this
    DataLoader again (it would dispatch or slice batches a second time): move batches to the
    device yourself. ``split_by_node=False`` leaves rank splitting to the caller.
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
    ) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        if not isinstance(dataset, datasets.IterableDataset):
            raise DataError(
                f"MultimodalIterableDataset needs a datasets.IterableDataset (load with "
                f"streaming=True or Dataset.to_iterable_dataset()), got {type(dataset).__name__}."
            )
        _check_adapters(adapters, column_map)
        _check_columns(_column_names(dataset), column_map)
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
        self.adapters = dict(adapters)
        self.column_map = dict(column_map)
        self.rank, self.world_size = rank, world_size
        self.split_by_node = split_by_node
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
        for i, batch in enumerate(dataset.iter(batch_size=1)):
            row = {k: v[0] for k, v in batch.items()}
            where = f"example {i} of the stream (rank {self.rank}/{self.world_size}{worker})"
            yield _preprocess_row(row, self.adapters, self.column_map, where)


def as_torch_dataset(
    dataset: Any,
    adapters: Mapping[str, ModalityAdapter],
    column_map: Mapping[str, str],
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> MultimodalDataset | MultimodalIterableDataset:
    """:class:`MultimodalDataset` for a ``Dataset``, :class:`MultimodalIterableDataset` for an
    ``IterableDataset``."""
    if _is_iterable(dataset):
        return MultimodalIterableDataset(
            dataset, adapters, column_map, rank=rank, world_size=world_size
        )
    return MultimodalDataset(dataset, adapters, column_map)


# ---------------------------------------------------------------------------- collation
class MultimodalCollator:
    """``collate_fn`` building the model batch ``{modality: {**adapter.collate(...), "present"}}``.

    Rows lacking a modality get a zeroed copy of the first present row's tensors and
    ``present=False``; a modality no row has is omitted. Picklable (DataLoader workers).
    """

    def __init__(self, adapters: Mapping[str, ModalityAdapter]) -> None:
        _check_adapters(adapters, {name: name for name in adapters})
        self.adapters = dict(adapters)

    def __call__(self, examples: Sequence[Example]) -> ModelBatch:
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
        size = len(examples)
        batch: ModelBatch = {}
        for modality, adapter in self.adapters.items():
            present = [modality in example for example in examples]
            if not any(present):
                continue
            template = examples[present.index(True)][modality]
            placeholder = {k: torch.zeros_like(v) for k, v in template.items()}
            items = [
                example[modality] if p else placeholder for example, p in zip(examples, present)
            ]
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
            batch[modality] = collated
        return batch


# --------------------------------------------------------------------------- validation
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
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(num_check_rows, int) or num_check_rows < 1:
        raise DataError(f"num_check_rows must be a positive int, got {num_check_rows!r}.")
    _check_adapters(adapters, column_map)
    _check_columns(_column_names(ds), column_map)
    collator = MultimodalCollator(adapters)

    if _is_iterable(ds):
        rows = list(
            ds.select_columns(list(dict.fromkeys(column_map.values()))).take(num_check_rows)
        )
        if not rows:
            raise DataError("the dataset stream is empty: it yields no rows.")
        examples = [
            _preprocess_row(row, adapters, column_map, f"row {i}") for i, row in enumerate(rows)
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
