"""The recipes and what they share (mmvq/training/recipe_args.py, mmvq/training/recipe.py): parsing,
model building, and the
recipe scripts themselves run in subprocesses."""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import TOKEN, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures "hub", "hub_server"

from mmvq.training.recipe import build_model, default_scorers, summary_keys
from mmvq.training.recipe_args import (
    HubArguments,
    ModelArguments,
    data_config,
    parse_recipe_args,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "recipes" / "configs"


def image_text_defaults() -> dict:
    """``recipes/fuse_image_text.py``'s ``DEFAULTS``, read from the script itself."""
    return runpy.run_path(str(ROOT / "recipes" / "fuse_image_text.py"))["DEFAULTS"]


def test_flags_override_recipe_defaults():
    args = parse_recipe_args(
        [
            "--max_steps",
            "3",
            "--balancer",
            "dwa",
            "--alignment",
            "0.2",
            "--text_column",
            "caption",
            "--cpu",
        ],
        defaults={"output_dir": "outputs/x", "max_steps": 10, "num_codes": 128},
    )
    assert args.train.max_steps == 3 and args.train.output_dir == "outputs/x" and args.train.cpu
    assert args.train.balancer.name == "dwa" and args.train.alignment.weight == 0.2
    assert args.model.num_codes == 128
    data = data_config(args.data, args.train)
    assert data.column_map(["image", "text"]) == {"image": "image", "text": "caption"}


def test_a_yaml_file_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "max_steps: 5\nseed: 3\nbalancer: {name: gradnorm, gradnorm_alpha: 0.5}\n"
        "image_column: img\n"
        "adapter_overrides: {image: {base_channels: 16, num_groups: 8}}\nmax_eval_samples: 7\n"
    )
    args = parse_recipe_args([str(config), "--max_steps", "9"], defaults={"output_dir": "o"})
    assert args.train.max_steps == 9 and args.train.seed == 3
    assert args.train.balancer.name == "gradnorm" and args.train.balancer.gradnorm_alpha == 0.5
    assert args.model.adapter_overrides == {"image": {"base_channels": 16, "num_groups": 8}}
    data = data_config(args.data, args.train)
    assert data.seed == 3 and data.max_eval_samples == 7 and data.columns == {"image": "img"}
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"max_steps": 4, "modalities": "image"}))
    args = parse_recipe_args([str(as_json)])
    assert args.train.max_steps == 4 and args.model.modality_list == ["image"]


def test_column_and_builtin_flags_come_from_the_registries():
    from toy_adapters import VecAdapter

    from mmvq.registry import register_adapter, unregister_adapter

    register_adapter("depth", VecAdapter)
    try:
        args = parse_recipe_args(
            ["--depth_column", "depth_map", "--text_column", "", "--builtin_resolution", "16"]
        )
        data = data_config(args.data, args.train)
    finally:
        unregister_adapter("depth")
    assert data.column_map(["image", "text", "depth"]) == {"image": "image", "depth": "depth_map"}
    assert data.builtin_options == {"resolution": 16}
    # --columns sets any modality; a modality's own flag wins over it
    args = parse_recipe_args(["--columns", "text=a,image=b", "--text_column", "c"])
    assert data_config(args.data, args.train).column_map(["image", "text"]) == {
        "image": "b",
        "text": "c",
    }


def test_bad_recipe_arguments_are_clear_errors(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("max_step: 5\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['max_step'\]"):
        parse_recipe_args([str(config)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_recipe_args([str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        HubArguments(push_to_hub=True)
    with pytest.raises(ValueError, match="preset must be one of"):
        ModelArguments(preset="huge")
    with pytest.raises(ValueError, match=r"names \['audoi'\], which are neither among the"):
        ModelArguments(adapter_overrides='{"audoi": {"n_mels": 8}}')
    with pytest.raises(ValueError, match="distinct modality names"):
        ModelArguments(modalities="image,image")


def test_overrides_of_modalities_not_trained_are_ignored_and_said_once(capsys):
    """A recipe's defaults for other modalities (fuse_image_text_audio.py's image overrides) do
    not get in the way of --modalities audio,text."""
    defaults = runpy.run_path(str(ROOT / "recipes" / "fuse_image_text_audio.py"))["DEFAULTS"]
    args = parse_recipe_args(["--modalities", "audio,text"], defaults=defaults)
    assert set(args.model.adapter_overrides) == {"audio"}
    err = capsys.readouterr().err
    assert (
        err.count("adapter_overrides for ['image'] ignored: not among --modalities audio,text") == 1
    )
    model = build_model(
        ModelArguments(
            modalities="audio,text",
            adapter_overrides={"image": {"base_channels": 4}, "audio": {"n_mels": 32}},
            code_dim=16,
            num_codes=16,
            decoder_dim=16,
            decoder_depth=1,
            decoder_heads=2,
        )
    )
    assert model.modalities == ("audio", "text") and model.adapters["audio"].config.n_mels == 32


def test_training_data_record_and_license_for_the_card(tmp_path):
    import datasets

    from mmvq.data import DataConfig
    from mmvq.training.recipe_card import model_license, training_data_record

    train = datasets.Dataset.from_dict({"text": ["a", "b", "c"]})
    builtin = DataConfig(builtin_num_train=3, builtin_num_eval=2)
    record = training_data_record(builtin, ["text"], train, train.select([0, 1]))
    assert record == {
        "dataset": "shapes",
        "dataset_name": "mmvq built-in 'shapes' data (generated, seed 0)",
        "train_split": "train",
        "train_examples": 3,
        "eval_split": "validation",
        "eval_examples": 2,
        "columns": {"text": "text"},
    }
    assert model_license(None, builtin, train) == "apache-2.0"
    hub = DataConfig(dataset_name="org/captions", eval_split="test")
    record = training_data_record(hub, ["text"], train, train)
    assert record["datasets"] == ["org/captions"] and record["eval_split"] == "test"
    folder = DataConfig(dataset_name="audiofolder", data_dir=str(tmp_path))
    assert "datasets" not in training_data_record(folder, ["text"], train, None)  # a builder
    assert model_license(None, hub, train) == "unknown"
    train.info.license = "cc-by-4.0"
    assert model_license(None, hub, train) == "cc-by-4.0"
    assert model_license("mit", hub, train) == "mit"


@pytest.mark.parametrize("name", ["image_text_gpu.yaml", "image_text_audio_gpu.yaml"])
def test_gpu_presets_parse(name):
    args = parse_recipe_args([str(CONFIGS / name)])
    assert args.model.preset == "gpu-base" and args.train.mixed_precision == "bf16"
    assert args.model.resolved()["code_dim"] == 256
    assert "image" in args.model.modality_list and "text" in args.model.modality_list


def test_wide_preset_widens_only_the_image_adapter():
    """recipes/configs/image_text_wide.yaml keeps every default of the recipe but the image's
    width (the file's adapter_overrides replace the recipe's, so it must repeat the others) and
    the concept restarts' stop at step 100 that its figures were measured with."""
    defaults = image_text_defaults()
    wide = parse_recipe_args([str(CONFIGS / "image_text_wide.yaml")], defaults)
    plain = parse_recipe_args([], defaults)
    image = dict(plain.model.adapter_overrides["image"], base_channels=32)
    assert wide.model.adapter_overrides == {"image": image}
    assert wide.model.concept == {"codebook": {"restart_until": 100}}
    same = dict(adapter_overrides=plain.model.adapter_overrides, concept=plain.model.concept)
    assert dataclasses.replace(wide.model, **same) == plain.model
    assert dataclasses.replace(wide.train, output_dir=plain.train.output_dir) == plain.train
    assert wide.train.output_dir == "outputs/fuse_image_text_wide"


def test_generation_preset_is_the_wide_preset_trained_longer():
    """recipes/configs/image_text_generation.yaml: the wide preset's model, 1200 steps with the
    GAN from three quarters of them (as the default's 600 of 800); nothing else changes."""
    defaults = image_text_defaults()
    wide = parse_recipe_args([str(CONFIGS / "image_text_wide.yaml")], defaults)
    gen = parse_recipe_args([str(CONFIGS / "image_text_generation.yaml")], defaults)
    assert gen.model == wide.model
    assert (gen.train.max_steps, gen.train.gan_start_step) == (1200, 900)
    assert gen.train.gan_start_step / gen.train.max_steps == (
        wide.train.gan_start_step / wide.train.max_steps
    )
    same = dict(max_steps=wide.train.max_steps, gan_start_step=wide.train.gan_start_step)
    assert dataclasses.replace(gen.train, output_dir=wide.train.output_dir, **same) == wide.train
    assert gen.train.output_dir == "outputs/fuse_image_text_generation"


def test_image_text_recipe_restarts_concept_codes_for_the_whole_run():
    """The image + text recipe restarts dead concept codes all run long (the concept level's
    default stops at step 100: the concept codebook then shrank on some seeds, and retrieval by
    concept codes missed on three seeds of six); its wide and generation presets keep the stop
    at step 100 their figures were measured with, and a --concept flag replaces the recipe's
    concept options."""
    from mmvq.concept.config import CONCEPT_CODEBOOK_DEFAULTS

    defaults = image_text_defaults()

    def restart_until(argv: list[str]) -> int:
        model = build_model(parse_recipe_args(argv, defaults).model)
        return model.concept.codebook.config.restart_until

    assert CONCEPT_CODEBOOK_DEFAULTS["restart_until"] == 100
    assert restart_until([]) == 0
    for preset in ("image_text_wide.yaml", "image_text_generation.yaml"):
        assert restart_until([str(CONFIGS / preset)]) == 100
    assert restart_until(["--concept", '{"num_concepts": 2}']) == 100


def test_build_model_applies_presets_and_overrides():
    args = ModelArguments(
        modalities="image,text",
        num_codes=32,
        code_dim=16,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
        adapter_overrides={
            "image": {"base_channels": 16, "num_groups": 8},
            "text": {"d_model": 32, "num_heads": 2},
        },
        codebook_overrides="restart_every=7",
    )
    model = build_model(args)
    assert model.modalities == ("image", "text")
    assert (
        model.adapters["image"].config.base_channels == 16
        and model.adapters["image"].config.resolution == 32
    )
    assert all(a.config.code_dim == 16 for a in model.adapters.values())
    assert model.config.codebook.num_codes == 32 and model.config.codebook.restart_every == 7
    assert model.config.decoder.dim == 32
    # the run summary shows both code levels and retrieval by concept codes
    keys = summary_keys(model)
    assert {"image_psnr", "text_to_image_score", "image_to_text_exact_match"} <= set(keys)
    assert {"concept_same_code_agreement", "retrieval_r1_image_to_text"} <= set(keys)
    off = build_model(dataclasses.replace(args, concept="num_concepts=0"))
    assert not any("concept" in k or "retrieval" in k for k in summary_keys(off))


def test_text_to_image_scoring_only_for_the_builtin_shapes_data():
    args = parse_recipe_args([])
    assert set(default_scorers(data_config(args.data, args.train), ["image", "text"])) == {
        "text->image"
    }
    args = parse_recipe_args(["--train_file", "data.jsonl"])
    assert default_scorers(data_config(args.data, args.train), ["image", "text"]) == {}


def _run(script: str, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / script),
            "--output_dir",
            str(tmp_path / "out"),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_image_text_recipe_with_its_defaults_for_two_steps(tmp_path):
    proc = _run(
        "fuse_image_text.py", tmp_path, "--max_steps", "2", "--report_to", "none", "--tqdm", "false"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "image_psnr",
        "image_ssim",
        "text_exact_match",
        "text_token_accuracy",
        "text_to_image_score",
        "image_to_text_exact_match",
        "codebook_usage",
        "perplexity",
        "same_code_agreement",
        "train_seconds",
    ):
        assert key in metrics, key
    assert metrics["steps"] == 2 and metrics["eval_samples"] == 128
    assert (out / "samples" / "step-2" / "image.png").is_file() and (
        out / "samples" / "step-2" / "text.txt"
    ).is_file()
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert (out / "final" / "config.json").is_file()
    assert f"Outputs in {out.resolve()}" in proc.stdout and "text_to_image_score" in proc.stdout


@pytest.mark.slow
def test_image_text_audio_recipe_runs(tmp_path):
    proc = _run(
        "fuse_image_text_audio.py",
        tmp_path,
        "--max_steps",
        "2",
        "--builtin_num_train",
        "32",
        "--builtin_num_eval",
        "8",
        "--per_device_batch_size",
        "4",
        "--max_eval_samples",
        "8",
        "--num_sample_rows",
        "2",
        "--report_to",
        "none",
        "--tqdm",
        "false",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in (
        "audio_logmel_l1",
        "audio_to_text_exact_match",
        "image_to_text_exact_match",
        "text_to_image_score",
    ):
        assert key in metrics, key
    assert set(metrics["perplexity"]) == {"image", "text", "audio"}
    wavs = sorted(p.name for p in (tmp_path / "out" / "samples" / "step-2").glob("*.wav"))
    assert "audio_00_reconstruction.wav" in wavs and "audio_00_from_text.wav" in wavs


def _audiofolder(root: Path, rows: int = 6) -> Path:
    """An audiofolder: train/ with short tones + metadata.jsonl captions."""
    import numpy as np
    import soundfile as sf

    (root / "train").mkdir(parents=True)
    with open(root / "train" / "metadata.jsonl", "w") as f:
        for i in range(rows):
            tone = np.sin(2 * np.pi * (220 + 110 * i) * np.arange(4000) / 8000).astype("float32")
            sf.write(root / "train" / f"{i}.wav", tone, 8000)
            f.write(json.dumps({"file_name": f"{i}.wav", "text": f"tone {i}"}) + "\n")
    return root


_SMALL = (
    "--max_steps", "1", "--per_device_batch_size", "2", "--max_eval_samples", "2",
    "--num_sample_rows", "2", "--report_to", "none", "--tqdm", "false", "--save_every", "0",
    "--eval_every", "0", "--num_codes", "32", "--decoder_dim", "32", "--decoder_depth", "1",
    "--decoder_heads", "2",
)  # fmt: skip


@pytest.mark.slow
def test_audio_text_subset_of_the_three_modality_recipe_on_an_audiofolder(tmp_path):
    """`fuse_image_text_audio.py --modalities audio,text --dataset_name audiofolder` (no
    torchcodec needed); its image defaults are ignored, said once; the card records the data."""
    from huggingface_hub import ModelCard

    folder = _audiofolder(tmp_path / "sounds")
    proc = _run(
        "fuse_image_text_audio.py", tmp_path, "--modalities", "audio,text",
        "--dataset_name", "audiofolder", "--data_dir", str(folder), *_SMALL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr.count("adapter_overrides for ['image'] ignored") == 1
    assert "Loaded train split 'train' (6 rows)" in proc.stderr  # INFO is visible by default
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "audio_logmel_l1" in metrics and "audio_to_text_exact_match" in metrics
    card = ModelCard.load(tmp_path / "out" / "final" / "README.md")
    assert card.data.license == "unknown" and "audio" in card.data.tags
    assert f"- **dataset_name**: audiofolder in {folder}" in card.text


@pytest.mark.slow
def test_recipe_push_to_hub_uploads_the_card_its_metrics_and_grid(hub, tmp_path):
    """`--push_to_hub` to the loopback Hub: the pushed card is the local final/README.md (metrics
    table, sample grid, training data, license), its metadata parses with ModelCard and carries
    model-index metrics, and the grid and eval_results.json are uploaded with it."""
    from huggingface_hub import ModelCard

    proc = _run(
        "fuse_image_text.py", tmp_path, "--builtin_num_train", "8", "--builtin_num_eval", "4",
        "--push_to_hub", "--hub_model_id", "org/shapes-tok", "--hub_token", TOKEN, *_SMALL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = hub.files("org/shapes-tok")
    final = tmp_path / "out" / "final"
    assert files["README.md"] == (final / "README.md").read_bytes()
    assert files["sample_grid.png"] == (final / "sample_grid.png").read_bytes()
    assert {"config.json", "model.safetensors", "eval_results.json"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    data = card.data
    assert data.library_name == "mmvq" and data.license == "apache-2.0"
    assert data.pipeline_tag == "any-to-any" and {"image", "text"} <= set(data.tags)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results["image_psnr"] == pytest.approx(metrics["image_psnr"])
    assert results["text_to_image_score"] == pytest.approx(metrics["text_to_image_score"])
    assert "train_seconds" not in results
    assert {r.dataset_type for r in data.eval_results} == {"shapes"}
    assert "![Sample grid](sample_grid.png)" in card.text and "| image_psnr |" in card.text
    assert "- **dataset**: shapes" in card.text and "- **train_examples**: 8" in card.text
    assert 'MultimodalVQ.from_pretrained("org/shapes-tok")' in card.text
