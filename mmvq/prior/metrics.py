"""Generation metrics of a prior that need no modality: :func:`code_metrics`.

:func:`code_metrics` asks of the generated *codes* what the modality metrics ask of the decoded
outputs, against a table of the true code sequences (e.g. the tokenizer model's codes of every
rendering of a synthetic dataset). It measures the prior alone, whatever the fidelity of the
tokenizer model's decoder. The built-in shapes data's metrics (validity, diversity, conditional
accuracy, BLEU/ROUGE of captions) are :mod:`mmvq_adapters.shapes.generation_metrics`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

__all__ = ["code_metrics"]


def code_metrics(
    codes: torch.Tensor,
    table: Mapping[tuple[int, ...], Hashable],
    target_codes: torch.Tensor | None = None,
) -> dict[str, float]:
    """Generated code rows ``[N, L]`` looked up in ``table`` (true code sequence -> label).

    Returns ``exact_rate`` (rows equal to some true sequence) and ``distinct_labels`` (distinct
    labels among those rows); with ``target_codes`` ``[N, L]`` (each row's true codes, e.g. of
    its caption's rendering) also ``target_exact_rate`` (rows equal to their target) and
    ``target_token_accuracy`` (positions equal to the target's).
    """
    rows = [tuple(int(v) for v in r) for r in codes.tolist()]
    if not rows:
        raise ValueError("code_metrics needs at least one row")
    found = [table[r] for r in rows if r in table]
    out = {"exact_rate": len(found) / len(rows), "distinct_labels": float(len(set(found)))}
    if target_codes is not None:
        target = torch.as_tensor(target_codes).to(codes.device)
        if target.shape != codes.shape:
            raise ValueError(
                f"code_metrics: target_codes {tuple(target.shape)} and codes "
                f"{tuple(codes.shape)} differ in shape"
            )
        same = codes == target
        out["target_exact_rate"] = float(same.all(dim=1).float().mean())
        out["target_token_accuracy"] = float(same.float().mean())
    return out
