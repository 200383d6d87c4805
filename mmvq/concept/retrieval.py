"""Cross-modal retrieval by concept codes over a whole evaluation set.

For each ordered pair of modalities ``(a, b)``, every row holding both is a query (its ``a``
concept codes) and the ``b`` concept codes of all those rows are the gallery; the gallery rows
most similar to the query (:func:`~mmvq.concept.codes.concept_similarity`) are retrieved. A
retrieved row is a hit when it is the query's partner or has the same content as the query's row
in some modality (two examples with the same caption, or the same rendered attributes, are the
same item: retrieving either is right). Ties are resolved at random, in expectation: a query
whose top score is shared by ``t`` rows, ``h`` of them hits, scores ``h / t``. The mean over
queries is ``retrieval_r1_<a>_to_<b>``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mmvq.concept.codes import concept_similarity

__all__ = ["RetrievalAccumulator", "content_keys", "retrieval_at_1"]


def content_keys(sub: Mapping[str, Tensor], present: Tensor) -> list[str | None]:
    """A digest of each row's collated tensors (``None`` for absent rows): equal digests mean
    identical inputs."""
    size = int(present.shape[0])
    tensors = [
        v.detach().cpu().contiguous()
        for k, v in sorted(sub.items())
        if k != "present" and isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == size
    ]
    keys: list[str | None] = []
    for i, held in enumerate(present.tolist()):
        if not held:
            keys.append(None)
            continue
        digest = hashlib.blake2b(digest_size=16)
        for t in tensors:
            digest.update(t[i].numpy().tobytes())
        keys.append(digest.hexdigest())
    return keys


def retrieval_at_1(query: Tensor, gallery: Tensor, hits: Tensor) -> float:
    """Mean tie-aware R@1 of ``query [n, S]`` codes against ``gallery [n, S]`` codes, where
    ``hits [n, n]`` marks the right answers of each query (the diagonal at least)."""
    sim = concept_similarity(query, gallery)
    top = sim == sim.max(dim=1, keepdim=True).values
    return float(((top & hits).sum(1).float() / top.sum(1).float()).mean())


class RetrievalAccumulator:
    """Collects concept codes and row contents batch by batch; :meth:`compute` scores them."""

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = tuple(modalities)
        self._codes: dict[str, list[Tensor]] = {m: [] for m in self.modalities}
        self._keys: dict[str, list[str | None]] = {m: [] for m in self.modalities}
        self._rows = 0

    def add(
        self,
        codes: Mapping[str, Tensor],
        batch: Mapping[str, Mapping[str, Tensor]],
        present: Mapping[str, Tensor],
    ) -> None:
        """Add one batch: concept codes ``{m: [B, S]}`` of the modalities in it."""
        size = next(iter(codes.values())).shape[0] if codes else 0
        for m in self.modalities:
            if m in codes:
                self._codes[m].append(codes[m].detach().cpu())
                self._keys[m].extend(content_keys(batch[m], present[m].bool()))
            else:
                width = next(iter(codes.values())).shape[1]
                self._codes[m].append(torch.full((size, width), -1, dtype=torch.long))
                self._keys[m].extend([None] * size)
        self._rows += size

    def compute(self) -> dict[str, float]:
        """``{"retrieval_r1_<a>_to_<b>": R@1}`` for every ordered pair with two paired rows."""
        if not self._rows:
            return {}
        codes = {m: torch.cat(v) for m, v in self._codes.items() if v}
        result = {}
        for a, b in itertools.permutations(self.modalities, 2):
            rows = [i for i in range(self._rows) if self._keys[a][i] and self._keys[b][i]]
            if len(rows) < 2:
                continue
            hits = torch.eye(len(rows), dtype=torch.bool)
            for m in self.modalities:
                ids: dict[str, int] = {}
                col = torch.tensor(
                    [
                        -1 if (k := self._keys[m][i]) is None else ids.setdefault(k, len(ids))
                        for i in rows
                    ]
                )
                hits |= (col[:, None] == col[None, :]) & (col[:, None] >= 0)
            index = torch.tensor(rows)
            r1 = retrieval_at_1(codes[a][index], codes[b][index], hits)
            result[f"retrieval_r1_{a}_to_{b}"] = r1
        return result
