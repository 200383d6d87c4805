"""The grammar of prior sequences: a strict parser and the constrained-decoding logits processor.

Two independent implementations of the same rules (stated in :mod:`mmvq.prior.vocab`):

* :func:`parse_sequence` walks one sequence token by token and raises
  :class:`MalformedSequenceError` naming the position and the problem (a truncated span, a code
  of the wrong level, an unknown id, a missing end marker, a token after ``eos``...). It returns
  the blocks it read.
* :class:`SequenceGrammar.allowed_mask` computes, for a whole batch of prefixes at once (a few
  tensor operations over ``[B, n]``, no Python loop over rows), which next ids are valid; and
  :class:`ConstrainedLogitsProcessor` sets every other id's score to ``-inf`` inside HF
  ``generate()``. Tests check the two against each other on random sequences.

Outside a block the valid ids are the begin markers of modalities not yet in the sequence (of the
allowed ``targets`` when given) and, once a block is complete, ``eos``; after ``eos`` only ``pad``.
Leading ``pad`` before ``bos`` (left padding of prompts) is skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import LogitsProcessor

from mmvq.prior.vocab import MARKER_FORMAT, PriorVocabulary

__all__ = [
    "ConstrainedLogitsProcessor",
    "MalformedSequenceError",
    "ParsedBlock",
    "ParsedSequence",
    "SequenceGrammar",
    "check_prefix",
    "parse_sequence",
]


class MalformedSequenceError(ValueError):
    """An id sequence breaks the grammar; ``position`` is the index of the offending token."""

    def __init__(self, message: str, position: int, row: int | None = None) -> None:
        where = f"row {row}, position {position}" if row is not None else f"position {position}"
        super().__init__(f"malformed sequence at {where}: {message}")
        self.position = position
        self.row = row


@dataclass
class ParsedBlock:
    """One modality's block: ``codes`` maps a level to its slots (code index, -1 for blank);
    ``lm_ids`` holds a text block's base-tokenizer ids (LM-vocabulary mode)."""

    modality: str
    start: int
    codes: dict[str, list[int]] = field(default_factory=dict)
    lm_ids: list[int] | None = None


@dataclass
class ParsedSequence:
    """The blocks of one sequence in order, and whether it ended with ``eos``."""

    blocks: list[ParsedBlock]
    complete: bool

    @property
    def order(self) -> list[str]:
        return [b.modality for b in self.blocks]


def _marker(modality: str, end: bool) -> str:
    return MARKER_FORMAT[int(end)].format(m=modality)


class _Walker:
    """The sequential state machine behind :func:`parse_sequence`."""

    def __init__(self, vocab: PriorVocabulary, row: int | None) -> None:
        self.v = vocab
        self.row = row
        self.begin = {b: m for m, (b, _) in vocab.markers.items()}
        self.end = {e: m for m, (_, e) in vocab.markers.items()}
        self.blocks: list[ParsedBlock] = []
        self.state = "start"  # start | outside | inside | done
        self.slots: list[tuple[str, int, bool, bool]] = []  # (level, offset, padding, first)
        self.t = 0
        self.prev_blank = False

    def fail(self, msg: str, pos: int) -> None:
        raise MalformedSequenceError(msg, pos, self.row)

    def step(self, pos: int, tok: int) -> None:
        v = self.v
        if not 0 <= tok < v.vocab_size:
            self.fail(f"id {tok} is outside the vocabulary [0, {v.vocab_size})", pos)
        if self.state == "start":
            if tok == v.special["pad"]:
                return
            if tok != v.special["bos"]:
                self.fail(f"expected bos (id {v.special['bos']}), got {v.describe(tok)}", pos)
            self.state = "outside"
        elif self.state == "outside":
            self._outside(pos, tok)
        elif self.state == "inside":
            self._inside(pos, tok)
        elif tok != v.special["pad"]:
            self.fail(f"only pad may follow eos, got {v.describe(tok)}", pos)

    def _outside(self, pos: int, tok: int) -> None:
        v = self.v
        if tok == v.special["eos"]:
            if not self.blocks:
                self.fail("eos before any modality block; a sequence holds at least one", pos)
            self.state = "done"
            return
        if tok not in self.begin:
            expected = ", ".join(_marker(m, False) for m in v.modalities)
            self.fail(f"expected a begin marker ({expected}) or eos, got {v.describe(tok)}", pos)
        m = self.begin[tok]
        if any(b.modality == m for b in self.blocks):
            self.fail(f"modality {m!r} appears twice ({_marker(m, False)} again)", pos)
        self.blocks.append(ParsedBlock(m, pos))
        self.state, self.t, self.prev_blank = "inside", 0, False
        if m in v.lm_modalities:
            self.blocks[-1].lm_ids = []
            self.slots = []
            return
        self.slots = [
            (s.level, i, s.padding, i == 0) for s in v.spans_of(m) for i in range(s.length)
        ]
        for s in v.spans_of(m):
            self.blocks[-1].codes[s.level] = []

    def _inside(self, pos: int, tok: int) -> None:
        v, block = self.v, self.blocks[-1]
        m = block.modality
        end_id = v.markers[m][1]
        if block.lm_ids is not None:
            self._inside_lm_block(pos, tok, block, end_id)
            return
        n = len(self.slots)
        if self.t == n:
            if tok != end_id:
                self.fail(
                    f"the {m!r} block has its {n} slots; expected {_marker(m, True)}, got "
                    f"{v.describe(tok)}",
                    pos,
                )
            self.state = "outside"
            return
        level, offset, padding, first = self.slots[self.t]
        where = f"slot {offset} of the {m}/{level} span (block slot {self.t} of {n})"
        if tok == end_id or tok in self.end:
            self.fail(f"truncated span: {v.describe(tok)} at {where}; {n} slots expected", pos)
        if tok == v.special["blank"]:
            if not padding or first:
                why = "the first slot of a span" if padding else "a span without padding"
                self.fail(f"blank at {where}: not allowed in {why}", pos)
            block.codes[level].append(-1)
            self.prev_blank = True
            self.t += 1
            return
        if self.prev_blank and not first:
            self.fail(f"{v.describe(tok)} after a blank at {where}; blanks end a span", pos)
        lo, hi = v.code_range(level)
        if not lo <= tok < hi:
            self.fail(
                f"{v.describe(tok)} at {where}; expected a {level} code (ids {lo}-{hi - 1})", pos
            )
        block.codes[level].append(tok - lo)
        self.prev_blank = False
        self.t += 1

    def _inside_lm_block(self, pos: int, tok: int, block: ParsedBlock, end_id: int) -> None:
        v, m = self.v, block.modality
        limit = v.lm_modalities[m]
        count = len(block.lm_ids or [])
        if tok == end_id:
            if count == 0:
                self.fail(f"empty {m!r} text block ({_marker(m, True)} right after the begin)", pos)
            self.state = "outside"
            return
        if count >= limit:
            self.fail(
                f"the {m!r} text block exceeds {limit} tokens; expected {_marker(m, True)}", pos
            )
        if not 0 <= tok < v.base_vocab_size or tok in v.base_excluded:
            self.fail(f"{v.describe(tok)} inside the {m!r} text block; expected a text token", pos)
        block.lm_ids.append(tok)  # type: ignore[union-attr]

    def finish(self, pos: int, require_eos: bool) -> ParsedSequence:
        if self.state == "inside":
            block = self.blocks[-1]
            if block.lm_ids is not None:
                got = f"{len(block.lm_ids)} text tokens"
            else:
                got = f"{self.t} of {len(self.slots)} slots"
            self.fail(
                f"the sequence ends inside the {block.modality!r} block after {got} "
                f"(truncated span, no {_marker(block.modality, True)})",
                pos,
            )
        if self.state == "start":
            self.fail("the sequence has no bos", pos)
        if require_eos and self.state != "done":
            self.fail("the sequence ends without eos", pos)
        return ParsedSequence(self.blocks, self.state == "done")


def parse_sequence(
    ids: Sequence[int] | Tensor,
    vocab: PriorVocabulary,
    *,
    require_eos: bool = True,
    row: int | None = None,
) -> ParsedSequence:
    """Parse one id sequence (see the module docstring); ``require_eos=False`` accepts a sequence
    that stops between blocks (a prefix). Raises :class:`MalformedSequenceError`."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    walker = _Walker(vocab, row)
    for pos, tok in enumerate(values):
        walker.step(pos, int(tok))
    return walker.finish(len(values), require_eos)


def check_prefix(ids: Sequence[int] | Tensor, vocab: PriorVocabulary) -> None:
    """Raise :class:`MalformedSequenceError` unless ``ids`` can be continued into a valid
    sequence (used to cross-check :meth:`SequenceGrammar.allowed_mask`)."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    walker = _Walker(vocab, None)
    for pos, tok in enumerate(values):
        walker.step(pos, int(tok))


class SequenceGrammar:
    """Lookup tables of the grammar for the batched :meth:`allowed_mask`.

    ``table`` holds one row of allowed ids per in-block state: for a codes block of ``T`` slots,
    state ``2 t + prev_blank`` for ``t`` in ``0..T`` (``t = T``: the end marker only); for a text
    block three states (no token yet, some, at the limit).
    """

    def __init__(self, vocab: PriorVocabulary) -> None:
        self.vocab = vocab
        v, size = vocab, vocab.vocab_size
        self.modalities = vocab.modalities
        self.begin_ids = torch.tensor([v.markers[m][0] for m in self.modalities])
        self.block_of = torch.full((size,), -1, dtype=torch.long)  # id -> block (begin markers)
        self.is_end = torch.zeros(size, dtype=torch.bool)
        rows: list[Tensor] = []
        self.base: list[int] = []
        self.kind: list[int] = []  # 0 codes, 1 text
        self.limit: list[int] = []  # T for codes, max tokens for text
        for i, m in enumerate(self.modalities):
            begin, end = v.markers[m]
            self.block_of[begin] = i
            self.is_end[end] = True
            self.base.append(len(rows))
            if m in v.lm_modalities:
                self.kind.append(1)
                self.limit.append(v.lm_modalities[m])
                rows.extend(self._lm_rows(end, v.lm_modalities[m]))
            else:
                self.kind.append(0)
                self.limit.append(v.block_length(m))
                rows.extend(self._code_rows(m, end))
        self.table = torch.stack(rows)
        self.base_t = torch.tensor(self.base)
        self.kind_t = torch.tensor(self.kind)
        self.limit_t = torch.tensor(self.limit)

    def _empty(self) -> Tensor:
        return torch.zeros(self.vocab.vocab_size, dtype=torch.bool)

    def _code_rows(self, modality: str, end: int) -> list[Tensor]:
        v = self.vocab
        blank = v.special["blank"]
        rows = []
        for s in v.spans_of(modality):
            lo, hi = v.code_range(s.level)
            for i in range(s.length):
                normal = self._empty()
                normal[lo:hi] = True
                if s.padding and i > 0:
                    normal[blank] = True
                after_blank = normal.clone()
                if i > 0:  # inside a span a blank is only followed by blanks
                    after_blank = self._empty()
                    after_blank[blank] = True
                rows.extend([normal, after_blank])
        final = self._empty()
        final[end] = True
        rows.extend([final, final])
        return rows

    def _lm_rows(self, end: int, limit: int) -> list[Tensor]:
        v = self.vocab
        tokens = self._empty()
        tokens[: v.base_vocab_size] = True
        if v.base_excluded:
            tokens[torch.tensor(v.base_excluded)] = False
        some = tokens.clone()
        some[end] = True
        final = self._empty()
        final[end] = True
        return [tokens, some, final]

    def to(self, device: torch.device) -> SequenceGrammar:
        for name in ("begin_ids", "block_of", "is_end", "table", "base_t", "kind_t", "limit_t"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def allowed_mask(self, input_ids: Tensor, targets: Collection[str] | None = None) -> Tensor:
        """Bool ``[B, V]``: the ids valid after each row of ``input_ids [B, n]`` (valid prefixes).

        ``targets`` restricts which modalities may still begin; ``eos`` then needs all of them.
        """
        if self.table.device != input_ids.device:
            self.to(input_ids.device)
        v = self.vocab
        ids = input_ids.long()
        b, n = ids.shape
        pos = torch.arange(n, device=ids.device).expand(b, n)
        block = self.block_of[ids]  # [B, n]
        last_begin = torch.where(block >= 0, pos, -1).amax(dim=1)
        last_end = torch.where(self.is_end[ids], pos, -1).amax(dim=1)
        done = (ids == v.special["eos"]).any(dim=1)
        started = (ids == v.special["bos"]).any(dim=1)
        inside = (last_begin > last_end) & ~done
        mask = torch.zeros(b, v.vocab_size, dtype=torch.bool, device=ids.device)

        # in a block: one table row per row of the batch
        m = block.gather(1, last_begin.clamp_min(0)[:, None]).squeeze(1).clamp_min(0)
        t = n - 1 - last_begin
        prev_blank = (ids[:, -1] == v.special["blank"]).long()
        code_state = 2 * torch.minimum(t, self.limit_t[m]) + prev_blank
        lm_state = (t > 0).long() + (t >= self.limit_t[m]).long()
        state = self.base_t[m] + torch.where(self.kind_t[m] == 0, code_state, lm_state)
        mask[inside] = self.table[state[inside]]

        # between blocks: begin markers of modalities not yet begun (of targets), eos
        blocks = torch.arange(len(self.modalities), device=ids.device)
        begun = (block[:, :, None] == blocks).any(dim=1)  # [B, M]
        allowed = ~begun
        if targets is not None:
            wanted = torch.tensor([m in targets for m in self.modalities], device=ids.device)
            allowed &= wanted
            eos_ok = (begun | ~wanted).all(dim=1)
        else:
            eos_ok = torch.ones(b, dtype=torch.bool, device=ids.device)
        outside = started & ~inside & ~done
        eos_ok &= begun.any(dim=1) & outside
        rows_out = outside.nonzero().squeeze(1)
        marks = torch.zeros(b, v.vocab_size, dtype=torch.bool, device=ids.device)
        marks[:, self.begin_ids] = allowed
        mask[rows_out] = marks[rows_out]
        mask[:, v.special["eos"]] |= eos_ok
        mask[done, v.special["pad"]] = True
        mask[~started, v.special["bos"]] = True
        return mask


class ConstrainedLogitsProcessor(LogitsProcessor):
    """A ``transformers`` logits processor that leaves only grammatical next ids (others get
    ``-inf``): codes of the right level inside a span, the end marker after exactly the span's
    slots, then a begin marker of a modality not yet generated (of ``targets``) or ``eos``; after
    ``eos`` only ``pad``.

    Args:
        vocab: the tokenizer's :class:`PriorVocabulary` (or a :class:`SequenceGrammar`).
        targets: modalities that may still be generated (default: any not yet in the sequence).
    """

    def __init__(
        self, vocab: PriorVocabulary | SequenceGrammar, targets: Collection[str] | None = None
    ) -> None:
        self.grammar = vocab if isinstance(vocab, SequenceGrammar) else SequenceGrammar(vocab)
        unknown = sorted(set(targets or ()) - set(self.grammar.modalities))
        if unknown:
            raise ValueError(
                f"ConstrainedLogitsProcessor: target modality {unknown[0]!r} is not in the "
                f"vocabulary's {self.grammar.modalities}"
            )
        self.targets = None if targets is None else set(targets)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        mask = self.grammar.allowed_mask(input_ids, self.targets)
        width = scores.shape[-1]
        if width != mask.shape[-1]:
            if width < mask.shape[-1]:
                raise ValueError(
                    f"the LM's output has {width} logits but the prior vocabulary has "
                    f"{mask.shape[-1]} ids; resize the LM's embeddings to tokenizer.vocab_size"
                )
            pad = torch.zeros(mask.shape[0], width - mask.shape[-1], dtype=torch.bool)
            mask = torch.cat([mask, pad.to(mask.device)], dim=1)
        return scores.masked_fill(~mask, float("-inf"))
