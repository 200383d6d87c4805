"""The train-mode checks: ``gradient`` (the reconstruction loss reaches both encode's and
decode's parameters through a stand-in quantiser), ``last_layer`` (the decoder's last weight for
the adaptive GAN weight) and ``gan`` (the discriminator judges, and its verdict reaches the
adapter). The last two are skipped when the adapter returns ``None`` for them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmvq.testing.checks import Probe
from mmvq.testing.runner import Runner, all_finite, require, shape

__all__ = ["run_gradient_checks"]


def _nonzero_finite(grads: dict[str, Tensor | None]) -> list[str]:
    return [
        n
        for n, g in grads.items()
        if g is not None and bool(torch.isfinite(g).all()) and bool((g != 0).any())
    ]


@dataclass
class _Graph:
    """The train-mode forward the gradient checks differentiate."""

    names: list[str]
    params: list[nn.Parameter]
    z: Tensor
    h: Tensor
    recon: Tensor
    loss: Tensor

    def grads(self, output: Tensor, **kwargs: object) -> dict[str, Tensor | None]:
        """``{parameter name: d output / d parameter}`` (``None`` where unused)."""
        return dict(zip(self.names, torch.autograd.grad(output, self.params, **kwargs)))


def _forward(probe: Probe) -> _Graph:
    adapter, batch = probe.adapter, probe.batch
    named = [(n, p) for n, p in adapter.named_parameters() if p.requires_grad]
    require(
        bool(named),
        "the adapter has no parameter that requires grad; encode/decode must be trainable",
    )
    z = adapter.encode(batch).z
    require(
        z.requires_grad,
        "Tokens.z does not require grad in train mode; encode must not detach or run under no_grad",
    )
    # A tiny straight-through quantiser stands in for the codebook between encode and decode.
    h = z + (torch.round(z * 4) / 4 - z).detach()
    recon = adapter.decode(h, batch)
    loss = adapter.reconstruction_loss(batch, recon).mean()
    require(
        loss.requires_grad,
        "reconstruction_loss does not require grad; it must be differentiable in recon",
    )
    return _Graph([n for n, _ in named], [p for _, p in named], z, h, recon, loss)


def _gradient(runner: Runner, probe: Probe) -> _Graph:
    with runner.check("gradient") as detail:
        graph = _forward(probe)
        (gz,) = torch.autograd.grad(graph.loss, graph.z, retain_graph=True, allow_unused=True)
        require(
            gz is not None and bool((gz != 0).any()),
            "the reconstruction loss does not depend on the decoder input h: no gradient reaches "
            "encode's output; decode must use h",
        )
        require(bool(torch.isfinite(gz).all()), "the gradient at encode's output holds NaN or inf")
        enc = graph.grads(graph.z, grad_outputs=gz, retain_graph=True, allow_unused=True)
        full = graph.grads(graph.loss, retain_graph=True, allow_unused=True)
        bad = [n for n, g in full.items() if g is not None and not bool(torch.isfinite(g).all())]
        require(not bad, f"non-finite gradients in {bad}")
        enc_ok = _nonzero_finite(enc)
        require(
            bool(enc_ok),
            "no encode parameter gets a nonzero gradient from the reconstruction loss through "
            "encode -> decode",
        )
        recon_fixed = probe.adapter.decode(graph.h.detach(), probe.batch)
        dec_loss = probe.adapter.reconstruction_loss(probe.batch, recon_fixed).mean()
        dec_ok = _nonzero_finite(graph.grads(dec_loss, allow_unused=True))
        require(
            bool(dec_ok), "no decode parameter gets a nonzero gradient from the reconstruction loss"
        )
        detail.append(
            f"{len(enc_ok)} encode and {len(dec_ok)} decode parameter tensors get gradients"
        )
    return graph


def _last_layer(runner: Runner, probe: Probe, graph: _Graph) -> None:
    last = probe.adapter.last_layer()
    if last is None:
        runner.skip("last_layer", "last_layer() is None (no adaptive GAN weight)")
        return
    with runner.check("last_layer") as detail:
        require(
            isinstance(last, Tensor) and last.requires_grad,
            f"last_layer() must return a Tensor that requires grad, got {type(last).__name__}",
        )
        require(
            any(last is p for p in graph.params),
            "last_layer() must be one of the adapter's own parameters (the decoder's last weight)",
        )
        (g,) = torch.autograd.grad(graph.loss, last, retain_graph=True, allow_unused=True)
        require(
            g is not None and bool((g != 0).any()),
            "the reconstruction loss gives no gradient to last_layer(); it must be the weight "
            "of decode's last layer",
        )
        detail.append(f"weight {shape(last)} receives the reconstruction gradient")


def _judged(probe: Probe, disc: nn.Module, graph: _Graph) -> tuple[Tensor, ...]:
    """``gan_inputs``' real and fake and the discriminator's logits on them, checked."""
    b = probe.size
    pair = probe.adapter.gan_inputs(probe.batch, graph.recon)
    require(
        isinstance(pair, tuple) and len(pair) == 2,
        f"gan_inputs must return (real, fake), got {type(pair).__name__}",
    )
    for label, t in zip(("real", "fake"), pair):
        require(
            isinstance(t, Tensor) and t.shape[0] == b,
            f"gan_inputs {label} must be a Tensor with batch dim {b}, got "
            f"{shape(t) if isinstance(t, Tensor) else type(t).__name__}",
        )
    logits = disc(pair[0]), disc(pair[1])
    for label, t in zip(("real", "fake"), logits):
        require(
            isinstance(t, Tensor) and t.shape[0] == b and all_finite(t),
            f"discriminator({label}) must give finite logits with batch dim {b}",
        )
    return (*pair, *logits)


def _gan(runner: Runner, probe: Probe, graph: _Graph) -> None:
    disc = probe.adapter.discriminator()
    if disc is None:
        runner.skip("gan", "discriminator() is None (no GAN loss for this modality)")
        return
    with runner.check("gan") as detail:
        require(
            isinstance(disc, nn.Module),
            f"discriminator() must return an nn.Module or None, got {type(disc).__name__}",
        )
        other = probe.adapter.discriminator()
        shared = {id(p) for p in disc.parameters()} & {id(p) for p in other.parameters()}
        require(
            other is not disc and not shared,
            "discriminator() must build a fresh module on each call",
        )
        disc = disc.to(probe.adapter.target_device())
        real, fake, logits_real, logits_fake = _judged(probe, disc, graph)
        gen = graph.grads(logits_fake.sum(), retain_graph=True, allow_unused=True)
        require(
            bool(_nonzero_finite(gen)),
            "the discriminator's verdict on fake gives the adapter no gradient; gan_inputs must "
            "not detach fake from recon",
        )
        d_params = [p for p in disc.parameters() if p.requires_grad]
        require(bool(d_params), "the discriminator has no trainable parameters")
        d_grads = torch.autograd.grad(logits_real.sum(), d_params, allow_unused=True)
        require(
            any(g is not None and bool((g != 0).any()) for g in d_grads),
            "the discriminator gets no gradient from its verdict on real",
        )
        detail.append(f"{type(disc).__name__} judges real {shape(real)} and fake {shape(fake)}")


def run_gradient_checks(runner: Runner, probe: Probe) -> None:
    """``gradient``, ``last_layer`` and ``gan``, in train mode."""
    probe.adapter.train()
    graph = _gradient(runner, probe)
    _last_layer(runner, probe, graph)
    _gan(runner, probe, graph)
