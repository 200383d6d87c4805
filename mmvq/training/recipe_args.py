"""The recipes' options: four groups of dataclasses parsed by ``transformers.HfArgumentParser``
from flags, from one ``.yaml``/``.json`` file, or from a file followed by flags that override it
(``recipe.py config.yaml --max_steps 100``):

* :class:`ModelArguments`: modalities, adapter presets and overrides, codebook and fusion decoder;
* the data options (:func:`data_arguments_class`): :class:`mmvq.data.DataConfig`'s fields
  (``--dataset_name``, ``--train_file``, ``--columns``...; ``seed`` and ``max_eval_samples``
  come from the training options), plus one ``--<name>_column`` flag per registered adapter name
  and one ``--builtin_<option>`` flag per option of the registered built-in datasets;
* :class:`mmvq.TrainConfig` (``--output_dir``, ``--max_steps``, ``--balancer``, ``--alignment``...);
* :class:`HubArguments` (``--push_to_hub``, ``--hub_model_id``, ``--license``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mmvq.data import DataConfig
from mmvq.data.builtin import builtin_dataset_names, get_builtin_dataset
from mmvq.registry import list_adapters
from mmvq.training.config import TrainConfig
from mmvq.utils.configs import parse_mapping
from mmvq.utils.logging import get_logger

__all__ = [
    "MODEL_PRESETS",
    "HubArguments",
    "ModelArguments",
    "RecipeArguments",
    "data_arguments_class",
    "data_config",
    "parse_argument_groups",
    "parse_recipe_args",
]

logger = get_logger(__name__)

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Trains in minutes on a 2-core CPU (the default recipe).
    "cpu-small": dict(
        num_codes=512,
        code_dim=64,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        decoder_mlp_ratio=4.0,
    ),
    # A GPU-scale model (taming-like code_dim 256, a 12-layer fusion trunk).
    "gpu-base": dict(
        num_codes=8192,
        code_dim=256,
        decoder_dim=768,
        decoder_depth=12,
        decoder_heads=12,
        decoder_mlp_ratio=4.0,
    ),
}


def _default_modalities() -> str:
    """The modalities of the default built-in dataset (``DataConfig.builtin``), comma-separated
    ("" when that dataset is not installed)."""
    builtin = next(f.default for f in dataclasses.fields(DataConfig) if f.name == "builtin")
    if builtin not in builtin_dataset_names():
        return ""
    return ",".join(get_builtin_dataset(str(builtin)).modalities)


@dataclass
class ModelArguments:
    """How the recipe builds its :class:`mmvq.MultimodalVQ`.

    Fields left at ``None`` come from the model preset (:data:`MODEL_PRESETS`).
    """

    modalities: str = field(
        default_factory=_default_modalities,
        metadata={
            "help": "Comma-separated modalities (registered adapter names); default: those of "
            "the built-in dataset."
        },
    )
    preset: str = field(
        default="cpu-small",
        metadata={"help": f"Model and adapter preset: {sorted(MODEL_PRESETS)}."},
    )
    adapter_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "Adapter config overrides per modality, JSON: "
            '\'{"<modality>": {"<field>": value}}\'.'
        },
    )
    num_codes: int | None = field(default=None, metadata={"help": "Codebook size K."})
    code_dim: int | None = field(default=None, metadata={"help": "Shared code dimension D."})
    codebook_overrides: dict | str | None = field(
        default=None,
        metadata={"help": "More CodebookConfig options: 'decay=0.99,restart_every=50' or JSON."},
    )
    decoder_dim: int | None = field(default=None, metadata={"help": "Fusion decoder width."})
    decoder_depth: int | None = field(default=None, metadata={"help": "Fusion decoder layers."})
    decoder_heads: int | None = field(
        default=None, metadata={"help": "Fusion decoder attention heads."}
    )
    decoder_mlp_ratio: float | None = field(
        default=None, metadata={"help": "Fusion decoder MLP width / dim."}
    )
    concept: dict | str | None = field(
        default=None,
        metadata={
            "help": "ConceptConfig options of the concept level: 'num_concepts=4,num_codes=256' "
            "or JSON; num_concepts=0 turns it off."
        },
    )
    modality_dropout: float = field(
        default=0.5,
        metadata={"help": "Probability of hiding a modality from the decoder in training."},
    )

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ValueError(
                f"ModelArguments.preset must be one of {sorted(MODEL_PRESETS)}, got {self.preset!r}"
            )
        names = [m.strip() for m in str(self.modalities).split(",") if m.strip()]
        if not names or len(set(names)) != len(names):
            raise ValueError(
                "ModelArguments.modalities must list distinct modality names, got "
                f"{self.modalities!r}; e.g. 'depth,sketch'"
            )
        self.adapter_overrides = parse_mapping(
            self.adapter_overrides,
            "ModelArguments.adapter_overrides",
            example='depth={"base_channels": 16}',
        )
        self._drop_unused_overrides(names)
        for m, o in self.adapter_overrides.items():
            if not isinstance(o, dict):
                raise ValueError(
                    f"ModelArguments.adapter_overrides[{m!r}] must be a dict of config fields, "
                    f"got {o!r}"
                )
        self.codebook_overrides = parse_mapping(
            self.codebook_overrides, "ModelArguments.codebook_overrides", example="num_codes=256"
        )
        self.concept = parse_mapping(
            self.concept, "ModelArguments.concept", example="num_concepts=4"
        )

    def _drop_unused_overrides(self, names: list[str]) -> None:
        """Overrides of registered adapters that are not among ``names`` are dropped (said once in
        the log): a recipe's defaults for other modalities do not get in the way of
        ``--modalities``. A name that is no registered adapter is a typo: an error."""
        unused = sorted(set(self.adapter_overrides) - set(names))
        if not unused:
            return
        unknown = [m for m in unused if m not in list_adapters()]
        if unknown:
            raise ValueError(
                f"ModelArguments.adapter_overrides names {unknown}, which are neither among the "
                f"modalities {names} nor registered adapters {list_adapters()}"
            )
        logger.info(
            "adapter_overrides for %s ignored: not among --modalities %s", unused, ",".join(names)
        )
        self.adapter_overrides = {
            m: o for m, o in self.adapter_overrides.items() if m not in unused
        }

    @property
    def modality_list(self) -> list[str]:
        return [m.strip() for m in self.modalities.split(",") if m.strip()]

    def resolved(self) -> dict[str, Any]:
        """The preset's values with the explicitly given fields on top."""
        values = dict(MODEL_PRESETS[self.preset])
        for key in values:
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values


@dataclass
class HubArguments:
    """Where the final model goes besides ``OUTPUT_DIR/final``."""

    push_to_hub: bool = field(
        default=False, metadata={"help": "Push the final model to the Hugging Face Hub."}
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id, e.g. 'me/mmvq-shapes'."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the repo private."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Token (default: the logged-in one)."}
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "License of the trained model, for its card (a Hub license id such as "
            "'apache-2.0'); default: apache-2.0 for the built-in data, else the dataset's "
            "declared license, else 'unknown'."
        },
    )

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. 'your-name/mmvq-shapes')")


_SHARED_FIELDS = ("seed", "max_eval_samples")
_COLUMN_SUFFIX = "_column"
_OPTION_PREFIX = "builtin_"


def _copied_fields(cls: type, skip: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of each init field of dataclass ``cls`` not in ``skip``."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        kwargs: dict[str, Any] = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        specs.append((f.name, hints[f.name], field(**kwargs)))
    return specs


def _column_fields() -> list[tuple[str, Any, Any]]:
    """``--<name>_column`` for every registered adapter name (a plugin ``depth`` too)."""
    return [
        (
            f"{name}{_COLUMN_SUFFIX}",
            str | None,
            field(
                default=None,
                metadata={
                    "help": f"Column of the {name!r} modality ('' to not use it; same as "
                    f"--columns {name}=COLUMN)."
                },
            ),
        )
        for name in list_adapters()
        if f"{name}{_COLUMN_SUFFIX}".isidentifier()  # others: --columns name=COLUMN
    ]


def _builtin_option_fields(taken: set[str]) -> list[tuple[str, Any, Any]]:
    """``--builtin_<option>`` for every option of every registered built-in dataset."""
    specs = []
    for dataset_name in builtin_dataset_names():
        options = get_builtin_dataset(dataset_name).options_class
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            name = f"{_OPTION_PREFIX}{f.name}"
            if name in taken:
                continue
            taken.add(name)
            help_line = f.metadata.get("help", f.name)
            specs.append(
                (
                    name,
                    hints[f.name] | None,
                    field(default=None, metadata={"help": f"{help_line} ({dataset_name!r})"}),
                )
            )
    return specs


def data_arguments_class() -> type:
    """The recipes' data options: :class:`DataConfig`'s fields minus those the training options
    own (``seed``, ``max_eval_samples``), plus ``--<name>_column`` per registered adapter name and
    ``--builtin_<option>`` per option of the registered built-in datasets (read now, so that
    plugins installed or registered in code get their flags)."""
    specs = _copied_fields(DataConfig, _SHARED_FIELDS)
    taken = {name for name, _, _ in specs}
    specs += [s for s in _column_fields() if s[0] not in taken]
    specs += _builtin_option_fields(taken | {s[0] for s in specs})
    return dataclasses.make_dataclass("DataArguments", specs)


class RecipeArguments(NamedTuple):
    """Everything a recipe parsed."""

    model: ModelArguments
    data: Any  # an instance of data_arguments_class()
    train: TrainConfig
    hub: HubArguments


def _groups() -> list[type]:
    return [ModelArguments, data_arguments_class(), TrainConfig, HubArguments]


def _load_file(path: str, groups: Sequence[type]) -> dict[str, Any]:
    import yaml

    content = Path(path).read_text()
    data = json.loads(content) if path.endswith(".json") else yaml.safe_load(content)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    known = {f.name for g in groups for f in dataclasses.fields(g)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{path} has unknown option(s) {unknown}; run the recipe with --help for the list"
        )
    return data


def parse_argument_groups(
    groups: Sequence[type],
    argv: Sequence[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """One instance of each dataclass of ``groups``, from CLI flags, a ``.yaml``/``.json`` file,
    or a file followed by overriding flags (``HfArgumentParser``).

    Args:
        groups: the argument dataclasses (their field names must not clash).
        argv: the arguments (default ``sys.argv[1:]``).
        defaults: the recipe's own defaults (e.g. its ``output_dir``), under the file and flags.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(groups))
    base = dict(defaults or {})
    if argv and argv[0].endswith((".yaml", ".yml", ".json")) and not argv[0].startswith("-"):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"config file {argv[0]!r} does not exist")
        base.update(_load_file(argv[0], groups))
        argv = argv[1:]
    if base:
        parser.set_defaults(**base)
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def parse_recipe_args(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> RecipeArguments:
    """Parse CLI flags, a ``.yaml``/``.json`` file, or a file followed by overriding flags
    (:func:`parse_argument_groups` over the model, data, training and Hub options).

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        defaults: the recipe's own defaults (e.g. its ``output_dir``), under the file and flags.
    """
    return RecipeArguments(*parse_argument_groups(_groups(), argv, defaults))


def data_config(data: Any, train: TrainConfig) -> DataConfig:
    """The :class:`DataConfig` of parsed data arguments (seed and eval size from ``train``).

    ``--<name>_column`` flags that were given are folded into ``columns`` (over what
    ``--columns`` says), ``--builtin_<option>`` flags into ``builtin_options``.
    """
    values = dataclasses.asdict(data)
    own = {f.name for f in dataclasses.fields(DataConfig)}
    flags = {k: values.pop(k) for k in list(values) if k not in own}
    columns = parse_mapping(values.pop("columns"), "--columns", json_values=False)
    options = parse_mapping(values.pop("builtin_options"), "--builtin_options")
    for name, value in flags.items():
        if value is None:
            continue
        if name.endswith(_COLUMN_SUFFIX):
            columns[name[: -len(_COLUMN_SUFFIX)]] = value
        elif name.startswith(_OPTION_PREFIX):
            options[name[len(_OPTION_PREFIX) :]] = value
    return DataConfig(
        **values,
        columns=columns,
        builtin_options=options,
        seed=train.seed,
        max_eval_samples=train.max_eval_samples,
    )
