"""The model card (the repo's ``README.md``) of a saved :class:`~mmvq.model.MultimodalVQ`.

Built with :class:`huggingface_hub.ModelCard` / :class:`~huggingface_hub.ModelCardData`. The body
states the modalities and their adapters (name, providing distribution, version), the codebook, the
per-modality codebook usage and perplexity and the last evaluation's metrics (both from a
``metrics`` mapping such as the training run's ``metrics.json``), the training data, an optional
sample grid copied into the repo, and how to load the model. The metadata: ``library_name: mmvq``,
``license``, ``tags`` (``mmvq``, ``vector-quantization``, ``multimodal`` and one per modality),
``datasets``, ``pipeline_tag`` (``any-to-any`` for several modalities, ``feature-extraction`` for
one) and a ``model-index`` with every evaluation metric. The inputs and their checks are
:mod:`mmvq.hub.card_inputs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mmvq.hub.card_inputs import (
    CARD_NAME,
    SAMPLE_IMAGE_STEM,
    MetricsInput,
    ModelCardInputError,
    TrainingData,
    add_sample_image,
    cell,
    check_card_inputs,
    load_metrics,
    training_section,
    write_card,
)
from mmvq.hub.format import PretrainedConfig, describe_model

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from mmvq.model import MultimodalVQ

__all__ = [
    "BASE_TAGS",
    "CARD_NAME",
    "NOT_EVALUATED",
    "SAMPLE_IMAGE_STEM",
    "ModelCardInputError",
    "add_sample_image",
    "build_model_card",
    "check_card_inputs",
    "eval_results",
    "evaluation_section",
    "load_metrics",
    "pipeline_tag",
    "samples_line",
    "write_model_card",
]

BASE_TAGS = ("mmvq", "vector-quantization", "multimodal")
NOT_EVALUATED = frozenset(
    {"train_seconds", "wall_seconds", "steps", "nonfinite_steps", "eval_samples", "step"}
    | {"balance_weight_per_modality", "balance_grad_share_per_modality"}
)
"""Keys of ``metrics.json`` that are bookkeeping, not evaluation results (kept out of
``model-index``; the card's metrics table still shows them)."""


_STAT_NAMES = {
    # what mmvq's training writes (metrics.json: codebook_usage_per_modality/<m>, perplexity/<m>)
    # and what the codebook's batch statistics are called (usage/<m>, perplexity/<m>)
    "usage": ("usage", "codebook_usage_per_modality"),
    "perplexity": ("perplexity",),
    "concept_usage": ("concept_codebook_usage_per_modality",),
    "concept_perplexity": ("concept_perplexity",),
    "balance_weight": ("balance_weight_per_modality",),
    "grad_share": ("balance_grad_share_per_modality",),
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


def _modality_table(
    config: PretrainedConfig, layout: Mapping[str, int], flat: Mapping[str, Any]
) -> str:
    """One row per modality: adapter, provenance, tokens, codebook usage and perplexity."""
    rows = [
        (
            "| Modality | Adapter | Provided by | Version | Tokens / sample | Codebook usage | "
            "Perplexity | Concept usage | Concept perplexity | Balancer weight | Gradient share |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(name: str, m: str) -> str:
        value = _modality_stat(flat, name, m)
        return cell(value) if value is not None else "not measured"

    for m, record in config.adapters.items():
        rows.append(
            f"| {m} | `{record.name}` | {record.distribution or 'registered in code'} | "
            f"{record.version or '-'} | {layout[m]} | {stat('usage', m)} | "
            f"{stat('perplexity', m)} | {stat('concept_usage', m)} | "
            f"{stat('concept_perplexity', m)} | {stat('balance_weight', m)} | "
            f"{stat('grad_share', m)} |"
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
        f"{k} {cell(flat[k])}"
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


def pipeline_tag(modalities: list[str]) -> str:
    """The Hub pipeline tag: ``any-to-any`` (each modality rebuilt from any other's codes) for
    several modalities, ``feature-extraction`` (discrete codes) for one."""
    return "any-to-any" if len(modalities) > 1 else "feature-extraction"


def _dataset_identity(training_data: TrainingData, datasets: list[str]) -> tuple[str, str, Any]:
    """``(dataset_type, dataset_name, split)`` of the evaluation for ``model-index``."""
    data = training_data if isinstance(training_data, Mapping) else {}
    name = datasets[0] if datasets else str(data.get("dataset") or "custom")
    pretty = str(data.get("dataset_name") or name)
    split = data.get("eval_split")
    return name, pretty, (str(split) if split else None)


def eval_results(
    flat: Mapping[str, Any], modalities: list[str], training_data: TrainingData, datasets: list[str]
) -> list[EvalResult]:
    """One ``model-index`` entry per finite numeric evaluation metric (bookkeeping keys such as
    ``train_seconds`` left out)."""
    dataset_type, dataset_name, split = _dataset_identity(training_data, datasets)
    results = []
    for key, value in flat.items():
        if NOT_EVALUATED.intersection(key.split("/")) or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        results.append(
            EvalResult(
                task_type=pipeline_tag(modalities),
                task_name="Multimodal tokenization: reconstruction and cross-modal translation",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=split,
                metric_type=key,
                metric_name=key,
                metric_value=value,
            )
        )
    return results


def _card_data(
    card_data: ModelCardData | None,
    modalities: list[str],
    datasets: list[str],
    license: str | None,
    model_name: str,
    results: list[EvalResult],
) -> ModelCardData:
    """The card's metadata (see the module docstring), over the Hub mixin's."""
    data = ModelCardData(**(card_data.to_dict() if card_data is not None else {}))
    data.library_name = "mmvq"
    tags = list(data.tags or []) + list(BASE_TAGS) + modalities
    data.tags = sorted(set(tags), key=tags.index)
    data.pipeline_tag = pipeline_tag(modalities)
    if license:
        data.license = license
    if datasets:
        data.datasets = datasets
    if results:
        data.model_name = model_name
        data.eval_results = results
    return data


def evaluation_section(flat: Mapping[str, Any]) -> str:
    """The card's metrics as a Markdown table (or a line saying none were recorded)."""
    if not flat:
        return "No evaluation recorded (pass `metrics=...`, e.g. the training run's metrics.json)."
    metric_rows = ["| Metric | Value |", "|---|---|"] + [
        f"| {cell(k)} | {cell(v)} |" for k, v in flat.items()
    ]
    return "\n".join(metric_rows)


def samples_line(sample_image_name: str | None) -> str:
    """The card's sample grid (a Markdown image), or a line saying how to add one."""
    if sample_image_name:
        return f"![Sample grid]({sample_image_name})"
    return "No sample grid (pass `sample_image=...` to `save_pretrained`)."


def build_model_card(
    model: MultimodalVQ,
    *,
    metrics: MetricsInput = None,
    sample_image_name: str | None = None,
    training_data: TrainingData = None,
    repo_id: str | None = None,
    card_data: ModelCardData | None = None,
    license: str | None = None,
) -> ModelCard:
    """The model card of ``model``.

    Args:
        model: the model (its adapters must be registered, see
            :func:`mmvq.hub.format.describe_model`).
        metrics: the last evaluation's metrics (mapping or JSON file); per-modality codebook
            usage and perplexity are read from keys ending in ``usage/<modality>`` (or
            ``codebook_usage_per_modality/<modality>``) / ``perplexity/<modality>``; every
            numeric one (bookkeeping aside) goes into ``model-index``.
        sample_image_name: file name of a sample grid already in the repo
            (see :func:`add_sample_image`).
        training_data: a description, a dict (its ``datasets`` entry goes into the card
            metadata, ``dataset``/``dataset_name``/``eval_split`` name the evaluation data in
            ``model-index``) or a list of dataset names.
        repo_id: the Hub repo id used in the loading snippet (default: a placeholder).
        card_data: metadata to start from (e.g. the Hub mixin's).
        license: the model's license identifier (e.g. ``"apache-2.0"``).
    """
    flat = load_metrics(metrics)
    check_card_inputs(training_data=training_data, license=license)
    config = describe_model(model)
    training, datasets = training_section(training_data)
    title = repo_id.split("/")[-1] if repo_id else "mmvq model"
    results = eval_results(flat, config.modalities, training_data, datasets)
    data = _card_data(card_data, config.modalities, datasets, license, title, results)
    repo = repo_id or "path/to/this-model"
    table = _modality_table(config, model.num_tokens(), flat)
    evaluation = evaluation_section(flat)
    samples = samples_line(sample_image_name)
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
codes (a few per sample, which paired modalities are trained to agree on). Balancer weight is
the weight of the modality's reconstruction loss at the end of training (modality balancer:
{flat.get("balancer", "not recorded")}); gradient share is its share of the weighted gradient on
the decoder's shared output layer, averaged over the run's logged steps.

## Codebook

{_codebook_section(model, config, flat)}

## Training data

{training}

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
    license: str | None = None,
) -> ModelCard:
    """Copy the sample grid into ``directory``, keep the metrics as ``eval_results.json`` and
    write ``README.md`` there; return the card."""
    check_card_inputs(metrics, sample_image, training_data, license)
    return write_card(
        directory,
        lambda grid_name: build_model_card(
            model,
            metrics=metrics,
            sample_image_name=grid_name,
            training_data=training_data,
            repo_id=repo_id,
            card_data=card_data,
            license=license,
        ),
        metrics,
        sample_image,
    )
