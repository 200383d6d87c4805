"""Training logs: windowed statistics reduced across processes (for trackers and the progress
bar) and the run's JSON-lines log.

Every process adds scalars (floats or 0-d tensors, no host sync) to a :class:`MetricWindow`; at a
log step every process calls :meth:`MetricWindow.reduce`, which agrees on the union of the names
(a rank whose batches lacked a modality has no ``loss/rec/<m>``) and all-reduces sums and counts,
so each name's value is its mean over every process's contributions in the window. Non-finite
values are left out of the means (and counted by the loop as skipped steps).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["MetricWindow", "append_record", "balance_summary"]


class MetricWindow:
    """Sums and counts of named scalars since the last :meth:`reduce`.

    :meth:`add_all` stacks the tensors it gets into one vector per device, so a group of
    statistics costs a handful of small ops per step, whatever its size; the vectors are split
    back into names only at :meth:`reduce`.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor | float] = {}
        self._counts: dict[str, Tensor | float] = {}
        # names (a tuple) -> [sums, counts] vectors accumulated by add_all
        self._groups: dict[tuple[str, ...], list[Tensor]] = {}

    def add(self, name: str, value: float | Tensor) -> None:
        """Add one observation of ``name`` (non-finite values are ignored)."""
        if isinstance(value, Tensor):
            value = value.detach().float().reshape(())
            finite = torch.isfinite(value)
            value = torch.where(finite, value, torch.zeros_like(value))
            count: Tensor | float = finite.float()
        else:
            value = float(value)
            if not math.isfinite(value):
                return
            count = 1.0
        self._sums[name] = self._sums.get(name, 0.0) + value
        self._counts[name] = self._counts.get(name, 0.0) + count

    def add_all(self, values: Mapping[str, float | Tensor], prefix: str = "") -> None:
        by_device: dict[torch.device, tuple[list[str], list[Tensor]]] = {}
        for name, value in values.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                names, tensors = by_device.setdefault(value.device, ([], []))
                names.append(prefix + name)
                tensors.append(value.detach().reshape(()).float())
            else:
                self.add(prefix + name, value)
        for names, tensors in by_device.values():
            if len(tensors) == 1:
                self.add(names[0], tensors[0])
                continue
            vec = torch.stack(tensors)
            finite = torch.isfinite(vec)
            vec = vec.masked_fill(~finite, 0.0)
            key = tuple(names)
            group = self._groups.get(key)
            if group is None:
                self._groups[key] = [vec, finite.float()]
            else:
                group[0] = group[0] + vec
                group[1] = group[1] + finite

    def _merge_groups(self) -> None:
        for names, (sums, counts) in self._groups.items():
            for name, s, c in zip(names, sums.unbind(), counts.unbind()):
                self._sums[name] = self._sums.get(name, 0.0) + s
                self._counts[name] = self._counts.get(name, 0.0) + c
        self._groups.clear()

    def reduce(self, accelerator: Any | None = None) -> dict[str, float]:
        """Means over the window and over all processes; resets the window.

        Every process must call it at the same step (it makes collectives when distributed).
        """
        self._merge_groups()
        names = sorted(self._sums)
        distributed = accelerator is not None and accelerator.num_processes > 1
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        if distributed:
            from accelerate.utils import gather_object

            names = sorted(set().union(*gather_object([names])))
        if not names:
            return {}
        sums = torch.stack(
            [
                torch.as_tensor(self._sums.get(n, 0.0), dtype=torch.float32, device=device)
                for n in names
            ]
        )
        counts = torch.stack(
            [
                torch.as_tensor(self._counts.get(n, 0.0), dtype=torch.float32, device=device)
                for n in names
            ]
        )
        packed = torch.stack([sums, counts])
        if distributed:
            packed = accelerator.reduce(packed, reduction="sum")
        packed = packed.cpu()
        self._sums.clear()
        self._counts.clear()
        return {
            n: float(packed[0, i] / packed[1, i]) for i, n in enumerate(names) if packed[1, i] > 0
        }


def append_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (the run's ``train_log.jsonl``)."""
    with Path(path).open("a") as f:
        f.write(json.dumps(record) + "\n")


def balance_summary(train_log: str | os.PathLike, balancer: Any) -> dict[str, Any]:
    """What ``metrics.json`` (and the model card) say about the modality balancer: its name, its
    final weights (``balance_weight_per_modality``) and each modality's share of the weighted
    gradient on the shared layer averaged over the run's logged steps
    (``balance_grad_share_per_modality``, from ``balance/grad_share/<m>`` in ``train_log``)."""
    shares: dict[str, list[float]] = {}
    path = Path(train_log)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in lines:
        for key, value in json.loads(line).items():
            if key.startswith("balance/grad_share/") and isinstance(value, (int, float)):
                shares.setdefault(key.rsplit("/", 1)[-1], []).append(float(value))
    summary: dict[str, Any] = {
        "balancer": balancer.name,
        "balance_weight_per_modality": dict(balancer.weights()),
    }
    if shares:
        summary["balance_grad_share_per_modality"] = {m: sum(v) / len(v) for m, v in shares.items()}
    return summary
