"""The fusion decoder: one bidirectional transformer trunk over every modality's tokens.

Each modality contributes a fixed-length row of tokens (``layout[m]`` of them). A modality that is
visible contributes its quantised codes; one that is absent, or dropped during training, contributes
its learned mask token at every position. Modality and position embeddings tell the trunk which is
which, so the same weights reconstruct a modality from its own codes and translate into it from the
others' codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from mmvq.utils.batches import batch_size
from mmvq.utils.checks import check_positive_int

__all__ = ["FusionDecoderConfig", "FusionDecoder"]


@dataclass
class FusionDecoderConfig:
    """Options of :class:`FusionDecoder`.

    Attributes:
        dim: width of the transformer trunk (codes are projected from ``code_dim`` to ``dim``).
        depth: number of transformer layers.
        heads: attention heads; must divide ``dim``.
        mlp_ratio: hidden width of each MLP relative to ``dim``.
        dropout: dropout inside the trunk.
    """

    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads"):
            check_positive_int(f"FusionDecoderConfig.{name}", getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(
                f"FusionDecoderConfig.dim={self.dim} is not divisible by heads={self.heads}; "
                "choose heads that divide dim (e.g. dim=256, heads=4)."
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"FusionDecoderConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FusionDecoderConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class FusionDecoder(nn.Module):
    """Bidirectional transformer over the concatenated tokens of all modalities.

    Args:
        config: trunk options.
        code_dim: the shared code dimension ``D`` (input and output width).
        layout: modality name -> tokens per sample ``N_m`` (from ``adapter.num_tokens()``). Its
            order fixes the order of modalities in the sequence.
    """

    def __init__(
        self, config: FusionDecoderConfig, code_dim: int, layout: Mapping[str, int]
    ) -> None:
        super().__init__()
        if not layout:
            raise ValueError("FusionDecoder needs at least one modality in its layout")
        self.config = config
        self.code_dim = code_dim
        self.layout = dict(layout)
        self.modalities = tuple(self.layout)
        dim = config.dim
        self.in_proj = nn.Linear(code_dim, dim)
        self.modality_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities}
        )
        self.pos_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(n, dim) * 0.02) for m, n in self.layout.items()}
        )
        self.mask_token = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities}
        )
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=config.heads,
            dim_feedforward=int(dim * config.mlp_ratio),
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.trunk = nn.TransformerEncoder(
            layer, num_layers=config.depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.out_proj = nn.Linear(dim, code_dim)

    def forward(
        self,
        z_q: Mapping[str, Tensor],
        visible: Mapping[str, Tensor],
        token_mask: Mapping[str, Tensor],
        targets: Sequence[str],
    ) -> dict[str, Tensor]:
        """Run the trunk and return hidden states for each target modality.

        Args:
            z_q: modality -> quantised tokens ``[B, N_m, D]`` for the modalities given as input.
            visible: modality -> bool ``[B]``: rows whose codes the trunk may see. Rows not
                visible are replaced by mask tokens.
            token_mask: modality -> bool ``[B, N_m]``: real tokens among the visible rows (padding
                is hidden from attention).
            targets: modalities whose hidden states are returned (may include modalities that are
                not inputs: those are generated from the others).

        Returns:
            modality -> ``[B, N_m, D]`` for every target.
        """
        unknown = [m for m in list(z_q) + list(targets) if m not in self.layout]
        if unknown:
            raise KeyError(
                f"FusionDecoder got modality {unknown[0]!r}, which is not in its layout "
                f"{list(self.modalities)}"
            )
        if not z_q and not targets:
            raise ValueError("FusionDecoder needs at least one input modality or target")
        order = [m for m in self.modalities if m in z_q or m in targets]
        batch_size = _batch_size(z_q, visible)
        device = self.in_proj.weight.device
        dtype = self.in_proj.weight.dtype

        pieces, keep, spans = [], [], {}
        start = 0
        for m in order:
            n = self.layout[m]
            mask_tok = self.mask_token[m].to(dtype).expand(batch_size, n, -1)
            if m in z_q:
                z = z_q[m]
                if z.shape[1] != n:
                    raise ValueError(
                        f"modality {m!r} has {z.shape[1]} tokens but the decoder layout expects "
                        f"{n}; "
                        "an adapter's encode must return num_tokens() tokens (pad and mask the "
                        "rest)"
                    )
                vis = visible[m].to(device=device, dtype=torch.bool)
                x = torch.where(vis[:, None, None], self.in_proj(z.to(dtype)), mask_tok)
                real = token_mask[m].to(device=device, dtype=torch.bool) | ~vis[:, None]
            else:
                x = mask_tok
                real = torch.ones(batch_size, n, dtype=torch.bool, device=device)
            pieces.append(x + self.modality_embed[m].to(dtype) + self.pos_embed[m].to(dtype))
            keep.append(real)
            spans[m] = (start, start + n)
            start += n

        seq = torch.cat(pieces, dim=1)
        padding = ~torch.cat(keep, dim=1)
        h = self.trunk(seq, src_key_padding_mask=padding if bool(padding.any()) else None)
        h = self.out_proj(h)
        return {m: h[:, spans[m][0] : spans[m][1]] for m in targets}


def _batch_size(z_q: Mapping[str, Tensor], visible: Mapping[str, Tensor]) -> int:
    """The rows of the inputs' codes, else of the ``visible`` masks."""
    try:
        return batch_size({"z_q": dict(z_q), "visible": dict(visible)})
    except ValueError:
        raise ValueError(
            "FusionDecoder cannot infer the batch size: give at least one input modality, or a "
            "'visible' entry for a target"
        ) from None
