"""Tokenizer helpers for the text adapter: resolve a tokenizer offline, train a BPE tokenizer.

mmvq runs offline: a tokenizer is the built-in byte-level ByT5 tokenizer (``"byt5"``, needs no
files), a :class:`~transformers.PreTrainedTokenizerBase` instance, or a name/local path that
:func:`transformers.AutoTokenizer.from_pretrained` can load with ``local_files_only=True``.
:func:`train_bpe_tokenizer` trains a byte-level BPE tokenizer on the user's own corpus with the
``tokenizers`` library.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from mmvq.adapter import AdapterInputError
from mmvq.hub.safety import check_data_folder

__all__ = [
    "BUILTIN_BYT5",
    "BPE_SPECIAL_TOKENS",
    "SpecialIds",
    "TokenizerLike",
    "builtin_byt5",
    "resolve_tokenizer",
    "special_ids",
    "train_bpe_tokenizer",
]

BUILTIN_BYT5 = "byt5"
"""Config name of the built-in default: a byte-level :class:`ByT5Tokenizer` without extra ids."""

BPE_SPECIAL_TOKENS: tuple[str, str, str] = ("<pad>", "<eos>", "<unk>")
"""Special tokens of :func:`train_bpe_tokenizer` (ids 0, 1, 2)."""

TokenizerLike = PreTrainedTokenizerBase | str | os.PathLike


def builtin_byt5() -> ByT5Tokenizer:
    """The built-in byte-level tokenizer: 256 bytes + ``<pad>``, ``</s>``, ``<unk>`` (259 ids).

    Built directly (no files, no download); the 125 sentinel ``extra_ids`` of T5 are left out
    because reconstruction never uses them.
    """
    return ByT5Tokenizer(extra_ids=0)


def resolve_tokenizer(tokenizer: TokenizerLike) -> PreTrainedTokenizerBase:
    """Turn a tokenizer instance, ``"byt5"``, a local path or a cached name into a tokenizer.

    Never downloads and never runs a repository's code: names go through
    ``AutoTokenizer.from_pretrained(name, local_files_only=True, trust_remote_code=False)``.

    Raises:
        AdapterInputError: the name or path is not available offline, or the value has the wrong
            type.
    """
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    if isinstance(tokenizer, os.PathLike):
        tokenizer = os.fspath(tokenizer)
    if not isinstance(tokenizer, str) or not tokenizer.strip():
        raise AdapterInputError(
            f"tokenizer must be a transformers tokenizer instance, {BUILTIN_BYT5!r}, or a local "
            f"path / cached name, got {tokenizer!r} ({type(tokenizer).__name__}); pass e.g. "
            f"tokenizer={BUILTIN_BYT5!r} (the built-in byte-level default)."
        )
    if tokenizer == BUILTIN_BYT5:
        return builtin_byt5()
    if os.path.isdir(tokenizer):
        check_data_folder(tokenizer)  # a tokenizer with an auto_map or .py is refused
    try:
        offline_only = {"local_files_only": True}  # names come from the local cache only
        return AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False, **offline_only)
    except (OSError, ValueError) as err:
        raise AdapterInputError(
            f"tokenizer={tokenizer!r} is not available offline: it is neither a local directory "
            "holding tokenizer files nor in the local Hugging Face cache, and mmvq never downloads "
            "anything (the library runs offline). Fix: pass a local path to a directory written by "
            "tokenizer.save_pretrained(...), pass a tokenizer instance "
            "(TextAdapter(tokenizer=tok)), "
            "train one with mmvq_adapters.text_utils.train_bpe_tokenizer(texts, vocab_size), or "
            "use "
            f"the built-in tokenizer={BUILTIN_BYT5!r}. (Loader said: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err


@dataclass(frozen=True)
class SpecialIds:
    """Ids the text adapter needs from a tokenizer.

    Attributes:
        eos: end of sequence, appended to every text and kept as a target.
        pad: fills positions after EOS (the tokenizer's pad id, or EOS when it has none; padded
            positions are masked out either way).
        vocab_size: number of ids, ``len(tokenizer)`` (added tokens included).
    """

    eos: int
    pad: int
    vocab_size: int


def special_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    """Read EOS, pad and vocabulary size from a tokenizer; EOS (or SEP) is required.

    Raises:
        AdapterInputError: the tokenizer has neither an EOS nor a SEP token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = tokenizer.sep_token_id
    if eos is None:
        raise AdapterInputError(
            f"tokenizer {type(tokenizer).__name__} ({tokenizer.name_or_path!r}) has no eos_token "
            "(nor sep_token), so the end of a text cannot be marked; fix: "
            "tokenizer.add_special_tokens({'eos_token': '<eos>'}) before passing it, or use "
            "train_bpe_tokenizer(...) / the built-in 'byt5'."
        )
    pad = tokenizer.pad_token_id
    return SpecialIds(eos=int(eos), pad=int(eos if pad is None else pad), vocab_size=len(tokenizer))


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: tuple[str, str, str] = BPE_SPECIAL_TOKENS,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with the ``tokenizers`` library.

    Byte-level pre-tokenisation and decoding make every string round-trip exactly (no unknown
    characters). The result has ``pad``, ``eos`` and ``unk`` specials (ids 0, 1, 2) and can be
    passed to :class:`~mmvq_adapters.text.TextAdapter` as ``tokenizer=``.

    Args:
        texts: the training corpus (strings; at least one non-empty).
        vocab_size: the target vocabulary size, at least 256 bytes + the 3 specials (259). A tiny
            corpus may give fewer ids (no more merges to learn); use ``len(tokenizer)``.
        min_frequency: a pair must occur this often to be merged.
        special_tokens: names of the ``(pad, eos, unk)`` tokens.

    Raises:
        AdapterInputError: a bad corpus or vocabulary size.
    """
    if isinstance(texts, str):
        raise AdapterInputError(
            "train_bpe_tokenizer(texts=...) got a single str; pass a list of strings (the corpus), "
            "e.g. texts=[caption1, caption2, ...]."
        )
    corpus = list(texts)
    bad = [i for i, t in enumerate(corpus) if not isinstance(t, str)]
    if bad:
        i = bad[0]
        raise AdapterInputError(
            f"train_bpe_tokenizer(texts=...) item {i} is {corpus[i]!r} "
            f"({type(corpus[i]).__name__}); "
            "every item must be a str; convert or drop the non-string items."
        )
    if not any(t.strip() for t in corpus):
        raise AdapterInputError(
            "train_bpe_tokenizer(texts=...) got no non-empty string; pass the corpus to learn from."
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < minimum:
        raise AdapterInputError(
            f"train_bpe_tokenizer(vocab_size={vocab_size!r}) is too small: a byte-level BPE needs "
            "at "
            f"least {minimum} ids ({len(alphabet)} bytes + {len(special_tokens)} specials); "
            f"pass vocab_size >= {minimum} (e.g. 512)."
        )
    pad, eos, unk = special_tokens
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        eos_token=eos,
        unk_token=unk,
        clean_up_tokenization_spaces=False,
    )
