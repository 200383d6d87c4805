"""``mmvq generate MODEL --prior PRIOR``: sampling from a prior over MODEL's codes (stage 2,
:mod:`mmvq.prior`) instead of perturbing a source's codes.

* no source: ``--num-samples N`` unconditional samples of the ``--to`` modalities (default: the
  prior picks the modalities);
* sources (``--from-<modality> VALUE``): ``--num-samples`` samples of the one ``--to`` modality
  per source example, conditioned on the source's codes (a caption -> pictures of it, a picture
  -> its caption).

The outputs are written as ``mmvq generate`` writes them (``DIR/<modality>_<i>.<ext>``), plus
``DIR/prior_ids.json``, the sampled id sequences. The same ``--seed`` (and ``--batch-size``, the
sequences the LM samples at a time) gives the same outputs. ``mmvq generate`` checks the options,
the number of outputs and ``--out`` before the model loads, with or without ``--prior``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmvq.cli.models import load_model

__all__ = ["generate_with_prior", "prior_arguments"]


def prior_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only sampling from a prior uses."""
    parser.add_argument(
        "--prior",
        metavar="PRIOR",
        help="sample from this prior over MODEL's codes (a directory written by "
        "recipes/train_prior.py or MultimodalPrior.save_pretrained, or a Hub repo id whose "
        "prior/ folder holds it); with no source, draws unconditional samples",
    )
    parser.add_argument(
        "--top-p", type=float, help="with --prior: nucleus sampling threshold in (0, 1]"
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="with --prior and a source: classifier-free guidance scale (default: 1.0, off)",
    )


def _sampling(args: argparse.Namespace) -> Any:
    from mmvq.prior import PriorSamplingConfig

    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
    return PriorSamplingConfig(
        temperature=args.temperature or 1.0,
        do_sample=args.temperature > 0,
        top_k=args.top_k or None,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        batch_size=args.batch_size,
    )


def generate_with_prior(args: argparse.Namespace, values: dict[str, list[Any]]) -> int:
    """Sample (see the module docstring), write the outputs and ``prior_ids.json``; print the
    paths."""
    from mmvq.outputs.files import sample_rate_of, write_outputs
    from mmvq.prior import MultimodalPrior

    config = _sampling(args)
    model = load_model(args)
    prior = MultimodalPrior.from_pretrained(args.prior, model=model)
    if values:
        targets = args.to or [m for m in prior.tokenizer.modalities if m not in values]
        if len(targets) != 1:
            raise ValueError(
                f"with --prior and a source, generate one modality: add --to MODALITY (one of "
                f"{targets})"
            )
        size = len(next(iter(values.values())))
        source = [{m: items[i] for m, items in values.items()} for i in range(size)]
        result = prior.generate(args.num_samples, source=source, target=targets[0], config=config)
    else:
        result = prior.generate(args.num_samples, modalities=args.to, config=config)
    paths: list[Path] = []
    for m, outputs in (result.outputs or {}).items():
        kept = [o for o in outputs if o is not None]
        if kept:
            rate = sample_rate_of(model.adapters[m]) if m in model.adapters else None
            paths += write_outputs(kept, args.out, m, sample_rate=rate)
    ids_path = Path(args.out) / "prior_ids.json"
    ids_path.parent.mkdir(parents=True, exist_ok=True)
    ids_path.write_text(
        json.dumps({"prior": str(args.prior), "input_ids": result.sequences.tolist()}) + "\n",
        encoding="utf-8",
    )
    for path in [*paths, ids_path]:
        print(path)
    return 0
