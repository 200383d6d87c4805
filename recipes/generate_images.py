"""Draw images with a trained prior over a model's codes (stage 2), unconditionally or from a
caption: the same sampling and files as ``mmvq generate MODEL --prior PRIOR --to image``
(mmvq.prior.samples).

    python recipes/generate_images.py --model DIR --num_images 10       # DIR/prior/ holds the prior
    python recipes/generate_images.py --model outputs/fuse_image_text/final \
        --prior outputs/train_prior/final --num_images 10 --out samples/ --seed 1
    python recipes/generate_images.py --model org/name --from_text "a small red circle" --out drawn/

--prior defaults to the prior/ folder of --model (a Hub repo after recipes/train_prior.py
--push_to_hub, or a directory where you saved it). Writes OUT/image_000.png... and
OUT/prior_ids.json; the same --seed (and --batch_size) writes the same images. Every option: --help.
"""

from dataclasses import dataclass, field

from mmvq.prior.samples import load_prior, sampling_config, write_prior_samples
from mmvq.training.recipe import recipe_script
from mmvq.training.recipe_args import parse_argument_groups


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class GenerateImagesArguments:
    model: str = field(default="outputs/fuse_image_text/final", metadata=_help("The mmvq model."))
    prior: str | None = field(
        default=None, metadata=_help("The prior (default: the prior/ folder of --model).")
    )
    num_images: int = field(default=10, metadata=_help("Images (per caption with --from_text)."))
    out: str = field(default="samples", metadata=_help("Output directory (created)."))
    seed: int = field(default=0, metadata=_help("Sampling seed: the same seed, the same images."))
    from_text: str | None = field(default=None, metadata=_help("Draw this caption."))
    temperature: float = field(default=1.0, metadata=_help("0: greedy."))
    top_k: int = field(default=0, metadata=_help("Sample among the k likeliest ids (0: all)."))
    top_p: float | None = field(default=None, metadata=_help("Nucleus sampling mass."))
    guidance_scale: float = field(default=1.0, metadata=_help("With --from_text (1: off)."))
    batch_size: int = field(default=16, metadata=_help("Sequences sampled at a time."))
    device: str = field(default="cpu", metadata=_help("Where to run."))


def main(argv=None, defaults=None) -> list:
    (args,) = parse_argument_groups([GenerateImagesArguments], argv, defaults)
    prior = load_prior(args.model, args.prior, map_location=args.device)
    options = ("temperature", "top_k", "top_p", "guidance_scale", "seed", "batch_size")
    config = sampling_config(**{k: getattr(args, k) for k in options})
    source = None if args.from_text is None else [{"text": args.from_text}]
    paths = write_prior_samples(
        prior,
        args.out,
        args.num_images,
        source=source,
        target="image" if source else None,
        modalities=None if source else ["image"],
        config=config,
        prior_name=args.prior or args.model,
    )
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    raise SystemExit(recipe_script(main=main))
