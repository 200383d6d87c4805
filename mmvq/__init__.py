"""mmvq: multimodal fusion through one shared vector-quantized codebook.

Public names are imported lazily so that ``import mmvq`` stays cheap and never touches plugin
entry points (those load on the first registry lookup). ``mmvq.train`` is the training function
(:func:`mmvq.training.train`); ``mmvq.set_verbosity("warning")`` (or ``MMVQ_VERBOSITY``) sets how
much it logs (INFO by default).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # contract
    "ModalityAdapter": "mmvq.adapter",
    "AdapterConfig": "mmvq.adapter",
    "AdapterInputError": "mmvq.adapter",
    "BadInput": "mmvq.adapter",
    "DataColumn": "mmvq.adapter",
    "Tokens": "mmvq.adapter",
    # registry
    "register_adapter": "mmvq.registry",
    "get_adapter": "mmvq.registry",
    "list_adapters": "mmvq.registry",
    "adapter_info": "mmvq.registry",
    "UnknownAdapterError": "mmvq.registry",
    # codebook
    "SharedCodebook": "mmvq.quantize",
    "CodebookConfig": "mmvq.quantize",
    "QuantizerOutput": "mmvq.quantize",
    # model
    "MultimodalVQ": "mmvq.model",
    "MultimodalVQConfig": "mmvq.model",
    "MultimodalVQOutput": "mmvq.model",
    "FusionDecoder": "mmvq.fusion",
    "FusionDecoderConfig": "mmvq.fusion",
    # data
    "DataConfig": "mmvq.data",
    "load_data": "mmvq.data",
    "MultimodalCollator": "mmvq.data",
    "MultimodalDataset": "mmvq.data",
    "validate_dataset": "mmvq.data",
    # training
    "train": "mmvq.training",
    "TrainConfig": "mmvq.training",
    # logging
    "set_verbosity": "mmvq.utils.logging",
    "get_verbosity": "mmvq.utils.logging",
}

__all__ = [
    "AdapterConfig",
    "AdapterInputError",
    "BadInput",
    "CodebookConfig",
    "DataColumn",
    "DataConfig",
    "FusionDecoder",
    "FusionDecoderConfig",
    "ModalityAdapter",
    "MultimodalCollator",
    "MultimodalDataset",
    "MultimodalVQ",
    "MultimodalVQConfig",
    "MultimodalVQOutput",
    "QuantizerOutput",
    "SharedCodebook",
    "Tokens",
    "TrainConfig",
    "UnknownAdapterError",
    "__version__",
    "adapter_info",
    "get_adapter",
    "get_verbosity",
    "list_adapters",
    "load_data",
    "register_adapter",
    "set_verbosity",
    "train",
    "validate_dataset",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmvq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from mmvq.adapter import (
        AdapterConfig,
        AdapterInputError,
        BadInput,
        DataColumn,
        ModalityAdapter,
        Tokens,
    )
    from mmvq.data import (
        DataConfig,
        MultimodalCollator,
        MultimodalDataset,
        load_data,
        validate_dataset,
    )
    from mmvq.fusion import FusionDecoder, FusionDecoderConfig
    from mmvq.model import MultimodalVQ, MultimodalVQConfig, MultimodalVQOutput
    from mmvq.quantize import CodebookConfig, QuantizerOutput, SharedCodebook
    from mmvq.registry import (
        UnknownAdapterError,
        adapter_info,
        get_adapter,
        list_adapters,
        register_adapter,
    )
    from mmvq.training import TrainConfig, train
    from mmvq.utils.logging import get_verbosity, set_verbosity
