"""What each part of the concept level buys: the default recipe with one part removed at a time.

Runs ``recipes/fuse_image_text.py`` (the built-in shapes data, image + text) once per variant,
each in its own output folder with the same seed, and prints one table of the eval metrics that
matter for fusion: concept-level agreement of paired image and caption, retrieval R@1 by concept
codes, translation (from both levels and from concept codes alone) and image PSNR. Not a test (each
variant is a full training run; about 6-9 minutes each on a 2-core CPU at the recipe's 800 steps);
its table goes in README::

    python bench/bench_concept_ablation.py                       # every variant, the recipe's steps
    python bench/bench_concept_ablation.py --max_steps 300 --variants full,no_concept_level

Extra recipe flags can follow ``--``, e.g. ``-- --builtin_holdout 'purple triangle'``. The last
line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fuse_image_text.py"

#: variant -> ConceptConfig overrides (``--concept``) on top of the recipe's defaults
VARIANTS: dict[str, dict] = {
    "full": {},
    # the concept codebook's dead-code restarts stop at step 100 (the concept level's default)
    # instead of running all along (the recipe's)
    "early_restart_stop": {"codebook": {"restart_until": 100}},
    "no_concept_level": {"num_concepts": 0},
    "no_contrastive": {"contrastive_weight": 0.0},
    "no_match": {"match_weight": 0.0},
    "no_joint_assignment": {"joint_assignment": False},
    "no_detail_dropout": {"detail_dropout": 0.0},
    "no_decorrelation": {"decorrelation_weight": 0.0},
}

COLUMNS = (
    ("concept_same_code_agreement", "agreement"),
    ("retrieval_r1_image_to_text", "R@1 i->t"),
    ("retrieval_r1_text_to_image", "R@1 t->i"),
    ("image_to_text_exact_match", "i->t exact"),
    ("text_to_image_score", "t->i score"),
    ("image_to_text_concept_only_exact_match", "i->t exact (concept only)"),
    ("text_to_image_concept_only_score", "t->i score (concept only)"),
    ("image_psnr", "image PSNR"),
    ("same_code_agreement", "detail agreement"),
)


@functools.cache
def _recipe_concept() -> dict:
    """The recipe's own ``concept`` default, read from the script once per bench run."""
    return runpy.run_path(str(RECIPE))["DEFAULTS"].get("concept", {})


def concept_options(overrides: dict) -> dict:
    """The ``--concept`` value of a variant: the recipe's own concept options with the variant's
    on top (the flag replaces the recipe's options, so they are passed again; one level deep,
    so that a variant's ``codebook`` options keep the recipe's others)."""
    options = dict(_recipe_concept())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            value = {**options[key], **value}
        options[key] = value
    return options


def run_variant(name: str, overrides: dict, args: argparse.Namespace, extra: list[str]) -> dict:
    out = Path(args.output_dir) / name
    shutil.rmtree(out, ignore_errors=True)  # the bench owns its output folders
    cmd = [
        sys.executable,
        str(RECIPE),
        "--output_dir",
        str(out),
        *(["--max_steps", str(args.max_steps)] if args.max_steps else []),
        "--seed",
        str(args.seed),
        "--concept",
        json.dumps(concept_options(overrides)),
        *extra,
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    flat = metrics.get("eval", metrics)
    row = {key: flat.get(key) for key, _ in COLUMNS}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max_steps", type=int, default=None, help="training steps (default: the recipe's own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}"
    )
    parser.add_argument("--output_dir", default="outputs/bench_concept_ablation")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    rows = {}
    for name in names:
        rows[name] = run_variant(name, VARIANTS[name], args, extra)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print("| variant | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_cell(row[key]) for key, _ in COLUMNS) + " |")
    steps = args.max_steps or "recipe default"
    print(json.dumps({"steps": steps, "seed": args.seed, "variants": rows}))


if __name__ == "__main__":
    main()
