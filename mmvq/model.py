"""`MultimodalVQ`: adapters, a two-level shared code (concept + detail) and the fusion decoder.

Per modality: ``adapter.encode`` -> tokens ``z [B, N_m, D]`` -> detail codes ``[B, N_m]`` (the
shared detail codebook, one code per token) and, through the concept level
(:mod:`mmvq.concept`), ``S`` concept codes ``[B, S]`` from a concept codebook every modality
shares, trained so that paired samples agree on them. The fusion decoder sees both levels of
every visible modality and reconstructs or translates; ``encode`` returns both levels
(:class:`~mmvq.concept.MultimodalCodes`), ``decode`` accepts either or both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmvq.adapter import AdapterConfig, AdapterInputError, ModalityAdapter, Tokens
from mmvq.adapter_checks import (
    check_adapter_config,
    check_loss,
    check_modality_name,
    check_num_tokens,
    check_preprocessed,
    check_tokens,
)
from mmvq.concept import (
    CodeSpan,
    ConceptLevel,
    ConceptOutput,
    MultimodalCodes,
    concept_similarity,
    concept_stream,
)
from mmvq.fusion import FusionDecoder
from mmvq.hub.mixin import MultimodalVQHubMixin
from mmvq.model_config import MultimodalVQConfig, MultimodalVQOutput
from mmvq.model_inputs import check_batch, check_codes, present_rows
from mmvq.quantize import SharedCodebook
from mmvq.utils.batches import to_device

__all__ = ["MultimodalVQ", "MultimodalVQConfig", "MultimodalVQOutput"]


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
            check_modality_name(name, "MultimodalVQ adapters")
            check_adapter_config(name, adapter)
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
        layout = {m: check_num_tokens(m, a) for m, a in self.adapters.items()}
        self.concept: ConceptLevel | None = None
        streams = dict(layout)
        if config.concept.enabled:
            self.concept = ConceptLevel(config.concept, code_dim, layout)
            for m in self.modalities:
                streams[concept_stream(m)] = config.concept.num_concepts
        self.decoder = FusionDecoder(config.decoder, code_dim, streams)

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
        """Tokens (detail codes) per sample of each modality."""
        return {m: self.decoder.layout[m] for m in self.modalities}

    @property
    def num_concepts(self) -> int:
        """Concept codes per sample and modality (0 without a concept level)."""
        return self.concept.num_concepts if self.concept is not None else 0

    def code_layout(self) -> list[CodeSpan]:
        """The spans of a sample's codes, per modality concept then detail (see
        :mod:`mmvq.concept.codes`)."""
        spans = []
        for m in self.modalities:
            if self.concept is not None:
                spans.append(
                    CodeSpan(
                        m, "concept", self.num_concepts, self.concept.codebook.config.num_codes
                    )
                )
            spans.append(
                CodeSpan(m, "detail", self.decoder.layout[m], self.config.codebook.num_codes)
            )
        return spans

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: everything at ``lr``, the concept summariser at
        ``lr * concept.lr_scale``."""
        scaled = list(self.concept.parameters_with_scaled_lr()) if self.concept is not None else []
        ids = {id(p) for p in scaled}
        groups = [
            {
                "params": [p for p in self.parameters() if id(p) not in ids and p.requires_grad],
                "lr": lr,
            }
        ]
        if scaled:
            groups.append({"params": scaled, "lr": lr * self.config.concept.lr_scale})
        return groups

    def similarity(
        self, codes_a: MultimodalCodes | Tensor, codes_b: MultimodalCodes | Tensor
    ) -> Tensor:
        """Cross-modal similarity by concept codes: ``[Na, Nb]``, the fraction of concept slots
        on which two rows agree.

        Each argument is a concept-code tensor ``[N, S]`` or a :class:`MultimodalCodes` holding
        the concept codes of exactly one modality::

            codes = model.encode(batch)
            sim = model.similarity(codes.concept["image"], codes.concept["text"])
            best_caption = sim.argmax(dim=1)
        """

        def concepts(codes: MultimodalCodes | Tensor, name: str) -> Tensor:
            if isinstance(codes, Tensor):
                return codes
            if len(codes.concept) != 1:
                raise ValueError(
                    f"similarity: {name} must hold the concept codes of one modality, got "
                    f"{sorted(codes.concept) or 'none'}"
                )
            return next(iter(codes.concept.values()))

        if self.concept is None:
            raise ValueError("similarity compares concept codes; this model has no concept level")
        return concept_similarity(concepts(codes_a, "codes_a"), concepts(codes_b, "codes_b"))

    def _tokens(self, m: str, sub: Mapping[str, Tensor], size: int) -> Tokens:
        adapter = self.adapters[m]
        tokens = adapter.encode(dict(sub))
        return check_tokens(m, adapter, tokens, size, self.decoder.layout[m], self.code_dim)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        batch: Mapping[str, Mapping[str, Tensor]],
        *,
        modality_dropout: float | None = None,
        targets: Sequence[str] | None = None,
    ) -> MultimodalVQOutput:
        """Encode, quantise (both levels), fuse and reconstruct a batch.

        Args:
            batch: modality -> the adapter's collated batch (plus optional ``"present"`` [B]).
            modality_dropout: overrides the config's dropout probability (applied in training mode
                only; pass 0 to disable).
            targets: modalities to reconstruct (default: every modality in the batch).
        """
        size = check_batch(batch, self.modalities)
        device = self.device
        present: dict[str, Tensor] = {}
        z: dict[str, Tensor] = {}
        token_mask: dict[str, Tensor] = {}
        for m in self.modalities:
            if m not in batch:
                continue
            present[m] = present_rows(m, batch[m], size, device)
            tokens = self._tokens(m, batch[m], size)
            # A present sample that is all padding is refused by the codebook, in the same host
            # sync as its finiteness check (no sync per modality here).
            z[m] = tokens.z
            token_mask[m] = tokens.mask.to(device) & present[m][:, None]

        weights = {m: float(self.config.modality_weights.get(m, 1.0)) for m in z}
        quant = self.codebook(z, token_mask, weights=weights, present=present)
        concept = self.concept(z, token_mask, present, weights, batch) if self.concept else None

        p = self.config.modality_dropout if modality_dropout is None else float(modality_dropout)
        visible = self._drop_modalities(present, p) if (self.training and p > 0) else dict(present)
        targets = list(batch) if targets is None else list(targets)
        streams = self._streams(quant.z_q, concept, visible, token_mask, present)
        hidden = self.decoder(*streams, targets)

        recon, rec_loss, rec_mean = {}, {}, {}
        for m in targets:
            sub = batch.get(m)
            recon[m] = self.adapters[m].decode(hidden[m], dict(sub) if sub is not None else None)
            if sub is None:
                continue
            adapter = self.adapters[m]
            per_sample = check_loss(
                m, adapter, adapter.reconstruction_loss(dict(sub), recon[m]), size
            )
            weight = present[m].to(per_sample.dtype)
            rec_loss[m] = per_sample * weight
            rec_mean[m] = rec_loss[m].sum() / weight.sum().clamp_min(1.0)

        total = sum(
            weights.get(m, 1.0) * (rec_mean.get(m, 0.0) + quant.loss[m]) for m in quant.loss
        )
        if concept is not None:
            total = total + sum(concept.loss.values())
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
            concept=concept,
        )

    def _streams(
        self,
        detail: Mapping[str, Tensor],
        concept: ConceptOutput | None,
        visible: Mapping[str, Tensor],
        token_mask: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """The fusion decoder's inputs ``(z_q, visible, token_mask)`` per stream: each visible
        modality's detail codes and, with a concept level, its concept codes. In training a
        visible modality's detail codes are hidden with probability ``detail_dropout`` (its
        concepts stay), so that the decoder learns to rebuild from concepts alone."""
        z_q, vis, mask = dict(detail), dict(visible), dict(token_mask)
        if concept is None:
            return z_q, vis, mask
        p = self.config.concept.detail_dropout
        for m, codes in concept.z_q.items():
            name = concept_stream(m)
            z_q[name] = codes
            vis[name] = visible[m]
            mask[name] = present[m][:, None].expand(-1, self.num_concepts)
            if self.training and p > 0:
                vis[m] = visible[m] & (torch.rand(visible[m].shape, device=self.device) >= p)
        return z_q, vis, mask

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
            out = self.adapters[modality].preprocess(value)
        except AdapterInputError as exc:
            exc.modality = modality
            raise
        return check_preprocessed(modality, self.adapters[modality], out)

    def postprocess(self, recon: Mapping[str, Tensor]) -> dict[str, list[Any]]:
        """Raw outputs (PIL images, strings, waveforms...) of each modality's reconstruction."""
        return {m: self.adapters[m].postprocess(r) for m, r in recon.items()}

    @torch.no_grad()
    def encode(self, batch: Mapping[str, Mapping[str, Tensor]]) -> MultimodalCodes:
        """Codes of each modality in the batch, at both levels (:class:`MultimodalCodes`):
        ``.detail[m]`` long ``[B, N_m]`` (``-1`` at padding and in absent rows) and, with a
        concept level, ``.concept[m]`` long ``[B, S]`` (``-1`` in absent rows).

        Does not touch codebook statistics, whatever the module's mode.
        """
        size = check_batch(batch, self.modalities)
        device = self.device
        out = MultimodalCodes()
        for m in self.modalities:
            if m not in batch:
                continue
            tokens = self._tokens(m, batch[m], size)
            present = present_rows(m, batch[m], size, device)
            mask = tokens.mask.to(device) & present[:, None]
            out.detail[m] = self.codebook.lookup(tokens.z).masked_fill(~mask, -1)
            if self.concept is not None:
                out.concept[m] = self.concept.encode(m, tokens.z, tokens.mask.to(device), present)
        return out

    @torch.no_grad()
    def decode(
        self,
        codes: MultimodalCodes | Mapping[str, Tensor],
        targets: Sequence[str] | None = None,
        batch: Mapping[str, Mapping[str, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Reconstruct or translate from codes.

        Args:
            codes: a :class:`MultimodalCodes` (concept codes, detail codes or both, of any subset
                of the model's modalities), or a plain ``{modality: detail codes [B, N_m]}``.
                ``-1`` marks padding (detail) or an absent row.
            targets: modalities to produce (default: all of the model's). A target missing from
                ``codes`` is generated from the given modalities.
            batch: optional collated inputs handed to ``adapter.decode`` for known modalities.

        Returns:
            modality -> reconstruction for every target.
        """
        targets = list(self.modalities) if targets is None else list(targets)
        for m in targets:
            if m not in self.adapters:
                raise KeyError(
                    f"unknown modality {m!r}; this model's modalities are {list(self.modalities)}"
                )
        lengths: dict[str, dict[str, int]] = {"detail": self.num_tokens()}
        sizes = {"detail": self.config.codebook.num_codes}
        if self.concept is not None:
            lengths["concept"] = dict.fromkeys(self.modalities, self.num_concepts)
            sizes["concept"] = self.concept.codebook.config.num_codes
        codes = check_codes(codes, self.modalities, lengths, sizes, self.device)
        z_q, visible, token_mask = {}, {}, {}
        for m, c in codes.detail.items():
            token_mask[m] = c >= 0
            z_q[m] = self.codebook.embed(c.clamp_min(0)) * token_mask[m][..., None]
            visible[m] = token_mask[m].any(dim=1)
        for m, c in codes.concept.items():
            name = concept_stream(m)
            z_q[name] = self.concept.embed(c)
            token_mask[name] = c >= 0
            visible[name] = token_mask[name].any(dim=1)
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
