"""Generation: translate into a modality, with N variations by code-level temperature sampling.

The fusion decoder is deterministic: given the source modalities' codes it always produces the
same target. Variations therefore come from the codes, not from the decoder. For each sample, every
source token's code is drawn from a softmax over its squared distances to the codebook::

    p(k | z) ∝ exp(-||z - e_k||² / (T · D))      over the top_k nearest codes

(``z`` the adapter's continuous token, ``e_k`` the code vectors, ``D`` the lookup dimension,
distances in fp32 in the codebook's lookup space, exactly the space
:meth:`~mmvq.quantize.SharedCodebook.lookup` searches). ``T = 0`` picks the nearest code, i.e.
plain deterministic translation; larger ``T`` explores codes farther from the encoder's output.
Each sampled source code sequence is then translated through the fusion decoder, giving one
variation of the target per sample. With a concept level, each source's concept codes (the
nearest ones) go to the decoder alongside its sampled detail codes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from mmvq.adapter import AdapterInputError
from mmvq.concept.codes import MultimodalCodes
from mmvq.utils.batches import batch_size
from mmvq.utils.checks import check_int, check_number, is_int

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.model import MultimodalVQ
    from mmvq.quantize import SharedCodebook

__all__ = [
    "GenerationOutput",
    "SamplingConfig",
    "code_distances",
    "generate",
    "generate_batches",
    "sample_codes",
]


@dataclass
class SamplingConfig:
    """How source codes are sampled (see the module docstring).

    Attributes:
        temperature: ``T >= 0``; 0 is the nearest code (deterministic).
        top_k: sample among this many nearest codes (``None``: all codes).
        seed: seed of the sampling generator (``None``: nondeterministic).
    """

    temperature: float = 1.0
    top_k: int | None = 16
    seed: int | None = None

    def __post_init__(self) -> None:
        check_number(
            "SamplingConfig.temperature",
            self.temperature,
            low=0,
            fix="; use 0 for deterministic translation, e.g. 1.0 for variations.",
        )
        check_int("SamplingConfig.top_k", self.top_k, minimum=1, optional=True)
        if self.seed is not None and not is_int(self.seed):
            raise ValueError(f"SamplingConfig.seed must be None or an int, got {self.seed!r}")


class GenerationOutput(NamedTuple):
    """What :func:`generate` returns.

    Attributes:
        codes: the codes of each source modality: sampled detail codes, long
            ``[B * num_samples, N_m]`` (rows ``b * num_samples + j``: sample ``j`` of input row
            ``b``; ``-1`` at padding), and the concept codes, repeated likewise.
        recon: each target's reconstruction (``adapter.decode`` output), same row order.
    """

    codes: MultimodalCodes
    recon: dict[str, Tensor]


def code_distances(codebook: SharedCodebook, z: Tensor) -> Tensor:
    """Squared distances ``[..., K]`` (fp32, autocast off) from ``z [..., D]`` to every code.

    Computed in the space :meth:`SharedCodebook.lookup` searches (after ``project_in`` and
    l2-normalisation when configured), so ``code_distances(cb, z).argmin(-1) == cb.lookup(z)``.
    """
    return codebook.distances(z)


def sample_codes(
    codebook: SharedCodebook,
    z: Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Codes ``long [...]`` for ``z [..., D]`` sampled at ``config.temperature`` (0: nearest)."""
    if config.temperature == 0:
        return codebook.lookup(z)
    d = code_distances(codebook, z)
    k = d.shape[-1] if config.top_k is None else min(config.top_k, d.shape[-1])
    near_d, near_idx = d.topk(k, dim=-1, largest=False)
    dim = codebook.project_in.out_features if codebook.project_in is not None else z.shape[-1]
    probs = torch.softmax(-near_d / (config.temperature * dim), dim=-1)
    flat = probs.reshape(-1, k)
    pick = torch.multinomial(flat, 1, generator=generator).view(*probs.shape[:-1], 1)
    return near_idx.gather(-1, pick).squeeze(-1)


def _check_targets(
    model: MultimodalVQ, batch: Mapping[str, Mapping[str, Tensor]], targets: list[str]
) -> None:
    if not targets:
        raise AdapterInputError(f"give at least one target modality of {list(model.modalities)}")
    if not batch:
        raise AdapterInputError(
            f"give at least one source modality of {list(model.modalities)} to generate from"
        )
    for m in list(batch) + targets:
        if m not in model.adapters:
            raise AdapterInputError(
                f"unknown modality {m!r}; this model's modalities are {list(model.modalities)}"
            )
    both = sorted(set(targets) & set(batch))
    if both:
        raise AdapterInputError(
            f"{both} is both a source and a target; generate translates into modalities that are "
            "not given (to reconstruct a modality, encode then decode it)"
        )


@torch.no_grad()
def generate_batches(
    model: MultimodalVQ,
    batch: Mapping[str, Mapping[str, Tensor]],
    targets: Sequence[str],
    num_samples: int = 1,
    config: SamplingConfig | None = None,
    batch_size: int = 16,
) -> Iterator[GenerationOutput]:
    """:func:`generate`, ``batch_size`` output rows at a time: memory stays bounded by
    ``batch_size`` whatever ``num_samples`` (rows ``b * num_samples + j`` in order, as
    :func:`generate`'s)."""
    config = config or SamplingConfig()
    check_int("num_samples", num_samples, minimum=1, error=AdapterInputError)
    check_int("batch_size", batch_size, minimum=1, error=AdapterInputError)
    targets = list(targets)
    _check_targets(model, batch, targets)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
    was_training = model.training
    model.eval()
    try:
        tokens = {m: model.adapters[m].encode(dict(sub)) for m, sub in batch.items()}
        rows = next(iter(tokens.values())).z.shape[0] * num_samples
        for first in range(0, rows, batch_size):
            source = torch.arange(first, min(rows, first + batch_size)) // num_samples
            codes = MultimodalCodes()
            for m, t in tokens.items():
                z = t.z[source.to(t.z.device)]
                mask = t.mask.bool()[source.to(t.mask.device)].to(z.device)
                sampled = sample_codes(model.codebook, z, config, generator)
                codes.detail[m] = sampled.masked_fill(~mask, -1)
                if model.concept is not None:
                    present = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
                    codes.concept[m] = model.concept.encode(m, z, mask, present)
            yield GenerationOutput(codes, model.decode(codes, targets=targets))
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(
    model: MultimodalVQ,
    batch: Mapping[str, Mapping[str, Tensor]],
    targets: Sequence[str],
    num_samples: int = 1,
    config: SamplingConfig | None = None,
) -> GenerationOutput:
    """Translate the modalities of ``batch`` into ``targets``, ``num_samples`` variations per row.

    Args:
        model: the model (used in eval mode; its mode is restored afterwards).
        batch: modality -> collated batch of the SOURCE modalities.
        targets: modalities to generate; none of them may be a source.
        num_samples: variations per input row.
        config: sampling options (default :class:`SamplingConfig`).

    All rows are held in memory at once: for many samples use :func:`generate_batches`.

    Raises:
        AdapterInputError: unknown modality, a target that is also a source, bad ``num_samples``.
    """
    check_int("num_samples", num_samples, minimum=1, error=AdapterInputError)
    _check_targets(model, batch, list(targets))
    rows = batch_size(batch, AdapterInputError) * num_samples
    return next(generate_batches(model, batch, targets, num_samples, config, batch_size=rows))
