"""bench/bench_digits.py's settings (the bench itself trains for minutes and is not a test)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_spoken_digits_train_with_the_three_modality_recipes_steps_and_restarts() -> None:
    bench = runpy.run_path(str(ROOT / "bench" / "bench_digits.py"))
    recipe = runpy.run_path(str(ROOT / "recipes" / "fuse_image_text_audio.py"))["DEFAULTS"]
    assert bench["default_settings"](True) == (recipe["max_steps"], recipe["concept"])
    assert recipe["concept"]["codebook"]["restart_until"] > 100  # not the concept default
    assert bench["default_settings"](False) == (600, {})
