"""Sampling from a prior with HF ``generate()``: unconditional, conditional, classifier-free
guidance.

Every call goes through ``lm.generate`` (KV cache, temperature, top-k/top-p,
``num_return_sequences``) with a :class:`~mmvq.prior.grammar.ConstrainedLogitsProcessor`, so every
sampled sequence parses. Prompts:

* unconditional, one modality ``m``: ``[bos] <m>`` (the prior's marginal of ``m``, learned from
  single-modality rows: condition dropout in training);
* unconditional, any modalities: ``[bos]`` (the prior picks modalities and order);
* conditional ``source -> m``: ``[bos] <source> codes… </source> <m>`` (left padded).

Classifier-free guidance (``guidance_scale != 1``) uses transformers'
``UnbatchedClassifierFreeGuidanceLogitsProcessor`` (``generate(guidance_scale=...,
negative_prompt_ids=...)``) with the unconditional prompt ``[bos] <m>`` as the negative branch:
``logits = uncond + scale * (cond - uncond)`` on log-probabilities, then the grammar mask.

Rows are generated in chunks of at most ``batch_size`` sequences. The RNG is seeded once per call
(inside ``torch.random.fork_rng``, the caller's RNG is left untouched): the same seed, prompts and
``batch_size`` give the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmvq.prior.grammar import ConstrainedLogitsProcessor
from mmvq.prior.tokenizer import DecodedCodes
from mmvq.utils.checks import check_int, check_number, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.prior.model import MultimodalPrior

__all__ = ["PriorGenerationOutput", "PriorSamplingConfig", "generate", "generate_ids"]


@dataclass
class PriorSamplingConfig:
    """How ids are drawn.

    Attributes:
        temperature: softmax temperature (> 0).
        top_k: sample among the ``top_k`` most likely ids (``None``: all).
        top_p: nucleus sampling mass (``None``: off).
        do_sample: ``False``: greedy decoding.
        guidance_scale: classifier-free guidance (1: off; conditional generation only).
        seed: seed of the sampling RNG (``None``: not reseeded).
        batch_size: most sequences per ``generate()`` call.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    do_sample: bool = True
    guidance_scale: float = 1.0
    seed: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        owner = "PriorSamplingConfig"
        check_number(f"{owner}.temperature", self.temperature, low=0.0, low_open=True)
        check_int(f"{owner}.top_k", self.top_k, minimum=1, optional=True)
        if self.top_p is not None:
            check_number(f"{owner}.top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        check_number(f"{owner}.guidance_scale", self.guidance_scale, low=-math.inf)
        check_positive_int(f"{owner}.batch_size", self.batch_size)


@dataclass
class PriorGenerationOutput:
    """What :func:`generate` returns.

    Attributes:
        sequences: the full id sequences (prompt included), ``[N, n]`` right-padded with pad.
            Row ``i * num_samples + j`` is sample ``j`` of prompt ``i``.
        codes: the codes read out of them (:class:`~mmvq.prior.tokenizer.DecodedCodes`).
        outputs: ``{modality: [output per row]}`` of the generated modalities when the
            tokenizer has its model (``None`` otherwise, or with ``decode=False``).
    """

    sequences: Tensor
    codes: DecodedCodes
    outputs: dict[str, list[Any]] | None


def _chunks(num_prompts: int, n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(prompt index, returns)`` pieces covering every prompt's ``n`` samples, each
    ``generate()`` call holding at most ``batch_size`` sequences."""
    pieces = []
    for i in range(num_prompts):
        left = n
        while left:
            take = min(left, batch_size)
            pieces.append((i, take))
            left -= take
    return pieces


def _pad_right(rows: list[Tensor], pad: int) -> Tensor:
    width = max(r.shape[-1] for r in rows)
    return torch.cat(
        [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=pad) for r in rows]
    )


@torch.no_grad()
def generate_ids(
    prior: MultimodalPrior,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    num_samples: int,
    max_new_tokens: int,
    targets: Sequence[str] | None,
    config: PriorSamplingConfig,
    negative_ids: Tensor | None = None,
) -> Tensor:
    """Sample ``num_samples`` continuations of each (left-padded) prompt row with HF
    ``generate()`` under the grammar; returns ``[P * num_samples, n]`` right-padded."""
    lm, tok = prior.lm, prior.tokenizer
    device = prior.device
    processor = ConstrainedLogitsProcessor(tok.vocab, targets)
    guided = config.guidance_scale != 1.0
    if guided and negative_ids is None:
        raise ValueError("guidance_scale != 1 needs an unconditional (negative) prompt")
    per_call = max(1, config.batch_size // num_samples) if num_samples <= config.batch_size else 1
    kwargs: dict[str, Any] = {
        "do_sample": config.do_sample,
        "temperature": config.temperature if config.do_sample else None,
        "top_k": config.top_k if config.do_sample else None,
        "top_p": config.top_p if config.do_sample else None,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "use_cache": True,
        "logits_processor": [processor],
    }
    was_training = lm.training
    lm.eval()
    out: list[Tensor] = []
    fork = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            pieces = _chunks(prompt_ids.shape[0], num_samples, config.batch_size)
            # group whole prompts into one call when they fit
            calls: list[tuple[list[int], int]] = []
            for i, take in pieces:
                if (
                    calls
                    and take == num_samples
                    and len(calls[-1][0]) < per_call
                    and (calls[-1][1] == num_samples)
                ):
                    calls[-1][0].append(i)
                else:
                    calls.append(([i], take))
            for rows, take in calls:
                extra: dict[str, Any] = {}
                if guided:
                    neg = negative_ids[rows].to(device).repeat_interleave(take, dim=0)
                    extra = {
                        "guidance_scale": float(config.guidance_scale),
                        "negative_prompt_ids": neg,
                        "negative_prompt_attention_mask": torch.ones_like(neg),
                    }
                seqs = lm.generate(
                    input_ids=prompt_ids[rows].to(device),
                    attention_mask=prompt_mask[rows].to(device),
                    num_return_sequences=take,
                    **kwargs,
                    **extra,
                )
                out.append(seqs.cpu())
    finally:
        lm.train(was_training)
    return _strip_left_padding(
        _pad_right(out, tok.pad_token_id), tok.pad_token_id, tok.bos_token_id
    )


def _strip_left_padding(seqs: Tensor, pad: int, bos: int) -> Tensor:
    """Move each row's leading pads (left-padded prompts) to the right end."""
    rows = []
    for r in seqs:
        start = int((r == bos).nonzero()[0]) if (r == bos).any() else 0
        rows.append(r[start:])
    return _pad_right([r[None] for r in rows], pad)


def _new_tokens(tok: Any, modalities: Sequence[str]) -> int:
    return tok.sequence_length(modalities) - 1  # everything after bos


def generate(
    prior: MultimodalPrior,
    num_samples: int = 1,
    *,
    modalities: Sequence[str] | None = None,
    source: Any = None,
    target: str | None = None,
    config: PriorSamplingConfig | None = None,
    decode: bool = True,
) -> PriorGenerationOutput:
    """Sample from the prior.

    Args:
        num_samples: samples per prompt (unconditional: the number of samples).
        modalities: unconditional: generate exactly these modalities, the first one first
            (default: the prior picks modalities and order). Not used with ``source``.
        source: conditional: raw examples ``[{modality: value}]`` or codes (whatever the
            tokenizer's ``__call__`` takes) of the source modality(ies), one prompt per row.
        target: conditional: the modality to generate.
        config: sampling options (:class:`PriorSamplingConfig`).
        decode: decode the generated modalities into outputs (needs the tokenizer model).

    Raises:
        ValueError: bad arguments (unknown modality, ``target`` without ``source``...).
    """
    config = config or PriorSamplingConfig()
    tok = prior.tokenizer
    check_positive_int("num_samples", num_samples)
    if (source is None) != (target is None):
        raise ValueError("conditional generation needs both source=... and target='modality'")
    if source is not None:
        return _conditional(prior, source, target, num_samples, config, decode)
    wanted = list(modalities) if modalities else None
    for m in wanted or ():
        tok.begin_token_id(m)  # KeyError naming the modalities when unknown
    first = [tok.bos_token_id] + ([tok.begin_token_id(wanted[0])] if wanted else [])
    prompt = torch.tensor([first])
    if config.guidance_scale != 1.0:
        raise ValueError(
            "guidance_scale applies to conditional generation (source=..., target=...)"
        )
    seqs = generate_ids(
        prior,
        prompt,
        torch.ones_like(prompt),
        num_samples=num_samples,
        max_new_tokens=_new_tokens(tok, wanted or tok.modalities),
        targets=wanted,
        config=config,
    )
    return _finish(tok, seqs, wanted, decode)


def _conditional(
    prior: MultimodalPrior,
    source: Any,
    target: str,
    num_samples: int,
    config: PriorSamplingConfig,
    decode: bool,
) -> PriorGenerationOutput:
    tok = prior.tokenizer
    begin = tok.begin_token_id(target)
    enc = tok(source, add_eos=False, padding_side="left", return_tensors="pt")
    decoded = tok.decode_codes(enc["input_ids"], require_eos=False)
    if any(target in order for order in decoded.order):
        raise ValueError(f"target {target!r} is also in the source; generate a modality not given")
    size = enc["input_ids"].shape[0]
    ids = torch.cat([enc["input_ids"], torch.full((size, 1), begin)], dim=1)
    mask = torch.cat([enc["attention_mask"], torch.ones(size, 1, dtype=torch.long)], dim=1)
    negative = torch.tensor([[tok.bos_token_id, begin]]).expand(size, 2)
    seqs = generate_ids(
        prior,
        ids,
        mask,
        num_samples=num_samples,
        max_new_tokens=_new_tokens(tok, [target]) - 1,  # the block after <target>, end, eos
        targets=[target],
        config=config,
        negative_ids=negative,
    )
    return _finish(tok, seqs, [target], decode)


def _finish(
    tok: Any, seqs: Tensor, wanted: Sequence[str] | None, decode: bool
) -> PriorGenerationOutput:
    codes = tok.decode_codes(seqs)
    outputs = None
    if decode and (tok.model is not None or tok.vocab.lm_modalities):
        names = list(wanted) if wanted else [m for m in tok.modalities if codes.present[m].any()]
        needs_model = any(m not in tok.vocab.lm_modalities for m in names)
        if tok.model is not None or not needs_model:
            outputs = tok.decode(seqs, modalities=names)
    return PriorGenerationOutput(seqs, codes, outputs)
