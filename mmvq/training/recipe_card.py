"""What a recipe's model card says about its training data and license.

:func:`training_data_record` describes the data a recipe trained on (the source, Hub dataset ids
for the card's ``datasets`` metadata, splits, sizes, the column map): the card's "Training data"
section and its ``model-index`` dataset. :func:`model_license` picks the card's license: the
recipe's ``--license``, else ``apache-2.0`` for the built-in generated data (made by mmvq), else
the dataset's own declared license when it is a license identifier, else ``unknown``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from mmvq.data import DataConfig
from mmvq.data.columns import is_iterable

__all__ = ["BUILTIN_DATA_LICENSE", "model_license", "training_data_record"]

BUILTIN_DATA_LICENSE = "apache-2.0"
"""License of data mmvq generates itself (mmvq's own)."""
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")


def _hub_dataset_id(name: str | None) -> str | None:
    """``name`` when it names a Hub dataset (not a local path, not a packaged builder such as
    ``imagefolder`` or ``json``)."""
    if not name or os.path.exists(name):
        return None
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    from huggingface_hub.utils import validate_repo_id

    if name in _PACKAGED_DATASETS_MODULES:
        return None
    try:
        validate_repo_id(name)
    except ValueError:
        return None
    return name


def _size(ds: Any) -> Any:
    return "a stream" if is_iterable(ds) else len(ds)


def _split(ds: Any, default: str) -> str:
    """The split ``ds`` came from when ``datasets`` recorded a usual one, else ``default``."""
    split = str(getattr(ds, "split", None) or "")
    return split if split in ("train", "validation", "test", default) else default


def _source(data: DataConfig) -> tuple[str, str]:
    """``(dataset, pretty name)`` of the data source."""
    if data.dataset_name:
        where = f" in {data.data_dir}" if data.data_dir else ""
        return str(data.dataset_name), f"{data.dataset_name}{where}"
    if data.train_file:
        files = data.train_file + (f" + {data.validation_file}" if data.validation_file else "")
        return os.path.basename(data.train_file), files
    return str(data.builtin), f"mmvq built-in '{data.builtin}' data (generated, seed {data.seed})"


def training_data_record(
    data: DataConfig, modalities: Sequence[str], train_ds: Any, eval_ds: Any | None
) -> dict[str, Any]:
    """The card's training-data record of a recipe run (see the module docstring)."""
    dataset, pretty = _source(data)
    record: dict[str, Any] = {"dataset": dataset, "dataset_name": pretty}
    hub_id = _hub_dataset_id(data.dataset_name)
    if hub_id:
        record["datasets"] = [hub_id]
    record["train_split"] = data.train_split
    record["train_examples"] = _size(train_ds)
    if eval_ds is not None:
        record["eval_split"] = _split(eval_ds, data.eval_split or "validation")
        record["eval_examples"] = _size(eval_ds)
    record["columns"] = data.column_map(list(modalities))
    return record


def model_license(chosen: str | None, data: DataConfig, train_ds: Any) -> str:
    """The card's license (see the module docstring)."""
    if chosen:
        return chosen
    if data.uses_builtin:
        return BUILTIN_DATA_LICENSE
    info = getattr(train_ds, "info", None)
    declared = str(getattr(info, "license", "") or "").strip().lower()
    return declared if _LICENSE_ID.match(declared) else "unknown"
