"""What :func:`mmvq.train` accepts as data, checked before anything heavy runs, and the
DataLoaders built over it (plus the output directory, which must be writable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from mmvq.data import (
    MultimodalCollator,
    MultimodalDataset,
    MultimodalIterableDataset,
    as_torch_dataset,
    good_rows,
    validate_dataset,
)
from mmvq.training.config import TrainConfig

__all__ = ["CheckedData", "as_dataset", "check_output_dir", "make_loader"]


def check_output_dir(path: str) -> Path:
    """Create ``path`` and make sure a file can be written in it, before anything else runs."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, NotADirectoryError) as err:
        blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a directory" if blocker is not None else str(err)
        raise ValueError(
            f"TrainConfig.output_dir={path!r} is not a writable directory ({reason}); choose "
            "another output_dir (it is created if missing)"
        ) from err
    return out


class CheckedData(NamedTuple):
    """What :func:`as_dataset` returns: the data to load from, and the rows left out
    (``on_bad_row="skip"``) by the check of a map-style dataset."""

    data: Any
    skipped_rows: int = 0


def _checked(
    ds: Any, cmap: Mapping[str, str], model: nn.Module, cfg: TrainConfig, check_batch: bool
) -> CheckedData:
    """A ``datasets`` split checked (every row of a map-style one) and wrapped."""
    adapters = dict(model.adapters)
    summary = validate_dataset(
        ds,
        cmap,
        adapters,
        batch_size=cfg.per_device_batch_size if check_batch else 1,
        drop_last=cfg.dataloader_drop_last if check_batch else False,
        on_bad_row=cfg.on_bad_row,
        num_workers=cfg.dataloader_num_workers,
    )
    keep = None if summary.num_rows is None else good_rows(summary, summary.num_rows)
    wrapped = as_torch_dataset(
        ds, adapters, cmap, on_bad_row=cfg.on_bad_row, indices=keep, cache=cfg.cache_examples
    )
    return CheckedData(wrapped, 0 if summary.num_rows is None else len(summary.bad_rows))


def as_dataset(
    data: Any,
    model: nn.Module,
    column_map: Mapping[str, str] | None,
    what: str,
    cfg: TrainConfig,
    check_batch: bool,
) -> CheckedData:
    """A torch dataset of ``{modality: tensors}`` examples, validated (every row of a map-style
    ``datasets`` split, as ``cfg.on_bad_row`` says); or the DataLoader given."""
    import datasets

    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        cmap = dict(column_map) if column_map else {m: m for m in model.modalities}
        return _checked(data, cmap, model, cfg, check_batch)
    if isinstance(data, (MultimodalDataset, MultimodalIterableDataset)):
        unknown = sorted(set(data.column_map) - set(model.modalities))
        if unknown:
            raise ValueError(
                f"{what} maps modalities {unknown} that the model does not have "
                f"({list(model.modalities)})"
            )
        return _checked(data.dataset, data.column_map, model, cfg, check_batch)
    if isinstance(data, torch.utils.data.DataLoader):
        return CheckedData(data)
    if isinstance(data, torch.utils.data.Dataset):
        if isinstance(data, torch.utils.data.IterableDataset):
            return CheckedData(data)
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(
                f"{what} is empty (0 examples); give a dataset with at least one example"
            )
        drop_last = cfg.dataloader_drop_last if check_batch else False
        if drop_last and cfg.per_device_batch_size > n:
            raise ValueError(
                f"per_device_batch_size={cfg.per_device_batch_size} is larger than {what} ({n} "
                "examples) with dataloader_drop_last=True, so there would be no batch; lower the "
                f"batch size to at most {n}, set dataloader_drop_last=False, or add data"
            )
        return CheckedData(data)
    raise TypeError(
        f"{what} must be a datasets.Dataset/IterableDataset, a mmvq.data.MultimodalDataset, a "
        "torch "
        f"Dataset of {{modality: tensors}} examples or a DataLoader; got {type(data).__name__}"
    )


def make_loader(
    dataset: Any, model: nn.Module, cfg: TrainConfig, *, train: bool
) -> torch.utils.data.DataLoader:
    """The DataLoader of a training (shuffled, ``drop_last``) or evaluation split; a DataLoader
    given by the caller is used as it is."""
    if isinstance(dataset, torch.utils.data.DataLoader):
        return dataset
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.per_device_batch_size if train else cfg.eval_batch_size,
        shuffle=train and cfg.shuffle and not iterable,
        drop_last=train and cfg.dataloader_drop_last,
        # raw values ride along only where evaluation needs them (not shipped by training workers)
        collate_fn=MultimodalCollator(dict(model.adapters), references=not train),
        num_workers=cfg.dataloader_num_workers,
        # The loader's own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run would see different modality dropout than an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
