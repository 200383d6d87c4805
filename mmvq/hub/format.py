"""The on-disk format of a saved :class:`~mmvq.model.MultimodalVQ` (what a Hub repo holds).

A saved model is a directory (or a Hub repo) with::

    config.json           format_version, mmvq_version, the model config and, per modality, the
                          registered adapter name, the distribution providing it, its version and
                          the adapter's config dict
    model.safetensors     every tensor of the model's state dict (no pickle anywhere)
    adapters/<modality>/  what ``adapter.save_extra`` wrote (e.g. the text tokenizer)
    README.md             the model card (:mod:`mmvq.hub.model_card`)

Adapters are resolved on load ONLY through the registry (:func:`mmvq.registry.get_adapter`): the
config records a name and the distribution that provided it, never an import path. Every problem
reading a saved model raises :class:`PretrainedError` naming the file, what is wrong and the fix.
(Training checkpoints, with optimizer state, are :mod:`mmvq.training.checkpoint`'s business.)
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import Tensor

from mmvq.adapter import ModalityAdapter
from mmvq.adapter_checks import check_modality_name
from mmvq.hub.safety import check_no_code
from mmvq.registry import (
    AdapterPluginError,
    AdapterRegistryError,
    UnknownAdapterError,
    adapter_info,
    adapter_name,
    get_adapter,
)

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.model import MultimodalVQ

__all__ = [
    "ADAPTERS_DIR",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "AdapterRecord",
    "PretrainedConfig",
    "PretrainedError",
    "PretrainedNotFoundError",
    "describe_model",
    "load_pretrained_dir",
    "load_weights",
    "save_pretrained_files",
]

FORMAT_VERSION = "1.1"
"""``MAJOR.MINOR`` of the saved-model layout. Readers accept any minor of their major.
1.1 added the concept level (``model.concept``); a 1.0 model has none."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTERS_DIR = "adapters"
_MAX_LISTED = 12  # tensors named in one mismatch message


class PretrainedError(ValueError):
    """A saved model cannot be written or read; the message names the file, problem and fix."""


class PretrainedNotFoundError(PretrainedError, FileNotFoundError):
    """The directory, repo, revision or a required file of a saved model does not exist."""


def _mmvq_version() -> str:
    from mmvq import __version__

    return __version__


def _install_hint(distribution: str | None, version: str | None) -> str:
    if not distribution:
        return (
            "it was registered in code (no distribution recorded) when the model was saved: import "
            "the module that registers it (mmvq.register_adapter) before loading"
        )
    pin = f"=={version}" if version else ""
    return f"install it: pip install '{distribution}{pin}'"


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class AdapterRecord:
    """What ``config.json`` records about one modality's adapter.

    Attributes:
        name: the registered adapter name (resolved with :func:`mmvq.registry.get_adapter`).
        distribution: the installed distribution that provided it (``None``: registered in code).
        version: that distribution's version.
        config: the adapter's ``config.to_dict()``.
    """

    name: str
    distribution: str | None
    version: str | None
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> AdapterRecord:
        """Parse one ``adapters[<modality>]`` entry; ``where`` names it in errors."""
        if not isinstance(data, Mapping):
            raise PretrainedError(
                f"{where} must be an object, got {type(data).__name__} {data!r:.80}"
            )
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise PretrainedError(f"{where}.name must be the registered adapter name, got {name!r}")
        config = data.get("config")
        if not isinstance(config, Mapping):
            raise PretrainedError(
                f"{where}.config must be the adapter's config object, got {config!r:.80}"
            )
        for key in ("distribution", "version"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise PretrainedError(f"{where}.{key} must be a string or null, got {value!r}")
        return cls(name, data.get("distribution"), data.get("version"), dict(config))


@dataclass
class PretrainedConfig:
    """The content of ``config.json``.

    Attributes:
        model: ``MultimodalVQConfig.to_dict()``.
        adapters: modality -> :class:`AdapterRecord`, in the model's modality order.
        format_version: ``MAJOR.MINOR`` of the layout (:data:`FORMAT_VERSION` when written).
        mmvq_version: the mmvq version that wrote it.
    """

    model: dict[str, Any]
    adapters: dict[str, AdapterRecord]
    format_version: str = FORMAT_VERSION
    mmvq_version: str = field(default_factory=_mmvq_version)

    @property
    def modalities(self) -> list[str]:
        return list(self.adapters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "library_name": "mmvq",
            "format_version": self.format_version,
            "mmvq_version": self.mmvq_version,
            "modalities": self.modalities,
            "model": self.model,
            "adapters": {m: record.to_dict() for m, record in self.adapters.items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | os.PathLike) -> PretrainedConfig:
        """Read and validate ``config.json``; any problem is a :class:`PretrainedError`."""
        path = Path(path)
        if not path.is_file():
            raise PretrainedNotFoundError(
                f"{path.parent} has no {CONFIG_NAME}: it is not a model saved by mmvq "
                "(save one with model.save_pretrained(directory))."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PretrainedError(
                f"{path} is not valid JSON ({exc}); the file is damaged: re-save the model with "
                "save_pretrained or download it again (force_download=True)."
            ) from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_NAME) -> PretrainedConfig:
        """Validate a parsed ``config.json``; ``where`` names it in errors."""
        if not isinstance(data, Mapping):
            raise PretrainedError(f"{where} must hold a JSON object, got {type(data).__name__}")
        if "format_version" not in data:
            raise PretrainedError(
                f"{where} has no 'format_version': it was not written by mmvq's save_pretrained "
                f"(library_name={data.get('library_name')!r}). Load the model with the library "
                "that saved it, or re-save it with mmvq."
            )
        mmvq_version = data.get("mmvq_version")
        _check_format_version(data["format_version"], mmvq_version, where)
        model = data.get("model")
        if not isinstance(model, Mapping):
            raise PretrainedError(
                f"{where}: 'model' must be the model config object, got {model!r:.80}"
            )
        adapters = data.get("adapters")
        if not isinstance(adapters, Mapping) or not adapters:
            raise PretrainedError(
                f"{where}: 'adapters' must map each modality to its adapter record, got "
                f"{adapters!r:.80}"
            )
        for name in adapters:  # before any file of adapters/<modality>/ is read
            check_modality_name(name, f"{where}: adapters", PretrainedError)
        order = data.get("modalities", list(adapters))
        if not isinstance(order, list) or sorted(order) != sorted(adapters):
            raise PretrainedError(
                f"{where}: 'modalities' {order!r} must list exactly the modalities of 'adapters' "
                f"{sorted(adapters)}; the file was edited by hand or is damaged."
            )
        records = {
            m: AdapterRecord.from_dict(adapters[m], f"{where}: adapters[{m!r}]") for m in order
        }
        return cls(dict(model), records, str(data["format_version"]), str(mmvq_version))


def _check_format_version(version: Any, mmvq_version: Any, where: str) -> None:
    ours = int(FORMAT_VERSION.split(".")[0])
    parts = str(version).split(".")
    if not isinstance(version, str) or len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise PretrainedError(
            f"{where}: format_version must be 'MAJOR.MINOR' (e.g. {FORMAT_VERSION!r}), got "
            f"{version!r}"
        )
    major = int(parts[0])
    if major == ours:
        return
    writer = f"mmvq {mmvq_version}" if mmvq_version else "another mmvq"
    pin = f"pip install 'mmvq=={mmvq_version}'" if mmvq_version else "the mmvq that saved it"
    if major > ours:
        fix = f"upgrade mmvq (pip install -U mmvq, or {pin})"
    else:
        fix = f"load it with {writer} ({pin}) and re-save it, or re-train with this version"
    raise PretrainedError(
        f"{where} has format_version {version} (written by {writer}); this mmvq "
        f"{_mmvq_version()} reads format {ours}.x only: {fix}."
    )


# ------------------------------------------------------------------------------ saving
def describe_model(model: MultimodalVQ) -> PretrainedConfig:
    """The :class:`PretrainedConfig` of ``model``.

    Raises:
        PretrainedError: an adapter is not registered, so the saved model could not be loaded.
    """
    records: dict[str, AdapterRecord] = {}
    for modality, adapter in model.adapters.items():
        try:
            name = adapter_name(adapter)
        except AdapterRegistryError as exc:
            raise PretrainedError(
                f"cannot save modality {modality!r}: {exc} (from_pretrained resolves adapters only "
                "through the registry)."
            ) from None
        info = adapter_info(name)
        records[modality] = AdapterRecord(
            name, info.distribution, info.version, adapter.config.to_dict()
        )
    return PretrainedConfig(model=model.config.to_dict(), adapters=records)


def save_pretrained_files(model: MultimodalVQ, directory: str | os.PathLike) -> PretrainedConfig:
    """Write ``config.json``, ``model.safetensors`` and ``adapters/<modality>/`` into ``directory``.

    The adapter folders are rewritten from scratch (stale files of an earlier save are removed).
    """
    directory = Path(directory)
    config = describe_model(model)  # fails before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    # One metadata key only: safetensors writes metadata in hash-map order, and a byte-stable file
    # lets a re-push skip unchanged weights (config.json carries the format version).
    save_model(model, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    extras = directory / ADAPTERS_DIR
    if extras.is_dir():
        shutil.rmtree(extras)
    for modality, adapter in model.adapters.items():
        folder = extras / modality
        folder.mkdir(parents=True, exist_ok=True)
        adapter.save_extra(folder)
        if not any(folder.iterdir()):
            folder.rmdir()
    if extras.is_dir() and not any(extras.iterdir()):
        extras.rmdir()
    config.save(directory / CONFIG_NAME)
    return config


# ----------------------------------------------------------------------------- loading
def _build_adapter(
    modality: str, record: AdapterRecord, directory: Path, where: str
) -> ModalityAdapter:
    try:
        cls = get_adapter(record.name, distribution_hint=record.distribution)
    except UnknownAdapterError as exc:
        provider = (
            f"distribution {record.distribution} {record.version or ''}".rstrip()
            if record.distribution
            else "code (no distribution)"
        )
        raise PretrainedError(
            f"{where}: modality {modality!r} needs adapter {record.name!r} (saved from "
            f"{provider}), "
            f"which is not available here; {_install_hint(record.distribution, record.version)}. "
            f"[{exc}]"
        ) from None
    except AdapterPluginError as exc:
        raise PretrainedError(f"{where}: modality {modality!r}: {exc}") from None
    info = adapter_info(record.name)
    if record.version and info.version and info.version != record.version:
        warnings.warn(
            f"modality {modality!r} was saved with adapter {record.name!r} from "
            f"{record.distribution} {record.version}; this environment has {info.distribution} "
            f"{info.version}. If loading fails, "
            f"{_install_hint(record.distribution, record.version)}.",
            UserWarning,
            stacklevel=3,
        )
    try:
        adapter = cls.from_config_dict(record.config)
    except (TypeError, ValueError) as exc:
        raise PretrainedError(
            f"{where}: adapters[{modality!r}].config does not fit {cls.__name__} "
            f"({info.distribution} {info.version}): {exc}. The model was saved with "
            f"{record.distribution} {record.version}: "
            f"{_install_hint(record.distribution, record.version)}."
        ) from None
    extra = directory / ADAPTERS_DIR / modality
    if extra.is_dir():
        adapter.load_extra(extra)
    return adapter


def _storage_key(t: Tensor) -> tuple[Any, ...]:
    return (
        str(t.device),
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
    )


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}): {shown}{more}"


def load_weights(model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> None:
    """Load ``model.safetensors`` into ``model`` with a key and shape check.

    Tensors that share storage in the model (tied weights) are stored once by
    :func:`safetensors.torch.save_model`; a missing name is accepted when a name sharing its storage
    is in the file. With ``strict=False`` (``torch``'s and the Hub mixin's meaning), tensors
    missing from the file keep the model's initial values and tensors the model does not have
    are skipped (both listed in a warning); a shape mismatch is an error either way.

    Raises:
        PretrainedNotFoundError: the file does not exist.
        PretrainedError: the file is not valid safetensors (truncated, corrupt), or its tensors do
            not match the model's (every mismatched tensor is listed).
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedNotFoundError(
            f"{path.parent} has no {WEIGHTS_NAME}: the model's weights are missing; re-save the "
            "model "
            "with save_pretrained (or download it again)."
        )
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError(
            f"{path} is not a valid safetensors file ({exc}); it is truncated or corrupt: re-save "
            "the "
            "model with save_pretrained or download it again (force_download=True)."
        ) from None
    expected = model.state_dict()
    mismatched = [
        f"{k} file {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    unexpected = sorted(set(state) - set(expected))
    groups: dict[tuple[Any, ...], set[str]] = {}
    for name, tensor in expected.items():
        groups.setdefault(_storage_key(tensor), set()).add(name)
    missing = sorted(
        name
        for name, tensor in expected.items()
        if name not in state and not (groups[_storage_key(tensor)] & state.keys())
    )
    if not strict and not mismatched and (missing or unexpected):
        warnings.warn(
            f"{path} loaded with strict=False: "
            + "; ".join(
                _listing(title, items)
                for title, items in (
                    ("missing from the file, left as initialised", missing),
                    ("unexpected in the file, skipped", unexpected),
                )
                if items
            ),
            UserWarning,
            stacklevel=3,
        )
        state = {k: v for k, v in state.items() if k in expected}
    elif mismatched or missing or unexpected:
        parts = [
            _listing(title, items)
            for title, items in (
                ("shape mismatches", mismatched),
                ("missing from the file", missing),
                ("unexpected in the file", unexpected),
            )
            if items
        ]
        raise PretrainedError(
            f"{path} does not match the model built from {CONFIG_NAME}: " + "; ".join(parts) + ". "
            f"The weights and {CONFIG_NAME} come from different models: keep the files that "
            "save_pretrained wrote together (re-save the model)."
        )
    # strict=False only because tied names stored once are absent from the file (checked above).
    model.load_state_dict(state, strict=False)


def load_pretrained_dir(
    cls: type[MultimodalVQ], directory: str | os.PathLike, *, strict: bool = True
) -> MultimodalVQ:
    """Build a model of class ``cls`` from a saved directory (adapters via the registry);
    ``strict`` as in :func:`load_weights`.

    The model config is rebuilt by ``cls.config_class.from_dict`` (the class names its own config
    class, so this module never imports the model's).
    """
    directory = Path(directory)
    check_no_code(directory)  # before any file in it is read
    config_path = directory / CONFIG_NAME
    config = PretrainedConfig.read(config_path)
    where = str(config_path)
    model = dict(config.model)
    model.setdefault("concept", {"num_concepts": 0})  # written before the concept level (1.0)
    try:
        model_config = cls.config_class.from_dict(model)
    except (TypeError, ValueError) as exc:
        raise PretrainedError(
            f"{where}: 'model' does not fit this mmvq {_mmvq_version()} (saved by mmvq "
            f"{config.mmvq_version}): {exc}. Install the version that saved it: pip install "
            f"'mmvq=={config.mmvq_version}'."
        ) from None
    adapters = {m: _build_adapter(m, r, directory, where) for m, r in config.adapters.items()}
    try:
        built = cls(adapters, model_config)
    except (TypeError, ValueError) as exc:
        raise PretrainedError(
            f"{where}: the saved configuration does not build a model: {exc}"
        ) from None
    load_weights(built, directory / WEIGHTS_NAME, strict=strict)
    return built
