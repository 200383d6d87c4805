"""What the recipes (``recipes/*.py``) and ``mmvq train CONFIG.yaml`` share: argument dataclasses,
parsing, and :func:`run_recipe` (build the model, load the data, train, save).

A recipe parses four groups of options with ``transformers.HfArgumentParser``:

* :class:`ModelArguments`: modalities, adapter presets and overrides, codebook and fusion decoder;
* the data options of :class:`mmvq.data.DataConfig` (``--dataset_name``, ``--train_file``,
  ``--image_column``, ...; ``seed`` and ``max_eval_samples`` come from the training options);
* :class:`mmvq.TrainConfig` (``--output_dir``, ``--max_steps``, ``--balancer``, ``--alignment``...);
* :class:`HubArguments` (``--push_to_hub``, ``--hub_model_id``).

Options come from CLI flags, from one ``.yaml``/``.json`` file, or from a file followed by flags
that override it (``recipe.py config.yaml --max_steps 100``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mmvq.data import DataConfig
from mmvq.train_config import TrainConfig

__all__ = [
    "ModelArguments",
    "HubArguments",
    "DataArguments",
    "RecipeArguments",
    "MODEL_PRESETS",
    "parse_recipe_args",
    "build_model",
    "data_config",
    "default_scorers",
    "shapes_text_to_image_scorer",
    "run_recipe",
    "recipe_main",
]

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


def _parse_json_or_pairs(value: Any, name: str) -> dict[str, Any]:
    """A dict, a JSON object string, or ``k=v,k=v`` pairs (values parsed as JSON when they can)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise ValueError(
            f"ModelArguments.{name} must be a dict or a string, got {type(value).__name__}"
        )
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as err:
            raise ValueError(
                f"ModelArguments.{name} is not valid JSON ({err}): {value!r}"
            ) from None
        if not isinstance(parsed, dict):
            raise ValueError(f"ModelArguments.{name} must be a JSON object, got {value!r}")
        return parsed
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep:
            raise ValueError(
                f"ModelArguments.{name}: {part!r} is not key=value; write e.g. 'num_codes=256'"
            )
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw.strip()
    return out


@dataclass
class ModelArguments:
    """How the recipe builds its :class:`mmvq.MultimodalVQ`.

    Fields left at ``None`` come from the model preset (:data:`MODEL_PRESETS`).
    """

    modalities: str = field(
        default="image,text",
        metadata={"help": "Comma-separated modalities (registered adapter names)."},
    )
    preset: str = field(
        default="cpu-small",
        metadata={"help": f"Model and adapter preset: {sorted(MODEL_PRESETS)}."},
    )
    adapter_overrides: dict | str | None = field(
        default=None,
        metadata={"help": 'Adapter config overrides, JSON: \'{"image": {"base_channels": 16}}\'.'},
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
                f"{self.modalities!r}; "
                "e.g. 'image,text'"
            )
        self.adapter_overrides = _parse_json_or_pairs(self.adapter_overrides, "adapter_overrides")
        unknown = sorted(set(self.adapter_overrides) - set(names))
        if unknown:
            raise ValueError(
                f"ModelArguments.adapter_overrides names {unknown}, which are not among the "
                f"modalities {names}"
            )
        for m, o in self.adapter_overrides.items():
            if not isinstance(o, dict):
                raise ValueError(
                    f"ModelArguments.adapter_overrides[{m!r}] must be a dict of config fields, "
                    f"got {o!r}"
                )
        self.codebook_overrides = _parse_json_or_pairs(
            self.codebook_overrides, "codebook_overrides"
        )

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

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. 'your-name/mmvq-shapes')")


_SHARED_FIELDS = ("seed", "max_eval_samples")


def _data_arguments_class() -> type:
    """:class:`DataConfig`'s fields minus those the training options own (``seed``,
    ``max_eval_samples``), so that one parser holds both without clashing flags."""
    hints = typing.get_type_hints(DataConfig)
    specs = []
    for f in dataclasses.fields(DataConfig):
        if f.name in _SHARED_FIELDS or not f.init:
            continue
        kwargs = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        specs.append((f.name, hints[f.name], field(**kwargs)))
    return dataclasses.make_dataclass("DataArguments", specs)


DataArguments = _data_arguments_class()


class RecipeArguments(NamedTuple):
    """Everything a recipe parsed."""

    model: ModelArguments
    data: Any  # DataArguments
    train: TrainConfig
    hub: HubArguments


def _groups() -> list[type]:
    return [ModelArguments, DataArguments, TrainConfig, HubArguments]


def _load_file(path: str) -> dict[str, Any]:
    import yaml

    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    known = {f.name for g in _groups() for f in dataclasses.fields(g)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{path} has unknown option(s) {unknown}; run the recipe with --help for the list"
        )
    return data


def parse_recipe_args(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> RecipeArguments:
    """Parse CLI flags, a ``.yaml``/``.json`` file, or a file followed by overriding flags.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        defaults: the recipe's own defaults (e.g. its ``output_dir``), under the file and flags.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(_groups())
    base = dict(defaults or {})
    if argv and argv[0].endswith((".yaml", ".yml", ".json")) and not argv[0].startswith("-"):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"config file {argv[0]!r} does not exist")
        base.update(_load_file(argv[0]))
        argv = argv[1:]
    if base:
        parser.set_defaults(**base)
    model, data, train, hub = parser.parse_args_into_dataclasses(args=argv)
    return RecipeArguments(model, data, train, hub)


def build_model(args: ModelArguments) -> Any:
    """The :class:`mmvq.MultimodalVQ` the arguments describe (adapters from the registry)."""
    from mmvq.model import MultimodalVQ, MultimodalVQConfig
    from mmvq.registry import get_adapter

    values = args.resolved()
    code_dim = int(values["code_dim"])
    adapters = {}
    for m in args.modality_list:
        config_class = get_adapter(m).config_class
        overrides = {**args.adapter_overrides.get(m, {}), "code_dim": code_dim}
        if hasattr(config_class, "preset"):
            adapters[m] = (m, config_class.preset(args.preset, **overrides))
        else:
            adapters[m] = (m, config_class(**overrides))
    config = MultimodalVQConfig(
        codebook={
            "num_codes": values["num_codes"],
            "code_dim": code_dim,
            **args.codebook_overrides,
        },
        decoder={
            "dim": values["decoder_dim"],
            "depth": values["decoder_depth"],
            "heads": values["decoder_heads"],
            "mlp_ratio": values["decoder_mlp_ratio"],
        },
        modality_dropout=args.modality_dropout,
    )
    return MultimodalVQ.build(adapters, config)


def data_config(data: Any, train: TrainConfig) -> DataConfig:
    """The :class:`DataConfig` of parsed data arguments (seed and eval size from ``train``)."""
    values = dataclasses.asdict(data)
    return DataConfig(**values, seed=train.seed, max_eval_samples=train.max_eval_samples)


def shapes_text_to_image_scorer(images: list[Any], captions: list[str]) -> dict[str, float]:
    """Score images generated from captions of the built-in shapes data
    (:func:`mmvq.synthetic.text_to_image_score` against the captions' attributes)."""
    from mmvq.synthetic import parse_caption, text_to_image_score

    attrs = [parse_caption(c) for c in captions]
    keep = [i for i, a in enumerate(attrs) if a is not None]
    if not keep:
        return {}
    return text_to_image_score([images[i] for i in keep], [attrs[i] for i in keep])


def default_scorers(data: DataConfig, modalities: Sequence[str]) -> dict[str, Callable[..., Any]]:
    """``text->image`` scoring when training on the built-in shapes data, else none."""
    builtin = data.builtin == "shapes" and not data.dataset_name and not data.train_file
    cmap = data.column_map(modalities)
    if builtin and cmap.get("text") == "text" and cmap.get("image") == "image":
        return {"text->image": shapes_text_to_image_scorer}
    return {}


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _save_final(result: Any, hub: HubArguments) -> Path | None:
    """``OUTPUT_DIR/final`` via the Hub mixin (when the model has it), and the optional push."""
    model = result.model
    final = Path(result.output_dir) / "final"
    if not hasattr(model, "save_pretrained"):
        print(
            "note: this mmvq has no Hub support (MultimodalVQ.save_pretrained); final weights "
            "are in the last checkpoint"
        )
        return None
    import inspect

    params = inspect.signature(model.save_pretrained).parameters
    kwargs: dict[str, Any] = {}
    metrics_file = Path(result.output_dir) / "metrics.json"
    if "metrics" in params and metrics_file.is_file():
        kwargs["metrics"] = str(metrics_file)
    grids = sorted(
        Path(result.output_dir).glob("samples/step-*/image.png"),
        key=lambda p: int(p.parent.name.split("-")[1]),
    )
    if "sample_image" in params and grids:
        kwargs["sample_image"] = str(grids[-1])
    model.save_pretrained(str(final), **kwargs)
    if hub.push_to_hub:
        model.push_to_hub(hub.hub_model_id, private=hub.hub_private, token=hub.hub_token)
    return final


def run_recipe(
    args: RecipeArguments, translation_scorers: Mapping[str, Callable[..., Any]] | None = None
) -> Any:
    """Build the model, load the data, train, save ``OUTPUT_DIR/final``; returns the TrainResult."""
    from mmvq.data import load_data
    from mmvq.train import train

    modalities = args.model.modality_list
    data = data_config(args.data, args.train)
    model = build_model(args.model)
    train_ds, eval_ds = load_data(data, modalities)
    scorers = (
        default_scorers(data, modalities)
        if translation_scorers is None
        else dict(translation_scorers)
    )
    result = train(
        model,
        train_ds,
        args.train,
        eval_ds,
        translation_scorers=scorers,
        column_map=data.column_map(modalities),
    )
    if _is_main_process():
        final = _save_final(result, args.hub)
        _print_summary(result, final)
    return result


def _print_summary(result: Any, final: Path | None) -> None:
    m = result.metrics
    out = Path(result.output_dir)
    keys = [
        "image_psnr",
        "image_ssim",
        "text_exact_match",
        "text_token_accuracy",
        "audio_logmel_l1",
        "text_to_image_score",
        "image_to_text_exact_match",
        "audio_to_text_exact_match",
        "codebook_usage",
        "same_code_agreement",
        "train_seconds",
        "steps",
    ]
    print("\n==== mmvq training finished ====")
    for k in keys:
        if k in m:
            v = m[k]
            print(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")
    if "perplexity" in m:
        print(
            f"  {'perplexity':28s} " + ", ".join(f"{k}={v:.1f}" for k, v in m["perplexity"].items())
        )
    print(f"Outputs in {out.resolve()}:")
    print(f"  metrics      {out / 'metrics.json'}")
    print(f"  samples      {out / 'samples'} (one folder per evaluation: grids, captions, audio)")
    print(f"  checkpoints  {out / 'checkpoints'} (resume with --resume_from_checkpoint latest)")
    print(
        f"  logs         {out / 'train_log.jsonl'} and {out / 'logs'} (tensorboard --logdir "
        f"{out / 'logs'})"
    )
    if final is not None:
        print(f"  final model  {final} (MultimodalVQ.from_pretrained('{final}'))")


def recipe_main(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> Any:
    """Parse ``argv`` (see :func:`parse_recipe_args`) and :func:`run_recipe`; the CLI's entry."""
    return run_recipe(parse_recipe_args(argv, defaults))
