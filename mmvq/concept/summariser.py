"""`ConceptSummariser`: ``S`` learned queries that attend over one modality's tokens.

One module serves every modality (the queries, attention and MLP weights are shared, so the
concepts of an image and of its caption are read out the same way); only the position
embedding of the tokens is per modality, sized from the adapter's ``num_tokens()``. A plugin
adapter therefore gets a concept level without code of its own.

The attention normalises queries and keys (QK-norm, as in ViT-22B): with a handful of learned
queries over summaries, plain dot-product attention let a large learning rate drive every
sample's concepts onto one data-independent point within a few steps (measured on the shapes
data at lr 1e-3); bounded logits keep them apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvq.concept.config import ConceptConfig

__all__ = ["ConceptSummariser"]


class _Attention(nn.Module):
    """Multi-head attention with layer-normalised queries and keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q_norm = nn.LayerNorm(dim // heads)
        self.k_norm = nn.LayerNorm(dim // heads)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, padding: Tensor | None) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q_norm(self.q(x).view(b, n, h, d // h).transpose(1, 2))
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        k = self.k_norm(k)
        mask = None if padding is None else ~padding[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Pre-norm block: concepts attend to the tokens, then to each other, then an MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.cross = _Attention(dim, heads)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: Tensor, tokens: Tensor, padding: Tensor | None) -> Tensor:
        q = q + self.cross(self.norm_q(q), self.norm_tokens(tokens), padding)
        s = self.norm_self(q)
        q = q + self.self_attn(s, s, None)
        return q + self.mlp(self.norm_mlp(q))


class ConceptSummariser(nn.Module):
    """Summarise a modality's tokens ``z [B, N_m, D]`` into concept tokens ``[B, S, D]``.

    Args:
        config: the concept level's options (``num_concepts``, ``dim``, ``depth``, ``heads``).
        code_dim: the shared code dimension ``D`` (input and output width).
        layout: modality -> tokens per sample ``N_m`` (one position embedding each).
    """

    def __init__(self, config: ConceptConfig, code_dim: int, layout: Mapping[str, int]) -> None:
        super().__init__()
        dim = config.dim
        self.num_concepts = config.num_concepts
        self.queries = nn.Parameter(torch.randn(config.num_concepts, dim) * 0.02)
        self.in_proj = nn.Linear(code_dim, dim)
        self.pos_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(n, dim) * 0.02) for m, n in layout.items()}
        )
        self.blocks = nn.ModuleList([_Block(dim, config.heads) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, code_dim)

    def forward(self, modality: str, z: Tensor, mask: Tensor) -> Tensor:
        """Concept tokens ``[B, S, D]`` of ``z [B, N, D]``; ``mask [B, N]`` marks real tokens
        (a row with none, an absent sample, attends to every token: its output is unused)."""
        tokens = self.in_proj(z) + self.pos_embed[modality].to(z.dtype)
        padding = ~mask.bool()
        padding = padding & ~padding.all(dim=1, keepdim=True)
        use = padding if bool(padding.any()) else None
        q = self.queries.to(tokens.dtype).expand(z.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, tokens, use)
        return self.out_proj(self.norm(q))
