"""The built-in text adapter: captions and other short texts to and from the shared code space.

A transformers tokenizer (default: the byte-level :class:`~transformers.ByT5Tokenizer`, built
without any file) turns a string into ids padded to ``max_length`` with EOS appended. A
pre-norm transformer encoder over token + position embeddings gives one token per position
(``latent_tokens = 0``) or, through learned queries cross-attending to the sequence, a fixed
number of latent tokens (``latent_tokens = M``); both are projected to ``code_dim``. The decoder
head maps ``h [B, N, D]`` back to per-position vocabulary logits ``[B, max_length, V]``.

Registered through the ``mmvq.adapters`` entry point ``text = mmvq_adapters.text:TextAdapter``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.text import char_error_rate
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mmvq.adapter import AdapterConfig, AdapterInputError, BadInput, ModalityAdapter, Tokens
from mmvq.hub.safety import check_data_folder
from mmvq_adapters.text_model import (
    TEXT_PRESETS,
    TextAdapterConfig,
    TextDecoder,
    TextEncoder,
)
from mmvq_adapters.text_utils import (
    SpecialIds,
    TokenizerLike,
    resolve_tokenizer,
    special_ids,
)

__all__ = ["TEXT_PRESETS", "TextAdapter", "TextAdapterConfig", "TextTruncationWarning"]

TOKENIZER_SUBDIR = "tokenizer"


class TextTruncationWarning(UserWarning):
    """A text was longer than ``max_length`` and was truncated (``truncation="warn"``)."""


def _check_unicode(text: str) -> None:
    """``text`` is valid Unicode (no lone surrogate, which no tokenizer can encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdapterInputError(
            f"text holds a lone surrogate {text[exc.start]!r} (U+{ord(text[exc.start]):04X}) at "
            f"character {exc.start} of {text[max(0, exc.start - 20) : exc.start + 20]!r}, which "
            "is not valid Unicode; fix the source (a broken JSON escape such as \\ud800, or "
            "bytes decoded with errors='surrogateescape') or drop the row."
        ) from None


class TextAdapter(ModalityAdapter):
    """Text <-> shared code space (see the module docstring).

    Args:
        config: a :class:`TextAdapterConfig` (default: the default config, i.e. ``cpu-small``).
        tokenizer: a :class:`~transformers.PreTrainedTokenizerBase` instance, ``"byt5"``, or a
            local path / cached name; ``None`` uses ``config.tokenizer``.
        **overrides: config fields to override.

    A config that records ``vocab_size`` (a saved one) builds the model even when
    ``config.tokenizer`` cannot be loaded offline (e.g. ``"custom"``: a tokenizer instance was
    passed): :meth:`load_extra` then supplies the saved tokenizer, and using the adapter for text
    before that raises a clear error.

    Batch keys: ``input_ids`` long ``[B, max_length]``, ``attention_mask`` long ``[B, max_length]``
    (1 for real tokens, EOS included). ``recon`` is logits ``[B, max_length, V]``.
    """

    config_class: ClassVar[type[AdapterConfig]] = TextAdapterConfig
    headline_metrics: ClassVar[tuple[str, ...]] = ("exact_match", "token_accuracy")
    # a caption decoded from another modality's codes is right when it is the caption
    translation_metrics: ClassVar[tuple[str, ...]] = ("exact_match",)
    sample_format: ClassVar[str | None] = "txt"
    config: TextAdapterConfig

    def __init__(
        self,
        config: TextAdapterConfig | None = None,
        tokenizer: TokenizerLike | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._ids: SpecialIds | None = None
        self._tokenizer_problem: str | None = None
        if tokenizer is None and cfg.vocab_size > 0:
            # A saved config (vocab size recorded): the tokenizer it was saved with may only
            # arrive through load_extra(), so a name that cannot be loaded is not fatal yet.
            try:
                self._set_tokenizer(resolve_tokenizer(cfg.tokenizer))
            except AdapterInputError as err:
                self._tokenizer_problem = str(err)
        else:
            tok = resolve_tokenizer(cfg.tokenizer if tokenizer is None else tokenizer)
            if tokenizer is not None:
                name = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else tok.name_or_path
                cfg = dataclasses.replace(cfg, tokenizer=os.fspath(name) or "custom")
            if cfg.vocab_size == 0:
                cfg = dataclasses.replace(cfg, vocab_size=len(tok))
            self.config = cfg
            self._set_tokenizer(tok)
        self.encoder = TextEncoder(self.config)
        self.decoder = TextDecoder(self.config)

    # ----------------------------------------------------------------- tokenizer
    def _set_tokenizer(self, tok: PreTrainedTokenizerBase) -> None:
        ids = special_ids(tok)
        if self.config.vocab_size and ids.vocab_size != self.config.vocab_size:
            raise AdapterInputError(
                f"tokenizer {type(tok).__name__} ({tok.name_or_path or 'in memory'!r}) has "
                f"{ids.vocab_size} ids but TextAdapterConfig.vocab_size={self.config.vocab_size}: "
                "the model's embedding and output layers were built for another tokenizer. Fix: "
                "load the tokenizer this model was saved with (load_extra(dir)), or set "
                "vocab_size=0 to size a new model from the tokenizer."
            )
        self._tokenizer = tok
        self._ids = ids
        self._tokenizer_problem = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (after :meth:`load_extra` when the adapter was rebuilt from a config)."""
        if self._tokenizer is None:
            raise AdapterInputError(
                f"TextAdapter has no tokenizer yet: config.tokenizer={self.config.tokenizer!r} "
                "could "
                f"not be loaded ({self._tokenizer_problem}). Fix: call load_extra(dir) with the "
                "directory the model was saved to, or build TextAdapter(config, tokenizer=...)."
            )
        return self._tokenizer

    @property
    def special_ids(self) -> SpecialIds:
        """EOS / pad ids and vocabulary size of the tokenizer."""
        self.tokenizer  # noqa: B018 - raises the clear error when missing
        assert self._ids is not None
        return self._ids

    # ----------------------------------------------------------------- data side
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        """One string -> ``input_ids`` / ``attention_mask`` ``[max_length]`` (EOS appended).

        Raises:
            AdapterInputError: ``None``, a non-string, an empty string, or (with
                ``truncation="error"``) a text longer than ``max_length``.
        """
        if example is None:
            raise AdapterInputError(
                "text is None; pass the text itself as a non-empty str (drop rows without text, "
                "or mark the modality absent for them)."
            )
        if not isinstance(example, str):
            raise AdapterInputError(
                f"text must be a str, got {example!r:.80} ({type(example).__name__}); pass the raw "
                "string of the text column (convert with str(...) or join lists of words yourself)."
            )
        if not example.strip():
            raise AdapterInputError(
                f"text is empty ({example!r}); pass a non-empty str, or drop the row / mark the "
                "modality absent for it."
            )
        _check_unicode(example)
        ids = self.special_ids
        tokens = self.tokenizer(example, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]
        length = len(tokens) + 1
        limit = self.config.max_length
        if length > limit:
            if self.config.truncation == "error":
                raise AdapterInputError(
                    f"text has {length} tokens (EOS included) but max_length={limit} "
                    f"(truncation='error'): {example!r:.60}...; fix: raise max_length, shorten the "
                    "text, or set truncation='warn' to truncate it."
                )
            warnings.warn(
                f"text has {length} tokens (EOS included), more than max_length={limit}; truncated "
                f"to {limit} tokens (EOS kept): {example!r:.60}... Raise max_length or set "
                "truncation='error' to reject such texts.",
                TextTruncationWarning,
                stacklevel=2,
            )
            tokens = tokens[: limit - 1]
        tokens = list(tokens) + [ids.eos]
        n = len(tokens)
        input_ids = torch.full((limit,), ids.pad, dtype=torch.long)
        input_ids[:n] = torch.tensor(tokens, dtype=torch.long)
        attention_mask = torch.zeros(limit, dtype=torch.long)
        attention_mask[:n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Stack preprocessed texts (all padded to ``max_length`` already)."""
        if not items:
            raise AdapterInputError(
                "TextAdapter.collate got an empty list; a batch needs >= 1 text."
            )
        for i, item in enumerate(items):
            for key in ("input_ids", "attention_mask"):
                value = item.get(key) if isinstance(item, dict) else None
                if not isinstance(value, Tensor) or value.shape != (self.config.max_length,):
                    got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise AdapterInputError(
                        f"TextAdapter.collate item {i}[{key!r}] is {got}, expected a tensor of "
                        "shape "
                        f"({self.config.max_length},); pass the outputs of this adapter's "
                        "preprocess()."
                    )
        return {
            key: torch.stack([item[key] for item in items])
            for key in ("input_ids", "attention_mask")
        }

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Preprocess and collate a list of strings into a batch."""
        if isinstance(texts, str):
            texts = [texts]
        return self.collate([self.preprocess(t) for t in texts])

    def preprocess_is_deterministic(self) -> bool:
        """Always: one string, one tokenisation."""
        return True

    def bad_inputs(self) -> list[BadInput]:
        bad = [
            BadInput("None", None, "text is None"),
            BadInput("empty string", "", "text is empty"),
            BadInput("whitespace only", "   \n", "text is empty"),
            BadInput("an int", 42, "text must be a str"),
            BadInput("a list of words", ["a", "red", "circle"], "text must be a str"),
            BadInput("bytes", b"a red circle", "text must be a str"),
            BadInput("a lone surrogate", "a red \ud800 circle", "lone surrogate"),
        ]
        if self.config.truncation == "error":
            bad.append(
                BadInput("longer than max_length", "x" * (2 * self.config.max_length), "max_length")
            )
        return bad

    # ---------------------------------------------------------------- model side
    def num_tokens(self) -> int:
        return self.config.latent_tokens or self.config.max_length

    def _check_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, dict) or "input_ids" not in batch or "attention_mask" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise AdapterInputError(
                f"text batch must hold 'input_ids' and 'attention_mask', got {keys}; build it with "
                "TextAdapter.preprocess + collate (or tokenize(texts))."
            )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        expected = self.config.max_length
        for key, value in (("input_ids", ids), ("attention_mask", mask)):
            if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[1] != expected:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise AdapterInputError(
                    f"batch[{key!r}] has shape {got}, expected [B, {expected}] (max_length); "
                    "preprocess texts with this adapter so they are padded to max_length."
                )
        if ids.shape != mask.shape:
            raise AdapterInputError(
                f"batch['input_ids'] {tuple(ids.shape)} and batch['attention_mask'] "
                f"{tuple(mask.shape)} differ; both come from preprocess + collate."
            )
        if ids.dtype != torch.long:
            raise AdapterInputError(
                f"batch['input_ids'] has dtype {ids.dtype}, expected torch.long; token ids from "
                "preprocess are long, do not cast them."
            )
        vocab = self.config.vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise AdapterInputError(
                f"batch['input_ids'] holds ids in [{int(ids.min())}, {int(ids.max())}] outside the "
                f"vocabulary [0, {vocab}); the texts were tokenized with another tokenizer."
            )
        return ids, mask.bool()

    def _check_logits(self, recon: Tensor, batch_size: int | None = None) -> None:
        expected = (self.config.max_length, self.config.vocab_size)
        if not isinstance(recon, Tensor) or recon.dim() != 3 or tuple(recon.shape[1:]) != expected:
            got = tuple(recon.shape) if isinstance(recon, Tensor) else type(recon).__name__
            raise AdapterInputError(
                f"text recon (logits) has shape {got}, expected [B, {expected[0]}, {expected[1]}] "
                "(max_length, vocab_size); pass the output of TextAdapter.decode."
            )
        if batch_size is not None and recon.shape[0] != batch_size:
            raise AdapterInputError(
                f"text recon has batch size {recon.shape[0]} but the batch has {batch_size} rows"
            )

    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        """``Tokens(z [B, N, code_dim], mask [B, N])``; per-position mask = attention mask."""
        ids, mask = self._check_batch(batch)
        z = self.encoder(ids, mask)
        if self.config.latent_tokens:
            token_mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        else:
            token_mask = mask
        return Tokens(z=z, mask=token_mask)

    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        """``h [B, N, code_dim]`` -> logits ``[B, max_length, vocab_size]`` (``batch`` unused)."""
        expected = (self.num_tokens(), self.config.code_dim)
        if not isinstance(h, Tensor) or h.dim() != 3 or tuple(h.shape[1:]) != expected:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise AdapterInputError(
                f"TextAdapter.decode h has shape {got}, expected [B, {expected[0]}, {expected[1]}] "
                "(num_tokens(), code_dim)."
            )
        return self.decoder(h)

    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        """Per-sample mean cross-entropy over real tokens (EOS included, padding excluded), fp32."""
        ids, mask = self._check_batch(batch)
        self._check_logits(recon, ids.shape[0])
        ce = F.cross_entropy(recon.float().transpose(1, 2), ids, reduction="none")  # [B, L]
        weight = mask.to(ce.dtype)
        return (ce * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)

    @torch.no_grad()
    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        """``token_accuracy`` (real tokens), ``exact_match`` and ``cer`` of the decoded strings.

        Rows with ``batch["present"] == False`` are left out.
        """
        ids, mask = self._check_batch(batch)
        self._check_logits(recon, ids.shape[0])
        present = batch.get("present")
        if isinstance(present, Tensor):
            keep = present.to(ids.device).bool()
            ids, mask, recon = ids[keep], mask[keep], recon[keep]
        if ids.shape[0] == 0:
            return {}
        pred = recon.argmax(dim=-1)
        correct = (pred == ids) & mask
        token_accuracy = correct.sum().item() / max(mask.sum().item(), 1)
        refs = self._decode_ids(ids, mask)
        outs = self.postprocess(recon)
        exact = sum(o == r for o, r in zip(outs, refs)) / len(refs)
        if sum(len(r) for r in refs) == 0:
            cer = 0.0 if outs == refs else 1.0
        else:
            cer = float(char_error_rate(outs, refs))
        return {"token_accuracy": float(token_accuracy), "exact_match": float(exact), "cer": cer}

    def _decode_ids(self, ids: Tensor, keep: Tensor) -> list[str]:
        tok = self.tokenizer
        return [
            tok.decode(
                row[m].tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            for row, m in zip(ids.cpu(), keep.cpu())
        ]

    @torch.no_grad()
    def postprocess(self, recon: Tensor) -> list[str]:
        """Logits ``[B, L, V]`` -> strings: argmax, stop at the first EOS, skip special tokens."""
        self._check_logits(recon)
        pred = recon.argmax(dim=-1).cpu()
        eos = self.special_ids.eos
        is_eos = pred == eos
        # Keep positions strictly before the first EOS (all of them if there is none).
        before_eos = torch.cumsum(is_eos.long(), dim=1) == 0
        return self._decode_ids(pred, before_eos)

    # -------------------------------------------------------------- persistence
    def save_extra(self, directory: str | os.PathLike) -> None:
        """Save the tokenizer under ``directory/tokenizer`` (``save_pretrained``)."""
        self.tokenizer.save_pretrained(str(Path(directory) / TOKENIZER_SUBDIR))

    def load_extra(self, directory: str | os.PathLike) -> None:
        """Restore the tokenizer saved by :meth:`save_extra`; a vocabulary mismatch is an error."""
        path = Path(directory) / TOKENIZER_SUBDIR
        if not path.is_dir():
            raise AdapterInputError(
                f"no saved tokenizer at {str(path)!r}: TextAdapter.save_extra writes one there; "
                "pass the directory the model was saved to."
            )
        check_data_folder(path)  # no tokenizer code (auto_map, .py) is ever imported
        saved = str(path)
        tok = AutoTokenizer.from_pretrained(saved, local_files_only=True, trust_remote_code=False)
        self._set_tokenizer(tok)
