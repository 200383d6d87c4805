"""The GAN head of training: one discriminator per modality, the generator's GAN loss, the D step.

:class:`DiscriminatorSet` holds a discriminator for every modality whose adapter returns one. It is
a module of its own, prepared by Accelerate separately from the model and trained by its own
optimizer (never one DDP module with the generator). Its ``forward`` judges real and fake inputs of
any subset of modalities and returns the discriminator loss, so one DDP forward/backward pair per
step covers all of them; a process whose batch holds none of them still runs a (zero) backward so
that every rank takes part in the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmvq.nn.gan import adaptive_weight, d_loss, generator_loss

__all__ = ["DiscriminatorSet", "generator_gan_loss", "gan_inputs"]


class DiscriminatorSet(nn.Module):
    """``modality -> discriminator`` for the modalities of ``model`` that have one."""

    def __init__(self, discriminators: Mapping[str, nn.Module], loss_kind: str = "hinge") -> None:
        super().__init__()
        if not discriminators:
            raise ValueError("DiscriminatorSet needs at least one discriminator")
        self.discriminators = nn.ModuleDict(dict(discriminators))
        self.loss_kind = loss_kind

    @classmethod
    def from_model(cls, model: nn.Module, loss_kind: str = "hinge") -> DiscriminatorSet | None:
        """Ask every adapter of ``model`` for a fresh discriminator; ``None`` when none has one."""
        found = {}
        for m, adapter in model.adapters.items():
            disc = adapter.discriminator()
            if disc is not None:
                if not isinstance(disc, nn.Module):
                    raise TypeError(
                        f"adapter {m!r} ({type(adapter).__name__}).discriminator() returned a "
                        f"{type(disc).__name__}; it must return an nn.Module or None"
                    )
                if adapter.last_layer() is None:
                    raise ValueError(
                        f"adapter {m!r} ({type(adapter).__name__}) has a discriminator but "
                        "last_layer() "
                        "returns None; the adaptive GAN weight needs the decoder's last weight"
                    )
                found[m] = disc
        return cls(found, loss_kind) if found else None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.discriminators)

    def forward(
        self, inputs: Mapping[str, tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator loss over ``{modality: (real, fake)}`` (fake detached by the caller).

        Returns the summed loss and per-modality logs (``d_loss``, mean real/fake logits).
        """
        total: Tensor | None = None
        log: dict[str, Tensor] = {}
        for m, (real, fake) in inputs.items():
            disc = self.discriminators[m]
            logits_real = disc(real)
            logits_fake = disc(fake)
            loss = d_loss(logits_real, logits_fake, self.loss_kind)
            total = loss if total is None else total + loss
            log[f"gan/d_loss/{m}"] = loss.detach()
            log[f"gan/logits_real/{m}"] = logits_real.detach().float().mean()
            log[f"gan/logits_fake/{m}"] = logits_fake.detach().float().mean()
        if total is None:
            # Nothing to judge on this process: a zero loss that still reaches every parameter.
            total = sum(p.sum() for p in self.parameters()) * 0.0
        return total, log


def gan_inputs(
    model: nn.Module, discs: DiscriminatorSet, batch: Mapping[str, Any], out: Any
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{modality: (real, fake)}`` over the rows that hold each judged modality.

    ``fake`` keeps its graph (the generator's GAN loss flows through it).
    """
    inputs = {}
    for m in discs.modalities:
        if m not in batch or m not in out.recon or m not in out.present:
            continue
        rows = out.present[m]
        if not bool(rows.any()):
            continue
        real, fake = model.adapters[m].gan_inputs(dict(batch[m]), out.recon[m])
        inputs[m] = (real[rows], fake[rows])
    return inputs


def generator_gan_loss(
    model: nn.Module,
    discs: DiscriminatorSet,
    inputs: Mapping[str, tuple[Tensor, Tensor]],
    rec_losses: Mapping[str, Tensor],
    *,
    weight: float,
    kind: str,
    adaptive: bool,
    max_weight: float,
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """The generator's GAN loss ``sum_m weight * lambda_m * G_m`` and its logs.

    ``lambda_m`` is the VQGAN adaptive weight of modality ``m`` (its reconstruction loss's gradient
    norm over its GAN loss's on the adapter's last layer) when ``adaptive``, else 1. ``discs``
    must be the *unwrapped* discriminators with ``requires_grad`` off, so no gradient reaches them.
    """
    total: Tensor | None = None
    log: dict[str, Tensor] = {}
    for m, (_, fake) in inputs.items():
        g_loss = generator_loss(discs.discriminators[m](fake), kind)
        if adaptive:
            lam = adaptive_weight(
                rec_losses[m], g_loss, model.adapters[m].last_layer(), max_weight=max_weight
            )
        else:
            lam = torch.ones((), device=g_loss.device)
        term = weight * lam * g_loss
        total = term if total is None else total + term
        log[f"gan/g_loss/{m}"] = g_loss.detach()
        log[f"gan/adaptive_weight/{m}"] = lam.detach()
    return total, log
