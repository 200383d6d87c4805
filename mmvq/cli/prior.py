"""``mmvq generate MODEL --prior PRIOR``: sampling from a prior over MODEL's codes (stage 2,
:mod:`mmvq.prior`) instead of perturbing a source's codes.

* no source: ``--num-samples N`` unconditional samples of the ``--to`` modalities (default: the
  prior picks the modalities);
* sources (``--from-<modality> VALUE``): ``--num-samples`` samples of the one ``--to`` modality
  per source example, conditioned on the source's codes (a caption -> pictures of it, a picture
  -> its caption).

The outputs are written as ``mmvq generate`` writes them (``DIR/<modality>_<i>.<ext>``), plus
``DIR/prior_ids.json``, the sampled id sequences (:mod:`mmvq.prior.samples`, which
``recipes/generate_images.py`` runs too). The same ``--seed`` (and ``--batch-size``, the
sequences the LM samples at a time) gives the same outputs. ``mmvq generate`` checks the options,
the number of outputs and ``--out`` before the model loads, with or without ``--prior``.
"""

from __future__ import annotations

import argparse
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


def generate_with_prior(args: argparse.Namespace, values: dict[str, list[Any]]) -> int:
    """Sample (see the module docstring; :func:`mmvq.prior.samples.write_prior_samples`, what
    ``recipes/generate_images.py`` runs too), write the outputs and ``prior_ids.json``; print the
    paths."""
    from mmvq.prior import MultimodalPrior
    from mmvq.prior.samples import sampling_config, write_prior_samples

    config = sampling_config(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    model = load_model(args)
    prior = MultimodalPrior.from_pretrained(args.prior, model=model)
    source, target = None, None
    if values:
        targets = args.to or [m for m in prior.tokenizer.modalities if m not in values]
        if len(targets) != 1:
            raise ValueError(
                f"with --prior and a source, generate one modality: add --to MODALITY (one of "
                f"{targets})"
            )
        size = len(next(iter(values.values())))
        source = [{m: items[i] for m, items in values.items()} for i in range(size)]
        target = targets[0]
    paths = write_prior_samples(
        prior,
        args.out,
        args.num_samples,
        source=source,
        target=target,
        modalities=None if values else args.to,
        config=config,
        prior_name=args.prior,
    )
    for path in paths:
        print(path)
    return 0
