"""Evaluation: reconstruction and translation metrics, codebook statistics, and samples.

:func:`evaluate` runs a model (in eval mode, no modality dropout) over an evaluation loader and
returns one flat dict (plus a few per-modality dicts):

* reconstruction, each modality decoded with every modality of the example visible:
  ``<m>_<metric>`` for every metric of ``adapter.metrics`` (e.g. ``image_psnr``,
  ``text_exact_match``) and ``<m>_rec_loss``;
* translation, modality ``t`` decoded from the codes of modality ``s`` *only* (``t`` hidden, a row
  of mask tokens): ``<s>_to_<t>_<metric>`` for every metric of ``t``'s adapter against the true
  ``t`` of the example (e.g. ``image_to_text_exact_match``: the caption decoded from the image's
  codes alone equals the real caption);
* user scorers, ``translation_scorers={"text->image": fn}``: ``fn(generated, sources)`` gets the
  postprocessed translations (e.g. PIL images decoded from text codes only) and the *raw* source
  values of the same examples (e.g. the caption strings) and returns a float or a dict of
  floats. The raw values travel with each batch (:attr:`mmvq.data.ModelBatch.references`, kept by
  :class:`~mmvq.data.MultimodalCollator` from :class:`~mmvq.data.MultimodalDataset` examples),
  so they match the evaluated rows whatever the loader's order. A dict's keys that already start
  with ``<s>_to_<t>`` are kept (``text_to_image_score``), others get that prefix plus
  ``_score_``. Values are averaged over batches, weighted by the number of examples;
* codebook statistics over the whole evaluation set (:class:`~mmvq.quantize.stats.
  CodebookStatsAccumulator`): ``codebook_usage`` (fraction of codes used by any modality),
  ``codebook_usage_per_modality``, ``perplexity`` (per modality), ``overlap`` (Jaccard of the
  modalities' code sets; mean over pairs, with ``overlap_per_pair``) and ``same_code_agreement``
  (per-example Jaccard of paired modalities' code sets; mean over pairs, with
  ``same_code_agreement_per_pair``);
* with a concept level: the same statistics of the concept codes, prefixed ``concept_``
  (``concept_same_code_agreement``: do an image and its caption pick the same concept codes?),
  cross-modal retrieval by concept codes ``retrieval_r1_<a>_to_<b>``
  (:class:`~mmvq.concept.RetrievalAccumulator`), and translation from the source's concept codes
  alone, ``<s>_to_<t>_concept_only_<metric>`` (the translations above use both levels);
* ``eval_samples``: the number of examples evaluated.

It runs on the calling process only and makes no collective call (the training loop calls it on
the main process while the others wait), so every number is exact, with no padding duplicates.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmvq.concept import MultimodalCodes, RetrievalAccumulator
from mmvq.data.builtin import Scorer
from mmvq.outputs.files import sample_rate_of
from mmvq.outputs.samples import write_samples
from mmvq.quantize.stats import CodebookStatsAccumulator
from mmvq.utils.batches import batch_size, select_rows, to_device
from mmvq.utils.logging import get_logger

__all__ = ["Scorer", "evaluate"]

logger = get_logger(__name__)
_WARNED: set[tuple[str, str]] = set()


References = list[Mapping[str, Any]] | None
"""Per row of a batch, ``{modality: raw value}`` (``None``: the batch carries none)."""


class _Means:
    """Example-weighted means of named values."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, value: float, weight: float) -> None:
        value = float(value)
        if value != value:  # nan
            return
        self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.counts[name] = self.counts.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums) if self.counts[k] > 0}


def _finite_rows(batch: Mapping[str, Mapping[str, Any]], size: int) -> Tensor:
    """Bool ``[B]``: examples whose floating-point inputs are all finite."""
    ok = torch.ones(size, dtype=torch.bool)
    for sub in batch.values():
        for v in sub.values():
            if (
                isinstance(v, Tensor)
                and v.is_floating_point()
                and v.dim() > 0
                and v.shape[0] == size
            ):
                ok &= torch.isfinite(v.detach().cpu().reshape(size, -1)).all(dim=1)
    return ok


def _parse_scorers(
    scorers: Mapping[str, Scorer] | None, modalities: Sequence[str]
) -> dict[tuple[str, str], Scorer]:
    parsed = {}
    for key, fn in (scorers or {}).items():
        source, sep, target = str(key).partition("->")
        source, target = source.strip(), target.strip()
        if not sep or source not in modalities or target not in modalities or source == target:
            raise ValueError(
                f"translation_scorers key {key!r} must be '<source>-><target>' with two different "
                f"modalities of the model {list(modalities)}, e.g. 'depth->sketch'"
            )
        if not callable(fn):
            raise TypeError(
                f"translation_scorers[{key!r}] must be callable, got {type(fn).__name__}"
            )
        parsed[(source, target)] = fn
    return parsed


def _postprocess(adapter: nn.Module, recon: Tensor) -> list[Any]:
    return list(adapter.postprocess(recon.float() if recon.is_floating_point() else recon))


class _Evaluation:
    """What :func:`evaluate` accumulates over the batches: metric means, codebook statistics,
    samples, and the counts of examples seen and left out."""

    def __init__(
        self,
        model: nn.Module,
        scorers: dict[tuple[str, str], Scorer],
        max_samples: int | None,
        num_sample_rows: int,
    ) -> None:
        self.model = model
        self.scorers = scorers
        self.max_samples = max_samples
        self.num_sample_rows = num_sample_rows
        self.means = _Means()
        self.stats = CodebookStatsAccumulator(
            model.config.codebook.num_codes, tuple(model.modalities)
        )
        self.concept_stats = (
            CodebookStatsAccumulator(model.config.concept.num_codes, tuple(model.modalities))
            if model.concept is not None
            else None
        )
        self.retrieval = RetrievalAccumulator(tuple(model.modalities))
        self.samples: dict[str, dict[str, list[Any]]] = {}
        self.seen = 0  # examples read from the loader
        self.skipped = 0  # examples left out for non-finite inputs
        self.collected = 0  # examples in the samples

    def done(self) -> bool:
        return self.max_samples is not None and self.seen >= self.max_samples

    def select(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], References, int]:
        """The rows of ``batch`` to evaluate (within ``max_samples``, finite), their raw values
        and how many they are."""
        size = batch_size(batch)
        refs = getattr(batch, "references", None)
        ids = torch.arange(self.seen, self.seen + size)  # loader positions
        within = ids < self.max_samples if self.max_samples is not None else ids >= 0
        finite = _finite_rows(batch, size)
        self.skipped += int((within & ~finite).sum())
        keep = within & finite
        self.seen += size
        if bool(keep.all()):
            return dict(batch), refs, size
        rows = {m: select_rows(sub, keep) for m, sub in batch.items()}
        if refs is not None:
            refs = [r for r, k in zip(refs, keep.tolist()) if k]
        return rows, refs, int(keep.sum())

    def add(self, batch: dict[str, Any], refs: References, autocast: Any, sample: bool) -> None:
        """Evaluate one (device-side) batch of kept rows."""
        model = self.model
        with autocast():
            out = model(batch)
            _reconstruction_metrics(model, batch, out, self.means)
            present = {m: p.bool() for m, p in out.present.items()}
            self.stats.update(dict(out.codes), present)
            if self.concept_stats is not None:
                self.concept_stats.update(out.concept_codes, present)
                self.retrieval.add(out.concept_codes, batch, present)
            translations, concept_only = _translations(model, batch, out, self.means)
        _score(model, self.scorers, translations, refs, self.means)
        _score(model, self.scorers, concept_only, refs, self.means, level="_concept_only")
        if sample and self.collected < self.num_sample_rows:
            limit = self.num_sample_rows - self.collected
            self.collected += _collect_samples(model, out, translations, refs, limit, self.samples)

    def metrics(self) -> dict[str, Any]:
        evaluated = min(self.seen, self.max_samples or self.seen) - self.skipped
        if evaluated <= 0:
            raise ValueError(
                "evaluate: no example to evaluate (the loader yielded none"
                + (f", or all {self.skipped} hold NaN/Inf inputs" if self.skipped else "")
                + "); check the eval dataset"
            )
        metrics: dict[str, Any] = self.means.result()
        modalities = tuple(self.model.modalities)
        metrics.update(_codebook_metrics(self.stats.compute(), modalities))
        if self.concept_stats is not None:
            concept = _codebook_metrics(self.concept_stats.compute(), modalities)
            metrics.update({f"concept_{k}": v for k, v in concept.items()})
            metrics.update(self.retrieval.compute())
        metrics["eval_samples"] = evaluated
        if self.skipped:
            metrics["eval_nonfinite_examples"] = self.skipped
            logger.warning(
                "evaluate: left out %d example(s) whose inputs hold NaN/Inf values", self.skipped
            )
        return metrics

    def write_samples(self, directory: str | os.PathLike) -> None:
        adapters = {m: self.model.adapters[m] for m in self.samples}
        write_samples(
            directory,
            self.samples,
            {m: sample_rate_of(a) for m, a in adapters.items()},
            {m: a.sample_format for m, a in adapters.items()},
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    eval_loader: Iterable[Mapping[str, Mapping[str, Tensor]]],
    accelerator: Any | None = None,
    *,
    translation_scorers: Mapping[str, Scorer] | None = None,
    max_samples: int | None = None,
    sample_dir: str | os.PathLike | None = None,
    num_sample_rows: int = 8,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``eval_loader``; write samples to ``sample_dir`` when given.

    Args:
        model: a :class:`mmvq.MultimodalVQ` (unwrapped; it is put in eval mode and restored).
        eval_loader: yields model batches ``{modality: {..., "present"}}`` (e.g. a DataLoader
            with :class:`mmvq.data.MultimodalCollator`); their ``references`` (raw values of
            each row) feed the scorers and the originals of the samples.
        accelerator: optional ``accelerate.Accelerator``: its device and autocast are used.
        translation_scorers: ``{"<source>-><target>": scorer}``; see the module docstring.
        max_samples: stop after this many examples.
        sample_dir: directory for the samples of the first ``num_sample_rows`` examples.
        num_sample_rows: examples in the samples.
        progress_bar: show a ``tqdm`` bar of the examples evaluated (on stderr; it is removed
            when evaluation ends).

    Returns:
        the metrics dict described in the module docstring.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"evaluate: max_samples must be None or >= 1, got {max_samples!r}")
    scorers = _parse_scorers(translation_scorers, tuple(model.modalities))
    device = accelerator.device if accelerator is not None else model.device
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    run = _Evaluation(model, scorers, max_samples, num_sample_rows)
    was_training = model.training
    model.eval()
    bar = _progress(eval_loader, max_samples, progress_bar)
    try:
        for batch in eval_loader:
            before = run.seen
            rows, refs, n = run.select(batch)
            if n:
                run.add(to_device(rows, device), refs, autocast, sample_dir is not None)
            bar.update(min(run.seen, max_samples or run.seen) - before)
            if run.done():
                break
    finally:
        bar.close()
        model.train(was_training)
    metrics = run.metrics()
    if sample_dir is not None and run.samples:
        run.write_samples(sample_dir)
    return metrics


def _progress(eval_loader: Any, max_samples: int | None, enabled: bool) -> Any:
    """The evaluation's progress bar (examples), sized from the loader's dataset when it has a
    length."""
    from tqdm.auto import tqdm

    total = None
    with contextlib.suppress(TypeError, AttributeError):
        total = len(eval_loader.dataset)
    if max_samples is not None:
        total = max_samples if total is None else min(total, max_samples)
    return tqdm(
        total=total,
        desc="evaluating",
        unit="ex",
        leave=False,
        dynamic_ncols=True,
        disable=not enabled,
    )


def _reconstruction_metrics(
    model: nn.Module, batch: Mapping[str, Any], out: Any, means: _Means
) -> None:
    for m, recon in out.recon.items():
        rows = out.present.get(m)
        if rows is None or not bool(rows.any()):
            continue
        n = float(rows.sum())
        metrics = model.adapters[m].metrics(select_rows(batch[m], rows), recon[rows])
        for name, value in metrics.items():
            means.add(f"{m}_{name}", value, n)
        if m in out.rec_loss_mean:
            means.add(f"{m}_rec_loss", float(out.rec_loss_mean[m]), n)


Translations = dict[tuple[str, str], tuple[Tensor, Tensor]]


def _translations(
    model: nn.Module, batch: Mapping[str, Any], out: Any, means: _Means
) -> tuple[Translations, Translations]:
    """Decode each modality from each other modality's codes alone; score with adapter metrics.

    Returns ``{(source, target): (rows, translation of those rows)}`` from both code levels, and
    the same from the source's concept codes alone (empty without a concept level).
    """
    result: Translations = {}
    alone_result: Translations = {}
    for target in out.present:
        for source in out.present:
            if source == target:
                continue
            rows = out.present[source] & out.present[target]
            if not bool(rows.any()):
                continue
            concepts = out.concept_codes
            codes = MultimodalCodes(
                {source: concepts[source][rows]} if source in concepts else {},
                {source: out.codes[source][rows]},
            )
            generated = model.decode(codes, targets=[target])[target]
            result[(source, target)] = (rows, generated)
            reference = select_rows(batch[target], rows)
            adapter = model.adapters[target]
            n = float(rows.sum())
            for name, value in adapter.metrics(reference, generated).items():
                means.add(f"{source}_to_{target}_{name}", value, n)
            if codes.concept:
                alone = model.decode(MultimodalCodes(concept=codes.concept), targets=[target])
                alone_result[(source, target)] = (rows, alone[target])
                for name, value in adapter.metrics(reference, alone[target]).items():
                    means.add(f"{source}_to_{target}_concept_only_{name}", value, n)
    return result, alone_result


def _warn_no_references(source: str, target: str) -> None:
    if (source, target) in _WARNED:
        return
    _WARNED.add((source, target))
    logger.warning(
        "translation scorer '%s->%s' skipped: it needs the raw %r values of the evaluation "
        "examples, which these batches do not carry; evaluate batches that "
        "mmvq.data.MultimodalCollator built from mmvq.data.MultimodalDataset examples",
        source,
        target,
        source,
    )


def _score(
    model: nn.Module,
    scorers: Mapping[tuple[str, str], Scorer],
    translations: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
    refs: References,
    means: _Means,
    level: str = "",
) -> None:
    """Score translations with the data's scorers; ``level`` (e.g. ``"_concept_only"``) goes
    after ``<source>_to_<target>`` in the metric names."""
    for (source, target), fn in scorers.items():
        if (source, target) not in translations:
            continue
        if refs is None:
            _warn_no_references(source, target)
            continue
        rows, generated = translations[(source, target)]
        index = rows.nonzero().flatten().tolist()
        sources = [refs[i][source] for i in index]
        result = fn(_postprocess(model.adapters[target], generated), sources)
        base = f"{source}_to_{target}"
        prefix = base + level
        if isinstance(result, Mapping):
            for name, value in result.items():
                key = (
                    prefix + name[len(base) :]
                    if name.startswith(base)
                    else f"{prefix}_score_{name}"
                )
                means.add(key, float(value), len(index))
        else:
            means.add(f"{prefix}_score", float(result), len(index))


def _collect_samples(
    model: nn.Module,
    out: Any,
    translations: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
    refs: References,
    limit: int,
    samples: dict[str, dict[str, list[Any]]],
) -> int:
    """Add up to ``limit`` examples of this batch to ``samples``; returns how many."""
    take = min(limit, len(next(iter(out.present.values()))))
    for target in model.modalities:
        if target not in out.recon:  # the modality is absent from this batch: keep rows aligned
            for column in samples.get(target, {}).values():
                column.extend([None] * take)
            continue
        adapter = model.adapters[target]
        columns = samples.setdefault(target, {})
        present = out.present[target][:take].tolist()
        originals = [
            refs[i].get(target) if refs is not None and present[i] else None for i in range(take)
        ]
        rec = _postprocess(adapter, out.recon[target][:take])
        columns.setdefault("original", []).extend(originals)
        columns.setdefault("reconstruction", []).extend(
            r if p else None for r, p in zip(rec, present)
        )
        for source in out.present:
            if source == target:
                continue
            column = columns.setdefault(f"from_{source}", [])
            if (source, target) not in translations:
                column.extend([None] * take)
                continue
            rows, generated = translations[(source, target)]
            outputs = _postprocess(adapter, generated)
            position = {row: k for k, row in enumerate(rows.nonzero().flatten().tolist())}
            column.extend(outputs[position[i]] if i in position else None for i in range(take))
    return take


def _codebook_metrics(stats: Mapping[str, float], modalities: Sequence[str]) -> dict[str, Any]:
    per = lambda prefix: {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith(prefix)}  # noqa: E731
    overlap, agreement = per("overlap/"), per("agreement/")
    result: dict[str, Any] = {
        "codebook_usage": stats.get("usage/all", 0.0),
        "codebook_usage_per_modality": {m: v for m, v in per("usage/").items() if m != "all"},
        "perplexity": per("perplexity/"),
    }
    if overlap:
        result["overlap"] = sum(overlap.values()) / len(overlap)
        result["overlap_per_pair"] = overlap
    if agreement:
        result["same_code_agreement"] = sum(agreement.values()) / len(agreement)
        result["same_code_agreement_per_pair"] = agreement
    return result
