"""bench/bench_concept_ablation.py's variants (the bench itself trains for an hour and is not a
test)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from mmvq.concept import ConceptConfig
from mmvq.training.recipe_args import parse_recipe_args

ROOT = Path(__file__).resolve().parents[1]


def test_each_variant_is_the_recipes_concept_options_with_one_change() -> None:
    """A ``--concept`` flag replaces the recipe's concept options, so every variant passes them
    again: ``full`` is the recipe exactly, and each other variant differs from it in its own
    fields only."""
    bench = runpy.run_path(str(ROOT / "bench" / "bench_concept_ablation.py"))
    defaults = runpy.run_path(str(ROOT / "recipes" / "fuse_image_text.py"))["DEFAULTS"]

    def concept(argv: list[str]) -> ConceptConfig:
        return ConceptConfig.from_dict(parse_recipe_args(argv, defaults).model.concept or {})

    recipe = concept([])
    assert recipe.codebook, "the recipe sets concept options; the test would not tell"
    for name, overrides in bench["VARIANTS"].items():
        variant = concept(["--concept", json.dumps(bench["concept_options"](overrides))])
        changed = {k for k, v in variant.to_dict().items() if v != getattr(recipe, k)}
        assert changed == set(overrides), name
        if "codebook" in overrides:  # the recipe's other codebook options stay
            assert variant.codebook == {**recipe.codebook, **overrides["codebook"]}
