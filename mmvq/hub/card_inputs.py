"""What a model card is made from, checked before anything is written, and read back.

The inputs of :func:`mmvq.hub.model_card.build_model_card` (``metrics``, ``sample_image``,
``training_data``, ``license``): :func:`load_metrics`, the sample grid (:func:`add_sample_image`),
the training-data section, :func:`check_card_inputs`. A saved directory keeps them so that
pushing it later (``mmvq push DIR``) rebuilds the same card: the metrics as ``eval_results.json``
(the name ``transformers.Trainer`` uses), the grid as ``sample_grid.<ext>``, the training data and
license in ``README.md`` (:func:`read_card_inputs`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmvq.utils.metrics import flatten_metrics

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import ModelCard
    from PIL import Image

__all__ = [
    "CARD_INPUTS",
    "CARD_NAME",
    "EVAL_RESULTS_NAME",
    "NOT_RECORDED",
    "SAMPLE_IMAGE_STEM",
    "MetricsInput",
    "ModelCardInputError",
    "TrainingData",
    "add_sample_image",
    "card_kwargs",
    "cell",
    "check_card_inputs",
    "check_sample_image",
    "format_value",
    "load_metrics",
    "read_card_inputs",
    "training_section",
    "write_card",
    "write_eval_results",
]

CARD_NAME = "README.md"
SAMPLE_IMAGE_STEM = "sample_grid"
EVAL_RESULTS_NAME = "eval_results.json"
CARD_INPUTS = ("metrics", "sample_image", "training_data", "license")
"""The card's inputs, as ``save_pretrained`` / ``push_to_hub`` / ``model_card_kwargs`` name them."""
NOT_RECORDED = "Not recorded (pass `training_data=...` to `save_pretrained`)."
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")

MetricsInput = Mapping[str, Any] | str | os.PathLike | None
TrainingData = str | Mapping[str, Any] | Sequence[str] | None


class ModelCardInputError(ValueError):
    """An argument of the model card (metrics, sample image, training data) is unusable."""


# ------------------------------------------------------------------------------ metrics
def load_metrics(metrics: MetricsInput) -> dict[str, Any]:
    """Flattened metrics from a mapping or a JSON file (e.g. ``metrics.json``); ``{}`` for None.

    Raises:
        ModelCardInputError: not a mapping / path, missing file, or not a JSON object.
    """
    if metrics is None:
        return {}
    if isinstance(metrics, (str, os.PathLike)):
        path = Path(metrics)
        if not path.is_file():
            raise ModelCardInputError(
                f"metrics={str(path)!r}: no such file; pass the training run's metrics.json or a "
                "dict."
            )
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelCardInputError(f"metrics={str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(metrics, Mapping):
            raise ModelCardInputError(
                f"metrics={str(path)!r} must hold a JSON object of metric name -> value, got "
                f"{type(metrics).__name__}"
            )
    if not isinstance(metrics, Mapping):
        raise ModelCardInputError(
            f"metrics must be a dict of metric name -> value or a path to a JSON file, got "
            f"{type(metrics).__name__} {metrics!r:.60}"
        )
    return flatten_metrics(metrics)


def format_value(value: Any) -> str:
    """A metric value for the card: 4 significant digits, long values shortened."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def cell(value: Any) -> str:
    """:func:`format_value` escaped for a Markdown table cell."""
    return format_value(value).replace("|", "\\|").replace("\n", " ")


# -------------------------------------------------------------------------- sample image
def check_sample_image(source: str | os.PathLike | Image.Image) -> None:
    """Raise :class:`ModelCardInputError` unless ``source`` is a PIL image or an image file."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return
    if not isinstance(source, (str, os.PathLike)):
        raise ModelCardInputError(
            f"sample_image must be an image file path or a PIL.Image, got {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise ModelCardInputError(
            f"sample_image={str(path)!r}: no such file; pass an existing PNG/JPEG."
        )
    suffix = path.suffix.lower()
    if suffix not in _IMAGE_SUFFIXES:
        raise ModelCardInputError(
            f"sample_image={str(path)!r} has extension {suffix!r}; use one of "
            f"{list(_IMAGE_SUFFIXES)}."
        )
    try:
        with Image.open(path) as picture:
            picture.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ModelCardInputError(
            f"sample_image={str(path)!r} is not a readable image ({exc}); pass a valid PNG/JPEG."
        ) from None


def add_sample_image(source: str | os.PathLike | Image.Image, directory: str | os.PathLike) -> str:
    """Copy a sample grid into ``directory`` as ``sample_grid.<ext>``; return the file name.

    Args:
        source: an image file (png/jpg/webp/gif) or a PIL image (saved as PNG).

    Raises:
        ModelCardInputError: the file is missing or not a readable image.
    """
    from PIL import Image

    check_sample_image(source)
    directory = Path(directory)
    for stale in directory.glob(f"{SAMPLE_IMAGE_STEM}.*"):
        stale.unlink()
    if isinstance(source, Image.Image):
        name = f"{SAMPLE_IMAGE_STEM}.png"
        source.save(directory / name)
        return name
    suffix = Path(source).suffix.lower()
    name = f"{SAMPLE_IMAGE_STEM}{'.jpg' if suffix == '.jpeg' else suffix}"
    shutil.copyfile(source, directory / name)
    return name


# ------------------------------------------------------------------------ training data
def _check_training_data(training_data: TrainingData) -> None:
    if training_data is None or isinstance(training_data, (str, Mapping)):
        return
    if isinstance(training_data, Sequence) and all(isinstance(x, str) for x in training_data):
        return
    raise ModelCardInputError(
        "training_data must be a description string, a dict (e.g. {'datasets': ['org/name'], "
        f"'examples': 10000}}) or a list of dataset names, got {type(training_data).__name__}"
    )


def _record_value(value: Any) -> str:
    """A training-data value on one line, in full (numbers as in the metrics table)."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, (bool, int, float)):
        return format_value(value)
    return json.dumps(value, default=str)


def training_section(training_data: TrainingData) -> tuple[str, list[str]]:
    """Markdown of the training-data section and the dataset ids for the card metadata."""
    if training_data is None:
        return NOT_RECORDED, []
    if isinstance(training_data, str):
        return training_data.strip(), []
    if isinstance(training_data, Mapping):
        datasets = training_data.get("datasets", [])
        datasets = [datasets] if isinstance(datasets, str) else [str(d) for d in datasets]
        lines = [f"- **{key}**: {_record_value(value)}" for key, value in training_data.items()]
        return "\n".join(lines), datasets
    return "\n".join(f"- {name}" for name in training_data), list(training_data)


def _check_license(license: Any) -> None:
    if license is None:
        return
    if not isinstance(license, str) or not _LICENSE.match(license):
        raise ModelCardInputError(
            f"license={license!r} must be a Hub license identifier such as 'apache-2.0', 'mit', "
            "'cc-by-4.0', 'other' or 'unknown' (lowercase, no spaces)"
        )


def check_card_inputs(
    metrics: MetricsInput = None,
    sample_image: str | os.PathLike | Image.Image | None = None,
    training_data: TrainingData = None,
    license: str | None = None,
) -> None:
    """Validate the card's inputs before anything is written (:class:`ModelCardInputError`)."""
    load_metrics(metrics)
    if sample_image is not None:
        check_sample_image(sample_image)
    _check_training_data(training_data)
    _check_license(license)


def card_kwargs(model_card_kwargs: Mapping[str, Any] | None, **given: Any) -> dict[str, Any]:
    """The card's inputs: each given argument (not ``None``), else its ``model_card_kwargs`` entry
    (what :class:`~huggingface_hub.ModelHubMixin` callers pass); checked."""
    extra = dict(model_card_kwargs or {})
    unknown = sorted(set(extra) - set(CARD_INPUTS))
    if unknown:
        raise TypeError(
            f"model_card_kwargs has unknown key(s) {unknown}; the mmvq card takes "
            f"{', '.join(CARD_INPUTS)}."
        )
    card = {k: given[k] if given.get(k) is not None else extra.get(k) for k in CARD_INPUTS}
    check_card_inputs(**card)
    return card


def write_card(
    directory: str | os.PathLike,
    build: Callable[[str | None], ModelCard],
    metrics: MetricsInput = None,
    sample_image: str | os.PathLike | Image.Image | None = None,
) -> ModelCard:
    """Write a card and what it refers to into ``directory``: the sample grid (a stale one removed
    when there is none), ``eval_results.json`` and ``README.md``, the card ``build(grid_name)``
    returns (``grid_name``: the grid's file name or ``None``); return the card."""
    directory = Path(directory)
    grid_name = None
    if sample_image is not None:
        grid_name = add_sample_image(sample_image, directory)
    else:
        for stale in directory.glob(f"{SAMPLE_IMAGE_STEM}.*"):
            stale.unlink()
    write_eval_results(metrics, directory)
    card = build(grid_name)
    card.save(directory / CARD_NAME)
    return card


def write_eval_results(metrics: MetricsInput, directory: str | os.PathLike) -> None:
    """Keep the card's metrics as ``eval_results.json`` in ``directory`` (removed when none)."""
    path = Path(directory) / EVAL_RESULTS_NAME
    flat = load_metrics(metrics)
    if flat:
        path.write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")
    elif path.exists():
        path.unlink()


def _section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    return match.group(1).strip() if match else ""


def _recorded_training_data(card: Any) -> TrainingData:
    """The training data a saved card records: the dict its ``- **key**: value`` lines held
    (with the metadata's ``datasets``), or its text; ``None`` when not recorded."""
    section = _section(card.text, "Training data")
    if not section or section == NOT_RECORDED:
        return None
    pairs = re.findall(r"^- \*\*(.+?)\*\*: (.*)$", section, flags=re.M)
    if not pairs or len(pairs) != len(section.splitlines()):
        return section
    data: dict[str, Any] = dict(pairs)
    datasets = card.data.datasets
    if datasets:
        data["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
    return data


def read_card_inputs(directory: str | os.PathLike) -> dict[str, Any]:
    """The card inputs a directory written by ``save_pretrained`` keeps (``None`` for each one it
    does not): ``eval_results.json``, ``sample_grid.*``, and the training data and license of its
    ``README.md``."""
    from huggingface_hub import ModelCard

    directory = Path(directory)
    inputs: dict[str, Any] = dict.fromkeys(CARD_INPUTS)
    if (directory / EVAL_RESULTS_NAME).is_file():
        inputs["metrics"] = str(directory / EVAL_RESULTS_NAME)
    grids = sorted(directory.glob(f"{SAMPLE_IMAGE_STEM}.*"))
    if grids:
        inputs["sample_image"] = str(grids[0])
    if (directory / CARD_NAME).is_file():
        card = ModelCard.load(directory / CARD_NAME)
        inputs["training_data"] = _recorded_training_data(card)
        inputs["license"] = card.data.license
    return inputs
