"""The prior's model card: ``README.md`` in the prior's folder (``OUTPUT_DIR/final``, the
``prior/`` folder of the tokenizer model's repo).

Built with :class:`huggingface_hub.ModelCard` and the tokenizer model card's helpers
(:mod:`mmvq.hub.model_card`, :mod:`mmvq.hub.card_inputs`): the LM's size, the sequence layout
(one row per span: modality, code level, codes per sample, codebook size), the generation metrics
of a ``metrics`` mapping or file (the prior's training writes ``metrics.json``: teacher-forced
``eval_loss`` and ``eval_perplexity``, steps, timings...), kept beside the card as
``eval_results.json``, an optional sample grid copied beside it, and how to sample. Metadata:
``library_name: mmvq`` and the tags ``mmvq``, ``prior``, ``causal-lm`` and one per modality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelCardData

from mmvq.hub.card_inputs import MetricsInput, cell, load_metrics, write_card
from mmvq.hub.model_card import evaluation_section, samples_line

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from mmvq.prior.model import MultimodalPrior

__all__ = ["PRIOR_TAGS", "build_prior_card", "write_prior_card"]

PRIOR_TAGS = ("mmvq", "prior", "causal-lm")


def _layout_table(prior: MultimodalPrior) -> str:
    rows = [
        "| Modality | Code level | Codes / sample | Codebook size | Padded |",
        "|---|---|---|---|---|",
    ]
    for span in prior.tokenizer.spans:
        rows.append(
            f"| {cell(span.modality)} | {span.level} | {span.length} | {span.num_codes} | "
            f"{'yes' if span.padding else 'no'} |"
        )
    return "\n".join(rows)


def build_prior_card(
    prior: MultimodalPrior,
    *,
    metrics: MetricsInput = None,
    sample_image_name: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """The model card of ``prior`` (see the module docstring).

    Args:
        prior: the prior.
        metrics: its generation metrics (a mapping or a JSON file such as the training run's
            ``metrics.json``).
        sample_image_name: file name of a sample grid beside the card.
        repo_id: the repo of the tokenizer model whose ``prior/`` folder holds the prior (used
            in the snippets; default: a placeholder).
    """
    flat = load_metrics(metrics)
    tok = prior.tokenizer
    cfg = prior.config
    modalities = list(tok.modalities)
    data = ModelCardData(library_name="mmvq", tags=[*PRIOR_TAGS, *modalities])
    repo = repo_id or "path/to/the-tokenizer-model"
    title = f"{repo_id.split('/')[-1]} prior" if repo_id else "mmvq prior"
    first = modalities[0]
    body = f"""
# {title}

A prior over the codes of an mmvq tokenizer model (stage 2): a causal language model
(`LlamaForCausalLM`) over one id sequence per example, `[bos] <modality> codes... </modality> ...
[eos]`, sampled through `generate()` with a grammar that only allows well-formed sequences. It
generates {", ".join(modalities)} unconditionally or one modality from another.

## Model

- **{prior.num_parameters():,}** parameters: {cfg.num_hidden_layers} layer(s), width
  {cfg.hidden_size}, {cfg.num_attention_heads} attention heads
- Vocabulary: **{tok.vocab_size}** ids; longest sequence: {tok.sequence_length()} ids

{_layout_table(prior)}

## Generation metrics

{evaluation_section(flat)}

## Samples

{samples_line(sample_image_name)}

## How to use

```python
from mmvq import MultimodalVQ
from mmvq.prior import MultimodalPrior

model = MultimodalVQ.from_pretrained("{repo}")
prior = MultimodalPrior.from_pretrained("{repo}", model=model)   # its prior/ folder
samples = prior.generate(4, modalities=["{first}"]).outputs["{first}"]
```

```bash
mmvq generate {repo} --prior {repo} --to {first} --num-samples 10 --seed 0 --out samples/
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_prior_card(
    prior: MultimodalPrior,
    directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    metrics: MetricsInput = None,
    sample_image: str | os.PathLike | Image.Image | None = None,
) -> ModelCard:
    """Write the card as ``directory/README.md``, with the sample grid and ``eval_results.json``
    beside it (:func:`mmvq.hub.card_inputs.write_card`); return the card.

    Raises:
        ModelCardInputError: unusable metrics or sample image (nothing is written).
    """
    from mmvq.hub.card_inputs import check_card_inputs

    check_card_inputs(metrics, sample_image)
    Path(directory).mkdir(parents=True, exist_ok=True)
    return write_card(
        directory,
        lambda grid: build_prior_card(
            prior, metrics=metrics, sample_image_name=grid, repo_id=repo_id
        ),
        metrics,
        sample_image,
    )
