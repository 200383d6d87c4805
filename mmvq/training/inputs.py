"""What :func:`mmvq.train` accepts as data, checked before anything heavy runs, and the
DataLoaders built over it (plus the output directory, which must be writable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmvq.data import (
    MultimodalCollator,
    MultimodalDataset,
    MultimodalIterableDataset,
    as_torch_dataset,
    validate_dataset,
)
from mmvq.training.config import TrainConfig

__all__ = ["as_dataset", "check_output_dir", "make_loader"]


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


def as_dataset(
    data: Any,
    model: nn.Module,
    column_map: Mapping[str, str] | None,
    what: str,
    cfg: TrainConfig,
    check_batch: bool,
) -> Any:
    """A torch dataset of ``{modality: tensors}`` examples, validated; or the DataLoader given."""
    import datasets

    adapters = dict(model.adapters)
    batch_size = cfg.per_device_batch_size if check_batch else 1
    drop_last = cfg.dataloader_drop_last if check_batch else False
    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        cmap = dict(column_map) if column_map else {m: m for m in model.modalities}
        validate_dataset(data, cmap, adapters, batch_size=batch_size, drop_last=drop_last)
        return as_torch_dataset(data, adapters, cmap)
    if isinstance(data, (MultimodalDataset, MultimodalIterableDataset)):
        unknown = sorted(set(data.column_map) - set(model.modalities))
        if unknown:
            raise ValueError(
                f"{what} maps modalities {unknown} that the model does not have "
                f"({list(model.modalities)})"
            )
        validate_dataset(
            data.dataset, data.column_map, adapters, batch_size=batch_size, drop_last=drop_last
        )
        return data
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        if isinstance(data, torch.utils.data.IterableDataset):
            return data
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(
                f"{what} is empty (0 examples); give a dataset with at least one example"
            )
        if drop_last and batch_size > n:
            raise ValueError(
                f"per_device_batch_size={batch_size} is larger than {what} ({n} examples) with "
                "dataloader_drop_last=True, so there would be no batch; lower the batch size "
                "to at "
                f"most {n}, set dataloader_drop_last=False, or add data"
            )
        return data
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
