"""Building blocks of :class:`~mmvq.prior.tokenizer.MultimodalTokenizer`'s encoding: one
modality's block of ids, the modality orders, padding into a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import BatchEncoding

from mmvq.prior.vocab import PriorVocabulary, SpanSpec

__all__ = ["code_block", "pad_batch", "resolve_orders", "span_ids", "lm_block"]


def code_block(
    vocab: PriorVocabulary, m: str, codes: Mapping[tuple[str, str], Tensor], row: int
) -> list[int]:
    """The ids between the markers of modality ``m`` for one row (``[]`` when absent)."""
    out: list[int] = []
    for s in vocab.spans_of(m):
        c = codes.get(s.key)
        if c is None:
            raise ValueError(
                f"codes lack span {s.modality}/{s.level}; give every level of a modality "
                f"({[x.level for x in vocab.spans_of(m)]})"
            )
        values = c[row].tolist()
        if all(v == -1 for v in values):
            if out:
                raise ValueError(f"row {row}: span {m}/{s.level} is empty but other levels not")
            continue
        out.extend(span_ids(vocab, s, values, row))
    if out and len(out) != vocab.block_length(m):
        raise ValueError(f"row {row}: modality {m!r} has codes for only some of its levels")
    return out


def span_ids(vocab: PriorVocabulary, s: SpanSpec, values: list[int], row: int) -> list[int]:
    """Ids of one span's codes (``-1`` -> blank); errors name the span, row and position."""
    lo, _ = vocab.code_range(s.level)
    blank = vocab.special["blank"]
    ids = []
    seen_blank = False
    for i, v in enumerate(values):
        where = f"codes[{s.modality!r}/{s.level}] row {row} position {i}"
        if v == -1:
            if not s.padding or i == 0:
                raise ValueError(
                    f"{where} is -1 (padding) but the span "
                    + (
                        "allows no padding; build the tokenizer with "
                        f"padding={{{s.modality!r}: True}}"
                        if not s.padding
                        else "must start with a code"
                    )
                )
            seen_blank = True
            ids.append(blank)
        elif seen_blank:
            raise ValueError(f"{where} is a code after padding; padding must end the span")
        elif not 0 <= v < s.num_codes:
            raise ValueError(f"{where} is {v}, outside the codebook [0, {s.num_codes})")
        else:
            ids.append(lo + v)
    return ids


def lm_block(
    vocab: PriorVocabulary, base_tokenizer: Any, m: str, value: Any, row: int
) -> list[int]:
    """The base tokenizer's ids of one text (LM-vocabulary mode; ``[]`` for ``None``)."""
    if value is None:
        return []
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"texts[{m!r}] row {row} must be a non-empty str, got {value!r:.60}")
    ids = base_tokenizer(value, add_special_tokens=False, split_special_tokens=True)
    ids = list(ids["input_ids"])
    limit = vocab.lm_modalities[m]
    if len(ids) > limit:
        raise ValueError(
            f"texts[{m!r}] row {row} has {len(ids)} tokens, more than the {limit} this "
            f"tokenizer allows for {m!r}; shorten it or raise lm_modalities[{m!r}]"
        )
    return ids


def resolve_orders(
    vocab: PriorVocabulary, present: list[list[str]], modality_order: Any, seed: int | None
) -> list[list[str]]:
    """Each row's block order: ``None`` keeps ``present``; ``"random"`` permutes each row
    (from ``seed``); a list (or one list per row) orders the modalities it names."""
    if modality_order is None:
        return present
    if isinstance(modality_order, str) and modality_order == "random":
        gen = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.randint(2**62, ()).item())
        )
        return [[p[i] for i in torch.randperm(len(p), generator=gen).tolist()] for p in present]
    if isinstance(modality_order, str):
        raise ValueError(  # noqa: TRY004 - a bad value of the right type
            f"modality_order must be None, 'random' or a list of modalities, got {modality_order!r}"
        )
    orders = list(modality_order)
    per_row = bool(orders) and not isinstance(orders[0], str)
    out = []
    for r, p in enumerate(present):
        order = list(orders[r]) if per_row else orders
        for m in order:
            if m not in vocab.markers:
                raise KeyError(
                    f"modality_order names {m!r}; this tokenizer's modalities are "
                    f"{vocab.modalities}"
                )
        missing = [m for m in p if m not in order]
        if missing:
            raise ValueError(
                f"modality_order={order!r} lacks {missing[0]!r}, which row {r} holds; list "
                "every modality (absent ones are skipped), or pass 'random' / None"
            )
        out.append([m for m in order if m in p])
    return out


def pad_batch(
    ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    padding: bool | str = True,
    max_length: int | None = None,
    padding_side: str = "right",
    return_tensors: str | None = None,
) -> BatchEncoding:
    """Pad id lists into ``input_ids`` / ``attention_mask`` (never truncates)."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if padding not in (True, False, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be True, 'longest', 'max_length' or False, got {padding!r}")
    if return_tensors not in (None, "pt"):
        raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
    longest = max(len(x) for x in ids)
    if max_length is not None and longest > max_length:
        raise ValueError(
            f"a sequence has {longest} ids, more than max_length={max_length}; sequences are "
            "never truncated (a cut block is malformed): raise max_length"
        )
    if padding in (False, "do_not_pad"):
        target = None
    elif padding == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        target = max_length
    else:
        target = longest
    if return_tensors == "pt" and target is None and len({len(x) for x in ids}) > 1:
        raise ValueError("return_tensors='pt' with sequences of different lengths needs padding")
    input_ids, mask = [], []
    for x in ids:
        extra = (target or len(x)) - len(x)
        fill, ones = [pad_id] * extra, [1] * len(x)
        if padding_side == "right":
            input_ids.append(list(x) + fill)
            mask.append(ones + [0] * extra)
        else:
            input_ids.append(fill + list(x))
            mask.append([0] * extra + ones)
    return BatchEncoding(
        {"input_ids": input_ids, "attention_mask": mask}, tensor_type=return_tensors
    )
