"""The pieces of one optimizer step that the loop (:mod:`mmvq.training.loop`) puts together:
the generator's loss and what it was made of, the snapshot that undoes a non-finite step, the
finiteness vote across processes, the gradients of parameters outside DDP, and the per-step
history records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from mmvq.training.balance import BalanceResult

__all__ = [
    "GeneratorLoss",
    "History",
    "Snapshot",
    "all_finite",
    "float_tensors",
    "reduce_param_grads",
]


class GeneratorLoss(NamedTuple):
    """The generator's loss of one micro-step and what it was made of.

    Attributes:
        out: the model's output.
        loss: balanced reconstruction + commitment + alignment + GAN generator loss.
        balance: the balancer's combination (weights, logs).
        align_log: the alignment loss's statistics (empty when alignment is off).
        gan_log: the GAN generator losses and adaptive weights (empty before ``gan_start_step``).
        gan_inputs: ``{modality: (real, fake)}`` for the discriminator step.
    """

    out: Any
    loss: Tensor
    balance: BalanceResult
    align_log: dict[str, Any]
    gan_log: dict[str, Tensor]
    gan_inputs: dict[str, tuple[Tensor, Tensor]]


class Snapshot:
    """Buffers of the model and the balancer's state, to undo a step whose loss is not finite."""

    def __init__(self, model: nn.Module, balancer: nn.Module) -> None:
        self.model = model
        self.balancer = balancer
        self.buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        self.balancer_state = {k: v.detach().clone() for k, v in balancer.state_dict().items()}

    @torch.no_grad()
    def restore(self) -> None:
        for name, buf in self.model.named_buffers():
            buf.copy_(self.buffers[name])
        self.balancer.load_state_dict(self.balancer_state)


def float_tensors(batch: Any) -> list[Tensor]:
    """Every floating-point tensor of a (nested) batch."""
    if isinstance(batch, Tensor):
        return [batch] if batch.is_floating_point() else []
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in float_tensors(v)]
    return []


def all_finite(accelerator: Any, *values: Tensor | None) -> bool:
    """Whether every value is finite on every process (one all-reduce when distributed)."""
    flag = torch.ones((), device=accelerator.device)
    for v in values:
        if v is not None:
            flag = flag * torch.isfinite(v.detach()).all().float().to(flag.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
    return bool(flag >= 1.0)


def reduce_param_grads(accelerator: Any, params: list[nn.Parameter]) -> None:
    """Average the gradients of parameters outside DDP (the balancer's) over processes."""
    if accelerator.num_processes <= 1 or not params:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


class History:
    """One record per optimizer step: ``step``, ``loss`` (NaN when skipped), ``skipped``.

    The last micro-step's loss is kept on the device (no host sync per step): records hold it
    until :meth:`flush` (at log steps and at the end) turns them into floats in one sync.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.step_loss: Tensor | float = float("nan")
        self.step_skipped = True
        self._unflushed: list[dict[str, Any]] = []

    def micro_step(self, loss: Tensor | None) -> None:
        """Record this micro-step's loss (``None``: skipped)."""
        self.step_loss = float("nan") if loss is None else loss.detach()
        self.step_skipped = loss is None

    def end_step(self, step: int) -> None:
        loss = float("nan") if self.step_skipped else self.step_loss
        record = {"step": step, "loss": loss, "skipped": self.step_skipped}
        self.records.append(record)
        if isinstance(loss, Tensor):
            self._unflushed.append(record)

    def flush(self) -> None:
        if not self._unflushed:
            return
        values = torch.stack([r["loss"].float().reshape(()) for r in self._unflushed]).tolist()
        for record, value in zip(self._unflushed, values):
            record["loss"] = value
        self._unflushed.clear()
