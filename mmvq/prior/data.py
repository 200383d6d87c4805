"""The prior's training data: codes computed once with ``datasets.map``, sequences built per batch.

:func:`encode_dataset` runs the frozen tokenizer model over a ``datasets.Dataset`` once
(``map(batched=True)``; with ``cache_dir`` the result is an Arrow cache file keyed by the data's
fingerprint, the model's weights and the options, so a second run loads it instead of encoding).
Each span becomes a column ``codes.<modality>.<level>`` (a list of ints, ``-1`` at padding, all
``-1`` where the row lacks the modality); ``index`` keeps the row number. In LM-vocabulary mode the
text modalities are not encoded: their strings are kept as ``lm.<modality>``.

:class:`PriorCollator` turns those rows into ``input_ids``/``attention_mask``/``labels`` with the
tokenizer, drawing each row's modality order and condition dropout from
``numpy.random.default_rng([seed, epoch, index])``: the batches are a function of the data
position alone, so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvq.prior import glue

__all__ = [
    "PriorCollator",
    "codes_column",
    "encode_dataset",
    "model_digest",
    "observed_padding",
    "lm_column",
]


def codes_column(modality: str, level: str) -> str:
    return f"codes.{modality}.{level}"


def lm_column(modality: str) -> str:
    return f"lm.{modality}"


def model_digest(model: Any) -> str:
    """SHA-256 of the model's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encode_dataset(
    model: Any,
    dataset: Any,
    *,
    column_map: Mapping[str, str] | None = None,
    lm_modalities: Sequence[str] = (),
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    keep_columns: Sequence[str] = (),
    desc: str = "encoding with the tokenizer model",
) -> Any:
    """Codes of every row of ``dataset`` (module docstring).

    Args:
        model: the frozen tokenizer model (:class:`mmvq.MultimodalVQ`), on its device.
        dataset: a ``datasets.Dataset`` of raw values (what ``model.prepare`` accepts).
        column_map: ``{modality: column}`` (default: the model's modalities present as columns).
        lm_modalities: modalities kept as strings (LM-vocabulary mode), not encoded.
        batch_size: rows per encoder call.
        cache_dir: where the Arrow cache file goes (``None``: the dataset's own cache, if any).
        keep_columns: other columns to keep (e.g. the shapes' attributes, for metrics).
    """
    spans = glue.model_spans(model)
    cmap = _column_map(spans, dataset, column_map, keep_columns)
    lm_ms = [m for m in lm_modalities if m in cmap]
    encoded = [s for s in spans if s.modality in cmap and s.modality not in lm_ms]

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        size = len(indices)
        examples = [
            {m: batch[c][i] for m, c in cmap.items() if m not in lm_ms and batch[c][i] is not None}
            for i in range(size)
        ]
        out: dict[str, list[Any]] = {"index": list(indices)}
        for m in lm_ms:
            out[lm_column(m)] = list(batch[cmap[m]])
        codes = glue.encode_examples(model, examples)
        for s in encoded:
            out[codes_column(s.modality, s.level)] = codes[s.key].tolist()
        return out

    fingerprint = hashlib.sha256(
        repr(
            (
                dataset._fingerprint,
                model_digest(model),
                sorted(cmap.items()),
                lm_ms,
                [s.to_dict() for s in encoded],
                list(keep_columns),
            )
        ).encode()
    ).hexdigest()[:32]
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"prior-codes-{fingerprint}.arrow")
    remove = [c for c in dataset.column_names if c not in keep_columns]
    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=remove,
        cache_file_name=cache_file,
        load_from_cache_file=True,
        new_fingerprint=fingerprint,
        desc=desc,
    )


def _column_map(
    spans: Sequence[Any],
    dataset: Any,
    column_map: Mapping[str, str] | None,
    keep_columns: Sequence[str],
) -> dict[str, str]:
    """The checked ``{modality: column}`` map (default: columns named after modalities)."""
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"encode_dataset needs a datasets.Dataset, got {type(dataset).__name__}; build one "
            "with datasets.Dataset.from_dict / load_dataset"
        )
    modalities = list(dict.fromkeys(s.modality for s in spans))
    columns = dataset.column_names
    cmap = dict(column_map) if column_map else {m: m for m in modalities if m in columns}
    for m, col in cmap.items():
        if m not in modalities:
            raise ValueError(f"column_map names modality {m!r}; the model has {modalities}")
        if col not in columns:
            raise ValueError(f"column_map[{m!r}] = {col!r} is not a column; columns: {columns}")
    if not cmap:
        raise ValueError(
            f"no column of {columns} is a modality of the model ({modalities}); pass "
            "column_map={modality: column}"
        )
    for c in keep_columns:
        if c not in columns:
            raise ValueError(f"keep_columns names {c!r}, not a column of {columns}")
    return cmap


def observed_padding(encoded: Any) -> dict[tuple[str, str], bool]:
    """``{(modality, level): whether some present row of the span ends in padding}``."""
    out = {}
    for col in encoded.column_names:
        if not col.startswith("codes."):
            continue
        _, m, level = col.split(".", 2)
        values = np.asarray(encoded[col], dtype=np.int64)
        present = (values != -1).any(axis=1)
        out[(m, level)] = bool((values[present] == -1).any())
    return out


class PriorCollator:
    """``collate_fn`` over :func:`encode_dataset` rows -> ``input_ids``, ``attention_mask``,
    ``labels`` (``-100`` at padding).

    Args:
        tokenizer: the :class:`~mmvq.prior.tokenizer.MultimodalTokenizer`.
        modality_order: ``"random"`` (per row) or ``None`` (the tokenizer's order).
        condition_dropout: probability that a row keeps only one of its modalities (chosen
            uniformly): the prior learns each modality's marginal, which unconditional sampling
            and classifier-free guidance use.
        seed: base seed of the per-row draws.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        modality_order: str | None = "random",
        condition_dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        if modality_order not in ("random", None):
            raise ValueError(f"modality_order must be 'random' or None, got {modality_order!r}")
        if not 0.0 <= float(condition_dropout) <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {condition_dropout!r}")
        self.tokenizer = tokenizer
        self.modality_order = modality_order
        self.condition_dropout = float(condition_dropout)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        codes = {}
        for s in tok.spans:
            col = codes_column(s.modality, s.level)
            if col in rows[0]:
                codes[s.key] = torch.tensor([r[col] for r in rows], dtype=torch.long)
        texts = {
            m: [r[lm_column(m)] for r in rows]
            for m in tok.vocab.lm_modalities
            if lm_column(m) in rows[0]
        }
        orders = []
        for i, r in enumerate(rows):
            rng = np.random.default_rng([self.seed, self.epoch, int(r["index"])])
            present = [m for m in tok.modalities if self._present(m, codes, texts, i)]
            if len(present) > 1 and rng.random() < self.condition_dropout:
                keep = present[int(rng.integers(len(present)))]
                for m in present:
                    if m != keep:
                        self._drop(m, codes, texts, i)
                present = [keep]
            if self.modality_order == "random":
                present = [present[j] for j in rng.permutation(len(present))]
            orders.append(present)
        enc = tok(
            {**codes, **texts} if texts else codes,
            modality_order=orders,
            return_tensors="pt",
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": labels,
        }

    def _present(self, m: str, codes: dict, texts: dict, i: int) -> bool:
        if m in texts:
            return texts[m][i] is not None
        return any(bool((c[i] != -1).any()) for k, c in codes.items() if k[0] == m)

    def _drop(self, m: str, codes: dict, texts: dict, i: int) -> None:
        if m in texts:
            texts[m][i] = None
        for k, c in codes.items():
            if k[0] == m:
                c[i] = -1
