"""Checks of what an adapter returns to the core: a plugin that breaks the contract of
:class:`~mmvq.adapter.ModalityAdapter` fails at the boundary with :class:`AdapterContractError`,
naming the modality, the adapter class, the method, what it returned and what it must return,
instead of a deep ``AttributeError`` or a "negative dimension" from torch.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from mmvq.adapter import AdapterConfig, ModalityAdapter, Tokens

__all__ = [
    "MODALITY_NAME",
    "AdapterContractError",
    "check_adapter_config",
    "check_loss",
    "check_modality_name",
    "check_num_tokens",
    "check_preprocessed",
    "check_tokens",
]


MODALITY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
"""What a modality name may be: letters, digits, ``_`` and ``-`` (not first), at most 64 chars.
It names a folder of a saved model (``adapters/<modality>/``), so it can never be a path."""


def check_modality_name(name: Any, where: str, error: type[Exception] = ValueError) -> str:
    """``name`` as a modality name, or ``error`` naming ``where`` it came from."""
    if not isinstance(name, str) or not MODALITY_NAME.match(name):
        raise error(
            f"{where}: modality name {name!r} is not allowed; use letters, digits, '_' and '-' "
            "(at most 64 characters, e.g. 'depth' or 'rgb_2'): it names a folder of the saved "
            "model, so it can never be a path"
        )
    return name


class AdapterContractError(TypeError, ValueError):
    """An adapter returned something the contract does not allow (a bug in the adapter).

    A ``TypeError`` and a ``ValueError``, so that code catching either keeps working."""


def _who(modality: str, adapter: Any, method: str) -> str:
    return f"adapter {modality!r} ({type(adapter).__name__}).{method}"


def _shape(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r:.60}"


def check_adapter_config(modality: str, adapter: ModalityAdapter) -> None:
    """The adapter holds its config (its ``__init__`` called ``super().__init__``)."""
    config = adapter.__dict__.get("config", getattr(adapter, "config", None))
    if not isinstance(config, AdapterConfig):
        raise AdapterContractError(
            f"adapter {modality!r} ({type(adapter).__name__}) has no AdapterConfig in .config "
            f"(found {_shape(config)}); its __init__ must call "
            "super().__init__(config, **overrides) first"
        )


def check_num_tokens(modality: str, adapter: ModalityAdapter) -> int:
    """``adapter.num_tokens()`` as a positive ``int``."""
    n = adapter.num_tokens()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AdapterContractError(
            f"{_who(modality, adapter, 'num_tokens')}() returned {_shape(n)}; it must return the "
            "number of tokens per sample, an int >= 1"
        )
    return n


def check_tokens(
    modality: str, adapter: ModalityAdapter, tokens: Any, size: int, n: int, code_dim: int
) -> Tokens:
    """What ``encode`` returned: ``Tokens(z float [size, n, code_dim], mask [size, n])``."""
    who = _who(modality, adapter, "encode")
    if not isinstance(tokens, tuple) or len(tokens) != 2:
        raise AdapterContractError(
            f"{who} must return mmvq.Tokens(z, mask), got {type(tokens).__name__}"
        )
    z, mask = tokens
    expected = f"[batch={size}, num_tokens={n}, code_dim={code_dim}]"
    if not isinstance(z, Tensor) or z.dim() != 3 or tuple(z.shape) != (size, n, code_dim):
        raise AdapterContractError(f"{who} returned z as {_shape(z)}; expected {expected}")
    if not z.is_floating_point():
        raise AdapterContractError(
            f"{who} returned z of dtype {z.dtype}; expected a float tensor {expected}"
        )
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (size, n):
        raise AdapterContractError(
            f"{who} returned mask as {_shape(mask)}; expected a bool tensor [{size}, {n}] "
            "(True = real token)"
        )
    return Tokens(z, mask.bool())


def check_loss(modality: str, adapter: ModalityAdapter, loss: Any, size: int) -> Tensor:
    """What ``reconstruction_loss`` returned: a per-sample tensor ``[size]``."""
    if not isinstance(loss, Tensor) or tuple(loss.shape) != (size,):
        raise AdapterContractError(
            f"{_who(modality, adapter, 'reconstruction_loss')} returned {_shape(loss)}; expected "
            f"a per-sample loss of shape [{size}]"
        )
    return loss


def check_preprocessed(modality: str, adapter: ModalityAdapter, out: Any) -> dict[str, Tensor]:
    """What ``preprocess`` returned: a non-empty ``dict[str, Tensor]``."""
    if (
        not isinstance(out, dict)
        or not out
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in out.items())
    ):
        raise AdapterContractError(
            f"{_who(modality, adapter, 'preprocess')} returned {_shape(out)}; it must return a "
            "non-empty dict[str, Tensor] (or raise AdapterInputError for input it refuses)"
        )
    return out
