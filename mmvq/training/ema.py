"""Exponential moving average of a model's weights, used for evaluation when enabled.

``shadow = decay * shadow + (1 - decay) * live`` for every floating-point parameter after each
optimizer step. Buffers (the codebook's code vectors and EMA statistics, normalisation statistics,
counters) are *copied* from the live model rather than averaged: the codebook maintains its own
EMA, and averaging integer counters or reservoirs would be meaningless.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["ModelEMA"]


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
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(decay, float) or not 0.0 < decay < 1.0:
            raise ValueError(f"ModelEMA decay must be a float in (0, 1), got {decay!r}; e.g. 0.999")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        live_params = dict(model.named_parameters())
        shadow_params = dict(self.model.named_parameters())
        if live_params.keys() != shadow_params.keys():
            raise ValueError(
                "ModelEMA.update got a model with different parameters than the one it copies; "
                "pass the same (unwrapped) model every time"
            )
        floats = [n for n, p in shadow_params.items() if p.is_floating_point()]
        if floats:
            torch._foreach_lerp_(
                [shadow_params[n] for n in floats],
                [live_params[n].detach().to(shadow_params[n].dtype) for n in floats],
                1.0 - self.decay,
            )
        for n in shadow_params.keys() - set(floats):
            shadow_params[n].copy_(live_params[n])
        live_buffers = dict(model.named_buffers())
        for name, buf in self.model.named_buffers():
            buf.copy_(live_buffers[name])
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint: the shadow's state dict plus the update count."""
        state = {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}
        state["__num_updates__"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` output."""
        state = dict(state)
        self.num_updates = int(state.pop("__num_updates__", torch.tensor(0)))
        self.model.load_state_dict(state)
