"""How a shared codebook is used: per-modality usage, perplexity, overlap and paired agreement.

Pure functions over code indices (``-1`` marks padding and is ignored everywhere), plus
:class:`CodebookStatsAccumulator`, which sums the same statistics over many batches for evaluation.

* ``usage``: the fraction of the ``K`` codes that occur at least once.
* ``perplexity``: ``exp(entropy)`` of the code histogram (``K`` when all codes are used equally,
  1 when one code takes every token).
* ``code_set_jaccard``: ``|A & B| / |A | B|`` of the *sets* of codes two modalities use: does each
  modality live in its own region of the codebook (0) or share it (1)?
* ``paired_agreement``: the same Jaccard per sample, over the samples that hold both modalities,
  averaged: do an image and its caption land on the same codes?

The functions return 0-d float32 tensors on the codes' device and, with ``check=False`` and
``num_codes`` given, never synchronise with the GPU (what :class:`mmvq.quantize.SharedCodebook`
uses on every forward). A value that is undefined (no token at all, or no paired sample) is
``nan``; :meth:`CodebookStatsAccumulator.compute` leaves such keys out instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from torch import Tensor

from mmvq.utils import distributed
from mmvq.utils.checks import check_positive_int, describe_value

__all__ = [
    "CodebookStatsAccumulator",
    "code_histogram",
    "code_set_jaccard",
    "paired_agreement",
    "perplexity",
    "usage",
]


# --------------------------------------------------------------------------- validation
def _check_num_codes(num_codes: int) -> None:
    check_positive_int("num_codes", num_codes, fix="; pass the codebook size K.")


def _check_codes(codes: Tensor, num_codes: int | None, name: str = "codes") -> None:
    """Codes must be an integer tensor with values in ``[-1, num_codes)`` (``-1`` = padding)."""
    if not isinstance(codes, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of code indices, got {type(codes).__name__}."
        )
    if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
        raise ValueError(
            f"{name} has dtype {codes.dtype}: code indices must be an integer tensor "
            "(torch.long); convert with .long() if these really are indices."
        )
    if codes.numel() == 0:
        return
    low = int(codes.min())
    if low < -1:
        raise ValueError(f"{name} holds {low}: code indices must be >= 0, or -1 for padding.")
    if num_codes is not None:
        high = int(codes.max())
        if high >= num_codes:
            raise ValueError(
                f"{name} holds {high} but num_codes is {num_codes}: indices must be < num_codes; "
                "pass the size of the codebook these codes came from."
            )


def _infer_num_codes(*codes: Tensor) -> int:
    """One more than the largest code (a host sync); at least 1."""
    high = max((int(c.max()) for c in codes if c.numel() > 0), default=-1)
    return max(high + 1, 1)


# ------------------------------------------------------------------------ histograms
def code_histogram(
    codes: Tensor, num_codes: int, mask: Tensor | None = None, *, check: bool = True
) -> Tensor:
    """Float32 counts ``[num_codes]`` of each code in ``codes`` (``-1`` and masked-out ignored).

    Args:
        codes: integer tensor of any shape, values in ``[-1, num_codes)``.
        num_codes: the codebook size ``K``.
        mask: optional bool tensor of the same shape; ``False`` entries are ignored.
        check: validate ``codes`` (costs a host sync on GPU).
    """
    _check_num_codes(num_codes)
    if check:
        _check_codes(codes, num_codes)
        if mask is not None and (not isinstance(mask, Tensor) or mask.shape != codes.shape):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"mask has shape {shape} but codes has shape {tuple(codes.shape)}: "
                "pass a bool mask of the same shape (True = real token)."
            )
    flat = codes.reshape(-1)
    valid = flat >= 0
    if mask is not None:
        valid = valid & mask.reshape(-1).bool()
    return torch.bincount(flat.clamp_min(0), weights=valid.float(), minlength=num_codes)[:num_codes]


def usage_from_hist(hist: Tensor) -> Tensor:
    return (hist > 0).float().mean()


def perplexity_from_hist(hist: Tensor) -> Tensor:
    hist = hist.double()
    total = hist.sum()
    p = hist / total  # nan everywhere when total == 0, which is what we want
    entropy = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum()
    out = torch.exp(entropy)
    return torch.where(total > 0, out, torch.full_like(out, float("nan"))).float()


def jaccard_from_hists(hist_a: Tensor, hist_b: Tensor) -> Tensor:
    in_a, in_b = hist_a > 0, hist_b > 0
    inter = (in_a & in_b).sum().float()
    union = (in_a | in_b).sum().float()
    return inter / union  # nan when both sets are empty


def usage(
    codes: Tensor, num_codes: int, mask: Tensor | None = None, *, check: bool = True
) -> Tensor:
    """Fraction of the ``num_codes`` codes that occur in ``codes`` (``-1`` ignored)."""
    return usage_from_hist(code_histogram(codes, num_codes, mask, check=check))


def perplexity(
    codes: Tensor, num_codes: int, mask: Tensor | None = None, *, check: bool = True
) -> Tensor:
    """``exp(entropy)`` of the code histogram; ``nan`` when there is no real token."""
    return perplexity_from_hist(code_histogram(codes, num_codes, mask, check=check))


def code_set_jaccard(
    codes_a: Tensor, codes_b: Tensor, num_codes: int | None = None, *, check: bool = True
) -> Tensor:
    """Jaccard index of the sets of codes used in ``codes_a`` and ``codes_b`` (any shapes).

    ``nan`` when neither holds a real code. ``num_codes`` defaults to one more than the largest
    code (a host sync); pass it to stay on the device.
    """
    if check:
        _check_codes(codes_a, num_codes, "codes_a")
        _check_codes(codes_b, num_codes, "codes_b")
    k = num_codes if num_codes is not None else _infer_num_codes(codes_a, codes_b)
    return jaccard_from_hists(
        code_histogram(codes_a, k, check=False), code_histogram(codes_b, k, check=False)
    )


def _row_sets(codes: Tensor, num_codes: int) -> Tensor:
    """Bool ``[B, num_codes]``: which codes occur in each row of ``codes [B, N]``."""
    rows = torch.zeros(codes.shape[0], num_codes + 1, dtype=torch.bool, device=codes.device)
    rows.scatter_(1, codes + 1, True)  # column 0 collects the -1 padding
    return rows[:, 1:]


def _paired_sum_count(
    codes_a: Tensor, codes_b: Tensor, present_both: Tensor, num_codes: int
) -> tuple[Tensor, Tensor]:
    """Sum of per-sample Jaccard indices and the number of samples it was taken over."""
    set_a, set_b = _row_sets(codes_a, num_codes), _row_sets(codes_b, num_codes)
    inter = (set_a & set_b).sum(1).double()
    union = (set_a | set_b).sum(1).double()
    rows = present_both.bool() & (union > 0)
    per_row = torch.where(rows, inter / union.clamp_min(1), torch.zeros_like(inter))
    return per_row.sum(), rows.sum().double()


def _check_pair(
    codes_a: Tensor, codes_b: Tensor, present_both: Tensor, num_codes: int | None
) -> None:
    _check_codes(codes_a, num_codes, "codes_a")
    _check_codes(codes_b, num_codes, "codes_b")
    for name, c in (("codes_a", codes_a), ("codes_b", codes_b)):
        if c.dim() != 2:
            raise ValueError(
                f"{name} has shape {tuple(c.shape)}: paired agreement needs per-sample "
                "codes [B, N]."
            )
    if codes_a.shape[0] != codes_b.shape[0]:
        raise ValueError(
            f"codes_a holds {codes_a.shape[0]} samples but codes_b holds {codes_b.shape[0]}: "
            "paired codes must list the same samples in the same order."
        )
    if (
        not isinstance(present_both, Tensor)
        or present_both.dtype != torch.bool
        or tuple(present_both.shape) != (codes_a.shape[0],)
    ):
        got = describe_value(present_both)
        raise ValueError(
            f"present_both must be a bool tensor [{codes_a.shape[0]}] "
            "(True = the sample holds both "
            f"modalities), got {got}."
        )


def paired_agreement(
    codes_a: Tensor,
    codes_b: Tensor,
    present_both: Tensor,
    num_codes: int | None = None,
    *,
    check: bool = True,
) -> Tensor:
    """Mean per-sample Jaccard of the code sets of two modalities over paired samples.

    Args:
        codes_a: long ``[B, N_a]`` codes of modality a (``-1`` = padding).
        codes_b: long ``[B, N_b]`` codes of modality b, same samples in the same order.
        present_both: bool ``[B]``; ``True`` where the sample holds both modalities.
        num_codes: codebook size ``K`` (defaults to one more than the largest code: a host sync).
        check: validate the inputs (a host sync on GPU).

    Returns:
        0-d float32 tensor; ``nan`` when no sample holds both modalities.
    """
    if check:
        _check_pair(codes_a, codes_b, present_both, num_codes)
    k = num_codes if num_codes is not None else _infer_num_codes(codes_a, codes_b)
    total, count = _paired_sum_count(codes_a, codes_b, present_both, k)
    return (total / count).float()  # 0/0 = nan when no paired sample


# ------------------------------------------------------------------------ accumulator
class CodebookStatsAccumulator:
    """Accumulates per-modality code histograms and per-pair agreement over many batches.

    Example::

        acc = CodebookStatsAccumulator(num_codes=1024, modalities=["image", "text"])
        for batch in loader:
            out = model(batch)
            acc.update(out.codes)
        acc.all_reduce()  # in a distributed evaluation, before compute()
        logs = acc.compute()  # {"usage/image": ..., "overlap/image-text": ..., "usage/all": ...}

    Keys of :meth:`compute`: ``usage/{m}``, ``perplexity/{m}`` (for modalities that had a real
    token), ``overlap/{a}-{b}`` (both had tokens), ``agreement/{a}-{b}`` (some sample held both),
    pairs in sorted name order, and ``usage/all`` (the union over modalities). Undefined values are
    left out rather than reported as 0.
    """

    def __init__(self, num_codes: int, modalities: Sequence[str]) -> None:
        _check_num_codes(num_codes)
        if isinstance(modalities, str) or not modalities:
            raise ValueError(
                f"modalities must be a non-empty sequence of names, got {modalities!r}; "
                "e.g. ['depth', 'sketch']."
            )
        names = list(modalities)
        if len(set(names)) != len(names) or not all(isinstance(m, str) and m for m in names):
            raise ValueError(f"modalities must be distinct non-empty strings, got {names!r}.")
        self.num_codes = num_codes
        self.modalities: tuple[str, ...] = tuple(sorted(names))
        self.pairs: tuple[tuple[str, str], ...] = tuple(combinations(self.modalities, 2))
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._hist = torch.zeros(len(self.modalities), self.num_codes, dtype=torch.float64)
        self._agree = torch.zeros(max(len(self.pairs), 1), 2, dtype=torch.float64)  # (sum, count)

    @torch.no_grad()
    def update(self, codes: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> None:
        """Add one batch.

        Args:
            codes: per modality long ``[B, N_m]`` (``-1`` = padding); any subset of modalities.
                All modalities of one call describe the same ``B`` samples in the same order.
            present: optional per modality bool ``[B]`` (which samples hold it); default: the
                samples with at least one real code.
        """
        if not isinstance(codes, dict):
            raise TypeError(
                f"codes must be a dict modality -> Tensor [B, N], got {type(codes).__name__}."
            )
        unknown = sorted(set(codes) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"unknown modality {unknown[0]!r} in codes; this accumulator tracks "
                f"{list(self.modalities)}. Create it with every modality you evaluate."
            )
        present = dict(present or {})
        batch = None
        for m in sorted(codes):
            c = codes[m]
            _check_codes(c, self.num_codes, f"codes[{m!r}]")
            if c.dim() != 2:
                raise ValueError(f"codes[{m!r}] has shape {tuple(c.shape)}: expected [B, N].")
            if batch is not None and c.shape[0] != batch[1]:
                raise ValueError(
                    f"codes[{m!r}] holds {c.shape[0]} samples but "
                    f"codes[{batch[0]!r}] holds {batch[1]}: "
                    "all modalities of one update must describe the same samples."
                )
            batch = (m, c.shape[0])
            if m in present:
                p = present[m]
                if (
                    not isinstance(p, Tensor)
                    or p.dtype != torch.bool
                    or tuple(p.shape) != (c.shape[0],)
                ):
                    raise ValueError(
                        f"present[{m!r}] must be a bool tensor [{c.shape[0]}], got "
                        f"{getattr(p, 'dtype', type(p).__name__)} {tuple(getattr(p, 'shape', ()))}."
                    )
            else:
                present[m] = (c >= 0).any(1)
            i = self.modalities.index(m)
            self._hist[i] += code_histogram(c, self.num_codes, check=False).double().cpu()
        for j, (a, b) in enumerate(self.pairs):
            if a in codes and b in codes:
                both = present[a].to(codes[a].device) & present[b].to(codes[a].device)
                s, n = _paired_sum_count(
                    codes[a], codes[b].to(codes[a].device), both, self.num_codes
                )
                self._agree[j, 0] += float(s)
                self._agree[j, 1] += float(n)

    def all_reduce(self, device: torch.device | str | None = None) -> None:
        """Sum the accumulated state over all processes (no-op when not distributed).

        Every rank must call it. ``device``: where the collective runs (the NCCL backend needs a
        CUDA device); defaults to CPU.
        """
        flat = torch.cat([self._hist.reshape(-1), self._agree.reshape(-1)]).to(device or "cpu")
        distributed.all_reduce_(flat)
        flat = flat.cpu()
        self._hist.copy_(flat[: self._hist.numel()].view_as(self._hist))
        self._agree.copy_(flat[self._hist.numel() :].view_as(self._agree))

    def compute(self) -> dict[str, float]:
        """The flat dict of statistics accumulated so far (see the class docstring)."""
        out: dict[str, float] = {}
        seen = self._hist.sum(1) > 0
        for i, m in enumerate(self.modalities):
            if seen[i]:
                out[f"usage/{m}"] = float(usage_from_hist(self._hist[i]))
                out[f"perplexity/{m}"] = float(perplexity_from_hist(self._hist[i]))
        for j, (a, b) in enumerate(self.pairs):
            ia, ib = self.modalities.index(a), self.modalities.index(b)
            if seen[ia] and seen[ib]:
                out[f"overlap/{a}-{b}"] = float(jaccard_from_hists(self._hist[ia], self._hist[ib]))
            if self._agree[j, 1] > 0:
                out[f"agreement/{a}-{b}"] = float(self._agree[j, 0] / self._agree[j, 1])
        if bool(seen.any()):
            out["usage/all"] = float(usage_from_hist(self._hist.sum(0)))
        return out
