"""`SharedCodebook`: one vector-quantized codebook of ``K`` codes shared by every modality.

What makes it *shared* rather than just *one*:

* **Modality-weighted statistics.** EMA updates, k-means initialisation and usage tracking give
  each modality a fixed share ``w_m / sum(w)`` of the statistics, whatever its token count: an
  image with 256 tokens per sample does not own the codebook over a caption with 8
  (:mod:`mmvq.quantize.ema`).
* **Per-modality accounting.** Every forward reports usage and perplexity per modality, the
  overlap of the code sets of each pair of modalities and their agreement on paired samples
  (:mod:`mmvq.quantize.stats`).
* **Fair restarts.** Dead codes are restarted from per-modality reservoirs of recent encoder
  outputs, round-robin over modalities, so a small modality is not starved
  (:mod:`mmvq.quantize.restarts`).
* **DDP-safe.** Statistics are all-reduced with the same collectives, in the same order, on every
  rank, whichever modalities its batch holds; every buffer stays bit-identical across ranks.

Numerics: nearest-code search runs in fp32 with autocast and TF32 disabled, chunked so that the
``chunk x K`` distance block fits in ``memory_budget_mb`` (:mod:`mmvq.quantize.kernel`); EMA
buffers are fp32 (they stay fp32 even if the module is cast with ``.half()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvq.adapter import AdapterInputError
from mmvq.quantize import ema, restarts
from mmvq.quantize.config import CodebookConfig
from mmvq.quantize.kernel import StraightThrough, nearest, rotate_to
from mmvq.quantize.stats import (
    jaccard_from_hists,
    paired_agreement,
    perplexity_from_hist,
    usage_from_hist,
)
from mmvq.quantize.validation import (
    check_assignment,
    check_data,
    check_device,
    check_restart_from,
    validate_inputs,
)
from mmvq.utils.memory import check_fits

__all__ = ["QuantizerOutput", "SharedCodebook"]


class QuantizerOutput(NamedTuple):
    """What :meth:`SharedCodebook.forward` returns; every dict holds the modalities given.

    Attributes:
        z_q: per modality ``[B, N, D]``, straight-through (the gradient reaches ``z``); same dtype
            as the input. Padding positions hold the input ``z`` unchanged.
        codes: per modality long ``[B, N]``; ``-1`` where the mask is ``False`` (padding) or the
            sample is absent.
        loss: per modality fp32 scalar: commitment (+ codebook term when ``ema=False``), mean over
            the modality's real tokens (0 when the batch holds none).
        stats: detached 0-d float tensors of this batch: ``usage/{m}`` (fraction of the K codes
            used), ``perplexity/{m}``, ``overlap/{a}-{b}`` (Jaccard of the two code sets) and
            ``agreement/{a}-{b}`` (mean per-sample Jaccard over samples holding both), pairs in
            sorted name order, for the modalities with at least one real token.
    """

    z_q: dict[str, Tensor]
    codes: dict[str, Tensor]
    loss: dict[str, Tensor]
    stats: dict[str, Tensor]


def _check_modalities(modalities: Sequence[str]) -> None:
    if isinstance(modalities, str) or not isinstance(modalities, Sequence) or not modalities:
        raise ValueError(
            f"modalities must be a non-empty sequence of names, got {modalities!r}; "
            "e.g. ['depth', 'sketch']."
        )
    for m in modalities:
        if not isinstance(m, str) or not m or "/" in m:
            raise ValueError(
                f"modality name {m!r} is invalid: use a non-empty string without '/' "
                "(it becomes part of the stats keys, e.g. 'usage/depth')."
            )
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities {list(modalities)!r} repeat a name; list each modality once.")


class SharedCodebook(nn.Module):
    """One codebook of ``K`` codes shared by several modalities (see the module docstring).

    Args:
        config: a :class:`CodebookConfig`.
        modalities: every modality name this codebook may see; a batch may hold any subset.

    State (all in ``state_dict``): ``code_vectors`` ``[K, Dl]`` (a buffer with EMA, a parameter
    without), ``cluster_size`` ``[K]`` (EMA usage, tokens per batch), ``code_sums`` ``[K, Dl]``
    (EMA only), ``initialized`` (k-means done), ``steps`` (training forwards),
    ``reservoir`` ``[M, R, Dl]`` with ``reservoir_filled``/``reservoir_ptr`` ``[M]``. ``Dl`` is
    ``lookup_dim`` or ``code_dim``. The reservoirs are persistent so that a resumed run restarts
    dead codes exactly as the uninterrupted one would (``R = 0`` when ``restart_every == 0``).
    """

    _FP32_BUFFERS = ("code_vectors", "cluster_size", "code_sums", "reservoir")

    def __init__(self, config: CodebookConfig, modalities: Sequence[str]) -> None:
        super().__init__()
        if not isinstance(config, CodebookConfig):
            raise TypeError(f"config must be a CodebookConfig, got {type(config).__name__}.")
        _check_modalities(modalities)
        self.config = config
        self.modalities: tuple[str, ...] = tuple(modalities)
        k, d = config.num_codes, config.code_dim
        dl = config.lookup_dim or d
        check_fits(
            f"CodebookConfig.num_codes={k} x {'lookup_dim' if config.lookup_dim else 'code_dim'}"
            f"={dl} (4 float32 copies of the codes: values, EMA sums or optimizer states, and "
            "their initialisation)",
            4.0 * 4 * k * dl,
            "lower num_codes (e.g. 16384) or code_dim / lookup_dim",
        )
        self.lookup_dim = dl
        self.tolerate_nonfinite = False
        """Set by the training loop: in training, a non-finite batch is reported through a
        non-finite loss (the loop skips the step) instead of raised."""
        self.project_in: nn.Linear | None = nn.Linear(d, dl) if config.lookup_dim else None
        self.project_out: nn.Linear | None = nn.Linear(dl, d) if config.lookup_dim else None

        init = torch.randn(k, dl)
        if config.l2_normalize:
            init = F.normalize(init, dim=-1)
        pseudo = self.pseudo_count
        if config.ema:
            self.register_buffer("code_vectors", init)
            self.register_buffer("code_sums", init * pseudo)
        else:
            self.code_vectors = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.full((k,), pseudo))
        self.register_buffer("initialized", torch.tensor(not config.kmeans_init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        r = config.reservoir_size if config.restart_every > 0 else 0
        m = len(self.modalities)
        self.register_buffer("reservoir", torch.zeros(m, r, dl))
        self.register_buffer("reservoir_filled", torch.zeros(m, dtype=torch.long))
        self.register_buffer("reservoir_ptr", torch.zeros(m, dtype=torch.long))
        # host-side mirrors of `steps` / `initialized`, so that forward needs no GPU sync
        self._host_steps: int | None = 0
        self._host_initialized: bool | None = not config.kmeans_init

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Where the codebook's state lives (the device of its statistics buffer)."""
        return self.cluster_size.device

    @property
    def pseudo_count(self) -> float:
        """Pseudo count (tokens) given to codes with no observed usage (init, restarts)."""
        return max(float(self.config.dead_code_threshold), 1.0)

    @property
    def codebook(self) -> Tensor:
        """``[K, D]`` current code vectors in the adapters' space (a detached copy)."""
        with torch.no_grad():
            codes = self._codes()
            if self.project_out is not None:
                codes = self.project_out(codes)
            return codes.detach().clone()

    def _codes(self) -> Tensor:
        """``[K, Dl]`` fp32 code vectors in lookup space (l2-normalised if configured)."""
        codes = self.code_vectors.float()
        return F.normalize(codes, dim=-1) if self.config.l2_normalize else codes

    def lookup_space(self, z: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., Dl]``: ``z`` where the nearest code is searched (projected for
        factorised codes, l2-normalised for cosine codes); differentiable."""
        return self._to_lookup(z)

    def _to_lookup(self, z: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., Dl]``: projected (factorised codes), l2-normalised (cosine)."""
        if self.project_in is not None:
            z = self.project_in(z.to(self.project_in.weight.dtype))
        return F.normalize(z.float(), dim=-1) if self.config.l2_normalize else z

    def host_steps(self) -> int:
        """Training forwards so far (``steps``), read from the device once after a load."""
        if self._host_steps is None:
            self._host_steps = int(self.steps)
        return self._host_steps

    def is_initialized(self) -> bool:
        """Whether the k-means initialisation ran (``initialized``), read once after a load."""
        if self._host_initialized is None:
            self._host_initialized = bool(self.initialized)
        return self._host_initialized

    def mark_initialized(self) -> None:
        """Record on the host that ``initialized`` was just set."""
        self._host_initialized = True

    # ----------------------------------------------------------------- public API
    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:
        """Nearest code of every vector: ``[..., D]`` float -> long ``[...]`` (fp32, chunked)."""
        d = self.config.code_dim
        if not isinstance(z, Tensor):
            raise AdapterInputError(f"lookup expects a Tensor [..., {d}], got {type(z).__name__}.")
        if not z.is_floating_point():
            raise AdapterInputError(
                f"lookup got dtype {z.dtype}: expected float vectors [..., {d}] "
                "(encoder outputs), not indices; use embed() to turn codes into vectors."
            )
        if z.dim() < 1 or z.shape[-1] != d:
            raise AdapterInputError(
                f"lookup got shape {tuple(z.shape)}: the last dim must be the codebook's code_dim "
                f"{d}."
            )
        check_device(self, "lookup's z", z)
        if z.numel() and not bool(torch.isfinite(z).all()):
            raise AdapterInputError(
                f"lookup got {int((~torch.isfinite(z)).sum())} non-finite value(s) (NaN/inf): "
                "they have no nearest code; check the encoder's output."
            )
        x = self._to_lookup(z).reshape(-1, self.lookup_dim)
        return nearest(x, self._codes(), self.config.memory_budget_mb).view(z.shape[:-1])

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances ``[..., K]`` from ``z [..., D]`` to every code, in the lookup space.

        fp32 with autocast off, so ``distances(z).argmin(-1)`` equals :meth:`lookup`;
        differentiable with respect to ``z`` (the codes are detached). Unlike :meth:`lookup` it
        materialises the whole ``[..., K]`` block: meant for soft assignments over a batch
        (cross-modal alignment, code sampling), not for quantising large inputs.
        """
        d = self.config.code_dim
        if not isinstance(z, Tensor) or not z.is_floating_point() or z.shape[-1] != d:
            raise AdapterInputError(
                f"distances expects float vectors [..., {d}], got "
                f"{type(z).__name__} {tuple(getattr(z, 'shape', ()))}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._to_lookup(z.float()).float()
            codes = self._codes().detach()
            dist = x.pow(2).sum(-1, keepdim=True) - 2.0 * x @ codes.t() + codes.pow(2).sum(-1)
        return dist.clamp_min(0.0)

    def embed(self, codes: Tensor) -> Tensor:
        """Code vectors in the adapters' space: long ``[...]`` -> ``[..., D]`` (what z_q holds).

        ``-1`` (padding) is an error: drop or mask those positions first.
        """
        if not isinstance(codes, Tensor):
            raise AdapterInputError(
                f"embed expects a long Tensor of codes, got {type(codes).__name__}."
            )
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise AdapterInputError(
                f"embed got dtype {codes.dtype}: expected integer code indices (torch.long); "
                "use lookup() to turn vectors into codes."
            )
        check_device(self, "embed's codes", codes)
        if codes.numel() > 0:
            low, high = int(codes.min()), int(codes.max())
            if low < 0:
                n = int((codes < 0).sum())
                raise AdapterInputError(
                    f"embed got code {low} at {n} position(s): -1 marks padding and has no vector; "
                    "select the real positions (codes >= 0) before embedding."
                )
            if high >= self.config.num_codes:
                raise AdapterInputError(
                    f"embed got code {high} but the codebook has "
                    f"num_codes={self.config.num_codes}: "
                    "codes must come from this codebook."
                )
        vectors = self._codes()[codes.long()]
        return self.project_out(vectors) if self.project_out is not None else vectors

    def forward(
        self,
        z: dict[str, Tensor],
        mask: dict[str, Tensor] | None = None,
        weights: dict[str, float] | None = None,
        present: dict[str, Tensor] | None = None,
        assign: dict[str, Tensor] | None = None,
        restart_from: dict[str, Tensor] | None = None,
    ) -> QuantizerOutput:
        """Quantise each modality's tokens with the shared codebook.

        Args:
            z: per modality float ``[B, N_m, D]``; any subset of :attr:`modalities`. All
                modalities describe the same ``B`` samples in the same order.
            mask: optional per modality bool ``[B, N_m]`` (``True`` = real token). Padding is
                neither quantised into statistics nor counted; its code is ``-1``.
            weights: per modality share of the codebook statistics (default 1 each): modality
                ``m`` gets ``w_m / sum(w)`` of every EMA update, whatever its token count.
            present: optional per modality bool ``[B]``: which samples hold the modality. The
                tokens of an absent sample are treated as padding (codes ``-1``, no statistics).
                A sample that holds the modality (all samples, without ``present``) must have at
                least one real token: an all-padding sample is an error, not silently skipped.
            assign: optional per modality long ``[B, N_m]``: use these codes instead of the
                nearest ones (the concept level's joint assignment of paired samples). The
                commitment loss, the straight-through output and the EMA statistics follow
                them; the batch statistics (usage, overlap, agreement) are those of each
                modality's own nearest codes, what :meth:`lookup` gives at inference, so that a
                joint assignment cannot make paired samples look as if they agreed.
            restart_from: optional per modality float ``[B, N_m, Dl]`` lookup-space vectors
                that dead codes restart onto instead of the tokens (the concept level's joint
                centroids: a restarted code is then one that paired samples share).

        In training mode this updates the EMA statistics (all-reduced when distributed), runs the
        k-means init on the first call, and restarts dead codes every ``restart_every`` calls.
        """
        given, masks, required, weight = validate_inputs(self, z, mask, weights, present)
        # real tokens of each modality, flat, in lookup space (with grad); padding never enters
        # a projection, so whatever it holds cannot reach a gradient
        flat = {
            m: self._to_lookup(
                z[m].reshape(-1, self.config.code_dim) if masks[m] is None else z[m][masks[m]]
            )
            for m in given
        }
        # modalities with real tokens here (one may be absent from every sample of the batch)
        active = [m for m in given if flat[m].shape[0] > 0]
        if not active:
            raise AdapterInputError(
                f"z holds no real token: every sample of {given} is absent or all padding; "
                "leave such modalities out of z, or pass a batch that holds some data."
            )
        if self.training and not self.is_initialized():
            sample = {m: flat[m].detach().float() for m in active}
            # before k-means touches the codebook; every rank must agree to run it (collectives)
            finite = check_data(z, masks, required, sample, allow_nonfinite=True)
            if ema.all_ranks_agree(finite, self.device):
                ema.kmeans_init(self, sample, weight)
        chosen = check_assignment(self, z, masks, assign)
        restart_flat = check_restart_from(self, z, masks, restart_from)
        z_q, codes, losses, assigned = self._quantize(z, masks, flat, active, chosen)
        # the losses sum every real token: a non-finite one means non-finite z (no extra pass).
        # In training a non-finite batch is not an input error but a diverging step: the
        # statistics are left untouched on every rank and the (non-finite) loss tells the loop
        # to skip the step.
        finite = check_data(
            z, masks, required, losses, allow_nonfinite=self.training and self.tolerate_nonfinite
        )
        own, hists = self._own_codes(z, masks, flat, chosen, codes, assigned)
        stats = self._batch_stats(own, hists)
        if self.training and self.is_initialized():
            self._train_step(assigned, weight, finite, restart_flat)
        return QuantizerOutput(z_q=z_q, codes=codes, loss=losses, stats=stats)

    # ------------------------------------------------------------------ forward parts
    def _quantize(
        self,
        z: dict[str, Tensor],
        masks: dict[str, Tensor | None],
        flat: dict[str, Tensor],
        active: list[str],
        chosen: dict[str, Tensor],
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], dict[str, ema.Assigned]]:
        """Codes (nearest, or ``chosen``: flat per modality), losses and straight-through outputs
        of every modality given."""
        cfg = self.config
        codes_lookup = self._codes()
        z_q: dict[str, Tensor] = {}
        codes: dict[str, Tensor] = {}
        losses: dict[str, Tensor] = {}
        assigned: dict[str, ema.Assigned] = {}
        for m, xf in flat.items():
            xf = xf.float()
            idx = chosen.get(m)
            if idx is None:
                idx = nearest(xf.detach(), codes_lookup.detach(), cfg.memory_budget_mb)
            e = codes_lookup[idx]
            if m in active:
                loss = cfg.beta * F.mse_loss(xf, e.detach())
                if not cfg.ema:
                    loss = loss + F.mse_loss(xf.detach(), e)
            else:  # no real token: nothing to commit (mse of nothing would be nan)
                loss = xf.new_zeros(())
            losses[m] = loss
            e = e.detach()
            q = rotate_to(xf, e) if cfg.rotation_trick else StraightThrough.apply(xf, e)
            z_q[m], codes[m] = self._unflatten(z[m], masks[m], q, idx)
            if m in active:
                counts = torch.bincount(idx, minlength=cfg.num_codes)
                assigned[m] = ema.Assigned(xf.detach(), idx, counts)
        return z_q, codes, losses, assigned

    def _unflatten(
        self, z: Tensor, mask: Tensor | None, q: Tensor, idx: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Real-token results back into ``[B, N, ...]``; padding keeps ``z``, gets code ``-1``."""
        b, n = z.shape[:2]
        out = self.project_out(q) if self.project_out is not None else q
        out = out.to(z.dtype)
        codes = _codes_in_place(idx, mask, b, n)
        if mask is None:
            return out.view(b, n, -1), codes
        return z.index_put((mask,), out), codes

    @torch.no_grad()
    def _own_codes(
        self,
        z: dict[str, Tensor],
        masks: dict[str, Tensor | None],
        flat: dict[str, Tensor],
        chosen: dict[str, Tensor],
        codes: dict[str, Tensor],
        assigned: dict[str, ema.Assigned],
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each modality's own nearest codes ``[B, N_m]`` and code counts (of modalities with
        real tokens): ``codes`` itself where no assignment was given."""
        own, hists = dict(codes), {m: a.counts for m, a in assigned.items()}
        lookup = self._codes().detach()
        for m in chosen:
            idx = nearest(flat[m].detach().float(), lookup, self.config.memory_budget_mb)
            own[m] = _codes_in_place(idx, masks[m], *z[m].shape[:2])
            if m in hists:
                hists[m] = torch.bincount(idx, minlength=self.config.num_codes)
        return own, hists

    @torch.no_grad()
    def _batch_stats(self, codes: dict[str, Tensor], hists: dict[str, Tensor]) -> dict[str, Tensor]:
        """Batch statistics of the modalities with real tokens (``hists``: their code counts)."""
        k = self.config.num_codes
        stats: dict[str, Tensor] = {}
        for m, hist in hists.items():
            stats[f"usage/{m}"] = usage_from_hist(hist)
            stats[f"perplexity/{m}"] = perplexity_from_hist(hist)
        for a, b in combinations(sorted(hists), 2):
            stats[f"overlap/{a}-{b}"] = jaccard_from_hists(hists[a], hists[b])
            both = (codes[a] >= 0).any(1) & (codes[b] >= 0).any(1)
            stats[f"agreement/{a}-{b}"] = paired_agreement(codes[a], codes[b], both, k, check=False)
        return stats

    @torch.no_grad()
    def _train_step(
        self,
        assigned: dict[str, ema.Assigned],
        weight: dict[str, float],
        finite: bool = True,
        restart_from: dict[str, Tensor] | None = None,
    ) -> None:
        """EMA update, reservoir push (``restart_from``'s vectors, else the tokens) and (every
        ``restart_every`` steps, up to ``restart_until``) dead-code restarts."""
        cfg = self.config
        restart = cfg.restart_every > 0
        take = restarts.reservoir_take(self) if restart else 0
        red = ema.reduce_statistics(
            self, assigned, weight, cfg.ema, take, finite=finite, candidate_source=restart_from
        )
        if red is None:  # some rank saw non-finite tokens: no rank updates anything
            return
        self.cluster_size.lerp_(red.counts, 1 - cfg.decay)
        if cfg.ema:
            self.code_sums.lerp_(red.sums, 1 - cfg.decay)
            ema.refresh_ema_codes(self)
        if restart:
            restarts.push_reservoir(self, red.candidates, red.candidate_counts)
        self._host_steps = self.host_steps() + 1
        self.steps += 1
        until = cfg.restart_until or self._host_steps
        if restart and self._host_steps % cfg.restart_every == 0 and self._host_steps <= until:
            restarts.restart_dead_codes(self)

    # ------------------------------------------------------------------ persistence / dtype
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._host_steps = None
        self._host_initialized = None

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        """Keep the statistics buffers in fp32 when the module is cast (``.half()`` etc.)."""
        super()._apply(fn, recurse)
        for name in self._FP32_BUFFERS:
            buf = self._buffers.get(name)
            if buf is not None and buf.is_floating_point() and buf.dtype != torch.float32:
                self._buffers[name] = buf.float()
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"modalities={list(self.modalities)}, num_codes={c.num_codes}, code_dim={c.code_dim}, "
            f"lookup_dim={c.lookup_dim}, ema={c.ema}, l2_normalize={c.l2_normalize}"
        )


def _codes_in_place(idx: Tensor, mask: Tensor | None, b: int, n: int) -> Tensor:
    """Flat codes of the real tokens back into ``long [B, N]`` (padding: ``-1``)."""
    if mask is None:
        return idx.view(b, n)
    return torch.full((b, n), -1, dtype=torch.long, device=idx.device).index_put_((mask,), idx)
