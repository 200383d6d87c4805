"""The ``mmvq`` command (run in-process through :func:`mmvq.cli.main`) and a recipe script (a real
process): every bad input is one line on stderr naming the option, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bad_inputs.helpers import CliFailure, case

ROOT = Path(__file__).resolve().parents[2]


@case("cli", CliFailure, r"^mmvq generate: error: --num-samples 1000000000 x 1 input\(s\) asks")
def generate_a_billion_images(ctx):
    ctx.cli("generate", ctx.model_dir, "--from-text", "a red circle", "--to", "image",
            "--num-images", "1000000000", "--out", ctx.tmp / "gen")  # fmt: skip


@case("cli", CliFailure, r"^mmvq generate: error: --out '.*taken' is an existing file")
def generate_into_an_existing_file(ctx):
    (ctx.tmp / "taken").write_text("keep me")
    ctx.cli("generate", ctx.model_dir, "--from-text", "a red circle", "--to", "image",
            "--out", ctx.tmp / "taken")  # fmt: skip


@case("cli", CliFailure, r"^mmvq generate: error: --batch-size must be >= 1, got 0")
def generate_with_batch_size_zero(ctx):
    ctx.cli("generate", ctx.model_dir, "--from-text", "a red circle", "--batch-size", "0",
            "--out", ctx.tmp / "gen")  # fmt: skip


@case("cli", CliFailure, r"^mmvq decode: error: --out '.*taken' is an existing file")
def decode_into_an_existing_file(ctx):
    (ctx.tmp / "taken").write_text("keep me")
    codes = ctx.tmp / "codes.json"
    ctx.cli("encode", ctx.model_dir, "--text", "a red circle", "--out", codes)
    ctx.cli("decode", ctx.model_dir, codes, "--out", ctx.tmp / "taken")


@case("cli", CliFailure, r"^mmvq encode: error: --out '.*' is a directory; give a file name")
def encode_into_a_directory(ctx):
    ctx.cli("encode", ctx.model_dir, "--text", "a red circle", "--out", ctx.tmp)


@case("cli", CliFailure, r"^mmvq encode: error: --data needs --out FILE\.jsonl")
def encode_a_data_file_without_out(ctx):
    rows = ctx.tmp / "rows.jsonl"
    rows.write_text('{"text": "a red circle"}\n')
    ctx.cli("encode", ctx.model_dir, "--data", rows)


@case(
    "cli",
    CliFailure,
    r"^mmvq encode: error: .*rows\.jsonl line 2 \(row 1\), column 'image' names file "
    r"'missing\.png', which does not exist",
)
def encode_a_data_file_naming_a_missing_image(ctx):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(ctx.tmp / "red.png")
    rows = ctx.tmp / "rows.jsonl"
    rows.write_text('{"image": "red.png"}\n{"image": "missing.png"}\n')
    try:
        ctx.cli("encode", ctx.model_dir, "--data", rows, "--out", ctx.tmp / "codes.jsonl")
    finally:  # refused while reading DATA: no codes file, not even a partial one
        assert not list(ctx.tmp.glob("codes.jsonl*"))


@case("cli", CliFailure, r"^mmvq encode: error: --text: text holds a lone surrogate")
def encode_a_lone_surrogate(ctx):
    ctx.cli("encode", ctx.model_dir, "--text", "a \ud800 circle")


@case(
    "cli",
    CliFailure,
    r"^mmvq encode: error: --image: image: file '.*bomb\.png' claims 900000000 pix",
)
def encode_a_decompression_bomb(ctx):
    from bad_inputs.helpers import png_claiming

    (ctx.tmp / "bomb.png").write_bytes(png_claiming(30000, 30000))
    ctx.cli("encode", ctx.model_dir, "--image", ctx.tmp / "bomb.png")


@case("cli", CliFailure, r"^mmvq encode: error: --depth: unknown modality 'depth'")
def encode_an_unknown_modality(ctx):
    ctx.cli("encode", ctx.model_dir, "--depth", "x.png")


@case(
    "cli",
    CliFailure,
    r"^mmvq encode: error: .*carries code \(code file\(s\) adapters/text/hack\.py\)",
)
def encode_with_a_model_carrying_code(ctx):
    import shutil

    model = ctx.tmp / "model"
    shutil.copytree(ctx.model_dir, model)
    (model / "adapters" / "text" / "hack.py").write_text("raise SystemExit\n")
    ctx.cli("encode", model, "--text", "a red circle")


@case("cli", CliFailure, r"^mmvq train: error: .*TrainConfig\.on_bad_row")
def train_with_an_unknown_bad_row_policy(ctx):
    config = ctx.tmp / "run.yaml"
    config.write_text(f"output_dir: {ctx.tmp / 'run'}\non_bad_row: drop\nmax_steps: 1\n")
    ctx.cli("train", config)


@case("cli", CliFailure, r"^mmvq train: error: output_dir '.*' belongs to another run")
def train_into_another_runs_directory(ctx):
    run = ctx.run_dir()
    config = ctx.tmp / "run.yaml"
    config.write_text(f"output_dir: {run}\nmax_steps: 1\nreport_to: none\ntqdm: false\n")
    ctx.cli("train", config)


@case("cli", CliFailure, r"^fuse_image_text\.py: error: .*outputs of an earlier run")
def recipe_script_into_an_unknown_runs_directory(ctx):
    run = ctx.tmp / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train_log.jsonl").write_text("{}\n")
    cmd = [sys.executable, str(ROOT / "recipes" / "fuse_image_text.py"), "--output_dir", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    raise CliFailure(proc.returncode, proc.stderr.strip().splitlines()[-1])
