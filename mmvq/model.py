"""`MultimodalVQ`: adapters + one shared codebook + the fusion decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmvq.adapter import AdapterConfig, AdapterInputError, ModalityAdapter, Tokens
from mmvq.fusion import FusionDecoder, FusionDecoderConfig
from mmvq.hub.mixin import MultimodalVQHubMixin
from mmvq.quantize import CodebookConfig, SharedCodebook
from mmvq.utils.batches import to_device
from mmvq.utils.configs import check_known_fields

__all__ = ["MultimodalVQ", "MultimodalVQConfig", "MultimodalVQOutput"]


@dataclass
class MultimodalVQConfig:
    """Model-level options (the adapters carry their own configs).

    Attributes:
        codebook: options of the shared codebook.
        decoder: options of the fusion decoder.
        modality_dropout: in training, the probability that a present modality is hidden from the
            decoder for a row (it is then reconstructed from the other modalities' codes). A row
            always keeps at least one visible modality.
        modality_weights: modality -> weight of its share in the codebook's statistics (EMA update)
            and of its losses in :attr:`MultimodalVQOutput.loss`. Missing modalities weigh 1.
    """

    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    decoder: FusionDecoderConfig = field(default_factory=FusionDecoderConfig)
    modality_dropout: float = 0.5
    modality_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.codebook, dict):
            self.codebook = CodebookConfig(**self.codebook)
        if isinstance(self.decoder, dict):
            self.decoder = FusionDecoderConfig(**self.decoder)
        if not 0.0 <= float(self.modality_dropout) < 1.0:
            raise ValueError(
                "MultimodalVQConfig.modality_dropout must be in [0, 1), got "
                f"{self.modality_dropout!r}"
            )
        for m, w in self.modality_weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(
                    f"MultimodalVQConfig.modality_weights[{m!r}] must be a non-negative number, "
                    f"got {w!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultimodalVQConfig:
        check_known_fields(cls, data, "MultimodalVQConfig.from_dict")
        return cls(**dict(data))


@dataclass
class MultimodalVQOutput:
    """What :meth:`MultimodalVQ.forward` returns. Every dict is keyed by modality.

    Attributes:
        loss: weighted sum of the mean reconstruction and codebook losses (a convenience; the
            training loop combines ``rec_loss``/``vq_loss`` through a modality balancer instead).
        rec_loss: per-sample reconstruction loss ``[B]`` (0 where the modality is absent).
        rec_loss_mean: mean of ``rec_loss`` over rows where the modality is present (scalar).
        vq_loss: codebook loss (commitment, plus the codebook term for a learned codebook).
        recon: reconstructions, as returned by ``adapter.decode``.
        codes: code indices ``[B, N_m]``; ``-1`` at padding and in absent rows.
        z: continuous encoder tokens ``[B, N_m, D]`` (before quantisation).
        token_mask: bool ``[B, N_m]``: real tokens of present rows.
        present: bool ``[B]``: rows that hold the modality.
        visible: bool ``[B]``: rows whose codes the decoder saw (present and not dropped).
        stats: codebook statistics of the batch (``usage/<m>``, ``perplexity/<m>``,
            ``overlap/<a>-<b>``, ``agreement/<a>-<b>``).
    """

    loss: Tensor
    rec_loss: dict[str, Tensor]
    rec_loss_mean: dict[str, Tensor]
    vq_loss: dict[str, Tensor]
    recon: dict[str, Tensor]
    codes: dict[str, Tensor]
    z: dict[str, Tensor]
    token_mask: dict[str, Tensor]
    present: dict[str, Tensor]
    visible: dict[str, Tensor]
    stats: dict[str, Tensor]


class MultimodalVQ(nn.Module, MultimodalVQHubMixin):
    """Per-modality adapters encoding into one shared codebook, decoded by one fusion decoder.

    Args:
        adapters: modality name -> adapter instance. Each adapter's ``config.code_dim`` must equal
            the codebook's ``code_dim``.
        config: model options.

    Build from registered adapter names with :meth:`build`::

        model = MultimodalVQ.build({"image": "image", "text": ("text", {"max_length": 48})})
    """

    config_class: ClassVar[type[MultimodalVQConfig]] = MultimodalVQConfig
    """The config class :meth:`from_pretrained` rebuilds the saved model config with."""

    def __init__(
        self,
        adapters: Mapping[str, ModalityAdapter],
        config: MultimodalVQConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, Mapping):
            config = MultimodalVQConfig.from_dict(config)
        config = config or MultimodalVQConfig()
        if not adapters:
            raise ValueError(
                "MultimodalVQ needs at least one adapter, e.g. {'depth': DepthAdapter()}"
            )
        code_dim = config.codebook.code_dim
        for name, adapter in adapters.items():
            if not isinstance(adapter, ModalityAdapter):
                raise TypeError(
                    f"adapters[{name!r}] is a {type(adapter).__name__}, not a mmvq.ModalityAdapter"
                )
            if adapter.config.code_dim != code_dim:
                raise ValueError(
                    f"adapter {name!r} ({type(adapter).__name__}) outputs code_dim="
                    f"{adapter.config.code_dim} but the codebook's code_dim is {code_dim}; "
                    f"set the adapter's code_dim to {code_dim} (or the codebook's to match)"
                )
        unknown_w = sorted(set(config.modality_weights) - set(adapters))
        if unknown_w:
            raise ValueError(
                f"MultimodalVQConfig.modality_weights names unknown modality {unknown_w[0]!r}; "
                f"the model's modalities are {sorted(adapters)}"
            )
        self.config = config
        self.adapters = nn.ModuleDict(dict(adapters))
        self.modalities: tuple[str, ...] = tuple(adapters)
        self.codebook = SharedCodebook(config.codebook, self.modalities)
        layout = {m: int(a.num_tokens()) for m, a in self.adapters.items()}
        self.decoder = FusionDecoder(config.decoder, code_dim, layout)

    # ---------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        adapters: Mapping[str, Any],
        config: MultimodalVQConfig | Mapping[str, Any] | None = None,
        **config_overrides: Any,
    ) -> MultimodalVQ:
        """Build a model, resolving adapter names through the registry.

        Each value of ``adapters`` is an adapter instance, a registered adapter name, or a pair
        ``(name, config)`` where config is an :class:`AdapterConfig` or a dict of overrides. The
        adapters' ``code_dim`` is set to the codebook's when given by name.
        """
        from mmvq.registry import get_adapter

        if isinstance(config, Mapping):
            config = MultimodalVQConfig.from_dict(config)
        config = config or MultimodalVQConfig()
        if config_overrides:
            config = dataclasses.replace(config, **config_overrides)
        code_dim = config.codebook.code_dim
        built: dict[str, ModalityAdapter] = {}
        for modality, spec in adapters.items():
            if isinstance(spec, ModalityAdapter):
                built[modality] = spec
                continue
            name, adapter_config = (spec, None) if isinstance(spec, str) else tuple(spec)
            adapter_cls = get_adapter(name)
            if isinstance(adapter_config, AdapterConfig):
                built[modality] = adapter_cls(adapter_config)
            else:
                overrides = {"code_dim": code_dim, **(adapter_config or {})}
                built[modality] = adapter_cls(**overrides)
        return cls(built, config)

    @property
    def code_dim(self) -> int:
        return self.config.codebook.code_dim

    @property
    def device(self) -> torch.device:
        """The device of the model's state (the codebook's)."""
        return self.codebook.device

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every modality's loss flows through (the decoder's output projection).

        Modality balancers (GradNorm) and gradient-norm logging measure gradients here.
        """
        return [self.decoder.out_proj.weight]

    def num_tokens(self) -> dict[str, int]:
        """Tokens per sample of each modality."""
        return dict(self.decoder.layout)

    # ------------------------------------------------------------- validation
    def _check_batch(self, batch: Any) -> int:
        if not isinstance(batch, Mapping) or not batch:
            raise AdapterInputError(
                "MultimodalVQ expects a batch dict {modality: {key: tensor}} with at least one "
                f"modality of {list(self.modalities)}, got {type(batch).__name__}"
                + (" (empty)" if isinstance(batch, Mapping) else "")
            )
        sizes = {}
        for m, sub in batch.items():
            if m not in self.adapters:
                raise AdapterInputError(
                    f"batch has modality {m!r}, which this model does not know; its modalities are "
                    f"{list(self.modalities)}"
                )
            if not isinstance(sub, Mapping) or not sub:
                raise AdapterInputError(
                    f"batch[{m!r}] must be the adapter's collated dict of tensors, got "
                    f"{type(sub).__name__}; build batches with mmvq.data.MultimodalCollator"
                )
            sizes[m] = ModalityAdapter.batch_size(sub)
        if len(set(sizes.values())) != 1:
            raise AdapterInputError(
                f"modalities disagree on the batch size: {sizes}; rows of a batch are paired "
                "samples, so every modality needs the same number of rows (mark missing ones with "
                "'present')"
            )
        size = next(iter(sizes.values()))
        if size == 0:
            raise AdapterInputError("the batch is empty (0 rows); give at least one sample")
        return size

    def _present(
        self, m: str, sub: Mapping[str, Tensor], size: int, device: torch.device
    ) -> Tensor:
        present = sub.get("present")
        if present is None:
            return torch.ones(size, dtype=torch.bool, device=device)
        present = torch.as_tensor(present, device=device).bool()
        if present.shape != (size,):
            raise AdapterInputError(
                f"batch[{m!r}]['present'] must be a bool tensor of shape [{size}], got "
                f"{tuple(present.shape)}"
            )
        return present

    def _encode_tokens(self, m: str, sub: Mapping[str, Tensor], size: int) -> Tokens:
        adapter = self.adapters[m]
        tokens = adapter.encode(dict(sub))
        if not isinstance(tokens, tuple) or len(tokens) != 2:
            raise TypeError(
                f"adapter {m!r}.encode must return mmvq.Tokens(z, mask), got "
                f"{type(tokens).__name__}"
            )
        z, mask = tokens
        n = self.decoder.layout[m]
        if z.dim() != 3 or tuple(z.shape) != (size, n, self.code_dim):
            raise ValueError(
                f"adapter {m!r} ({type(adapter).__name__}).encode returned z of shape "
                f"{tuple(z.shape)}; expected [batch={size}, num_tokens={n}, "
                f"code_dim={self.code_dim}]"
            )
        if not z.is_floating_point():
            raise TypeError(
                f"adapter {m!r}.encode returned z of dtype {z.dtype}; expected a float tensor"
            )
        if tuple(mask.shape) != (size, n):
            raise ValueError(
                f"adapter {m!r}.encode returned mask of shape {tuple(mask.shape)}; expected "
                f"[{size}, {n}]"
            )
        return Tokens(z, mask.bool())

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        batch: Mapping[str, Mapping[str, Tensor]],
        *,
        modality_dropout: float | None = None,
        targets: Sequence[str] | None = None,
    ) -> MultimodalVQOutput:
        """Encode, quantise, fuse and reconstruct a batch.

        Args:
            batch: modality -> the adapter's collated batch (plus optional ``"present"`` [B]).
            modality_dropout: overrides the config's dropout probability (applied in training mode
                only; pass 0 to disable).
            targets: modalities to reconstruct (default: every modality in the batch).
        """
        size = self._check_batch(batch)
        device = self.device
        present: dict[str, Tensor] = {}
        z: dict[str, Tensor] = {}
        token_mask: dict[str, Tensor] = {}
        for m in self.modalities:
            if m not in batch:
                continue
            sub = batch[m]
            present[m] = self._present(m, sub, size, device)
            tokens = self._encode_tokens(m, sub, size)
            # A present sample that is all padding is refused by the codebook, in the same host
            # sync as its finiteness check (no sync per modality here).
            z[m] = tokens.z
            token_mask[m] = tokens.mask.to(device) & present[m][:, None]

        weights = {m: float(self.config.modality_weights.get(m, 1.0)) for m in z}
        quant = self.codebook(z, token_mask, weights=weights, present=present)

        p = self.config.modality_dropout if modality_dropout is None else float(modality_dropout)
        visible = self._drop_modalities(present, p) if (self.training and p > 0) else dict(present)

        targets = list(batch) if targets is None else list(targets)
        hidden = self.decoder(quant.z_q, visible, token_mask, targets)

        recon, rec_loss, rec_mean = {}, {}, {}
        for m in targets:
            sub = batch.get(m)
            recon[m] = self.adapters[m].decode(hidden[m], dict(sub) if sub is not None else None)
            if sub is None:
                continue
            per_sample = self.adapters[m].reconstruction_loss(dict(sub), recon[m])
            if per_sample.shape != (size,):
                raise ValueError(
                    f"adapter {m!r}.reconstruction_loss returned shape {tuple(per_sample.shape)}; "
                    f"expected a per-sample loss of shape [{size}]"
                )
            weight = present[m].to(per_sample.dtype)
            rec_loss[m] = per_sample * weight
            rec_mean[m] = rec_loss[m].sum() / weight.sum().clamp_min(1.0)

        total = sum(
            weights.get(m, 1.0) * (rec_mean.get(m, 0.0) + quant.loss[m]) for m in quant.loss
        )
        return MultimodalVQOutput(
            loss=total if isinstance(total, Tensor) else torch.zeros((), device=device),
            rec_loss=rec_loss,
            rec_loss_mean=rec_mean,
            vq_loss=dict(quant.loss),
            recon=recon,
            codes=dict(quant.codes),
            z=z,
            token_mask=token_mask,
            present=present,
            visible=visible,
            stats=dict(quant.stats),
        )

    def _drop_modalities(self, present: dict[str, Tensor], p: float) -> dict[str, Tensor]:
        """Hide each present modality of a row with probability ``p``, keeping one visible."""
        if len(present) < 2:
            return dict(present)
        names = list(present)
        pres = torch.stack([present[m] for m in names], dim=1)  # [B, M]
        keep = pres & (torch.rand(pres.shape, device=pres.device) >= p)
        lost = pres.any(dim=1) & ~keep.any(dim=1)
        if bool(lost.any()):
            # Restore one present modality, chosen uniformly, in rows where all were dropped.
            scores = torch.rand(pres.shape, device=pres.device).masked_fill(~pres, -1.0)
            pick = torch.nn.functional.one_hot(scores.argmax(dim=1), len(names)).bool()
            keep = keep | (pick & lost[:, None])
        return {m: keep[:, i] for i, m in enumerate(names)}

    # ------------------------------------------------------------ inference API
    def prepare(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Tensor]]:
        """Preprocess and collate raw examples into a batch on the model's device (floating-point
        tensors in the dtype of its weights).

        Each example maps modality names to raw values (a PIL image or path, a string, a
        waveform with its sample rate...); a modality missing from an example (or ``None``) is
        marked absent for that row::

            batch = model.prepare([{"image": "cat.png", "text": "a cat"}, {"text": "a dog"}])
        """
        from mmvq.data import MultimodalCollator

        if isinstance(examples, Mapping) or not isinstance(examples, Sequence) or not examples:
            raise AdapterInputError(
                "prepare() expects a non-empty list of examples like [{'<modality>': raw value}], "
                f"got {type(examples).__name__}"
            )
        rows = []
        for i, example in enumerate(examples):
            if not isinstance(example, Mapping):
                raise AdapterInputError(
                    f"example {i} must be a dict {{modality: value}}, got {type(example).__name__}"
                )
            unknown = sorted(set(example) - set(self.modalities))
            if unknown:
                raise AdapterInputError(
                    f"example {i} has modality {unknown[0]!r}, which this model does not know; its "
                    f"modalities are {list(self.modalities)}"
                )
            rows.append({m: self._preprocess(m, v) for m, v in example.items() if v is not None})
        batch = MultimodalCollator(dict(self.adapters))(rows)
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        return to_device(dict(batch), self.device, float_dtype=dtype)

    def _preprocess(self, modality: str, value: Any) -> dict[str, Tensor]:
        """``adapter.preprocess(value)``; a refusal records the modality on the error."""
        try:
            return self.adapters[modality].preprocess(value)
        except AdapterInputError as exc:
            exc.modality = modality
            raise

    def postprocess(self, recon: Mapping[str, Tensor]) -> dict[str, list[Any]]:
        """Raw outputs (PIL images, strings, waveforms...) of each modality's reconstruction."""
        return {m: self.adapters[m].postprocess(r) for m, r in recon.items()}

    @torch.no_grad()
    def encode(self, batch: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Codes of each modality in the batch: ``{modality: long [B, N_m]}``, ``-1`` at padding.

        Does not touch codebook statistics, whatever the module's mode.
        """
        size = self._check_batch(batch)
        device = self.device
        out = {}
        for m in self.modalities:
            if m not in batch:
                continue
            tokens = self._encode_tokens(m, batch[m], size)
            mask = tokens.mask.to(device) & self._present(m, batch[m], size, device)[:, None]
            codes = self.codebook.lookup(tokens.z)
            out[m] = codes.masked_fill(~mask, -1)
        return out

    @torch.no_grad()
    def decode(
        self,
        codes: Mapping[str, Tensor],
        targets: Sequence[str] | None = None,
        batch: Mapping[str, Mapping[str, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Reconstruct or translate from codes.

        Args:
            codes: modality -> long ``[B, N_m]`` codes (``-1`` = padding); any subset of the model's
                modalities.
            targets: modalities to produce (default: all of the model's). A target missing from
                ``codes`` is generated from the given modalities.
            batch: optional collated inputs handed to ``adapter.decode`` for known modalities.

        Returns:
            modality -> reconstruction for every target.
        """
        if not codes:
            raise ValueError("decode needs codes of at least one modality")
        targets = list(self.modalities) if targets is None else list(targets)
        for m in list(codes) + targets:
            if m not in self.adapters:
                raise KeyError(
                    f"unknown modality {m!r}; this model's modalities are {list(self.modalities)}"
                )
        device = self.device
        z_q, visible, token_mask = {}, {}, {}
        sizes = {int(c.shape[0]) for c in codes.values()}
        if len(sizes) != 1:
            raise ValueError(f"codes of different modalities disagree on the batch size: {sizes}")
        for m, c in codes.items():
            c = torch.as_tensor(c, device=device)
            n = self.decoder.layout[m]
            if c.dim() != 2 or c.shape[1] != n or c.dtype not in (torch.int32, torch.int64):
                raise ValueError(
                    f"codes[{m!r}] must be an integer tensor [batch, {n}], got "
                    f"{c.dtype} {tuple(c.shape)}"
                )
            k = self.config.codebook.num_codes
            if bool(((c < -1) | (c >= k)).any()):
                raise ValueError(f"codes[{m!r}] holds values outside [-1, {k - 1}]")
            mask = c >= 0
            z_q[m] = self.codebook.embed(c.clamp_min(0).long()) * mask[..., None]
            token_mask[m] = mask
            visible[m] = mask.any(dim=1)
        hidden = self.decoder(z_q, visible, token_mask, targets)
        return {
            m: self.adapters[m].decode(hidden[m], dict(batch[m]) if batch and m in batch else None)
            for m in targets
        }

    @torch.no_grad()
    def translate(
        self, batch: Mapping[str, Mapping[str, Tensor]], targets: Sequence[str]
    ) -> dict[str, Tensor]:
        """Encode ``batch`` and decode ``targets`` from its codes (e.g. text -> image)."""
        return self.decode(self.encode(batch), targets=targets)
