"""The boundary checks of :class:`mmvq.MultimodalVQ`: model batches, adapters' encoder
outputs and codes handed to ``decode``. Each error names the modality, what was found and the
fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmvq.adapter import AdapterInputError
from mmvq.concept.codes import MultimodalCodes
from mmvq.utils.batches import batch_size

__all__ = ["check_batch", "check_codes", "present_rows"]


def check_batch(batch: Any, modalities: Sequence[str]) -> int:
    """The batch size of a model batch ``{modality: {key: tensor}}``, after checking it."""
    if not isinstance(batch, Mapping) or not batch:
        raise AdapterInputError(
            "MultimodalVQ expects a batch dict {modality: {key: tensor}} with at least one "
            f"modality of {list(modalities)}, got {type(batch).__name__}"
            + (" (empty)" if isinstance(batch, Mapping) else "")
        )
    sizes = {}
    for m, sub in batch.items():
        if m not in modalities:
            raise AdapterInputError(
                f"batch has modality {m!r}, which this model does not know; its modalities are "
                f"{list(modalities)}"
            )
        if not isinstance(sub, Mapping) or not sub:
            raise AdapterInputError(
                f"batch[{m!r}] must be the adapter's collated dict of tensors, got "
                f"{type(sub).__name__}; build batches with mmvq.data.MultimodalCollator"
            )
        sizes[m] = batch_size(sub)
    if len(set(sizes.values())) != 1:
        raise AdapterInputError(
            f"modalities disagree on the batch size: {sizes}; rows of a batch are paired "
            "samples, so every modality needs the same number of rows (mark missing ones with "
            "'present')"
        )
    size = next(iter(sizes.values()))
    if size == 0:
        raise AdapterInputError("the batch is empty (0 rows); give at least one sample")
    return size


def present_rows(m: str, sub: Mapping[str, Tensor], size: int, device: torch.device) -> Tensor:
    """``bool [B]``: the rows of the batch that hold modality ``m`` (all, without "present")."""
    present = sub.get("present")
    if present is None:
        return torch.ones(size, dtype=torch.bool, device=device)
    present = torch.as_tensor(present, device=device).bool()
    if present.shape != (size,):
        raise AdapterInputError(
            f"batch[{m!r}]['present'] must be a bool tensor of shape [{size}], got "
            f"{tuple(present.shape)}"
        )
    return present


def check_codes(
    codes: Any,
    modalities: Sequence[str],
    lengths: Mapping[str, Mapping[str, int]],
    sizes: Mapping[str, int],
    device: torch.device,
) -> MultimodalCodes:
    """Codes handed to ``decode``, checked and moved to ``device``.

    Args:
        codes: a :class:`MultimodalCodes` or ``{modality: detail codes}``.
        modalities: the model's modalities.
        lengths: level -> modality -> codes per sample (``S`` or ``N_m``).
        sizes: level -> codebook size.
    """
    codes = MultimodalCodes.from_mapping(codes)
    if not codes.modalities:
        raise ValueError("decode needs codes of at least one modality")
    rows: set[int] = set()
    checked: dict[str, dict[str, Tensor]] = {}
    for level, by_modality in codes.levels():
        if by_modality and level not in lengths:
            raise ValueError(
                f"decode got {level} codes but this model has no {level} level (it has "
                f"{sorted(lengths)}); pass MultimodalCodes(detail=...) only"
            )
        checked[level] = {}
        for m, c in by_modality.items():
            if m not in modalities:
                raise KeyError(
                    f"unknown modality {m!r}; this model's modalities are {list(modalities)}"
                )
            c = torch.as_tensor(c, device=device)
            n, k = lengths[level][m], sizes[level]
            if c.dim() != 2 or c.shape[1] != n or c.dtype not in (torch.int32, torch.int64):
                raise ValueError(
                    f"{level} codes[{m!r}] must be an integer tensor [batch, {n}], got "
                    f"{c.dtype} {tuple(c.shape)}"
                )
            if bool(((c < -1) | (c >= k)).any()):
                raise ValueError(f"{level} codes[{m!r}] hold values outside [-1, {k - 1}]")
            rows.add(int(c.shape[0]))
            checked[level][m] = c.long()
    if len(rows) != 1:
        raise ValueError(
            f"codes of different modalities or levels disagree on the batch size: {rows}"
        )
    return MultimodalCodes(checked["concept"], checked["detail"])
