"""The configuration and the networks of the built-in text adapter: :class:`TextAdapterConfig`
(with the ``cpu-small`` and ``gpu-base`` presets), the pre-norm transformer
:class:`TextEncoder` (one token per position, or learned latent queries) and the
:class:`TextDecoder` head back to vocabulary logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmvq.adapter import AdapterConfig
from mmvq.utils.checks import check_int
from mmvq.utils.configs import from_preset
from mmvq_adapters.text_utils import BUILTIN_BYT5

__all__ = ["TEXT_PRESETS", "TRUNCATION_MODES", "TextAdapterConfig", "TextDecoder", "TextEncoder"]

TRUNCATION_MODES = ("warn", "error")

TEXT_PRESETS: dict[str, dict[str, Any]] = {
    # Trains in the default recipe on a 2-core CPU: 48 byte tokens, one token per position (the
    # simplest layout for image<->text translation: each code position is one character).
    "cpu-small": dict(
        max_length=48,
        d_model=128,
        num_layers=2,
        num_heads=4,
        decoder_layers=1,
        latent_tokens=0,
        dropout=0.0,
    ),
    # Taming-like scale for a GPU: longer captions, 32 latent tokens for a compact code.
    "gpu-base": dict(
        max_length=128,
        d_model=512,
        num_layers=6,
        num_heads=8,
        decoder_layers=4,
        latent_tokens=32,
        cross_layers=2,
        dropout=0.1,
        code_dim=256,
    ),
}


def _positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> None:
    check_int(f"{owner}.{name}", value, minimum=minimum)


@dataclass
class TextAdapterConfig(AdapterConfig):
    """Options of :class:`TextAdapter` (JSON-serialisable).

    Attributes:
        tokenizer: ``"byt5"`` (built-in byte-level default, no files), a local path, or a name in
            the local Hugging Face cache. When a tokenizer instance is passed to the adapter this
            records its ``name_or_path`` (or ``"custom"``); the tokenizer itself is saved with the
            adapter by :meth:`TextAdapter.save_extra`.
        vocab_size: number of token ids; ``0`` means "derive from the tokenizer". The adapter
            records it, and a tokenizer of another size is refused on load.
        max_length: tokens per text, EOS included; shorter texts are padded, longer ones truncated.
        truncation: ``"warn"`` (truncate and warn, naming the length) or ``"error"`` (refuse).
        d_model: transformer width.
        num_layers: encoder layers.
        num_heads: attention heads (must divide ``d_model``).
        ff_mult: feed-forward width as a multiple of ``d_model``.
        decoder_layers: layers of the decoder head.
        latent_tokens: ``0``: one code token per position (``N = max_length``, mask = attention
            mask); ``M > 0``: ``M`` learned queries cross-attend to the sequence (``N = M``).
        cross_layers: cross-attention layers of the latent pooling (used when
            ``latent_tokens > 0``).
        dropout: dropout inside the transformers.
    """

    tokenizer: str = BUILTIN_BYT5
    vocab_size: int = 0
    max_length: int = 48
    truncation: str = "warn"
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ff_mult: int = 4
    decoder_layers: int = 1
    latent_tokens: int = 0
    cross_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        if not isinstance(self.tokenizer, str) or not self.tokenizer.strip():
            raise ValueError(
                f"{owner}.tokenizer must be a non-empty str ({BUILTIN_BYT5!r}, a local path or a "
                f"cached name), got {self.tokenizer!r}; pass a tokenizer instance to "
                "TextAdapter(tokenizer=...) instead of putting it in the config."
            )
        _positive_int(owner, "vocab_size", self.vocab_size, minimum=0)
        _positive_int(owner, "max_length", self.max_length, minimum=2)
        for name in (
            "d_model",
            "num_layers",
            "num_heads",
            "ff_mult",
            "decoder_layers",
            "cross_layers",
        ):
            _positive_int(owner, name, getattr(self, name))
        _positive_int(owner, "latent_tokens", self.latent_tokens, minimum=0)
        if self.truncation not in TRUNCATION_MODES:
            raise ValueError(
                f"{owner}.truncation must be one of {TRUNCATION_MODES}, got {self.truncation!r}"
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"{owner}.d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides d_model (e.g. d_model=128, num_heads=4)."
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TextAdapterConfig:
        """A named configuration (``"cpu-small"``, ``"gpu-base"``) with field overrides."""
        return from_preset(cls, TEXT_PRESETS, name, overrides)


def _transformer_layer(config: TextAdapterConfig, decoder: bool) -> nn.Module:
    """One pre-norm GELU transformer layer (self-attention, plus cross-attention if ``decoder``)."""
    layer_cls = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    return layer_cls(
        d_model=config.d_model,
        nhead=config.num_heads,
        dim_feedforward=config.ff_mult * config.d_model,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


def _self_attention_stack(config: TextAdapterConfig, layers: int) -> nn.TransformerEncoder:
    return nn.TransformerEncoder(
        _transformer_layer(config, decoder=False),
        num_layers=layers,
        norm=nn.LayerNorm(config.d_model),
        enable_nested_tensor=False,
    )


def _cross_attention_stack(config: TextAdapterConfig, layers: int) -> nn.TransformerDecoder:
    return nn.TransformerDecoder(
        _transformer_layer(config, decoder=True),
        num_layers=layers,
        norm=nn.LayerNorm(config.d_model),
    )


def _key_padding(mask: Tensor) -> Tensor:
    """``True`` where attention must ignore a key; rows without any real token attend to all.

    (A row of only padding would otherwise give NaN from a softmax over nothing; its outputs are
    masked out anyway.)
    """
    pad = ~mask
    return pad & mask.any(dim=1, keepdim=True)


class TextEncoder(nn.Module):
    """Token + position embeddings, a transformer encoder, optional latent pooling, projection."""

    def __init__(self, config: TextAdapterConfig) -> None:
        super().__init__()
        self.token_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Parameter(torch.randn(config.max_length, config.d_model) * 0.02)
        self.trunk = _self_attention_stack(config, config.num_layers)
        self.latent_queries: nn.Parameter | None = None
        self.pool: nn.TransformerDecoder | None = None
        if config.latent_tokens > 0:
            self.latent_queries = nn.Parameter(
                torch.randn(config.latent_tokens, config.d_model) * 0.02
            )
            self.pool = _cross_attention_stack(config, config.cross_layers)
        self.to_code = nn.Linear(config.d_model, config.code_dim)

    def forward(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """``input_ids [B, L]`` long, ``mask [B, L]`` bool -> ``[B, N, code_dim]``."""
        x = self.token_emb(input_ids) + self.pos_emb[None, : input_ids.shape[1]]
        key_padding = _key_padding(mask)
        x = self.trunk(x, src_key_padding_mask=key_padding)
        if self.pool is not None and self.latent_queries is not None:
            queries = self.latent_queries[None].expand(x.shape[0], -1, -1)
            x = self.pool(queries, x, memory_key_padding_mask=key_padding)
        return self.to_code(x)


class TextDecoder(nn.Module):
    """From ``h [B, N, code_dim]`` to vocabulary logits ``[B, max_length, V]``.

    Per-position tokens: a small transformer over ``h`` (+ positions). Latent tokens: learned
    position queries cross-attend to ``h``. The head never uses the input's padding mask, so it
    behaves the same when reconstructing and when translating from other modalities.
    """

    def __init__(self, config: TextAdapterConfig) -> None:
        super().__init__()
        self.from_code = nn.Linear(config.code_dim, config.d_model)
        self.latent = config.latent_tokens > 0
        self.pos_emb = nn.Parameter(torch.randn(config.max_length, config.d_model) * 0.02)
        self.trunk: nn.Module
        if self.latent:
            self.trunk = _cross_attention_stack(config, config.decoder_layers)
        else:
            self.trunk = _self_attention_stack(config, config.decoder_layers)
        self.to_logits = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        x = self.from_code(h)
        if self.latent:
            queries = self.pos_emb[None].expand(x.shape[0], -1, -1)
            x = self.trunk(queries, x)
        else:
            x = self.trunk(x + self.pos_emb[None])
        return self.to_logits(x)
