""":class:`MultimodalTokenizer`: examples or codes <-> one id sequence for a causal LM prior.

::

    tok = MultimodalTokenizer.from_model(model)              # codes mode
    enc = tok([{"image": img, "text": "a red circle"}], return_tensors="pt")
    enc = tok(model.encode(batch), modality_order="random", return_tensors="pt")
    outputs = tok.decode(generated_ids)                       # {"image": [PIL...], "text": [...]}

    lm_tok = train_bpe_tokenizer(texts, 512)                  # LM-vocabulary mode
    tok = MultimodalTokenizer.from_model(model, lm_tokenizer=lm_tok, lm_modalities=["text"])
    llm.resize_token_embeddings(tok.vocab_size)

The sequence design and the id layout are in :mod:`mmvq.prior.vocab`; the rules every sequence
obeys (and the errors for those that do not) in :mod:`mmvq.prior.grammar`. The tokenizer holds
the tokenizer model (``model``) only to encode raw examples and to decode ids into outputs; ids
<-> codes needs no model. Saved as JSON (plus the base tokenizer's files in LM-vocabulary mode);
loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import BatchEncoding

from mmvq.prior import glue
from mmvq.prior.encoding import code_block, lm_block, pad_batch, resolve_orders
from mmvq.prior.grammar import MalformedSequenceError, ParsedSequence, parse_sequence
from mmvq.prior.vocab import PriorVocabulary, SpanSpec, read_format_file

__all__ = [
    "LM_TOKENIZER_DIR",
    "TOKENIZER_FILE",
    "DecodedCodes",
    "MalformedSequenceError",
    "MultimodalTokenizer",
]

TOKENIZER_FILE = "prior_tokenizer.json"
LM_TOKENIZER_DIR = "lm_tokenizer"
FORMAT = "mmvq-prior-tokenizer"
FORMAT_VERSION = 1
DEFAULT_LM_TOKENS = 64


@dataclass
class DecodedCodes:
    """What :meth:`MultimodalTokenizer.decode_codes` reads out of id sequences.

    Attributes:
        codes: span codes ``{(modality, level): long [B, L]}``; ``-1`` at blanks and in rows
            without the modality.
        present: ``modality -> bool [B]``.
        texts: LM-vocabulary mode: ``modality -> [str or None per row]``.
        order: the modalities of each row, in sequence order.
    """

    codes: dict[tuple[str, str], Tensor]
    present: dict[str, Tensor]
    texts: dict[str, list[str | None]]
    order: list[list[str]]


class MultimodalTokenizer:
    """Turns examples / codes into prior id sequences and back (see the module docstring).

    Args:
        vocab: the id layout (:class:`PriorVocabulary`).
        base_tokenizer: the LM's tokenizer in LM-vocabulary mode (else ``None``).
        model: the tokenizer model (:class:`mmvq.MultimodalVQ`), for raw examples and outputs.
    """

    def __init__(
        self, vocab: PriorVocabulary, *, base_tokenizer: Any = None, model: Any = None
    ) -> None:
        if vocab.lm_modalities and base_tokenizer is None:
            raise ValueError(
                "this vocabulary has text modalities (LM-vocabulary mode) but no base_tokenizer"
            )
        self.vocab = vocab
        self.base_tokenizer = base_tokenizer
        self.model = None
        if model is not None:
            self.attach(model)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        levels: Sequence[str] | None = None,
        padding: Mapping[Any, bool] | None = None,
        modalities: Sequence[str] | None = None,
        lm_tokenizer: Any = None,
        lm_modalities: Sequence[str] | Mapping[str, int] | None = None,
    ) -> MultimodalTokenizer:
        """A tokenizer over ``model``'s code layout (:func:`mmvq.prior.glue.model_spans` explains
        ``levels``, ``padding`` and ``modalities``).

        With ``lm_tokenizer`` (a transformers tokenizer, extended in place) the ids are appended
        to its vocabulary and ``lm_modalities`` (names, or ``{name: max tokens}``; default 64)
        are written with its text tokens instead of codes.
        """
        spans = glue.model_spans(model, levels=levels, padding=padding, modalities=modalities)
        known = {s.modality for s in spans}
        for m in lm_modalities or ():
            if m not in known:
                raise ValueError(
                    f"lm_modalities names {m!r}, which the model does not have ({sorted(known)})"
                )
        tok = cls.from_spans(spans, lm_tokenizer=lm_tokenizer, lm_modalities=lm_modalities)
        tok.model = model
        return tok

    @classmethod
    def from_spans(
        cls,
        spans: Sequence[SpanSpec],
        *,
        lm_tokenizer: Any = None,
        lm_modalities: Sequence[str] | Mapping[str, int] | None = None,
    ) -> MultimodalTokenizer:
        """A tokenizer over explicit spans, without a model (ids <-> codes only; attach a model
        for raw examples and outputs). ``lm_tokenizer``/``lm_modalities``: as in
        :meth:`from_model`."""
        if lm_tokenizer is None:
            if lm_modalities:
                raise ValueError("lm_modalities needs lm_tokenizer (LM-vocabulary mode)")
            return cls(PriorVocabulary.native(spans))
        if not lm_modalities:
            raise ValueError(
                "LM-vocabulary mode needs lm_modalities: the modalities written with the LM "
                "tokenizer's own tokens (names, or {name: max tokens})"
            )
        if not isinstance(lm_modalities, Mapping):
            lm_modalities = dict.fromkeys(lm_modalities, DEFAULT_LM_TOKENS)
        spans = [s for s in spans if s.modality not in lm_modalities]
        vocab = PriorVocabulary.for_lm(spans, lm_tokenizer, dict(lm_modalities))
        return cls(vocab, base_tokenizer=lm_tokenizer)

    def attach(self, model: Any) -> MultimodalTokenizer:
        """Use ``model`` for raw examples and outputs; its layout must match the spans."""
        spans = {s.key: s for s in glue.model_spans(model)}
        for s in self.vocab.spans:
            other = spans.get(s.key)
            if other is None or (other.length, other.num_codes) != (s.length, s.num_codes):
                got = "nothing" if other is None else f"length {other.length}, {other.num_codes}"
                raise ValueError(
                    f"the model does not match this tokenizer: span {s.modality}/{s.level} is "
                    f"length {s.length} with {s.num_codes} codes here, the model has {got}; "
                    "load the tokenizer model it was built with"
                )
        self.model = model
        return self

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        """Number of ids (resize an LM's embeddings to this)."""
        return self.vocab.vocab_size

    def __len__(self) -> int:
        return self.vocab.vocab_size

    @property
    def pad_token_id(self) -> int:
        return self.vocab.special["pad"]

    @property
    def bos_token_id(self) -> int:
        return self.vocab.special["bos"]

    @property
    def eos_token_id(self) -> int:
        return self.vocab.special["eos"]

    @property
    def blank_token_id(self) -> int:
        return self.vocab.special["blank"]

    @property
    def modalities(self) -> list[str]:
        return self.vocab.modalities

    @property
    def spans(self) -> list[SpanSpec]:
        return list(self.vocab.spans)

    def begin_token_id(self, modality: str) -> int:
        return self.vocab.markers[self._known(modality)][0]

    def end_token_id(self, modality: str) -> int:
        return self.vocab.markers[self._known(modality)][1]

    def code_range(self, level: str) -> tuple[int, int]:
        return self.vocab.code_range(level)

    def sequence_length(self, modalities: Sequence[str] | None = None) -> int:
        """Longest sequence holding ``modalities`` (default all): bos, blocks, eos."""
        total = 2
        for m in modalities or self.modalities:
            m = self._known(m)
            limit = self.vocab.lm_modalities.get(m)
            total += 2 + (limit if limit is not None else self.vocab.block_length(m))
        return total

    def _known(self, modality: str) -> str:
        if modality not in self.vocab.markers:
            raise KeyError(
                f"unknown modality {modality!r}; this tokenizer's modalities are {self.modalities}"
            )
        return modality

    # ------------------------------------------------------------------ encoding
    def encode_codes(
        self,
        codes: Any,
        *,
        texts: Mapping[str, Sequence[str | None]] | None = None,
        modality_order: Any = None,
        seed: int | None = None,
        add_eos: bool = True,
    ) -> list[list[int]]:
        """Id sequences (lists) of a batch of codes.

        Args:
            codes: ``model.encode(...)``'s result, or span codes ``{(modality, level): [B, L]}``;
                ``-1`` rows are absent modalities.
            texts: LM-vocabulary mode: ``{text modality: [str or None per row]}``.
            modality_order: ``None`` (layout order), ``"random"`` (per row, from ``seed``), a
                list of modalities, or one list per row.
            add_eos: end with ``eos`` (``False``: stop after the last block, a prompt).
        """
        span = glue.split_codes(codes) if codes is not None else {}
        texts = dict(texts or {})
        rows = {int(c.shape[0]) for c in span.values()} | {len(t) for t in texts.values()}
        if not rows:
            raise ValueError(
                "nothing to tokenize: no codes and no texts (every example is empty); give each "
                f"example at least one of {self.modalities}"
            )
        if len(rows) != 1:
            raise ValueError(f"codes and texts disagree on the batch size: {sorted(rows)}")
        size = rows.pop()
        blocks: list[dict[str, list[int]]] = []
        for r in range(size):
            row: dict[str, list[int]] = {}
            for m in self.modalities:
                if m in self.vocab.lm_modalities:
                    ids = (
                        lm_block(self.vocab, self.base_tokenizer, m, texts[m][r], r)
                        if m in texts
                        else []
                    )
                elif any(k[0] == m for k in span):
                    ids = code_block(self.vocab, m, span, r)
                else:
                    ids = []
                if ids:
                    row[m] = ids
            if not row:
                raise ValueError(f"row {r} holds no modality (every span is -1 / every text None)")
            blocks.append(row)
        unknown = sorted({k[0] for k in span} - set(self.modalities)) + sorted(
            set(texts) - set(self.vocab.lm_modalities)
        )
        if unknown:
            raise ValueError(
                f"codes/texts of modality {unknown[0]!r}, which this tokenizer does not have "
                f"({self.modalities})"
            )
        orders = resolve_orders(self.vocab, [list(b) for b in blocks], modality_order, seed)
        out = []
        for row, order in zip(blocks, orders):
            ids = [self.bos_token_id]
            for m in order:
                ids += [self.begin_token_id(m), *row[m], self.end_token_id(m)]
            out.append(ids + ([self.eos_token_id] if add_eos else []))
        return out

    def _split_inputs(self, inputs: Any) -> tuple[Any, dict[str, list[Any]]]:
        """``(codes, texts)`` of raw examples or codes."""
        if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            rows = list(inputs)
            if not rows or not all(isinstance(r, Mapping) for r in rows):
                raise TypeError("examples must be a non-empty list of {modality: value} dicts")
            lm_ms = set(self.vocab.lm_modalities)
            texts = {m: [r.get(m) for r in rows] for m in lm_ms if any(m in r for r in rows)}
            others = [{m: v for m, v in r.items() if m not in lm_ms} for r in rows]
            if not any(v is not None for o in others for v in o.values()):
                return None, texts
            if self.model is None:
                raise ValueError(
                    "raw examples need the tokenizer model to encode them; build the tokenizer "
                    "with from_model(model) or call tokenizer.attach(model), or pass codes"
                )
            return glue.encode_examples(self.model, others), texts
        if isinstance(inputs, Mapping):
            texts = {m: list(v) for m, v in inputs.items() if m in self.vocab.lm_modalities}
            codes = {m: v for m, v in inputs.items() if m not in texts}
            return codes, texts
        return inputs, {}

    def __call__(
        self,
        inputs: Any,
        *,
        modality_order: Any = None,
        seed: int | None = None,
        padding: bool | str = True,
        max_length: int | None = None,
        padding_side: str = "right",
        return_tensors: str | None = None,
        add_eos: bool = True,
    ) -> BatchEncoding:
        """``input_ids`` and ``attention_mask`` of raw examples or codes, like an HF tokenizer.

        Args:
            inputs: a list of raw examples ``[{modality: value}]`` (encoded by the model; text
                modalities in LM-vocabulary mode are strings), or ``model.encode(...)``'s result /
                span codes (in LM-vocabulary mode with ``{text modality: [str]}`` entries).
            modality_order: see :meth:`encode_codes`.
            padding: ``True``/``"longest"``, ``"max_length"`` (to ``max_length``) or ``False``.
            padding_side: ``"right"``, or ``"left"`` for generation prompts.
            return_tensors: ``"pt"`` or ``None`` (lists).
            add_eos: end with ``eos``.
        """
        codes, texts = self._split_inputs(inputs)
        ids = self.encode_codes(
            codes, texts=texts, modality_order=modality_order, seed=seed, add_eos=add_eos
        )
        return self.pad(
            ids,
            padding=padding,
            max_length=max_length,
            padding_side=padding_side,
            return_tensors=return_tensors,
        )

    def pad(
        self,
        ids: Sequence[Sequence[int]],
        *,
        padding: bool | str = True,
        max_length: int | None = None,
        padding_side: str = "right",
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad id lists into ``input_ids`` / ``attention_mask`` (never truncates; ``padding``:
        ``True``/``"longest"``, ``"max_length"`` or ``False``)."""
        return pad_batch(
            ids,
            self.pad_token_id,
            padding=padding,
            max_length=max_length,
            padding_side=padding_side,
            return_tensors=return_tensors,
        )

    # ------------------------------------------------------------------ decoding
    def parse(self, ids: Any, *, require_eos: bool = True) -> list[ParsedSequence]:
        """Parse every row (:func:`mmvq.prior.grammar.parse_sequence`); errors name the row and
        the position."""
        rows = ids.tolist() if isinstance(ids, Tensor) else [list(r) for r in ids]
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        return [
            parse_sequence(r, self.vocab, require_eos=require_eos, row=i)
            for i, r in enumerate(rows)
        ]

    def decode_codes(self, ids: Any, *, require_eos: bool = True) -> DecodedCodes:
        """Span codes (and texts) of id sequences ``[B, n]`` (see :class:`DecodedCodes`).

        Raises:
            MalformedSequenceError: a row breaks the grammar (message names row and position).
        """
        parsed = self.parse(ids, require_eos=require_eos)
        size = len(parsed)
        codes = {s.key: torch.full((size, s.length), -1, dtype=torch.long) for s in self.spans}
        present = {m: torch.zeros(size, dtype=torch.bool) for m in self.modalities}
        texts: dict[str, list[str | None]] = {m: [None] * size for m in self.vocab.lm_modalities}
        for r, seq in enumerate(parsed):
            for block in seq.blocks:
                present[block.modality][r] = True
                if block.lm_ids is not None:
                    texts[block.modality][r] = self.base_tokenizer.decode(
                        block.lm_ids,
                        skip_special_tokens=True,
                        clean_up_tokenization_spaces=False,
                    )
                for level, values in block.codes.items():
                    codes[(block.modality, level)][r] = torch.tensor(values, dtype=torch.long)
        return DecodedCodes(codes, present, texts, [s.order for s in parsed])

    def decode(
        self, ids: Any, *, require_eos: bool = True, modalities: Sequence[str] | None = None
    ) -> dict[str, list[Any]]:
        """Outputs of id sequences: ``{modality: [output or None per row]}``.

        Each modality is decoded from its own codes only (``model.decode`` + ``postprocess``:
        PIL images, strings, waveforms); texts of LM-vocabulary mode come from the base
        tokenizer. ``modalities`` limits which are decoded.
        """
        decoded = self.decode_codes(ids, require_eos=require_eos)
        size = len(decoded.order)
        out: dict[str, list[Any]] = {}
        for m in modalities or self.modalities:
            m = self._known(m)
            if m in decoded.texts:
                out[m] = list(decoded.texts[m])
                continue
            rows = decoded.present[m].nonzero().squeeze(1)
            values: list[Any] = [None] * size
            if len(rows):
                if self.model is None:
                    raise ValueError(
                        "decoding ids into outputs needs the tokenizer model; build the tokenizer "
                        "with from_model(model) / from_pretrained(dir, model=...) or attach(model)"
                    )
                span = {s.key: decoded.codes[s.key][rows] for s in self.vocab.spans_of(m)}
                recon = glue.decode_span_codes(self.model, span, [m])
                for r, value in zip(rows.tolist(), glue.postprocess(self.model, recon)[m]):
                    values[r] = value
            out[m] = values
        return out

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``prior_tokenizer.json`` (and ``lm_tokenizer/`` in LM-vocabulary mode)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "mode": "lm" if self.vocab.lm_modalities else "codes",
            "vocabulary": self.vocab.to_dict(),
        }
        (path / TOKENIZER_FILE).write_text(json.dumps(data, indent=2))
        if self.base_tokenizer is not None:
            self.base_tokenizer.save_pretrained(str(path / LM_TOKENIZER_DIR))
        return path

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, model: Any = None
    ) -> MultimodalTokenizer:
        """Load what :meth:`save_pretrained` wrote (JSON; the base tokenizer with
        ``local_files_only=True``, ``trust_remote_code=False``)."""
        data = read_format_file(
            Path(directory) / TOKENIZER_FILE,
            FORMAT,
            FORMAT_VERSION,
            "pass the directory written by MultimodalTokenizer.save_pretrained (or a saved "
            "prior's directory)",
        )
        vocab = PriorVocabulary.from_dict(data["vocabulary"])
        base = None
        if data.get("mode") == "lm":
            base = _load_base_tokenizer(Path(directory) / LM_TOKENIZER_DIR, vocab)
        return cls(vocab, base_tokenizer=base, model=model)


def _load_base_tokenizer(path: Path, vocab: PriorVocabulary) -> Any:
    from transformers import AutoTokenizer

    from mmvq.prior.vocab import BLANK_TOKEN, MARKER_FORMAT

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    expected = {BLANK_TOKEN: vocab.special["blank"]}
    for m, (b, e) in vocab.markers.items():
        expected[MARKER_FORMAT[0].format(m=m)] = b
        expected[MARKER_FORMAT[1].format(m=m)] = e
    for token, i in expected.items():
        got = tok.convert_tokens_to_ids(token)
        if got != i:
            raise ValueError(
                f"{path}: token {token!r} has id {got} but the prior vocabulary says {i}; the "
                "base tokenizer was changed after the prior tokenizer was saved"
            )
    return tok
