"""The prior's vocabulary: which id means what in a multimodal sequence.

A sequence is ``[bos] <m1> … </m1> <m2> … </m2> [eos]`` (then ``pad`` to the batch length). Each
modality's *block* between its begin and end markers holds either

* its **code spans** (:class:`SpanSpec`: one per code level of the modality, in layout order, each
  exactly ``length`` slots long). A slot holds a code id of the span's level, or ``blank`` at a
  padding position (code ``-1``, e.g. after a caption's end) when the span allows padding;
  blanks form a suffix of the span (after a blank only blanks until the span ends), and the first
  slot of a span is always a code; or
* in **LM-vocabulary mode**, for a *text modality*, the tokens of an existing Hugging Face
  tokenizer (1 to ``max_tokens`` of them).

Id layout, codes mode (``PriorVocabulary.native``)::

    0 pad | 1 bos | 2 eos | 3 blank | 4.. begin/end marker of each modality |
    then one range of code ids per level (codes are shared by every span of a level:
    the shared codebook), e.g. detail code k -> offset["detail"] + k

LM-vocabulary mode (``PriorVocabulary.for_lm``): the base tokenizer's ids first (its text tokens,
its own pad/bos/eos when it has them), then the added special tokens (markers, blank, and any of
pad/bos/eos it lacked) as the tokenizer numbers them, then the code ranges from ``len(tokenizer)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmvq.utils.checks import check_positive_int
from mmvq.utils.configs import check_known_fields

__all__ = [
    "BLANK_TOKEN",
    "MARKER_FORMAT",
    "SPECIAL_NAMES",
    "PriorVocabulary",
    "SpanSpec",
    "check_spans",
    "read_format_file",
]

SPECIAL_NAMES: tuple[str, ...] = ("pad", "bos", "eos", "blank")
#: How markers are spelled as special tokens (LM-vocabulary mode) and in messages.
MARKER_FORMAT = ("<|{m}|>", "<|/{m}|>")
BLANK_TOKEN = "<|mmvq_blank|>"
_LM_SPECIALS = {"pad": "<|mmvq_pad|>", "bos": "<|mmvq_bos|>", "eos": "<|mmvq_eos|>"}


@dataclass(frozen=True)
class SpanSpec:
    """One fixed-length run of codes of one modality at one code level.

    Attributes:
        modality: the model's modality name (e.g. ``"image"``).
        level: the code level (``"detail"``: per-token codes; ``"concept"``: shared summaries).
        length: slots per sample (the model's tokens of this modality at this level).
        num_codes: codebook size of the level (code ids ``0 .. num_codes - 1``).
        padding: whether the span may end in blanks (code ``-1`` at padding positions).
    """

    modality: str
    level: str
    length: int
    num_codes: int
    padding: bool = False

    def __post_init__(self) -> None:
        for name in ("modality", "level"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "|" in value or "<" in value:
                raise ValueError(
                    f"SpanSpec.{name} must be a non-empty str without '|' or '<', got {value!r}"
                )
        check_positive_int("SpanSpec.length", self.length)
        check_positive_int("SpanSpec.num_codes", self.num_codes)
        if not isinstance(self.padding, bool):
            raise TypeError(f"SpanSpec.padding must be a bool, got {self.padding!r}")

    @property
    def key(self) -> tuple[str, str]:
        """``(modality, level)``."""
        return (self.modality, self.level)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpanSpec:
        check_known_fields(cls, data, "SpanSpec.from_dict")
        return cls(**dict(data))


def check_spans(spans: Iterable[SpanSpec]) -> list[SpanSpec]:
    """Validate a layout: SpanSpecs, no duplicate (modality, level), one size per level."""
    spans = list(spans)
    if not spans:
        raise ValueError("a prior vocabulary needs at least one SpanSpec (modality, level, ...)")
    sizes: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for i, s in enumerate(spans):
        if not isinstance(s, SpanSpec):
            raise TypeError(f"spans[{i}] is a {type(s).__name__}, not a mmvq.prior.SpanSpec")
        if s.key in seen:
            raise ValueError(f"spans[{i}]: (modality, level) {s.key} appears twice in the layout")
        seen.add(s.key)
        if sizes.setdefault(s.level, s.num_codes) != s.num_codes:
            raise ValueError(
                f"spans[{i}] ({s.modality}/{s.level}) has num_codes={s.num_codes} but another "
                f"span of level {s.level!r} has {sizes[s.level]}; one level is one codebook"
            )
    return spans


@dataclass
class PriorVocabulary:
    """Every id of the prior's sequences (see the module docstring).

    Attributes:
        spans: code spans in layout order (LM-vocabulary mode: text modalities have none).
        special: ``{"pad", "bos", "eos", "blank"} -> id``.
        markers: ``modality -> (begin id, end id)``, in block order of the layout.
        code_offset: ``level -> id of code 0``.
        vocab_size: number of ids (size the LM's embeddings to this).
        lm_modalities: LM-vocabulary mode: ``modality -> max tokens`` of its text blocks.
        base_vocab_size: LM-vocabulary mode: ids below this are the base tokenizer's.
        base_excluded: base-tokenizer ids never allowed inside a text block (its specials).
    """

    spans: list[SpanSpec]
    special: dict[str, int]
    markers: dict[str, tuple[int, int]]
    code_offset: dict[str, int]
    vocab_size: int
    lm_modalities: dict[str, int] = field(default_factory=dict)
    base_vocab_size: int = 0
    base_excluded: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ building
    @classmethod
    def native(cls, spans: Sequence[SpanSpec]) -> PriorVocabulary:
        """Codes mode: specials, markers, then one code range per level (module docstring)."""
        spans = check_spans(spans)
        special = {name: i for i, name in enumerate(SPECIAL_NAMES)}
        nxt = len(special)
        markers: dict[str, tuple[int, int]] = {}
        for s in spans:
            if s.modality not in markers:
                markers[s.modality] = (nxt, nxt + 1)
                nxt += 2
        offsets, nxt = _code_offsets(spans, nxt)
        return cls(spans, special, markers, offsets, nxt)

    @classmethod
    def for_lm(
        cls,
        spans: Sequence[SpanSpec],
        base_tokenizer: Any,
        lm_modalities: Mapping[str, int],
    ) -> PriorVocabulary:
        """LM-vocabulary mode over ``base_tokenizer`` (a transformers tokenizer, modified in place:
        the markers, blank and any missing pad/bos/eos are added as special tokens).

        Args:
            spans: the code spans of the non-text modalities.
            base_tokenizer: the causal LM's tokenizer.
            lm_modalities: ``modality -> max tokens`` of the modalities written as text.
        """
        spans = check_spans(spans) if spans else []
        clash = sorted({s.modality for s in spans} & set(lm_modalities))
        if clash:
            raise ValueError(
                f"modality {clash[0]!r} is both a text modality and has code spans; in "
                "LM-vocabulary mode a text modality is written with the base tokenizer's tokens"
            )
        for m, n in lm_modalities.items():
            check_positive_int(f"lm_modalities.{m}", n)
        order = list(dict.fromkeys([s.modality for s in spans] + list(lm_modalities)))
        if not order:
            raise ValueError("LM-vocabulary mode needs at least one modality (spans or text)")
        base_vocab_size = len(base_tokenizer)
        excluded = sorted({int(i) for i in base_tokenizer.all_special_ids})
        marker_tokens = [t.format(m=m) for m in order for t in MARKER_FORMAT]
        # the base's own pad/bos/eos when it has them and they are distinct, else ours
        extra: dict[str, str] = {}
        used: set[int] = set()
        for name, token in _LM_SPECIALS.items():
            current = _lm_special_id(base_tokenizer, name)
            if current is None or current in used:
                extra[name] = token
            else:
                used.add(current)
        from tokenizers import AddedToken

        if extra:
            base_tokenizer.add_special_tokens({f"{n}_token": t for n, t in extra.items()})
        base_tokenizer.add_tokens(
            [
                AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
                for t in marker_tokens + [BLANK_TOKEN]
            ],
            special_tokens=True,
        )
        ids = base_tokenizer.convert_tokens_to_ids
        special = {n: int(_lm_special_id(base_tokenizer, n)) for n in ("pad", "bos", "eos")}
        special["blank"] = int(ids(BLANK_TOKEN))
        markers = {
            m: (int(ids(MARKER_FORMAT[0].format(m=m))), int(ids(MARKER_FORMAT[1].format(m=m))))
            for m in order
        }
        offsets, size = _code_offsets(spans, len(base_tokenizer))
        return cls(
            spans,
            special,
            markers,
            offsets,
            size,
            dict(lm_modalities),
            base_vocab_size,
            excluded,
        )

    # ------------------------------------------------------------------ queries
    @property
    def modalities(self) -> list[str]:
        """Modalities in block order."""
        return list(self.markers)

    def spans_of(self, modality: str) -> list[SpanSpec]:
        """The code spans of one modality's block, in order."""
        return [s for s in self.spans if s.modality == modality]

    def code_range(self, level: str) -> tuple[int, int]:
        """``(first id, one past the last id)`` of the codes of ``level``."""
        if level not in self.code_offset:
            raise KeyError(f"unknown code level {level!r}; levels are {list(self.code_offset)}")
        size = next(s.num_codes for s in self.spans if s.level == level)
        return self.code_offset[level], self.code_offset[level] + size

    def block_length(self, modality: str) -> int:
        """Slots between the markers of a codes block."""
        return sum(s.length for s in self.spans_of(modality))

    def describe(self, token_id: int) -> str:
        """A readable name of an id, for error messages (``'<|/image|> (id 70)'``)."""
        t = int(token_id)
        for name, i in self.special.items():
            if i == t:
                return f"{name} (id {t})"
        for m, (b, e) in self.markers.items():
            if t == b:
                return f"{MARKER_FORMAT[0].format(m=m)} (id {t})"
            if t == e:
                return f"{MARKER_FORMAT[1].format(m=m)} (id {t})"
        for level, off in self.code_offset.items():
            lo, hi = self.code_range(level)
            if lo <= t < hi:
                return f"{level} code {t - off} (id {t})"
        if self.lm_modalities and 0 <= t < self.base_vocab_size:
            return f"text token (id {t})"
        return f"unknown id {t} (vocab_size {self.vocab_size})"

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "spans": [s.to_dict() for s in self.spans],
            "special": dict(self.special),
            "markers": {m: list(v) for m, v in self.markers.items()},
            "code_offset": dict(self.code_offset),
            "vocab_size": self.vocab_size,
            "lm_modalities": dict(self.lm_modalities),
            "base_vocab_size": self.base_vocab_size,
            "base_excluded": list(self.base_excluded),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorVocabulary:
        check_known_fields(cls, data, "the prior vocabulary JSON (PriorVocabulary.from_dict)")
        values = dict(data)
        values["spans"] = [SpanSpec.from_dict(s) for s in values.get("spans", [])]
        values["markers"] = {m: (int(v[0]), int(v[1])) for m, v in values["markers"].items()}
        return cls(**values)


def _code_offsets(spans: Sequence[SpanSpec], start: int) -> tuple[dict[str, int], int]:
    offsets: dict[str, int] = {}
    nxt = start
    for s in spans:
        if s.level not in offsets:
            offsets[s.level] = nxt
            nxt += s.num_codes
    return offsets, nxt


def _lm_special_id(tokenizer: Any, name: str) -> int | None:
    value = getattr(tokenizer, f"{name}_token_id", None)
    if name == "eos" and value is None:
        value = getattr(tokenizer, "sep_token_id", None)
    return None if value is None else int(value)


def read_format_file(path: Path, fmt: str, version: int, hint: str) -> dict[str, Any]:
    """The JSON dict of ``path``, checked to be a ``{"format": fmt, "format_version": version}``
    file (``hint``: what to pass instead, in the missing-file error)."""
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {str(path.parent)!r}; {hint}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format {fmt!r})")
    if data.get("format_version") != version:
        raise ValueError(
            f"{path} has format_version {data.get('format_version')!r}; this mmvq reads "
            f"{version}: upgrade mmvq"
        )
    return data
