"""One vector-quantized codebook shared by every modality.

:class:`SharedCodebook` maps each modality's continuous tokens ``z [B, N_m, D]`` to the nearest of
``K`` shared code vectors. What makes it *shared* rather than just *one*:

* **Modality-weighted statistics.** EMA updates, k-means initialisation and usage tracking give
  each modality a fixed share ``w_m / sum(w)`` of the statistics, whatever its token count: an
  image with 256 tokens per sample does not own the codebook over a caption with 8.
* **Per-modality accounting.** Every forward reports usage and perplexity per modality, the
  overlap of the code sets of each pair of modalities and their agreement on paired samples
  (:mod:`mmvq.codebook_stats`).
* **Fair restarts.** Dead codes are restarted from per-modality reservoirs of recent encoder
  outputs, round-robin over modalities, so a small modality is not starved.
* **DDP-safe.** Statistics are all-reduced with the same collectives, in the same order, on every
  rank, whichever modalities its batch holds; every buffer stays bit-identical across ranks.

Numerics: nearest-code search runs in fp32 with autocast and TF32 disabled, chunked so that the
``chunk x K`` distance block fits in ``memory_budget_mb``; EMA buffers are fp32 (they stay fp32
even if the module is cast with ``.half()``).

Distances: ``argmin_k ||z - e_k||^2 = argmin_k (||e_k||^2 - 2 z.e_k)``, one ``addmm`` per chunk.
The ``||z||^2`` term is the same for every code of a row, so it is left out: one ``N x K`` pass
less, and no large constant added before the comparison (which would only lose fp32 bits).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvq import distributed
from mmvq.adapter import AdapterInputError
from mmvq.codebook_stats import (
    _jaccard_from_hists,
    _perplexity_from_hist,
    _usage_from_hist,
    paired_agreement,
)
from mmvq.configs import check_known_fields

__all__ = ["CodebookConfig", "QuantizerOutput", "SharedCodebook"]

_SEED = 0x6D6D7671  # base seed of the rank-identical generators ("mmvq")


# ------------------------------------------------------------------------------ config
def _fail(field: str, value: Any, need: str, fix: str) -> None:
    raise ValueError(f"CodebookConfig.{field} = {value!r}: {need}; {fix}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class CodebookConfig:
    """Options of :class:`SharedCodebook` (validated on construction).

    Attributes:
        num_codes: ``K``, the number of code vectors.
        code_dim: ``D``, the adapters' output dimension.
        beta: commitment weight, on the encoder side: ``beta * ||z - sg(e)||^2``.
        ema: update codes by EMA (with Laplace smoothing); ``False`` learns them by gradient
            through the codebook loss ``||sg(z) - e||^2``.
        decay: EMA decay.
        eps: Laplace smoothing of the EMA cluster sizes.
        l2_normalize: cosine-similarity codes (``z`` and ``e`` l2-normalised).
        lookup_dim: factorised codes: project ``D -> lookup_dim`` for the search (and back).
            The codebook, the commitment loss and the EMA live in the lookup space.
        kmeans_init: initialise the codes by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: a code whose EMA usage (tokens per batch) falls below this is dead.
        restart_every: check for dead codes every this many training forwards (0 = never).
        reservoir_size: recent encoder outputs kept per modality to restart dead codes from.
        rotation_trick: the rotation trick (Fifty et al. 2024) instead of plain straight-through.
        memory_budget_mb: extra memory for the distance block; the lookup is chunked under it.
    """

    num_codes: int = 1024
    code_dim: int = 64
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    l2_normalize: bool = False
    lookup_dim: int | None = None
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float = 1.0
    restart_every: int = 100
    reservoir_size: int = 4096
    rotation_trick: bool = False
    memory_budget_mb: float = 256.0

    def __post_init__(self) -> None:
        if not _is_int(self.num_codes) or self.num_codes < 1:
            _fail("num_codes", self.num_codes, "must be a positive int", "e.g. 1024")
        if not _is_int(self.code_dim) or self.code_dim < 1:
            _fail(
                "code_dim",
                self.code_dim,
                "must be a positive int",
                "set it to the adapters' code_dim, e.g. 64",
            )
        if not _is_real(self.beta) or self.beta < 0:
            _fail("beta", self.beta, "must be a finite number >= 0", "the usual value is 0.25")
        for name in ("ema", "l2_normalize", "kmeans_init", "rotation_trick"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                _fail(name, value, "must be a bool", "pass True or False")
        if not _is_real(self.decay) or not 0.0 < self.decay < 1.0:
            _fail("decay", self.decay, "must be in (0, 1)", "the usual value is 0.99")
        if not _is_real(self.eps) or self.eps <= 0:
            _fail("eps", self.eps, "must be a finite number > 0", "the usual value is 1e-5")
        if self.lookup_dim is not None and (not _is_int(self.lookup_dim) or self.lookup_dim < 1):
            _fail(
                "lookup_dim",
                self.lookup_dim,
                "must be None or a positive int",
                "e.g. 8 or 32, or None",
            )
        if not _is_int(self.kmeans_iters) or self.kmeans_iters < 0:
            _fail("kmeans_iters", self.kmeans_iters, "must be an int >= 0", "e.g. 10")
        if not _is_real(self.dead_code_threshold) or self.dead_code_threshold < 0:
            _fail(
                "dead_code_threshold",
                self.dead_code_threshold,
                "must be a finite number >= 0",
                "e.g. 1.0",
            )
        if not _is_int(self.restart_every) or self.restart_every < 0:
            _fail(
                "restart_every",
                self.restart_every,
                "must be an int >= 0",
                "e.g. 100, or 0 to never restart",
            )
        if not _is_int(self.reservoir_size) or self.reservoir_size < 1:
            _fail("reservoir_size", self.reservoir_size, "must be a positive int", "e.g. 4096")
        if not _is_real(self.memory_budget_mb) or self.memory_budget_mb <= 0:
            _fail(
                "memory_budget_mb", self.memory_budget_mb, "must be a finite number > 0", "e.g. 256"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodebookConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        check_known_fields(cls, data, "CodebookConfig.from_dict")
        return cls(**data)


# ------------------------------------------------------------------------------ output
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


class _Assigned(NamedTuple):
    """One modality's real tokens of a step and their nearest codes."""

    x: Tensor  # [n, Dl] fp32 tokens in lookup space (detached)
    idx: Tensor  # [n] long nearest codes
    counts: Tensor  # [K] how many tokens each code got (int64)


class _Reduced(NamedTuple):
    """Statistics of one step after the all-reduce, with modality weighting applied."""

    counts: Tensor  # [K] weighted assignment counts, in tokens of this (global) batch
    sums: Tensor | None  # [K, Dl] weighted sums of the assigned vectors
    candidates: Tensor | None  # [world, M, s, Dl] reservoir candidates of every rank
    candidate_counts: Tensor | None  # [world, M] how many rows of each are real


# ---------------------------------------------------------------------------- kernels
@contextmanager
def _full_fp32_matmul() -> Iterator[None]:
    """fp32 matmuls at full precision inside (no TF32 / reduced-precision fp32 GEMMs)."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# On CPU the distance block is also kept under this size (at most the L3 cache of common server
# CPUs), whatever the budget: each chunk's GEMM output is then still in cache for its argmin, and
# the block is one reused buffer rather than a fresh allocation the size of the budget (on CPU,
# page faults on every call). GPUs take the budget as it is (their caching allocator makes the
# allocation free, and bigger GEMMs use them better).
_CPU_BLOCK_BYTES = 32 * 2**20


def _chunk_rows(num_codes: int, budget_mb: float, device: torch.device | str | None = None) -> int:
    """Rows per chunk so that a ``rows x num_codes`` fp32 block fits in ``budget_mb`` (and, on
    CPU, in :data:`_CPU_BLOCK_BYTES`)."""
    rows = max(1, int(budget_mb * 2**20) // (4 * num_codes))
    if device is not None and torch.device(device).type == "cpu":
        rows = min(rows, max(1, _CPU_BLOCK_BYTES // (4 * num_codes)))
    return rows


def lookup_workspace_bytes(
    num_rows: int, num_codes: int, budget_mb: float, device: torch.device | str | None = None
) -> int:
    """Extra memory :func:`_nearest` allocates besides its int64 output: the fp32 distance block
    of one chunk (one buffer, reused by every chunk) and the ``[K]`` code norms. ``device``: where
    the lookup runs (on CPU the block is also capped at :data:`_CPU_BLOCK_BYTES`); ``None`` gives
    the budget-only (GPU) figure."""
    rows = min(num_rows, _chunk_rows(num_codes, budget_mb, device))
    return 4 * (rows * num_codes + num_codes)


def _nearest(x: Tensor, codes: Tensor, budget_mb: float) -> Tensor:
    """Index of the nearest row of ``codes [K, d]`` for every row of ``x [n, d]``, in fp32.

    ``argmin_k ||x - e_k||^2 = argmin_k (||e_k||^2 - 2 x.e_k)`` with one ``addmm`` per chunk
    (``||x||^2`` is the same for every code of a row and is left out), chunked over ``n`` so that
    the ``chunk x K`` fp32 block stays under ``budget_mb`` (see :func:`_chunk_rows`); every chunk
    writes into the same block buffer; autocast and TF32 are off.
    """
    n, k = x.shape[0], codes.shape[0]
    rows = min(n, _chunk_rows(k, budget_mb, x.device))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    with torch.autocast(device_type=x.device.type, enabled=False), _full_fp32_matmul():
        x = x.float()
        codes = codes.float()
        norms = codes.pow(2).sum(1)
        codes_t = codes.t()
        block = torch.empty(rows, k, dtype=torch.float32, device=x.device)
        for start in range(0, n, rows):
            xs = x[start : start + rows]
            dist = block[: xs.shape[0]]
            torch.addmm(norms, xs, codes_t, alpha=-2.0, out=dist)
            torch.argmin(dist, dim=1, out=out[start : start + rows])
    return out


class _StraightThrough(torch.autograd.Function):
    """Straight-through estimator: the value of ``e``, the gradient of ``x`` (passed unchanged).

    The same estimator as ``x + (e - x).detach()`` without its two elementwise passes over the
    tokens, and the value is exactly the code vector (not ``x + (e - x)`` rounded).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, e: Tensor) -> Tensor:
        return e.view_as(e)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _rotate_to(src: Tensor, tgt: Tensor) -> Tensor:
    """Rotation trick (Fifty et al. 2024, sec. 4.2): a value equal to ``tgt`` whose gradient
    reaches ``src`` through the rotation+rescaling that maps ``src`` onto ``tgt`` (held constant).
    """
    eps = torch.finfo(src.dtype).tiny
    src_norm = src.norm(dim=-1, keepdim=True)
    tgt_norm = tgt.norm(dim=-1, keepdim=True)
    u = (src / src_norm.clamp_min(eps)).detach()
    q = (tgt / tgt_norm.clamp_min(eps)).detach()
    w = F.normalize(u + q, dim=-1).detach()
    rotated = (
        src - 2 * w * (src * w).sum(-1, keepdim=True) + 2 * q * (src * u).sum(-1, keepdim=True)
    )
    rotated = rotated * (tgt_norm / src_norm.clamp_min(eps)).detach()
    # a zero input has no direction to rotate: fall back to straight-through there
    return torch.where(src_norm > eps, rotated, src + (tgt - src).detach())


# ---------------------------------------------------------------------------- module
def _all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (one all-reduce when distributed)."""
    if not distributed.is_distributed():
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    return float(distributed.all_reduce_(t)) == 0.0


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
        if isinstance(modalities, str) or not isinstance(modalities, Sequence) or not modalities:
            raise ValueError(
                f"modalities must be a non-empty sequence of names, got {modalities!r}; "
                "e.g. ['image', 'text']."
            )
        for m in modalities:
            if not isinstance(m, str) or not m or "/" in m:
                raise ValueError(
                    f"modality name {m!r} is invalid: use a non-empty string without '/' "
                    "(it becomes part of the stats keys, e.g. 'usage/image')."
                )
        if len(set(modalities)) != len(modalities):
            raise ValueError(
                f"modalities {list(modalities)!r} repeat a name; list each modality once."
            )
        self.config = config
        self.modalities: tuple[str, ...] = tuple(modalities)
        self._index = {m: i for i, m in enumerate(self.modalities)}
        k, d = config.num_codes, config.code_dim
        dl = config.lookup_dim or d
        self.lookup_dim = dl
        self.project_in: nn.Linear | None = nn.Linear(d, dl) if config.lookup_dim else None
        self.project_out: nn.Linear | None = nn.Linear(dl, d) if config.lookup_dim else None

        init = torch.randn(k, dl)
        if config.l2_normalize:
            init = F.normalize(init, dim=-1)
        pseudo = self._pseudo_count
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
    def _pseudo_count(self) -> float:
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

    def _to_lookup(self, z: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., Dl]``: projected (factorised codes), l2-normalised (cosine)."""
        if self.project_in is not None:
            z = self.project_in(z.to(self.project_in.weight.dtype))
        return F.normalize(z.float(), dim=-1) if self.config.l2_normalize else z

    def _get_steps(self) -> int:
        if self._host_steps is None:
            self._host_steps = int(self.steps)
        return self._host_steps

    def _is_initialized(self) -> bool:
        if self._host_initialized is None:
            self._host_initialized = bool(self.initialized)
        return self._host_initialized

    # ----------------------------------------------------------------- public API
    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:
        """Nearest code of every vector: ``[..., D]`` float -> long ``[...]`` (fp32, chunked)."""
        if not isinstance(z, Tensor):
            raise AdapterInputError(
                f"lookup expects a Tensor [..., {self.config.code_dim}], got {type(z).__name__}."
            )
        if not z.is_floating_point():
            raise AdapterInputError(
                f"lookup got dtype {z.dtype}: expected float vectors [..., {self.config.code_dim}] "
                "(encoder outputs), not indices; use embed() to turn codes into vectors."
            )
        if z.dim() < 1 or z.shape[-1] != self.config.code_dim:
            raise AdapterInputError(
                f"lookup got shape {tuple(z.shape)}: the last dim must be the codebook's code_dim "
                f"{self.config.code_dim}."
            )
        self._check_device("lookup's z", z)
        if z.numel() and not bool(torch.isfinite(z).all()):
            raise AdapterInputError(
                f"lookup got {int((~torch.isfinite(z)).sum())} non-finite value(s) (NaN/inf): "
                "they have no nearest code; check the encoder's output."
            )
        x = self._to_lookup(z).reshape(-1, self.lookup_dim)
        return _nearest(x, self._codes(), self.config.memory_budget_mb).view(z.shape[:-1])

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances ``[..., K]`` from ``z [..., D]`` to every code, in the lookup space.

        fp32 with autocast off, so ``distances(z).argmin(-1)`` equals :meth:`lookup`; differentiable
        with respect to ``z`` (the codes are detached). Unlike :meth:`lookup` it materialises the
        whole ``[..., K]`` block: meant for soft assignments over a batch (cross-modal alignment,
        code sampling), not for quantising large inputs.
        """
        if (
            not isinstance(z, Tensor)
            or not z.is_floating_point()
            or z.shape[-1] != self.config.code_dim
        ):
            raise AdapterInputError(
                f"distances expects float vectors [..., {self.config.code_dim}], got "
                f"{type(z).__name__} {tuple(getattr(z, 'shape', ()))}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._to_lookup(z.float()).float()
            codes = self._codes().detach()
            d = x.pow(2).sum(-1, keepdim=True) - 2.0 * x @ codes.t() + codes.pow(2).sum(-1)
        return d.clamp_min(0.0)

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
        self._check_device("embed's codes", codes)
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

        In training mode this updates the EMA statistics (all-reduced when distributed), runs the
        k-means init on the first call, and restarts dead codes every ``restart_every`` calls.
        """
        given, masks, required, weight = self._validate(z, mask, weights, present)
        cfg = self.config
        train = self.training

        # real tokens of each modality, flat, in lookup space (with grad); padding never enters
        # a projection, so whatever it holds cannot reach a gradient
        flat = {
            m: self._to_lookup(
                z[m].reshape(-1, cfg.code_dim) if masks[m] is None else z[m][masks[m]]
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
        if train and not self._is_initialized():
            sample = {m: flat[m].detach().float() for m in active}
            # before k-means touches the codebook; every rank must agree to run it (collectives)
            finite = self._check_data(z, masks, required, sample, allow_nonfinite=True)
            if _all_ranks_agree(finite, self.cluster_size.device):
                self._kmeans_init(sample, weight)

        codes_lookup = self._codes()
        z_q: dict[str, Tensor] = {}
        codes: dict[str, Tensor] = {}
        losses: dict[str, Tensor] = {}
        assigned: dict[str, _Assigned] = {}
        for m in given:
            xf = flat[m].float()
            idx = _nearest(xf.detach(), codes_lookup.detach(), cfg.memory_budget_mb)
            e = codes_lookup[idx]
            if m in active:
                loss = cfg.beta * F.mse_loss(xf, e.detach())
                if not cfg.ema:
                    loss = loss + F.mse_loss(xf.detach(), e)
            else:  # no real token: nothing to commit (mse of nothing would be nan)
                loss = xf.new_zeros(())
            losses[m] = loss
            e = e.detach()
            q = _rotate_to(xf, e) if cfg.rotation_trick else _StraightThrough.apply(xf, e)
            z_q[m], codes[m] = self._unflatten(z[m], masks[m], q, idx)
            if m in active:
                assigned[m] = _Assigned(
                    xf.detach(), idx, torch.bincount(idx, minlength=cfg.num_codes)
                )

        # the losses sum every real token: a non-finite one means non-finite z (no extra pass).
        # In training a non-finite batch is not an input error but a diverging step: the
        # statistics are left untouched on every rank and the (non-finite) loss tells the loop
        # to skip the step.
        finite = self._check_data(z, masks, required, losses, allow_nonfinite=train)
        stats = self._batch_stats(codes, {m: a.counts for m, a in assigned.items()})
        if train and self._is_initialized():
            self._train_step(assigned, weight, finite)
        return QuantizerOutput(z_q=z_q, codes=codes, loss=losses, stats=stats)

    # ------------------------------------------------------------------ forward parts
    def _unflatten(
        self, z: Tensor, mask: Tensor | None, q: Tensor, idx: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Real-token results back into ``[B, N, ...]``; padding keeps ``z``, gets code ``-1``."""
        b, n = z.shape[:2]
        out = self.project_out(q) if self.project_out is not None else q
        out = out.to(z.dtype)
        if mask is None:
            return out.view(b, n, -1), idx.view(b, n)
        codes = torch.full((b, n), -1, dtype=torch.long, device=z.device).index_put_((mask,), idx)
        return z.index_put((mask,), out), codes

    @torch.no_grad()
    def _batch_stats(self, codes: dict[str, Tensor], hists: dict[str, Tensor]) -> dict[str, Tensor]:
        """Batch statistics of the modalities with real tokens (``hists``: their code counts)."""
        k = self.config.num_codes
        stats: dict[str, Tensor] = {}
        for m, hist in hists.items():
            stats[f"usage/{m}"] = _usage_from_hist(hist)
            stats[f"perplexity/{m}"] = _perplexity_from_hist(hist)
        for a, b in combinations(sorted(hists), 2):
            stats[f"overlap/{a}-{b}"] = _jaccard_from_hists(hists[a], hists[b])
            both = (codes[a] >= 0).any(1) & (codes[b] >= 0).any(1)
            stats[f"agreement/{a}-{b}"] = paired_agreement(codes[a], codes[b], both, k, check=False)
        return stats

    def _reservoir_take(self) -> int:
        """Reservoir candidates each rank contributes per modality per training forward.

        Sized so that the reservoir is refilled about twice between two restart checks.
        """
        cfg = self.config
        r, world = self.reservoir.shape[1], distributed.world_size()
        per_rank = math.ceil(2 * r / (cfg.restart_every * world))
        return max(1, min(per_rank, r // world if r >= world else 1))

    @torch.no_grad()
    def _reduce(
        self,
        assigned: dict[str, _Assigned],
        weight: dict[str, float],
        with_sums: bool,
        candidates: int = 0,
        finite: bool = True,
    ) -> _Reduced | None:
        """Modality-weighted counts/sums (+ reservoir candidates), summed over all ranks.

        Two all-reduces, the same on every rank whatever modalities its batch holds (absent
        modalities contribute zeros): first the per-modality token counts, weights and presence,
        from which each modality's scale ``w_m / sum(w) * T / T_m`` follows (``T`` the global
        tokens, ``T_m`` modality m's); then the scaled counts, sums and candidates.
        """
        k, dl, n_mod = self.config.num_codes, self.lookup_dim, len(self.modalities)
        dev = self.cluster_size.device
        world, rank = distributed.world_size(), distributed.rank()
        meta = torch.zeros(3 * n_mod + 1)  # tokens, weight, present per modality; non-finite
        for m, (xf, _, _) in assigned.items():
            i = self._index[m]
            meta[[i, n_mod + i, 2 * n_mod + i]] = torch.tensor([float(xf.shape[0]), weight[m], 1.0])
        meta[-1] = 0.0 if finite else 1.0
        meta = distributed.all_reduce_(meta.to(dev))
        if float(meta[-1]) > 0:  # identical on every rank, so every rank returns here
            return None
        tokens, wsum, n_present = meta[:-1].view(3, n_mod)
        w = torch.where(n_present > 0, wsum / n_present.clamp_min(1), torch.zeros_like(wsum))
        scale = w / w.sum() * tokens.sum() / tokens.clamp_min(1)

        counts = torch.zeros(k, device=dev)
        sums = torch.zeros(k, dl, device=dev) if with_sums else None
        cand = torch.zeros(world, n_mod, candidates, dl, device=dev) if candidates else None
        cand_n = torch.zeros(world, n_mod, device=dev) if candidates else None
        for j, (m, (xf, idx, hist)) in enumerate(assigned.items()):
            i = self._index[m]
            counts.add_(hist * scale[i])
            if sums is not None:  # scale whichever is smaller: the tokens or the [K, Dl] sums
                if xf.shape[0] <= k:
                    sums.index_add_(0, idx, xf * scale[i])
                elif j == 0:  # sums is still all zeros: accumulate in place, no scratch copy
                    sums.index_add_(0, idx, xf).mul_(scale[i])
                else:
                    sums.add_(torch.zeros_like(sums).index_add_(0, idx, xf).mul_(scale[i]))
            if cand is not None:
                n = xf.shape[0]
                take = min(candidates, n)
                pick = (
                    torch.randperm(n, device=dev)[:take]
                    if n <= 4 * take
                    else torch.randint(n, (take,), device=dev)
                )
                cand[rank, i, :take] = xf[pick]
                cand_n[rank, i] = take
        parts = [t for t in (counts, sums, cand, cand_n) if t is not None]
        if distributed.is_distributed():
            packed = distributed.all_reduce_(torch.cat([t.reshape(-1) for t in parts]))
            offset = 0
            for t in parts:
                t.copy_(packed[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
        return _Reduced(counts, sums, cand, cand_n)

    @torch.no_grad()
    def _train_step(
        self, assigned: dict[str, _Assigned], weight: dict[str, float], finite: bool = True
    ) -> None:
        cfg = self.config
        restarts = cfg.restart_every > 0
        red = self._reduce(
            assigned, weight, cfg.ema, self._reservoir_take() if restarts else 0, finite=finite
        )
        if red is None:  # some rank saw non-finite tokens: no rank updates anything
            return
        self.cluster_size.lerp_(red.counts, 1 - cfg.decay)
        if cfg.ema:
            self.code_sums.lerp_(red.sums, 1 - cfg.decay)
            self._refresh_ema_codes()
        if restarts:
            self._push_reservoir(red.candidates, red.candidate_counts)
        self._host_steps = self._get_steps() + 1
        self.steps += 1
        if restarts and self._host_steps % cfg.restart_every == 0:
            self._restart_dead_codes()

    def _refresh_ema_codes(self) -> None:
        """Code vectors = EMA sums / Laplace-smoothed EMA cluster sizes (VQ-VAE-2)."""
        k, eps = self.config.num_codes, self.config.eps
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + k * eps) * total
        torch.div(self.code_sums, smoothed.unsqueeze(1), out=self.code_vectors)
        if self.config.l2_normalize:
            self.code_vectors.copy_(F.normalize(self.code_vectors, dim=-1))

    def _push_reservoir(self, cand: Tensor, cand_n: Tensor) -> None:
        """Append every rank's candidates to the per-modality ring buffers (no host sync)."""
        world, n_mod, s, dl = cand.shape
        r = self.reservoir.shape[1]
        arange_s = torch.arange(s, device=cand.device)
        for i in range(n_mod):
            rows = cand[:, i].reshape(world * s, dl)
            valid = (arange_s.unsqueeze(0) < cand_n[:, i].unsqueeze(1)).reshape(-1)
            order = torch.argsort((~valid).to(torch.uint8), stable=True)[:r]  # real rows first
            rows, valid = rows[order], valid[order]
            pos = (self.reservoir_ptr[i] + torch.arange(rows.shape[0], device=cand.device)) % r
            self.reservoir[i, pos] = torch.where(valid.unsqueeze(1), rows, self.reservoir[i, pos])
            n_valid = valid.sum()
            self.reservoir_ptr[i] = (self.reservoir_ptr[i] + n_valid) % r
            self.reservoir_filled[i] = torch.clamp(self.reservoir_filled[i] + n_valid, max=r)

    def _restart_dead_codes(self) -> None:
        """Move codes whose EMA usage is below the threshold onto recent encoder outputs.

        Dead codes are given modalities round-robin (over modalities whose reservoir holds data),
        and distinct random rows of that modality's reservoir. Everything here is a function of
        rank-identical state and a generator seeded by ``steps``, so ranks stay identical without
        a collective (and without a host sync).
        """
        n_mod, r = len(self.modalities), self.reservoir.shape[1]
        dev = self.cluster_size.device
        dead = self.cluster_size < self.config.dead_code_threshold
        filled = self.reservoir_filled
        avail = filled > 0
        n_avail = avail.sum()
        mod_order = torch.argsort((~avail).to(torch.uint8), stable=True)  # available first
        dead_rank = (torch.cumsum(dead.long(), 0) - 1).clamp_min(0)
        slot = dead_rank % n_avail.clamp_min(1)
        mod = mod_order[slot]
        nth = dead_rank // n_avail.clamp_min(1)  # how many codes this modality got before
        gen = torch.Generator().manual_seed(_SEED + self._get_steps())
        keys = torch.rand(n_mod, r, generator=gen).to(dev)
        keys = torch.where(
            torch.arange(r, device=dev).unsqueeze(0) < filled.unsqueeze(1), keys, 2.0
        )
        perms = torch.argsort(keys, dim=1)  # [M, R]: a random order of each reservoir's real rows
        row = perms[mod, nth % filled[mod].clamp_min(1)]
        sample = self.reservoir[mod, row]
        do = (dead & (n_avail > 0)).unsqueeze(1)
        self.code_vectors.data.copy_(torch.where(do, sample, self.code_vectors.data))
        pseudo = self._pseudo_count
        self.cluster_size.copy_(
            torch.where(
                do.squeeze(1), torch.full_like(self.cluster_size, pseudo), self.cluster_size
            )
        )
        if self.config.ema:
            self.code_sums.copy_(torch.where(do, sample * pseudo, self.code_sums))

    @torch.no_grad()
    def _kmeans_init(self, flat: dict[str, Tensor], weight: dict[str, float]) -> None:
        """k-means over the first training batch, every modality equally weighted.

        Initial centroids are drawn equally from each modality present on any rank (each rank
        contributes a sample, gathered with an all-reduce into per-rank slots); Lloyd iterations
        use the all-reduced, modality-weighted statistics; rank 0's result is broadcast at the end.
        """
        cfg = self.config
        k, dl, n_mod = cfg.num_codes, self.lookup_dim, len(self.modalities)
        dev = self.cluster_size.device
        world, rank = distributed.world_size(), distributed.rank()
        per_rank = math.ceil(k / world)
        cand = torch.zeros(world, n_mod, per_rank, dl, device=dev)
        cand_n = torch.zeros(world, n_mod, device=dev)
        for m, xf in flat.items():
            i = self._index[m]
            take = min(per_rank, xf.shape[0])
            cand[rank, i, :take] = xf[torch.randperm(xf.shape[0], device=dev)[:take]]
            cand_n[rank, i] = take
        distributed.all_reduce_(cand)
        distributed.all_reduce_(cand_n)
        n_rows = cand_n.long().cpu()
        globally_present = [i for i in range(n_mod) if int(n_rows[:, i].sum()) > 0]
        base, extra = divmod(k, len(globally_present))
        gen = torch.Generator().manual_seed(_SEED)
        pieces = []
        for j, i in enumerate(globally_present):
            pool = torch.cat([cand[w, i, : n_rows[w, i]] for w in range(world)])
            share = base + (1 if j < extra else 0)
            if pool.shape[0] >= share:
                pick = torch.randperm(pool.shape[0], generator=gen)[:share]
            else:  # fewer tokens than codes: repeats, which restarts will move later
                pick = torch.randint(pool.shape[0], (share,), generator=gen)
            pieces.append(pool[pick.to(dev)])
        centroids = torch.cat(pieces)
        counts = torch.full((k,), self._pseudo_count, device=dev)
        for _ in range(cfg.kmeans_iters):
            assigned = {}
            for m, xf in flat.items():
                idx = _nearest(xf, centroids, cfg.memory_budget_mb)
                assigned[m] = _Assigned(xf, idx, torch.bincount(idx, minlength=k))
            red = self._reduce(assigned, weight, with_sums=True)
            assert red is not None  # the data were checked finite on every rank
            used = red.counts > 0
            means = red.sums / red.counts.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
            centroids = torch.where(used.unsqueeze(1), means, centroids)
            if cfg.l2_normalize:
                centroids = F.normalize(centroids, dim=-1)
            counts = torch.where(used, red.counts, torch.full_like(red.counts, self._pseudo_count))
        self.code_vectors.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        synced = [self.code_vectors.data, self.cluster_size]
        if cfg.ema:
            self.code_sums.copy_(centroids * counts.unsqueeze(1))
            synced.append(self.code_sums)
        distributed.broadcast_tensors_(synced)
        self.initialized.fill_(True)
        self._host_initialized = True

    # ------------------------------------------------------------------ validation
    def _check_device(self, what: str, t: Tensor) -> None:
        dev = self.cluster_size.device
        if t.device != dev:
            raise AdapterInputError(
                f"{what} is on {t.device} but the codebook is on {dev}: move the model and the "
                "batch to the same device."
            )

    def _validate(
        self,
        z: Any,
        mask: Any,
        weights: Any,
        present: Any,
    ) -> tuple[list[str], dict[str, Tensor | None], dict[str, Tensor | None], dict[str, float]]:
        """Check the forward inputs. Returns the modalities given (in :attr:`modalities` order),
        each one's token mask with absent samples folded in (``None`` = every token real), the
        samples that must hold a real token (``None`` = all) and each modality's weight."""
        d = self.config.code_dim
        if not isinstance(z, dict):
            raise AdapterInputError(
                f"z must be a dict mapping modality name -> Tensor [B, N, {d}], "
                f"got {type(z).__name__}."
            )
        if not z:
            raise AdapterInputError(
                f"z is empty: pass at least one modality of {list(self.modalities)}."
            )
        unknown = [m for m in z if m not in self._index]
        if unknown:
            raise AdapterInputError(
                f"unknown modality {unknown[0]!r} in z; this codebook was built for "
                f"{list(self.modalities)}. Add it to the codebook's modalities."
            )
        present_mods = [m for m in self.modalities if m in z]
        batch: tuple[str, int] | None = None
        for m in present_mods:
            t = z[m]
            if not isinstance(t, Tensor):
                raise AdapterInputError(
                    f"z[{m!r}] must be a Tensor [B, N, {d}], got {type(t).__name__}."
                )
            if not t.is_floating_point():
                raise AdapterInputError(
                    f"z[{m!r}] has dtype {t.dtype}: expected floating encoder outputs [B, N, {d}], "
                    "not token ids; pass the adapter's encode(...).z."
                )
            if t.dim() != 3:
                raise AdapterInputError(
                    f"z[{m!r}] has shape {tuple(t.shape)}: expected 3-D [B, N, {d}]; "
                    "add the missing batch or token dimension (e.g. z.unsqueeze(0))."
                )
            if t.shape[-1] != d:
                raise AdapterInputError(
                    f"adapter {m!r} outputs dim {t.shape[-1]} but the codebook's code_dim is {d}: "
                    f"set the adapter's code_dim to {d}."
                )
            if t.shape[0] == 0:
                raise AdapterInputError(
                    f"z[{m!r}] has batch size 0: pass at least one sample, "
                    "or leave the modality out of z."
                )
            if t.shape[1] == 0:
                raise AdapterInputError(
                    f"z[{m!r}] has 0 tokens per sample: an encoder must return at least one token."
                )
            if batch is not None and t.shape[0] != batch[1]:
                raise AdapterInputError(
                    f"z[{m!r}] has batch size {t.shape[0]} but z[{batch[0]!r}] has {batch[1]}: "
                    "every "
                    "modality must hold the same samples in the same order (rows are paired)."
                )
            batch = (m, t.shape[0])
            self._check_device(f"z[{m!r}]", t)

        masks: dict[str, Tensor | None] = dict.fromkeys(present_mods)
        if mask is not None:
            if not isinstance(mask, dict):
                raise AdapterInputError(
                    "mask must be None or a dict modality -> bool Tensor [B, N], "
                    f"got {type(mask).__name__}."
                )
            for m, mk in mask.items():
                if m not in z:
                    raise AdapterInputError(
                        f"mask has modality {m!r} that z lacks (z holds {present_mods}): "
                        "give masks only for modalities in z."
                    )
                if mk is None:
                    continue
                if not isinstance(mk, Tensor) or mk.dtype != torch.bool:
                    got = mk.dtype if isinstance(mk, Tensor) else type(mk).__name__
                    raise AdapterInputError(
                        f"mask[{m!r}] has dtype {got}: expected a bool Tensor (True = real token); "
                        "convert with mask.bool()."
                    )
                if mk.shape != z[m].shape[:2]:
                    raise AdapterInputError(
                        f"mask[{m!r}] has shape {tuple(mk.shape)} but z[{m!r}] has shape "
                        f"{tuple(z[m].shape)}: the mask must be [B, N] = {tuple(z[m].shape[:2])}."
                    )
                self._check_device(f"mask[{m!r}]", mk)
                masks[m] = mk

        required: dict[str, Tensor | None] = dict.fromkeys(present_mods)
        if present is not None:
            if not isinstance(present, dict):
                raise AdapterInputError(
                    "present must be None or a dict modality -> bool Tensor [B], "
                    f"got {type(present).__name__}."
                )
            for m, rows in present.items():
                if m not in z:
                    raise AdapterInputError(
                        f"present has modality {m!r} that z lacks (z holds {present_mods}): "
                        "give present only for modalities in z."
                    )
                b = z[m].shape[0]
                if not isinstance(rows, Tensor) or rows.dtype != torch.bool or rows.shape != (b,):
                    got = (
                        f"{rows.dtype} {tuple(rows.shape)}"
                        if isinstance(rows, Tensor)
                        else type(rows).__name__
                    )
                    raise AdapterInputError(
                        f"present[{m!r}] must be a bool Tensor [{b}] (True = the sample holds "
                        f"{m!r}), got {got}."
                    )
                self._check_device(f"present[{m!r}]", rows)
                tokens = rows.unsqueeze(1).expand(b, z[m].shape[1])
                masks[m] = tokens if masks[m] is None else masks[m] & tokens
                required[m] = rows

        weight: dict[str, float] = dict.fromkeys(self.modalities, 1.0)
        if weights is not None:
            if not isinstance(weights, dict):
                raise AdapterInputError(
                    "weights must be None or a dict modality -> float, "
                    f"got {type(weights).__name__}."
                )
            for m, w in weights.items():
                if m not in self._index:
                    raise AdapterInputError(
                        f"weights has unknown modality {m!r}; known: {list(self.modalities)}."
                    )
                if not _is_real(w) or w <= 0:
                    raise AdapterInputError(
                        f"weights[{m!r}] = {w!r}: a modality's weight must be a finite number > 0 "
                        "(leave the modality out of z to give it no share)."
                    )
                weight[m] = float(w)

        return present_mods, masks, required, weight

    def _check_data(
        self,
        z: dict[str, Tensor],
        masks: dict[str, Tensor | None],
        required: dict[str, Tensor | None],
        values: dict[str, Tensor],
        allow_nonfinite: bool = False,
    ) -> bool:
        """Data checks in one host sync: ``values[m]`` (the real tokens, or the loss computed
        from all of them) must be finite, and every sample that holds a modality must have at
        least one real token of it. With ``allow_nonfinite`` a non-finite value is reported
        (``False``) instead of raised."""

        def empty_rows(m: str) -> Tensor:
            rows = ~masks[m].any(1)
            return rows if required[m] is None else rows & required[m]

        flags = [torch.isfinite(v).all() for v in values.values()]
        flags += [~empty_rows(m).any() for m in masks if masks[m] is not None]
        if bool(torch.stack(flags).all()):
            return True
        for m, mk in masks.items():
            if mk is not None:
                empty = empty_rows(m).nonzero().flatten().tolist()
                if empty:
                    raise AdapterInputError(
                        f"sample {empty[0]} of modality {m!r} is all padding (mask all False): "
                        "a sample that holds a modality needs at least one real token; drop the "
                        f"sample, or mark {m!r} absent for it with present[{m!r}][{empty[0]}] = "
                        "False."
                    )
        if allow_nonfinite:
            return False
        for m, value in values.items():
            if not bool(torch.isfinite(value).all()):
                real = z[m] if masks[m] is None else z[m][masks[m]]
                bad = int((~torch.isfinite(real)).sum())
                raise AdapterInputError(
                    f"z[{m!r}] holds {bad} non-finite value(s) (NaN/inf) in its real tokens"
                    + ("" if bad else " after projection (values so large they overflow)")
                    + ": the encoder diverged or overflowed; check its inputs and learning rate "
                    "(or train in bf16 rather than fp16)."
                )

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
