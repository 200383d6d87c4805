"""The model card (the repo's ``README.md``) of a saved :class:`~mmvq.model.MultimodalVQ`.

Built with :class:`huggingface_hub.ModelCard` / :class:`~huggingface_hub.ModelCardData`. It states
the modalities and their adapters (name, providing distribution, version), the codebook, the
per-modality codebook usage and perplexity and the last evaluation's metrics (both from a
``metrics`` mapping such as the training run's ``metrics.json``), the training data, an optional
sample grid copied into the repo, and how to load the model. Metadata: ``library_name: mmvq`` and
the tags ``mmvq`` plus one per modality.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData

from mmvq.hub.format import PretrainedConfig, describe_model
from mmvq.utils.metrics import flatten_metrics

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from mmvq.model import MultimodalVQ

__all__ = [
    "CARD_NAME",
    "SAMPLE_IMAGE_STEM",
    "ModelCardInputError",
    "add_sample_image",
    "build_model_card",
    "check_card_inputs",
    "check_sample_image",
    "load_metrics",
    "write_model_card",
]

CARD_NAME = "README.md"
SAMPLE_IMAGE_STEM = "sample_grid"
BASE_TAGS = ("mmvq", "vector-quantization", "multimodal")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")

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


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _cell(value: Any) -> str:
    return _format_value(value).replace("|", "\\|").replace("\n", " ")


_STAT_NAMES = {
    # what mmvq's training writes (metrics.json: codebook_usage_per_modality/<m>, perplexity/<m>)
    # and what the codebook's batch statistics are called (usage/<m>, perplexity/<m>)
    "usage": ("usage", "codebook_usage_per_modality"),
    "perplexity": ("perplexity",),
    "concept_usage": ("concept_codebook_usage_per_modality",),
    "concept_perplexity": ("concept_perplexity",),
}


def _modality_stat(flat: Mapping[str, Any], stat: str, modality: str) -> Any:
    """The value of ``.../<stat>/<modality>`` (or ``.../<modality>/<stat>``), shortest key first."""
    names = _STAT_NAMES.get(stat, (stat,))
    for key in sorted(flat, key=len):
        segments = key.split("/")
        if len(segments) >= 2 and (
            (segments[-2] in names and segments[-1] == modality)
            or (segments[-2] == modality and segments[-1] in names)
        ):
            return flat[key]
    return None


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


def check_card_inputs(
    metrics: MetricsInput = None,
    sample_image: str | os.PathLike | Image.Image | None = None,
    training_data: TrainingData = None,
) -> None:
    """Validate the card's inputs before anything is written (:class:`ModelCardInputError`)."""
    load_metrics(metrics)
    if sample_image is not None:
        check_sample_image(sample_image)
    _check_training_data(training_data)


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


def _training_section(training_data: TrainingData) -> tuple[str, list[str]]:
    """Markdown of the training-data section and the dataset ids for the card metadata."""
    if training_data is None:
        return "Not recorded (pass `training_data=...` to `save_pretrained`).", []
    if isinstance(training_data, str):
        return training_data.strip(), []
    if isinstance(training_data, Mapping):
        datasets = training_data.get("datasets", [])
        datasets = [datasets] if isinstance(datasets, str) else [str(d) for d in datasets]
        lines = [f"- **{key}**: {_format_value(value)}" for key, value in training_data.items()]
        return "\n".join(lines), datasets
    return "\n".join(f"- {name}" for name in training_data), []


# ----------------------------------------------------------------------------- the card
def _usage_snippet(repo_id: str, config: PretrainedConfig) -> str:
    dists = sorted({r.distribution for r in config.adapters.values() if r.distribution} - {"mmvq"})
    pins = " ".join(["mmvq"] + dists)
    first = config.modalities[0]
    target = config.modalities[-1]
    decode_line = (
        f"recon = model.decode(codes.select(['{first}']), targets=['{target}'])"
        f"  # {first} -> {target}"
        if target != first
        else f"recon = model.decode(codes, targets=['{first}'])"
    )
    return f"""```bash
pip install {pins}
```

```python
from mmvq import MultimodalVQ

model = MultimodalVQ.from_pretrained("{repo_id}")
adapter = model.adapters["{first}"]
batch = {{"{first}": adapter.collate([adapter.preprocess(example)])}}  # your raw {first} example
codes = model.encode(batch)   # .detail[m]: LongTensor [B, tokens]; .concept[m]: [B, concepts]
{decode_line}
outputs = model.adapters["{target}"].postprocess(recon["{target}"])
```

From the command line:

```bash
mmvq encode {repo_id} --{first} EXAMPLE --out codes.json
mmvq decode {repo_id} codes.json --to {target} --out decoded/
```"""


def _card_data(
    card_data: ModelCardData | None, modalities: list[str], datasets: list[str]
) -> ModelCardData:
    """The card's metadata: ``library_name``, tags (base + modalities), datasets."""
    data = ModelCardData(**(card_data.to_dict() if card_data is not None else {}))
    data.library_name = "mmvq"
    tags = list(data.tags or []) + list(BASE_TAGS) + modalities
    data.tags = sorted(set(tags), key=tags.index)
    if datasets:
        data.datasets = datasets
    return data


def _modality_table(
    config: PretrainedConfig, layout: Mapping[str, int], flat: Mapping[str, Any]
) -> str:
    """One row per modality: adapter, provenance, tokens, codebook usage and perplexity."""
    rows = [
        (
            "| Modality | Adapter | Provided by | Version | Tokens / sample | Codebook usage | "
            "Perplexity | Concept usage | Concept perplexity |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(name: str, m: str) -> str:
        value = _modality_stat(flat, name, m)
        return _cell(value) if value is not None else "not measured"

    for m, record in config.adapters.items():
        rows.append(
            f"| {m} | `{record.name}` | {record.distribution or 'registered in code'} | "
            f"{record.version or '-'} | {layout[m]} | {stat('usage', m)} | "
            f"{stat('perplexity', m)} | {stat('concept_usage', m)} | "
            f"{stat('concept_perplexity', m)} |"
        )
    return "\n".join(rows)


def _concept_line(model: MultimodalVQ, flat: Mapping[str, Any]) -> str:
    """The concept level in one line: its size and how well paired modalities agree on it."""
    concept = model.config.concept
    if not concept.enabled:
        return "Concept level: none (detail codes only)"
    line = (
        f"Concept codes: **{concept.num_concepts}** per sample and modality from a codebook of "
        f"**{concept.num_codes}** shared by all modalities"
    )
    measured = [
        f"{k} {_cell(flat[k])}"
        for k in sorted(flat)
        if k == "concept_same_code_agreement" or k.startswith("retrieval_r1_")
    ]
    return line + (f" (last evaluation: {', '.join(measured)})" if measured else "")


def _codebook_section(
    model: MultimodalVQ, config: PretrainedConfig, flat: Mapping[str, Any]
) -> str:
    cb = model.config.codebook
    dec = model.config.decoder
    return (
        f"- Detail codes: **{cb.num_codes}** of dimension **{cb.code_dim}**, shared by all "
        "modalities\n  (one per adapter token)\n"
        f"- {_concept_line(model, flat)}\n"
        f"- Fusion decoder: depth {dec.depth}, width {dec.dim}, {dec.heads} attention heads\n"
        f"- Checkpoint format {config.format_version}, written by mmvq {config.mmvq_version}"
    )


def _evaluation_section(flat: Mapping[str, Any]) -> str:
    if not flat:
        return "No evaluation recorded (pass `metrics=...`, e.g. the training run's metrics.json)."
    metric_rows = ["| Metric | Value |", "|---|---|"] + [
        f"| {_cell(k)} | {_cell(v)} |" for k, v in flat.items()
    ]
    return "\n".join(metric_rows)


def build_model_card(
    model: MultimodalVQ,
    *,
    metrics: MetricsInput = None,
    sample_image_name: str | None = None,
    training_data: TrainingData = None,
    repo_id: str | None = None,
    card_data: ModelCardData | None = None,
) -> ModelCard:
    """The model card of ``model``.

    Args:
        model: the model (its adapters must be registered, see
            :func:`mmvq.hub.format.describe_model`).
        metrics: the last evaluation's metrics (mapping or JSON file); per-modality codebook
            usage and perplexity are read from keys ending in ``usage/<modality>`` (or
            ``codebook_usage_per_modality/<modality>``) / ``perplexity/<modality>``.
        sample_image_name: file name of a sample grid already in the repo
            (see :func:`add_sample_image`).
        training_data: a description, a dict (its ``datasets`` entry goes into the card
            metadata) or a list of dataset names.
        repo_id: the Hub repo id used in the loading snippet (default: a placeholder).
        card_data: metadata to start from (e.g. the Hub mixin's); tags and library_name are added.
    """
    flat = load_metrics(metrics)
    _check_training_data(training_data)
    config = describe_model(model)
    training_section, datasets = _training_section(training_data)
    data = _card_data(card_data, config.modalities, datasets)
    repo = repo_id or "path/to/this-model"
    title = repo_id.split("/")[-1] if repo_id else "mmvq model"
    table = _modality_table(config, model.num_tokens(), flat)
    evaluation = _evaluation_section(flat)
    samples = (
        f"![Sample grid]({sample_image_name})"
        if sample_image_name
        else "No sample grid (pass `sample_image=...` to `save_pretrained`)."
    )
    names = ", ".join(config.modalities)
    body = f"""
# {title}

A multimodal discrete tokenizer trained with mmvq: {names} are
encoded by per-modality adapters into **one shared codebook** and reconstructed by a common fusion
decoder (a bidirectional transformer over every modality's tokens), so each modality can be rebuilt
from its own codes or translated from another modality's codes.

## Modalities and adapters

{table}

Usage is the fraction of a codebook a modality uses; perplexity is the exponential of the entropy
of its code distribution (both from the last evaluation), for the detail codes and for the concept
codes (a few per sample, which paired modalities are trained to agree on).

## Codebook

{_codebook_section(model, config, flat)}

## Training data

{training_section}

## Evaluation

{evaluation}

## Samples

{samples}

## How to use

{_usage_snippet(repo, config)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model_card(
    model: MultimodalVQ,
    directory: str | os.PathLike,
    *,
    metrics: MetricsInput = None,
    sample_image: str | os.PathLike | Image.Image | None = None,
    training_data: TrainingData = None,
    repo_id: str | None = None,
    card_data: ModelCardData | None = None,
) -> ModelCard:
    """Copy the sample grid into ``directory`` and write ``README.md`` there; return the card."""
    directory = Path(directory)
    check_card_inputs(metrics, sample_image, training_data)
    if sample_image is not None:
        grid_name: str | None = add_sample_image(sample_image, directory)
    else:
        grid_name = None
        for stale in directory.glob(f"{SAMPLE_IMAGE_STEM}.*"):
            stale.unlink()
    card = build_model_card(
        model,
        metrics=metrics,
        sample_image_name=grid_name,
        training_data=training_data,
        repo_id=repo_id,
        card_data=card_data,
    )
    card.save(directory / CARD_NAME)
    return card
