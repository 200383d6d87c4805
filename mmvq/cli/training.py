"""``mmvq train CONFIG.yaml [--option VALUE ...]``: the recipe runner on a config file."""

from __future__ import annotations

import argparse

from mmvq.cli.parser import subcommand


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the recipe's YAML (or JSON) config file")
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        metavar="--option VALUE",
        help="recipe options that override the file's, e.g. --max_steps 100 (after CONFIG)",
    )


@subcommand("train", help="train a model from a recipe config (YAML)", arguments=_train_arguments)
def train_command(args: argparse.Namespace) -> int:
    """``mmvq train CONFIG.yaml [--option VALUE ...]``: check the file, run the recipe runner."""
    from pathlib import Path

    import yaml

    from mmvq.training.recipe import recipe_main

    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; pass the recipe's YAML config"
        )
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(
            f"config file {str(path)!r} must be .yaml, .yml or .json, not {path.suffix!r}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(
            f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping of option: value, got "
            f"{type(data).__name__}"
        )
    recipe_main([str(path), *args.overrides])
    return 0
