"""Exponential moving average of a model's weights, used for evaluation when enabled.

Built on PyTorch's own :class:`torch.optim.swa_utils.AveragedModel` with
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`: after each optimizer step
``shadow = decay * shadow + (1 - decay) * live`` for every parameter (the first update copies the
live weights, ``W_0^EMA = W_0``). Buffers (the codebook's code vectors and EMA statistics,
normalisation statistics, counters) are *copied* from the live model (``use_buffers=False``), not
averaged: the codebook maintains its own EMA, and averaging integer counters or reservoirs would
be meaningless.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["ModelEMA"]

_LEGACY_COUNT = "__num_updates__"  # the update counter of checkpoints before AveragedModel


class ModelEMA:
    """An averaged copy of ``model`` (kept in eval mode, no gradients).

    Args:
        model: the live (unwrapped) model; it is deep-copied once.
        decay: averaging factor in ``(0, 1)``; ``0.999`` averages over roughly the last 1000 steps.

    Usage::

        ema = ModelEMA(model, decay=0.999)
        ...  # after every optimizer step
        ema.update(model)
        evaluate(ema.model, ...)

    Attributes:
        averaged: the :class:`~torch.optim.swa_utils.AveragedModel` (its state dict, with
            ``n_averaged``, is what a checkpoint stores).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(decay, float) or not 0.0 < decay < 1.0:
            raise ValueError(f"ModelEMA decay must be a float in (0, 1), got {decay!r}; e.g. 0.999")
        self.decay = decay
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False
        )
        self.averaged.eval().requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged copy of the model (what evaluation runs)."""
        return self.averaged.module

    @property
    def num_updates(self) -> int:
        """How many times :meth:`update` ran."""
        return int(self.averaged.n_averaged)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights (buffers copied)."""
        live = [name for name, _ in model.named_parameters()]
        if live != [name for name, _ in self.model.named_parameters()]:
            raise ValueError(
                "ModelEMA.update got a model with different parameters than the one it copies; "
                "pass the same (unwrapped) model every time"
            )
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint: the :class:`AveragedModel`'s state dict (``module.*`` and
        ``n_averaged``)."""
        return {k: v.detach().clone().contiguous() for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` output (or a checkpoint of the earlier hand-written EMA:
        the shadow's own keys plus ``__num_updates__``)."""
        state = dict(state)
        if _LEGACY_COUNT in state:
            count = state.pop(_LEGACY_COUNT)
            state = {f"module.{k}": v for k, v in state.items()}
            state["n_averaged"] = count.to(torch.long).reshape(())
        self.averaged.load_state_dict(state)
