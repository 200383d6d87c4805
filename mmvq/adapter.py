"""The adapter contract: everything modality-specific lives behind :class:`ModalityAdapter`.

An adapter turns raw examples of one modality into tensors (data side, runs in DataLoader
workers and holds no model state), encodes a batch into :class:`Tokens` in the shared code
dimension, decodes the fusion decoder's hidden states back into a reconstruction, and scores it.
The core (:mod:`mmvq.model`, :mod:`mmvq.training`) never knows a modality by name: it talks to
adapters only through this interface.

Declarations
------------
What the core would otherwise have to know about a modality, an adapter class declares in
class attributes, each defaulting to "nothing special":

* :attr:`ModalityAdapter.data_column` (a :class:`DataColumn`): how a dataset column of the
  modality is read by :mod:`mmvq.data`: whether its strings are file paths to resolve, which
  ``datasets`` feature it is kept undecoded as (``"Audio"``: the adapter decodes
  ``{"path", "bytes"}`` itself), and which packaged folder builder (``"audiofolder"``) reads a
  folder of its files;
* :attr:`ModalityAdapter.headline_metrics` and :attr:`ModalityAdapter.translation_metrics`:
  which of its :meth:`~ModalityAdapter.metrics` a run's summary shows, for reconstructions of
  the modality and for translations into it;
* :attr:`ModalityAdapter.sample_format`: how its outputs are written to files (evaluation
  samples, ``mmvq decode``): ``"png"``, ``"txt"``, ``"wav"`` (at the config's
  ``sample_rate``), or ``None`` to decide from the type ``postprocess`` returns.

Batch layout
------------
``preprocess(example)`` returns a ``dict[str, Tensor]`` for one example; ``collate(items)``
turns a list of those into a batch ``dict[str, Tensor]`` whose tensors have the batch size as
their first dimension. The core adds one key of its own, ``"present"`` (bool ``[B]``), when some
rows of a batch lack the modality; adapters may ignore it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mmvq.utils.batches import batch_size as _batch_size
from mmvq.utils.checks import check_positive_int
from mmvq.utils.configs import check_known_fields

__all__ = [
    "SAMPLE_FORMATS",
    "AdapterConfig",
    "AdapterInputError",
    "BadInput",
    "DataColumn",
    "ModalityAdapter",
    "Tokens",
]

SAMPLE_FORMATS: tuple[str | None, ...] = ("png", "txt", "wav", None)
"""The values of :attr:`ModalityAdapter.sample_format`."""


class AdapterInputError(ValueError):
    """Raised at the boundary when an adapter is given input it cannot use.

    The message names the field, the offending value and the fix.

    Attributes:
        modality: set by :meth:`mmvq.MultimodalVQ.prepare` to the modality whose value was
            refused (``None`` when raised elsewhere), so that callers can name their own option.
    """

    modality: str | None = None


@dataclass(frozen=True)
class DataColumn:
    """How a dataset column of an adapter's modality is read (:attr:`ModalityAdapter.data_column`).

    The default reads the column's values as they are.

    Attributes:
        file_paths: string values (and ``{"path": ...}`` values without bytes) are file paths:
            in local data files (``--train_file``) they are resolved against the file's folder
            and checked to exist when the data is loaded.
        undecoded: the name of a ``datasets`` feature type (``"Audio"``) that the column is cast
            to with ``decode=False``, so that rows hold ``{"path", "bytes"}`` and the adapter
            decodes them itself (a column of path strings is cast too; a decoding feature of
            that type keeps its other settings).
        folder_builder: the packaged ``datasets`` folder builder that reads a folder of this
            modality's files (``"audiofolder"``). When ``--dataset_name`` names it and
            ``datasets`` has no decoder for such files (no ``torchcodec``), mmvq reads the folder
            itself, without decoding: same layout, files and metadata as the builder's.
    """

    file_paths: bool = False
    undecoded: str | None = None
    folder_builder: str | None = None


class Tokens(NamedTuple):
    """What :meth:`ModalityAdapter.encode` returns.

    Attributes:
        z: continuous tokens ``[B, N, D]`` in the shared code dimension ``D``; ``N`` equals
            :meth:`ModalityAdapter.num_tokens`.
        mask: bool ``[B, N]``; ``True`` marks a real token, ``False`` padding. Padding is neither
            quantised into codebook statistics nor attended to by the decoder.
    """

    z: Tensor
    mask: Tensor


class BadInput(NamedTuple):
    """One declared bad input, run by :func:`mmvq.testing.check_adapter`.

    ``example`` is passed to ``preprocess``; it must raise ``error`` (default
    :class:`AdapterInputError`) with a message containing ``match`` (case-insensitive).
    """

    description: str
    example: Any
    match: str
    error: type[Exception] = AdapterInputError


@dataclass
class AdapterConfig:
    """Base class of adapter configs: a JSON-serialisable dataclass.

    Subclasses add their own fields (with defaults). ``code_dim`` is the shared code dimension
    ``D``; :class:`mmvq.MultimodalVQ` checks it against the codebook's.
    """

    code_dim: int = 64

    def __post_init__(self) -> None:
        check_positive_int(
            f"{type(self).__name__}.code_dim",
            self.code_dim,
            fix="; set it to the codebook's code dimension (e.g. 64).",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Build the config from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        try:
            check_known_fields(cls, data, f"{cls.__name__}.from_dict")
        except ValueError as err:
            raise ValueError(
                f"{err} Was this config written by another version of the adapter?"
            ) from None
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                # JSON has no tuples: restore them where the default is a tuple.
                default = f.default if f.default is not dataclasses.MISSING else None
                if isinstance(value, list) and isinstance(default, tuple):
                    value = tuple(value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


class ModalityAdapter(nn.Module, ABC):
    """Abstract base of every modality adapter (built-in or plugin).

    Subclasses set ``config_class`` and implement the abstract methods. The constructor takes a
    config instance (or keyword overrides of the default config)::

        ImageAdapter(ImageAdapterConfig(resolution=32))
        ImageAdapter(resolution=32)

    Attributes:
        config_class: the :class:`AdapterConfig` subclass this adapter is configured by.
        registered_name: the name under which the registry knows this class (set by
            :func:`mmvq.register_adapter`).
        data_column: how :mod:`mmvq.data` reads a dataset column of this modality (file paths,
            an undecoded ``datasets`` feature, a folder builder); see :class:`DataColumn`.
        headline_metrics: names of :meth:`metrics` (without the modality prefix) that a run's
            summary shows for reconstructions of this modality, most telling first.
        translation_metrics: those of them that also judge a translation INTO this modality
            (shown as ``<source>_to_<modality>_<name>``).
        sample_format: how outputs are written to files: ``"png"`` (PIL images: a PNG grid of
            evaluation samples, one ``.png`` per output), ``"txt"`` (strings), ``"wav"`` (1-D
            waveforms at the config's ``sample_rate``), or ``None`` (decided from the type of
            each output).
    """

    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    registered_name: ClassVar[str | None] = None
    data_column: ClassVar[DataColumn] = DataColumn()
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    translation_metrics: ClassVar[tuple[str, ...]] = ()
    sample_format: ClassVar[str | None] = None

    def __init__(self, config: AdapterConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got "
                f"{type(config).__name__}"
            )
        self.config = config

    # ------------------------------------------------------------------ data side
    @abstractmethod
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        """Turn one raw example into tensors; raise :class:`AdapterInputError` on bad input."""

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Stack preprocessed examples into a batch (override for padding)."""
        if not items:
            raise AdapterInputError(
                f"{type(self).__name__}.collate got an empty list; a batch needs at least one "
                "example."
            )
        keys = items[0].keys()
        return {k: torch.stack([item[k] for item in items]) for k in keys}

    def bad_inputs(self) -> list[BadInput]:
        """Inputs that ``preprocess`` must reject, for :func:`mmvq.testing.check_adapter`."""
        return []

    def preprocess_is_deterministic(self) -> bool:
        """Whether ``preprocess`` always turns one example into the same tensors (no random
        augmentation). Only then may a dataset keep its result and hand it out again
        (:class:`mmvq.data.MultimodalDataset` with ``cache=True``). ``False`` unless an adapter
        says otherwise."""
        return False

    # ----------------------------------------------------------------- model side
    @abstractmethod
    def num_tokens(self) -> int:
        """Tokens per sample ``N`` that ``encode`` returns (the maximum, padding included).

        The fusion decoder lays out this many mask tokens when the modality is absent and is to
        be generated from the others.
        """

    @abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        """Encode a collated batch into :class:`Tokens` ``z [B, N, D]``, ``mask [B, N]``."""

    @abstractmethod
    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        """Map the decoder's hidden states ``h [B, N, D]`` to a reconstruction.

        ``batch`` is given when the modality's input is known (reconstruction) and ``None`` when
        it is generated from other modalities (translation).
        """

    @abstractmethod
    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        """Per-sample reconstruction loss ``[B]`` (padding excluded)."""

    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        """Evaluation metrics of a reconstruction (names without the modality prefix)."""
        return {}

    @abstractmethod
    def postprocess(self, recon: Tensor) -> list[Any]:
        """Turn a reconstruction into raw outputs (PIL images, strings, waveforms...)."""

    def discriminator(self) -> nn.Module | None:
        """A fresh discriminator for the GAN head, or ``None`` (no GAN loss for this modality)."""
        return None

    def gan_inputs(self, batch: dict[str, Tensor], recon: Tensor) -> tuple[Tensor, Tensor]:
        """``(real, fake)`` in the representation the discriminator judges."""
        raise NotImplementedError(
            f"{type(self).__name__} returns a discriminator but does not implement gan_inputs()"
        )

    def last_layer(self) -> Tensor | None:
        """The weight of the decoder's last layer, for the VQGAN adaptive GAN weight."""
        return None

    def target_device(self) -> torch.device:
        try:
            return next(self.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    # -------------------------------------------------------------- persistence
    def save_extra(self, directory: str | os.PathLike) -> None:
        """Write files the adapter needs beside its weights (e.g. a tokenizer). Default: none."""

    def load_extra(self, directory: str | os.PathLike) -> None:
        """Read what :meth:`save_extra` wrote. Default: nothing."""

    @classmethod
    def from_config_dict(cls, data: dict[str, Any]) -> ModalityAdapter:
        return cls(cls.config_class.from_dict(data))

    def extra_repr(self) -> str:
        return f"config={self.config!r}"

    @staticmethod
    def batch_size(batch: dict[str, Tensor]) -> int:
        """The batch size of a collated batch (first dim of its first tensor)."""
        return _batch_size(batch, error=AdapterInputError)
