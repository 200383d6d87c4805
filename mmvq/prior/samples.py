"""A prior's samples written as files: what ``mmvq generate MODEL --prior PRIOR`` and
``recipes/generate_images.py`` run.

:func:`load_prior` loads the tokenizer model and its prior (by default the ``prior/`` folder of
the model's directory or Hub repo, where ``prior.push_to_hub`` puts it); :func:`write_prior_samples`
samples (unconditionally, or one target modality per source example) and writes each output as
``DIR/<modality>_<i>.<ext>`` (:mod:`mmvq.outputs.files`), plus ``DIR/prior_ids.json``, the sampled
id sequences. The same seed (and ``batch_size``, the sequences sampled at a time) writes the same
files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmvq.prior.generation import PriorSamplingConfig
from mmvq.prior.model import PRIOR_CONFIG_FILE, PRIOR_SUBFOLDER, MultimodalPrior

__all__ = ["IDS_FILE", "load_prior", "sampling_config", "write_prior_samples"]

IDS_FILE = "prior_ids.json"
"""The sampled id sequences, beside the outputs."""


def sampling_config(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float = 1.0,
    seed: int | None = None,
    batch_size: int = 16,
    option_prefix: str = "--",
) -> PriorSamplingConfig:
    """A :class:`PriorSamplingConfig` from command-line style options: ``temperature`` 0 is greedy
    decoding, ``top_k`` 0 or ``None`` keeps every id; errors name ``option_prefix + name``."""
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(
            f"{option_prefix}temperature must be >= 0 (0: greedy), got {temperature!r}"
        )
    return PriorSamplingConfig(
        temperature=temperature or 1.0,
        do_sample=temperature > 0,
        top_k=top_k or None,
        top_p=top_p,
        guidance_scale=guidance_scale,
        seed=seed,
        batch_size=batch_size,
    )


def load_prior(
    model: str | os.PathLike, prior: str | os.PathLike | None = None, **kwargs: Any
) -> MultimodalPrior:
    """The tokenizer model ``model`` (:meth:`mmvq.MultimodalVQ.from_pretrained`: a directory or a
    Hub repo id) with its prior attached: ``prior`` (a directory written by
    ``MultimodalPrior.save_pretrained`` or ``recipes/train_prior.py``, or a repo id), by default
    ``model`` itself, i.e. its ``prior/`` folder. ``kwargs``: ``map_location`` and the Hub
    arguments of the model (``revision``, ``token``, ``cache_dir``)."""
    from mmvq.model import MultimodalVQ

    name = model if prior is None else prior
    path = Path(name).expanduser()
    if path.is_dir() and not any(
        (folder / PRIOR_CONFIG_FILE).is_file() for folder in (path, path / PRIOR_SUBFOLDER)
    ):
        where = f"model={str(name)!r}" if prior is None else f"prior={str(name)!r}"
        fix = "pass prior= (--prior):" if prior is None else "pass"
        raise ValueError(
            f"load_prior: {where} holds no prior (neither {PRIOR_CONFIG_FILE} nor "
            f"{PRIOR_SUBFOLDER}/{PRIOR_CONFIG_FILE}); {fix} a directory written by "
            "recipes/train_prior.py (its OUTPUT_DIR/final) or MultimodalPrior.save_pretrained"
            + (f", or save the prior into {path / PRIOR_SUBFOLDER}" if prior is None else "")
        )
    vq = MultimodalVQ.from_pretrained(model, **kwargs)
    hub = {k: kwargs[k] for k in ("token", "cache_dir") if k in kwargs}
    if prior is None and "revision" in kwargs:
        hub["revision"] = kwargs["revision"]
    return MultimodalPrior.from_pretrained(name, model=vq.eval(), **hub)


def write_prior_samples(
    prior: MultimodalPrior,
    out: str | os.PathLike,
    num_samples: int,
    *,
    source: Sequence[Mapping[str, Any]] | None = None,
    target: str | None = None,
    modalities: Sequence[str] | None = None,
    config: PriorSamplingConfig | None = None,
    prior_name: str | os.PathLike | None = None,
) -> list[Path]:
    """Sample and write the outputs (module docstring); returns the written paths, the ids file
    last.

    Args:
        prior: a prior whose tokenizer has its model attached (:func:`load_prior`).
        out: the output directory (created).
        num_samples: unconditional samples, or samples per source example.
        source: raw source examples ``[{modality: value}]`` (conditional generation of
            ``target``); ``None``: unconditional samples of ``modalities`` (default: the prior
            picks them).
        target: the one modality generated from ``source``.
        modalities: the modalities of unconditional samples.
        config: the sampling options (:func:`sampling_config`).
        prior_name: what ``prior_ids.json`` records as the prior (default: nothing).
    """
    from mmvq.outputs.files import sample_rate_of, write_outputs

    model = prior.tokenizer.model
    if model is None:
        raise ValueError(
            "write_prior_samples: the prior's tokenizer has no model attached; load it with "
            "load_prior(...) or MultimodalPrior.from_pretrained(..., model=vq)"
        )
    if source is not None:
        result = prior.generate(num_samples, source=list(source), target=target, config=config)
    else:
        result = prior.generate(num_samples, modalities=modalities, config=config)
    paths: list[Path] = []
    for m, outputs in (result.outputs or {}).items():
        kept = [o for o in outputs if o is not None]
        if kept:
            rate = sample_rate_of(model.adapters[m]) if m in model.adapters else None
            paths += write_outputs(kept, out, m, sample_rate=rate)
    ids_path = Path(out) / IDS_FILE
    ids_path.parent.mkdir(parents=True, exist_ok=True)
    record = {"prior": None if prior_name is None else str(prior_name)}
    record["input_ids"] = result.sequences.tolist()
    ids_path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return [*paths, ids_path]
