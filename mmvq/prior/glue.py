"""The prior's only contact with the tokenizer model (:class:`mmvq.MultimodalVQ`).

Everything else in :mod:`mmvq.prior` works on *span codes*: ``{(modality, level): long [B, L]}``
with ``-1`` at padding positions and in rows that lack the modality. This module turns a model's
outputs into span codes and back:

* :func:`model_spans`: the layout, ``model.code_layout()`` (:class:`mmvq.concept.CodeSpan`).
* :func:`split_codes`: ``model.encode(batch)``'s :class:`mmvq.concept.MultimodalCodes` (or a plain
  ``{modality: detail codes}`` dict, read by ``MultimodalCodes.from_mapping``) -> span codes.
* :func:`decode_span_codes`: span codes -> ``model.decode(MultimodalCodes(concept=...,
  detail=...))``.
* :func:`encode_examples` (``model.prepare`` then ``model.encode``) and :func:`postprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmvq.concept import LEVELS, MultimodalCodes
from mmvq.prior.vocab import SpanSpec

__all__ = [
    "CONCEPT",
    "DETAIL",
    "SpanCodes",
    "decode_span_codes",
    "encode_batch",
    "encode_examples",
    "model_device",
    "model_spans",
    "postprocess",
    "split_codes",
]

CONCEPT, DETAIL = LEVELS

SpanCodes = dict[tuple[str, str], Tensor]
"""``{(modality, level): long [B, L]}``, ``-1`` at padding and in rows lacking the modality."""


def _check_model(model: Any) -> None:
    for name in ("encode", "decode", "prepare", "postprocess"):
        if not callable(getattr(model, name, None)):
            raise TypeError(
                f"the prior needs a mmvq.MultimodalVQ (with .{name}()), got {type(model).__name__}"
            )


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters (CPU for a parameterless model)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _check_subset(arg: str, given: Sequence[str] | None, known: set[str], noun: str) -> None:
    for name in given or ():
        if name not in known:
            raise ValueError(
                f"{arg}={list(given)!r}: the model has no {noun} {name!r}; it has {sorted(known)}"
            )


def model_spans(
    model: Any,
    *,
    levels: Sequence[str] | None = None,
    padding: Mapping[Any, bool] | None = None,
    modalities: Sequence[str] | None = None,
) -> list[SpanSpec]:
    """The model's code spans as :class:`SpanSpec` (see the module docstring).

    Args:
        levels: keep only these levels (default: all the model has).
        padding: ``{modality or (modality, level): bool}``: whether a span may end in blanks.
            Default: detail spans may (an adapter's token mask can mark padding), concept spans
            may not. :func:`mmvq.prior.data.observed_padding` reads it off encoded data.
        modalities: keep only these modalities (default: all).
    """
    _check_model(model)
    raw = [(c.modality, c.level, int(c.length), int(c.num_codes)) for c in model.code_layout()]
    _check_subset("levels", levels, {r[1] for r in raw}, "code level")
    _check_subset("modalities", modalities, {r[0] for r in raw}, "modality")
    padding = dict(padding or {})
    spans = []
    for m, level, length, num_codes in raw:
        if (levels and level not in levels) or (modalities and m not in modalities):
            continue
        pad = padding.get((m, level), padding.get(m, level == DETAIL))
        spans.append(SpanSpec(m, level, length, num_codes, bool(pad)))
    if not spans:
        raise ValueError("no code span is left after the levels/modalities filters")
    return spans


def split_codes(codes: Any) -> SpanCodes:
    """``model.encode``'s result (``MultimodalCodes``, or a detail dict), or span codes
    ``{(modality, level): tensor}`` as they are -> span codes."""
    if isinstance(codes, Mapping) and codes and all(isinstance(k, tuple) for k in codes):
        return dict(codes)
    return {
        (m, level): c
        for level, by_modality in MultimodalCodes.from_mapping(codes).levels()
        for m, c in by_modality.items()
    }


@torch.no_grad()
def encode_batch(model: Any, batch: Mapping[str, Any]) -> SpanCodes:
    """Span codes of a collated batch (``model.encode``, the model in eval mode)."""
    _check_model(model)
    was_training = model.training
    model.eval()
    try:
        return split_codes(model.encode(batch))
    finally:
        model.train(was_training)


def encode_examples(model: Any, examples: Sequence[Mapping[str, Any]]) -> SpanCodes:
    """Span codes of raw examples (``model.prepare`` then ``model.encode``). An example without
    any value (``{}``) gets ``-1`` rows; every span of the model is in the result."""
    examples = list(examples)
    rows = [i for i, e in enumerate(examples) if any(v is not None for v in e.values())]
    codes = encode_batch(model, model.prepare([examples[i] for i in rows])) if rows else {}
    out: SpanCodes = {}
    index = torch.tensor(rows, dtype=torch.long)
    for s in model_spans(model):
        full = torch.full((len(examples), s.length), -1, dtype=torch.long)
        if s.key in codes:
            full[index] = codes[s.key].cpu()
        out[s.key] = full
    return out


@torch.no_grad()
def decode_span_codes(model: Any, codes: SpanCodes, targets: Sequence[str]) -> dict[str, Tensor]:
    """``model.decode`` of span codes into ``targets`` (reconstructions, adapter outputs)."""
    _check_model(model)
    device = model_device(model)
    by_level: dict[str, dict[str, Tensor]] = {}
    for (m, level), c in codes.items():
        by_level.setdefault(level, {})[m] = c.to(device)
    was_training = model.training
    model.eval()
    try:
        packed = MultimodalCodes(concept=by_level.get(CONCEPT, {}), detail=by_level.get(DETAIL, {}))
        return model.decode(packed, targets=list(targets))
    finally:
        model.train(was_training)


def postprocess(model: Any, recon: Mapping[str, Tensor]) -> dict[str, list[Any]]:
    """Raw outputs (PIL images, strings, waveforms) of reconstructions (``model.postprocess``)."""
    return model.postprocess(recon)
