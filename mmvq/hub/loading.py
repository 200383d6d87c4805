"""The arguments of ``MultimodalVQ.from_pretrained`` beyond the download ones:
``torch_dtype``/``dtype``, ``device_map`` (or ``map_location``), ``subfolder``, ``strict``, each
checked with an error that names the argument, the value and the fix, and resolved to what
loading needs (a ``torch.dtype`` or ``"auto"``, one ``torch.device``, a relative folder).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

__all__ = [
    "FROM_PRETRAINED_ARGUMENTS",
    "check_strict",
    "check_subfolder",
    "file_dtype",
    "resolve_device",
    "resolve_dtype",
]

FROM_PRETRAINED_ARGUMENTS = (
    "revision",
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "subfolder",
    "torch_dtype",
    "dtype",
    "device_map",
    "map_location",
    "strict",
)
"""The keyword arguments ``from_pretrained`` accepts (named in its unknown-argument error)."""

_DTYPE_NAMES = {
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
}
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def _one_dtype(value: Any, name: str) -> torch.dtype | str:
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise ValueError(
                f"from_pretrained({name}={value}): the weights need a floating-point dtype, e.g. "
                "torch.bfloat16, torch.float16 or torch.float32"
            )
        return value
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    raise ValueError(
        f"from_pretrained({name}={value!r}) is not a dtype; pass a torch dtype (torch.bfloat16), "
        f"its name ({sorted(set(_DTYPE_NAMES))}) or 'auto' (the dtype the weights were saved in)"
    )


def resolve_dtype(torch_dtype: Any, dtype: Any) -> torch.dtype | str | None:
    """The dtype to cast the loaded model to (``"auto"``: the saved weights' dtype; ``None``:
    leave it, float32). ``dtype`` is the current transformers name, ``torch_dtype`` the older one;
    giving both with different values is an error."""
    chosen = [(n, v) for n, v in (("torch_dtype", torch_dtype), ("dtype", dtype)) if v is not None]
    resolved = [_one_dtype(v, n) for n, v in chosen]
    if len(resolved) == 2 and resolved[0] != resolved[1]:
        raise ValueError(
            f"from_pretrained got torch_dtype={torch_dtype!r} and dtype={dtype!r}; pass one of "
            "them (dtype is the current name)"
        )
    return resolved[0] if resolved else None


def file_dtype(path: str | os.PathLike) -> torch.dtype:
    """The floating-point dtype most of a safetensors file's tensors are stored in (for
    ``dtype="auto"``); float32 when it holds none."""
    from safetensors import safe_open

    counts: dict[torch.dtype, int] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
            dtype = _SAFETENSORS_DTYPES.get(f.get_slice(key).get_dtype())
            if dtype is not None:
                counts[dtype] = counts.get(dtype, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _auto_device() -> torch.device:
    """The one accelerator this process would use (CUDA, then MPS, then XPU), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return torch.device("xpu", 0)
    return torch.device("cpu")


def _device(value: Any, name: str) -> torch.device:
    if isinstance(value, Mapping):
        devices = set(value.values())
        if set(value) == {""} or len(devices) == 1:
            return _device(next(iter(devices)), name)
        raise ValueError(
            f"from_pretrained({name}={dict(value)!r}) splits the model over several devices; an "
            "mmvq model runs on one device: pass 'auto', 'cpu', 'cuda:0', a device index or "
            "{'': device}"
        )
    if isinstance(value, str) and value.strip().lower() == "auto":
        return _auto_device()
    if isinstance(value, bool):
        value = str(value)
    try:
        device = torch.device(value) if not isinstance(value, int) else torch.device("cuda", value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"from_pretrained({name}={value!r}) is not a device; pass 'auto', 'cpu', 'cuda', "
            "'cuda:1', 'mps', a CUDA device index or a torch.device"
        ) from None
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    available = getattr(backend, "is_available", None)
    if device.type == "mps":
        available = getattr(getattr(torch.backends, "mps", None), "is_available", None)
    if callable(available) and not available():
        raise ValueError(
            f"from_pretrained({name}={value!r}): no {device.type} device is available here; "
            "pass 'auto' (the best device present) or 'cpu'"
        )
    if device.type == "meta":
        raise ValueError(
            f"from_pretrained({name}={value!r}): the meta device holds no weights; load on a real "
            "device ('cpu', 'cuda', 'auto')"
        )
    return device


def resolve_device(device_map: Any, map_location: Any) -> torch.device:
    """The one device the model is loaded onto: ``device_map`` (``"auto"``, ``"cpu"``, a device
    string, index or ``torch.device``, or ``{"": device}``) or ``map_location``; the CPU when
    neither is given. Both, naming different devices, is an error."""
    chosen = {
        n: _device(v, n)
        for n, v in (("device_map", device_map), ("map_location", map_location))
        if v is not None
    }
    if len(set(chosen.values())) > 1:
        raise ValueError(
            f"from_pretrained got device_map={device_map!r} and map_location={map_location!r}; "
            "pass one of them (device_map is the transformers name)"
        )
    return next(iter(chosen.values()), torch.device("cpu"))


def check_subfolder(subfolder: Any) -> str | None:
    """``subfolder`` as a relative POSIX path inside the directory or repo (``None``/``""``:
    the top)."""
    if subfolder is None or subfolder == "":
        return None
    if not isinstance(subfolder, (str, os.PathLike)):
        raise TypeError(
            f"from_pretrained(subfolder=...) must be a str, got {type(subfolder).__name__}"
        )
    posix = os.fspath(subfolder).replace("\\", "/").strip("/")
    parts = PurePosixPath(posix).parts
    if not parts or ".." in parts or Path(os.fspath(subfolder)).is_absolute():
        raise ValueError(
            f"from_pretrained(subfolder={os.fspath(subfolder)!r}) must be a relative folder "
            "inside the directory or repo, without '..' (e.g. 'tokenizer-v2')"
        )
    return "/".join(p for p in parts if p != ".")


def check_strict(strict: Any) -> bool:
    """``strict`` must be a bool."""
    if not isinstance(strict, bool):
        raise TypeError(f"from_pretrained(strict=...) must be True or False, got {strict!r}")
    return strict
