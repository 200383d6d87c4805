"""`DataConfig`: where the data comes from and which column feeds which modality.

The core knows no modality by name: every modality reads the column of its own name unless
``columns`` maps it elsewhere (``"text=caption"``) or drops it (``"text="``); how a column's values
are read (file paths, undecoded media features) is what the modality's adapter declares
(:class:`mmvq.adapter.DataColumn`, applied by :mod:`mmvq.data.columns`). The recipes and the CLI
add a ``--<name>_column`` flag for every registered adapter name, folded into ``columns``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmvq.data.builtin import builtin_dataset_names
from mmvq.registry import list_adapters
from mmvq.utils.checks import check_int
from mmvq.utils.configs import parse_mapping

__all__ = ["FILE_BUILDERS", "DataConfig", "DataError", "column_flag", "config_column_option"]

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
"""Extension of a local data file -> the packaged ``datasets`` builder that reads it."""


class DataError(ValueError):
    """A data set or data configuration that cannot be used (raised before training starts)."""


def column_flag(modality: str) -> str:
    """The command-line option that sets ``modality``'s column (for error messages)."""
    if modality in list_adapters():
        return f"--{modality}_column"
    return f"--columns '{modality}=<column>'"


def config_column_option(modality: str) -> str:
    """How :class:`DataConfig` maps ``modality`` to a column, in Python and on the command line
    (for error messages of the data layer, which both reach)."""
    return f"DataConfig.columns[{modality!r}] ({column_flag(modality)})"


def _check_columns_option(columns: dict[str, Any]) -> dict[str, str | None]:
    if not all(isinstance(k, str) and k for k in columns) or not all(
        v is None or isinstance(v, str) for v in columns.values()
    ):
        raise DataError(
            "DataConfig.columns must map modality names to column names (strings; '' to not use "
            f"a modality), got {columns!r}."
        )
    return dict(columns)


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
            "help": "Local .json/.jsonl/.csv/.parquet training file. Columns of file-based "
            "modalities hold file paths, relative ones resolved against the file's folder."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file."})
    columns: dict | str | None = field(
        default=None,
        metadata={
            "help": "Modality->column pairs: 'depth=depth_map,sketch=drawing' or a JSON object. A "
            "modality without one reads the column of its own name; '' does not use it. Each "
            "registered adapter name also has its own flag: --<name>_column COLUMN."
        },
    )
    path_columns: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated extra columns of local files holding file paths to "
            "resolve (the columns of modalities whose adapters read files always are)."
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
    builtin_options: dict | str | None = field(
        default=None,
        metadata={
            "help": "Options of the built-in dataset: 'resolution=64' or a JSON object. Each also "
            "has its own flag, --builtin_<option>."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the built-in data and stream shuffling."}
    )

    def __post_init__(self) -> None:
        self.columns = _check_columns_option(
            parse_mapping(
                self.columns,
                "DataConfig.columns",
                example="depth=depth_map,sketch=drawing",
                json_values=False,
                error=DataError,
            )
        )
        self.builtin_options = parse_mapping(
            self.builtin_options,
            "DataConfig.builtin_options",
            example="resolution=64",
            error=DataError,
        )
        self._check_sources()
        for name, minimum in (
            ("max_train_samples", 1),
            ("max_eval_samples", 1),
            ("preprocessing_num_workers", 1),
            ("shuffle_buffer_size", 0),
            ("builtin_num_train", 1),
            ("builtin_num_eval", 0),
            ("seed", 0),
        ):
            check_int(
                f"DataConfig.{name}",
                getattr(self, name),
                minimum=minimum,
                optional=True,
                fix=".",
                error=DataError,
            )

    def _check_sources(self) -> None:
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
                if ext not in FILE_BUILDERS:
                    raise DataError(
                        f"DataConfig.{name}={path!r} has extension {ext!r}; use one of "
                        f"{sorted(FILE_BUILDERS)}."
                    )
        if self.builtin is not None and self.builtin not in builtin_dataset_names():
            raise DataError(
                f"DataConfig.builtin must be one of {builtin_dataset_names()} or None, got "
                f"{self.builtin!r}."
            )

    @property
    def uses_builtin(self) -> bool:
        """Whether the data is the built-in generated dataset (no dataset_name, no train_file)."""
        return self.builtin is not None and not self.dataset_name and not self.train_file

    def column_map(self, modalities: Sequence[str] | None = None) -> dict[str, str]:
        """``{modality: column}`` for ``modalities`` (default: the modalities ``columns`` maps).

        A modality reads the column ``columns`` gives it, else the column of its own name; a
        modality mapped to ``""`` (or ``None``) is left out.
        """
        if modalities is None:
            modalities = list(self.columns)
        if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
            raise DataError(f"modalities must be a list of names, got {modalities!r}.")
        mapping: dict[str, str] = {}
        for modality in dict.fromkeys(modalities):
            column = self.columns.get(modality, modality)
            if column:
                mapping[modality] = column
        return mapping
