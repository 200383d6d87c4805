"""Input checks of :class:`~mmvq.quantize.SharedCodebook`'s forward, each error at the boundary
naming the argument, the modality, what was found and the fix.

:func:`validate_inputs` checks the arguments' types and shapes (no host sync);
:func:`check_data` checks the values (finite, no all-padding sample) in ONE host sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from mmvq.adapter import AdapterInputError
from mmvq.utils.checks import describe_value, is_real

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.quantize.codebook import SharedCodebook

__all__ = [
    "ForwardInputs",
    "check_assignment",
    "check_data",
    "check_device",
    "validate_inputs",
]


class ForwardInputs(NamedTuple):
    """The forward's arguments, checked.

    Attributes:
        given: the modalities of ``z``, in the codebook's modality order.
        masks: each one's token mask with absent samples folded in (``None``: every token real).
        required: the samples that must hold a real token (``None``: all).
        weight: every modality's share of the statistics (1 unless given).
    """

    given: list[str]
    masks: dict[str, Tensor | None]
    required: dict[str, Tensor | None]
    weight: dict[str, float]


def check_device(codebook: SharedCodebook, what: str, t: Tensor) -> None:
    """``t`` must be on the codebook's device."""
    if t.device != codebook.device:
        raise AdapterInputError(
            f"{what} is on {t.device} but the codebook is on {codebook.device}: move the model "
            "and the batch to the same device."
        )


def validate_inputs(
    codebook: SharedCodebook, z: Any, mask: Any, weights: Any, present: Any
) -> ForwardInputs:
    """Check the arguments of :meth:`SharedCodebook.forward` (see :class:`ForwardInputs`)."""
    given = _check_z(codebook, z)
    masks = _check_masks(codebook, z, mask, given)
    required = _fold_present(codebook, z, present, given, masks)
    return ForwardInputs(given, masks, required, _check_weights(codebook, weights))


def _check_z(codebook: SharedCodebook, z: Any) -> list[str]:
    d = codebook.config.code_dim
    if not isinstance(z, dict):
        raise AdapterInputError(
            f"z must be a dict mapping modality name -> Tensor [B, N, {d}], got {type(z).__name__}."
        )
    if not z:
        raise AdapterInputError(
            f"z is empty: pass at least one modality of {list(codebook.modalities)}."
        )
    unknown = [m for m in z if m not in codebook.modalities]
    if unknown:
        raise AdapterInputError(
            f"unknown modality {unknown[0]!r} in z; this codebook was built for "
            f"{list(codebook.modalities)}. Add it to the codebook's modalities."
        )
    given = [m for m in codebook.modalities if m in z]
    batch: tuple[str, int] | None = None
    for m in given:
        _check_tokens(m, z[m], d)
        t = z[m]
        if batch is not None and t.shape[0] != batch[1]:
            raise AdapterInputError(
                f"z[{m!r}] has batch size {t.shape[0]} but z[{batch[0]!r}] has {batch[1]}: "
                "every modality must hold the same samples in the same order (rows are paired)."
            )
        batch = (m, t.shape[0])
        check_device(codebook, f"z[{m!r}]", t)
    return given


def _check_tokens(m: str, t: Any, d: int) -> None:
    """One modality's ``z``: a float ``[B > 0, N > 0, d]`` tensor."""
    if not isinstance(t, Tensor):
        raise AdapterInputError(f"z[{m!r}] must be a Tensor [B, N, {d}], got {type(t).__name__}.")
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
            f"z[{m!r}] has batch size 0: pass at least one sample, or leave the modality out of z."
        )
    if t.shape[1] == 0:
        raise AdapterInputError(
            f"z[{m!r}] has 0 tokens per sample: an encoder must return at least one token."
        )


def _check_masks(
    codebook: SharedCodebook, z: dict[str, Tensor], mask: Any, given: list[str]
) -> dict[str, Tensor | None]:
    masks: dict[str, Tensor | None] = dict.fromkeys(given)
    if mask is None:
        return masks
    if not isinstance(mask, dict):
        raise AdapterInputError(
            "mask must be None or a dict modality -> bool Tensor [B, N], "
            f"got {type(mask).__name__}."
        )
    for m, mk in mask.items():
        if m not in z:
            raise AdapterInputError(
                f"mask has modality {m!r} that z lacks (z holds {given}): "
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
        check_device(codebook, f"mask[{m!r}]", mk)
        masks[m] = mk
    return masks


def _fold_present(
    codebook: SharedCodebook,
    z: dict[str, Tensor],
    present: Any,
    given: list[str],
    masks: dict[str, Tensor | None],
) -> dict[str, Tensor | None]:
    """Check ``present`` and fold absent samples into ``masks`` (in place); return ``required``."""
    required: dict[str, Tensor | None] = dict.fromkeys(given)
    if present is None:
        return required
    if not isinstance(present, dict):
        raise AdapterInputError(
            "present must be None or a dict modality -> bool Tensor [B], "
            f"got {type(present).__name__}."
        )
    for m, rows in present.items():
        if m not in z:
            raise AdapterInputError(
                f"present has modality {m!r} that z lacks (z holds {given}): "
                "give present only for modalities in z."
            )
        b = z[m].shape[0]
        if not isinstance(rows, Tensor) or rows.dtype != torch.bool or rows.shape != (b,):
            got = describe_value(rows)
            raise AdapterInputError(
                f"present[{m!r}] must be a bool Tensor [{b}] (True = the sample holds "
                f"{m!r}), got {got}."
            )
        check_device(codebook, f"present[{m!r}]", rows)
        tokens = rows.unsqueeze(1).expand(b, z[m].shape[1])
        masks[m] = tokens if masks[m] is None else masks[m] & tokens
        required[m] = rows
    return required


def _check_weights(codebook: SharedCodebook, weights: Any) -> dict[str, float]:
    weight: dict[str, float] = dict.fromkeys(codebook.modalities, 1.0)
    if weights is None:
        return weight
    if not isinstance(weights, dict):
        raise AdapterInputError(
            f"weights must be None or a dict modality -> float, got {type(weights).__name__}."
        )
    for m, w in weights.items():
        if m not in codebook.modalities:
            raise AdapterInputError(
                f"weights has unknown modality {m!r}; known: {list(codebook.modalities)}."
            )
        if not is_real(w) or w <= 0:
            raise AdapterInputError(
                f"weights[{m!r}] = {w!r}: a modality's weight must be a finite number > 0 "
                "(leave the modality out of z to give it no share)."
            )
        weight[m] = float(w)
    return weight


def check_data(
    z: dict[str, Tensor],
    masks: dict[str, Tensor | None],
    required: dict[str, Tensor | None],
    values: dict[str, Tensor],
    allow_nonfinite: bool = False,
) -> bool:
    """Data checks in one host sync: ``values[m]`` (the real tokens, or the loss computed from
    all of them) must be finite, and every sample that holds a modality must have at least one
    real token of it. With ``allow_nonfinite`` a non-finite value is reported (``False``) instead
    of raised."""

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
    return False


def check_assignment(
    codebook: SharedCodebook,
    z: dict[str, Tensor],
    masks: dict[str, Tensor | None],
    assign: Any,
) -> dict[str, Tensor]:
    """The ``assign`` argument of the forward, checked: long ``[B, N_m]`` codes in ``[0, K)`` per
    modality of ``z``; returned flat over each modality's real tokens (as the forward quantises
    them). ``None`` -> ``{}`` (nearest codes everywhere)."""
    if assign is None:
        return {}
    if not isinstance(assign, dict):
        raise AdapterInputError(
            f"assign must be None or a dict modality -> long Tensor [B, N], got "
            f"{type(assign).__name__}."
        )
    k = codebook.config.num_codes
    flat = {}
    for m, codes in assign.items():
        if m not in z:
            raise AdapterInputError(
                f"assign has modality {m!r} that z lacks; give codes only for z's."
            )
        if (
            not isinstance(codes, Tensor)
            or codes.dtype != torch.long
            or codes.shape != z[m].shape[:2]
        ):
            got = describe_value(codes)
            raise AdapterInputError(
                f"assign[{m!r}] must be a long Tensor of shape {tuple(z[m].shape[:2])}, got {got}."
            )
        check_device(codebook, f"assign[{m!r}]", codes)
        picked = codes.reshape(-1) if masks[m] is None else codes[masks[m]]
        if picked.numel() and bool(((picked < 0) | (picked >= k)).any()):
            raise AdapterInputError(f"assign[{m!r}] holds codes outside [0, {k - 1}].")
        flat[m] = picked
    return flat


def check_restart_from(
    codebook: SharedCodebook,
    z: dict[str, Tensor],
    masks: dict[str, Tensor | None],
    restart_from: Any,
) -> dict[str, Tensor]:
    """The ``restart_from`` argument of the forward, checked: float ``[B, N_m, Dl]`` vectors in
    the codebook's lookup space per modality of ``z``; returned flat over each modality's real
    tokens (as the forward quantises them), detached, fp32. ``None`` -> ``{}``."""
    if restart_from is None:
        return {}
    if not isinstance(restart_from, dict):
        raise AdapterInputError(
            "restart_from must be None or a dict modality -> float Tensor [B, N, lookup_dim], "
            f"got {type(restart_from).__name__}."
        )
    flat = {}
    for m, vectors in restart_from.items():
        if m not in z:
            raise AdapterInputError(
                f"restart_from has modality {m!r} that z lacks; give vectors only for z's."
            )
        want = (*z[m].shape[:2], codebook.lookup_dim)
        if (
            not isinstance(vectors, Tensor)
            or not vectors.is_floating_point()
            or tuple(vectors.shape) != want
        ):
            raise AdapterInputError(
                f"restart_from[{m!r}] must be a float Tensor of shape {want} (the codebook's "
                f"lookup space), got {describe_value(vectors)}."
            )
        check_device(codebook, f"restart_from[{m!r}]", vectors)
        picked = vectors.reshape(-1, want[-1]) if masks[m] is None else vectors[masks[m]]
        flat[m] = picked.detach().float()
    return flat
