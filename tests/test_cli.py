"""The `mmvq` subcommands train / eval / encode / decode / generate / push (mmvq/cli/).

Commands run in-process through ``mmvq.cli.main`` on tiny models saved to a temp dir; one test
runs the installed console script in a subprocess. Pushes go to the loopback Hub over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from hub_server import TOKEN, HubServer, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures "hub", "hub_server"
from PIL import Image
from tiny_models import (
    IMAGE_SPEC,
    TEXT_SPEC,
    tiny_config,
    tiny_model,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
    vector_values,
)

from mmvq.cli import main
from mmvq.concept import ConceptConfig
from mmvq.model import MultimodalVQ

pytestmark = [pytest.mark.usefixtures("vector_plugin"), pytest.mark.timeout(120)]

A = vector_values(8, 2, seed=11)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A saved model with modalities a, b (vector plugin) and text (built-in)."""
    directory = tmp_path / "model"
    tiny_model(seed=5, extra={"text": TEXT_SPEC}).save_pretrained(directory)
    return directory


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _batch(model: MultimodalVQ, **values: list) -> dict:
    return {
        m: model.adapters[m].collate([model.adapters[m].preprocess(v) for v in vs])
        for m, vs in values.items()
    }


# ---------------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("train", "CONFIG"),
        ("eval", "--column MODALITY=COLUMN"),
        ("encode", "--<modality> VALUE"),
        ("decode", "--to MODALITY"),
        ("generate", "softmax(-||z - e_k||^2 / (T * D))"),
        ("push", "--private"),
    ],
)
def test_help_of_each_command(capsys: pytest.CaptureFixture, command: str, expected: str) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert expected in " ".join(capsys.readouterr().out.split())


# -------------------------------------------------------------------------------- encode
def test_encode_to_stdout_matches_the_model(capsys, model_dir: Path) -> None:
    code, out, err = run(
        capsys, "encode", model_dir, "--input-json", f"a={json.dumps(A[0])}", "--text", "hi"
    )
    assert code == 0, err
    data = json.loads(out)
    model = MultimodalVQ.from_pretrained(model_dir)
    expected = model.encode(_batch(model, a=[A[0]], text=["hi"]))
    assert data["num_codes"] == 32 and set(data["codes"]) == {"a", "text"}
    assert data["num_concept_codes"] == model.config.concept.num_codes
    for m in expected.modalities:
        assert data["codes"][m] == expected.detail[m].tolist()
        assert data["concept_codes"][m] == expected.concept[m].tolist()


def test_encode_batch_to_file_and_equals_form(capsys, model_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "codes" / "c.json"
    code, out, err = run(
        capsys, "encode", model_dir, "--text=one", "--input", "text=two", "--out", out_file
    )
    assert code == 0, err and f"wrote codes to {out_file}" in out
    codes = json.loads(out_file.read_text())["codes"]["text"]
    model = MultimodalVQ.from_pretrained(model_dir)
    assert codes == model.encode(_batch(model, text=["one", "two"])).detail["text"].tolist()


def test_encode_level_selects_the_codes_and_concept_codes_decode(
    capsys, model_dir: Path, tmp_path: Path
) -> None:
    model = MultimodalVQ.from_pretrained(model_dir)
    expected = model.encode(_batch(model, a=[A[0]], text=["hi"]))
    code, out, err = run(
        capsys,
        "encode",
        model_dir,
        "--input-json",
        f"a={json.dumps(A[0])}",
        "--text",
        "hi",
        "--level",
        "concept",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["codes"] == {} and set(data["concept_codes"]) == {"a", "text"}
    assert data["concept_codes"]["text"] == expected.concept["text"].tolist()
    code, out, err = run(capsys, "encode", model_dir, "--text", "hi", "--level", "detail")
    assert code == 0, err
    data = json.loads(out)
    assert "concept_codes" not in data and data["codes"]["text"] == expected.detail["text"].tolist()
    # concept codes alone are enough to decode another modality
    concept_file = tmp_path / "concept.json"
    run(capsys, "encode", model_dir, "--text", "hi", "--level", "concept", "--out", concept_file)
    code, out, err = run(
        capsys, "decode", model_dir, concept_file, "--to", "a", "--out", tmp_path / "o"
    )
    assert code == 0, err
    written = [Path(line) for line in out.splitlines()]
    assert written and all(p.exists() for p in written)


def test_encode_level_concept_needs_a_concept_level(capsys, tmp_path: Path) -> None:
    config = tiny_config()
    config.concept = ConceptConfig(num_concepts=0)
    torch.manual_seed(0)
    MultimodalVQ.build({"a": ("vector", {})}, config).save_pretrained(tmp_path / "m")
    code, _, err = run(
        capsys,
        "encode",
        tmp_path / "m",
        "--input-json",
        f"a={json.dumps(A[0])}",
        "--level",
        "concept",
    )
    assert_one_line_error(code, err, "--level concept", "num_concepts=0", "--level detail")


# -------------------------------------------------------------------------------- decode
def test_decode_writes_files_by_output_type(capsys, model_dir: Path, tmp_path: Path) -> None:
    codes_file = tmp_path / "codes.json"
    assert (
        run(
            capsys,
            "encode",
            model_dir,
            "--input-json",
            f"a={json.dumps(A[1])}",
            "--out",
            codes_file,
        )[0]
        == 0
    )
    code, out, err = run(
        capsys,
        "decode",
        model_dir,
        codes_file,
        "--to",
        "b",
        "--to",
        "text",
        "--out",
        tmp_path / "dec",
    )
    assert code == 0, err
    assert [Path(p).name for p in out.split()] == ["b_000.json", "text_000.txt"]
    model = MultimodalVQ.from_pretrained(model_dir)
    codes = model.encode(_batch(model, a=[A[1]]))
    recon = model.decode(codes, targets=["b", "text"])
    assert (
        json.loads((tmp_path / "dec" / "b_000.json").read_text())
        == model.adapters["b"].postprocess(recon["b"])[0]
    )
    assert (tmp_path / "dec" / "text_000.txt").read_text() == model.adapters["text"].postprocess(
        recon["text"]
    )[0]


def test_decode_default_targets_are_the_coded_modalities(
    capsys, model_dir: Path, tmp_path: Path
) -> None:
    codes_file = tmp_path / "codes.json"
    run(capsys, "encode", model_dir, "--text", "x", "--out", codes_file)
    code, out, _ = run(capsys, "decode", model_dir, codes_file, "--out", tmp_path / "d")
    assert code == 0 and [Path(p).name for p in out.split()] == ["text_000.txt"]


# ------------------------------------------------------------------------------ generate
def test_generate_deterministic_at_zero_temperature(
    capsys, model_dir: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        capsys,
        "generate",
        model_dir,
        "--from-text",
        "red",
        "--to",
        "b",
        "--num-images",
        "2",
        "--temperature",
        "0",
        "--out",
        tmp_path / "g",
    )
    assert code == 0, err
    assert [Path(p).name for p in out.split()] == ["b_000.json", "b_001.json", "codes.json"]
    model = MultimodalVQ.from_pretrained(model_dir)
    expected = model.adapters["b"].postprocess(
        model.translate(_batch(model, text=["red"]), ["b"])["b"]
    )[0]
    for i in range(2):  # batched (2 rows) vs single row: equal up to float rounding
        assert json.loads((tmp_path / "g" / f"b_00{i}.json").read_text()) == pytest.approx(
            expected, abs=1e-5
        )


def test_generate_variations_are_seeded_and_decodable(
    capsys, model_dir: Path, tmp_path: Path
) -> None:
    args = [
        "generate",
        model_dir,
        "--from-text",
        "red circle",
        "--num-samples",
        "4",
        "--temperature",
        "50",
        "--top-k",
        "0",
        "--seed",
        "3",
    ]
    assert run(capsys, *args, "--out", tmp_path / "g1")[0] == 0
    assert run(capsys, *args, "--out", tmp_path / "g2")[0] == 0
    first = sorted(p.name for p in (tmp_path / "g1").iterdir())
    assert first == [
        "a_000.json",
        "a_001.json",
        "a_002.json",
        "a_003.json",
        "b_000.json",
        "b_001.json",
        "b_002.json",
        "b_003.json",
        "codes.json",
    ]
    for name in first:
        assert (tmp_path / "g1" / name).read_bytes() == (tmp_path / "g2" / name).read_bytes()
    rows = json.loads((tmp_path / "g1" / "codes.json").read_text())["codes"]["text"]
    assert len({tuple(r) for r in rows}) > 1  # the samples differ
    # decoding the sampled source codes to the same targets reproduces the generated outputs
    code, _, err = run(
        capsys,
        "decode",
        model_dir,
        tmp_path / "g1" / "codes.json",
        "--to",
        "a",
        "--to",
        "b",
        "--out",
        tmp_path / "d",
    )
    assert code == 0, err
    for name in first[:-1]:
        assert (tmp_path / "d" / name).read_text() == (tmp_path / "g1" / name).read_text()


def test_image_model_png_in_png_out(capsys, tmp_path: Path) -> None:
    directory = tmp_path / "img_model"
    tiny_model(seed=1, extra={"image": IMAGE_SPEC}).save_pretrained(directory)
    png = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (250, 0, 0)).save(png)
    codes_file = tmp_path / "codes.json"
    assert run(capsys, "encode", directory, "--image", png, "--out", codes_file)[0] == 0
    code, _, err = run(
        capsys,
        "decode",
        directory,
        codes_file,
        "--to",
        "image",
        "--to",
        "a",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    assert Image.open(tmp_path / "o" / "image_000.png").size == (16, 16)
    code, err = run(capsys, "encode", directory, "--image", tmp_path / "missing.png")[::2]
    assert_one_line_error(code, err, "mmvq encode: error: --image:", "missing.png' does not exist")
    code, _, err = run(
        capsys, "generate", directory, "--from-a", json.dumps(A[0]), "--out", tmp_path / "x"
    )
    assert_one_line_error(
        code, err, "--from-a:", "must be a list/tuple of numbers"
    )  # strings reach preprocess
    code, _, err = run(
        capsys,
        "generate",
        directory,
        "--from-json",
        f"a={json.dumps(A[0])}",
        "--out",
        tmp_path / "x",
    )
    assert code == 0, err
    assert Image.open(tmp_path / "x" / "image_000.png").size == (16, 16)


# ---------------------------------------------------------------------------------- eval
@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [
        {"a": v, "text": f"item {i}", "extra": i} for i, v in enumerate(vector_values(8, 5, seed=2))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_on_a_jsonl_file(capsys, model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "metrics.json"
    code, out, err = run(
        capsys, "eval", model_dir, data_file, "--out", out_file, "--batch-size", "2",
        "--sample-dir", tmp_path / "samples",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics == json.loads(out_file.read_text())
    assert metrics["eval_samples"] == 5
    assert {"a_rec_loss", "a_mse", "text_rec_loss", "text_cer", "a_to_text_cer"} <= set(metrics)
    assert set(metrics["perplexity"]) == {"a", "text"}
    assert not any(k.startswith("b_") for k in metrics)  # no column for b: not evaluated
    assert any((tmp_path / "samples").iterdir())
    model = MultimodalVQ.from_pretrained(model_dir)
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    with torch.no_grad():
        direct = model(_batch(model, a=[r["a"] for r in rows], text=[r["text"] for r in rows]))
    assert metrics["a_rec_loss"] == pytest.approx(float(direct.rec_loss_mean["a"]), rel=1e-5)


def test_encode_a_data_file_writes_one_codes_row_per_row(
    capsys, model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    """``mmvq encode MODEL --data rows.jsonl --out codes.jsonl``: batched (5 rows in batches of
    2), a progress bar, one line per row equal to encoding that row alone."""
    out_file = tmp_path / "out" / "codes.jsonl"
    code, out, err = run(
        capsys, "encode", model_dir, "--data", data_file, "--out", out_file, "--batch-size", "2"
    )
    assert code == 0, err
    assert out.split() == [str(out_file)] and "encoding" in err and "5/5" in err  # tqdm's bar
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2, 3, 4]
    assert not (tmp_path / "out" / "codes.jsonl.tmp").exists()
    model = MultimodalVQ.from_pretrained(model_dir)
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    for line, row in zip(lines, rows):
        alone = model.encode(_batch(model, a=[row["a"]], text=[row["text"]]))
        assert set(line["codes"]) == {"a", "text"}  # b has no column: not encoded
        assert line["codes"]["a"] == alone.detail["a"][0].tolist()
        assert line["codes"]["text"] == alone.detail["text"][0].tolist()
        assert line["concept_codes"]["text"] == alone.concept["text"][0].tolist()
    # --level, --column/--modalities and --limit as mmvq eval reads DATA
    run(capsys, "encode", model_dir, "--data", data_file, "--out", out_file, "--level", "detail",
        "--modalities", "text", "--limit", "3")  # fmt: skip
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 3 and all(set(r) == {"row", "codes"} for r in lines)
    assert all(set(r["codes"]) == {"text"} for r in lines)
    # a row that fails mid-file (the third batch): no codes file, not even a partial one
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    rows[4]["a"] = rows[4]["a"][:3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fresh = tmp_path / "fresh" / "codes.jsonl"
    code, _, err = run(
        capsys, "encode", model_dir, "--data", bad, "--out", fresh, "--batch-size", "2"
    )
    assert code == 2 and "must have length 8" in err
    assert not list(fresh.parent.glob("codes.jsonl*"))
    # bad uses: one line naming the fix
    for extra, message in [
        ([], "--data needs --out FILE.jsonl"),
        (["--out", out_file, "--text", "hi"], "without --<modality> inputs"),
        (["--out", out_file, "--batch-size", "0"], "--batch-size must be >= 1"),
    ]:
        code, _, err = run(capsys, "encode", model_dir, "--data", data_file, *extra)
        assert_one_line_error(code, err, message)
    code, _, err = run(
        capsys, "encode", model_dir, "--data", tmp_path / "no.jsonl", "--out", out_file
    )
    assert_one_line_error(code, err, "DATA", "does not exist")


def test_eval_on_a_saved_dataset_with_column_mapping(
    capsys, model_dir: Path, tmp_path: Path
) -> None:
    rows = [{"vec": v, "caption": "x"} for v in vector_values(12, 6)]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(
        tmp_path / "ds"
    )
    code, out, err = run(
        capsys,
        "eval",
        model_dir,
        tmp_path / "ds",
        "--column",
        "b=vec",
        "--column",
        "text=caption",
        "--limit",
        "4",
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["eval_samples"] == 4 and "b_mse" in metrics and "text_cer" in metrics


# ---------------------------------------------------------------------------------- push
def test_push_private_branch_with_token(
    capsys, hub: HubServer, model_dir: Path, tmp_path: Path
) -> None:
    Image.new("RGB", (4, 4)).save(model_dir / "sample_grid.png")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"perplexity/a": 2.5}))
    code, out, err = run(
        capsys,
        "push",
        model_dir,
        "org/cli",
        "--private",
        "--token",
        TOKEN,
        "--revision",
        "dev",
        "--metrics",
        metrics,
        "--training-data",
        "random vectors",
    )
    assert code == 0, err
    assert out.strip().startswith(f"{hub.url}/org/cli/commit/")
    repo = hub.repos["org/cli"]
    assert repo.private and set(repo.branches) == {"main", "dev"}
    files = hub.files("org/cli", "dev")
    readme = files["README.md"].decode()
    assert "sample_grid.png" in files and "random vectors" in readme and "| 2.5 |" in readme
    loaded = MultimodalVQ.from_pretrained(
        "org/cli", revision="dev", token=TOKEN, cache_dir=tmp_path / "c"
    )
    local = MultimodalVQ.from_pretrained(model_dir)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in local.state_dict().items())
    # ... and the CLI loads it from the Hub too
    code, out, err = run(
        capsys,
        "encode",
        "org/cli",
        "--revision",
        "dev",
        "--token",
        TOKEN,
        "--text",
        "hi",
        "--cache-dir",
        tmp_path / "c2",
    )
    assert code == 0, err and json.loads(out)["model"] == "org/cli"


def test_push_without_token_fails_in_one_line(capsys, hub: HubServer, model_dir: Path) -> None:
    code, _, err = run(capsys, "push", model_dir, "org/nope")
    assert_one_line_error(code, err, "mmvq push: error:", "401")
    assert "org/nope" not in hub.repos


# ------------------------------------------------------------------------------- train
def test_train_runs_the_recipe_on_a_yaml_config(capsys, tmp_path: Path) -> None:
    config = {
        "modalities": "text",
        "adapter_overrides": {"text": {"d_model": 16, "num_layers": 1, "num_heads": 2,
                                       "decoder_layers": 1, "max_length": 48}},
        "num_codes": 16, "code_dim": 8, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
        "builtin_num_train": 8, "builtin_num_eval": 4, "builtin_resolution": 16,
        "output_dir": str(tmp_path / "run"), "max_steps": 1, "per_device_batch_size": 4,
        "eval_every": 0, "save_every": 0, "report_to": "none", "cpu": True, "tqdm": False,
        "max_eval_samples": 4, "num_sample_rows": 2, "gan_weight": 0.0,
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(capsys, "train", path, "--max_steps", "2")  # a flag overrides the file
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2
    final = MultimodalVQ.from_pretrained(tmp_path / "run" / "final")
    assert final.modalities == ("text",) and final.config.codebook.num_codes == 16
    assert "text_rec_loss" in (tmp_path / "run" / "final" / "README.md").read_text()


def test_train_bad_config_files(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", tmp_path / "missing.yaml")
    assert_one_line_error(
        code, err, "mmvq train: error: config file", "missing.yaml' does not exist"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    code, _, err = run(capsys, "train", bad)
    assert_one_line_error(code, err, "is not valid YAML")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    code, _, err = run(capsys, "train", listed)
    assert_one_line_error(code, err, "must hold a mapping of option: value, got list")
    text = tmp_path / "config.txt"
    text.write_text("x: 1")
    code, _, err = run(capsys, "train", text)
    assert_one_line_error(code, err, "must be .yaml, .yml or .json")


# -------------------------------------------------------------------------- bad inputs
def test_bad_inputs_each_fail_in_one_line(
    capsys, model_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    cases = [
        (["encode", tmp_path / "nope", "--text", "x"], ["mmvq encode: error: no such directory"]),
        (
            ["encode", model_dir, "--sound", "x.wav"],
            ["--sound: unknown modality 'sound'", "['a', 'b', 'text']"],
        ),
        (["encode", model_dir], ["give at least one input after MODEL"]),
        (
            ["encode", model_dir, "--text", "x", "--input-json", "a=[1,"],
            ["--input-json 'a=[1,'", "not valid JSON"],
        ),
        (
            ["encode", model_dir, "--text", "x", "--text", "y", "--input-json", "a=[1]"],
            ["same number of values"],
        ),
        (["encode", model_dir, "--input", "novalue"], ["--input 'novalue' must be MODALITY=VALUE"]),
        (
            ["decode", model_dir, tmp_path / "none.json", "--out", tmp_path / "o"],
            ["codes file", "does not exist"],
        ),
        (
            ["generate", model_dir, "--from-text", "x", "--to", "zzz", "--out", tmp_path / "g"],
            ["unknown modality 'zzz'"],
        ),
        (
            [
                "generate",
                model_dir,
                "--from-text",
                "x",
                "--temperature",
                "-1",
                "--out",
                tmp_path / "g",
            ],
            ["temperature must be a finite number >= 0"],
        ),
        (
            ["generate", model_dir, "--out", tmp_path / "g"],
            ["give at least one source after MODEL"],
        ),
        (
            ["eval", model_dir, tmp_path / "none.jsonl"],
            ["mmvq eval: error: DATA", "does not exist"],
        ),
        (
            ["eval", model_dir, data_file, "--column", "b=nosuch"],
            ["has no column ['nosuch']", "--column"],
        ),
        (
            ["eval", model_dir, data_file, "--modalities", "zzz"],
            ["--modalities: unknown modality 'zzz'"],
        ),
        (["push", tmp_path / "nope", "org/x"], ["mmvq push: error: no such directory"]),
    ]
    for argv, fragments in cases:
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, *fragments)


def test_modality_options_are_plain_argparse_options(capsys, model_dir: Path) -> None:
    # declared from MODEL's modalities: a value is required, strays are usage errors (exit 2)
    for argv in (
        ["encode", model_dir, "--text"],
        ["encode", model_dir, "--text", "x", "stray"],
        ["decode", model_dir, "codes.json", "--out", "o", "--text", "x"],
    ):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        assert info.value.code == 2
    capsys.readouterr()
    # --<modality>=VALUE reaches the adapter as a string; its refusal names the option
    code, out, err = run(capsys, "encode", model_dir, "--a=[1,2]", "--text", "x")
    assert_one_line_error(code, err, "--a:", "must be a list/tuple of numbers")


def test_decode_rejects_codes_of_another_codebook(capsys, model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    tiny_model(num_codes=64).save_pretrained(other)
    codes_file = tmp_path / "codes.json"
    run(capsys, "encode", other, "--input-json", f"a={json.dumps(A[0])}", "--out", codes_file)
    code, _, err = run(capsys, "decode", model_dir, codes_file, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "holds detail codes of a 64-code codebook but MODEL's has 32")


def test_debug_prints_the_traceback(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "encode", tmp_path / "nope", "--text", "x", "--debug")
    assert code == 2 and "Traceback" in err and "PretrainedNotFoundError" in err


def test_console_script_exit_code_and_single_line(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("mmvq")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            str(script),
            "decode",
            str(tmp_path / "nope"),
            str(tmp_path / "c.json"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    expected = (
        f"mmvq decode: error: codes file '{tmp_path / 'c.json'}' does not exist; write one with "
        "`mmvq encode MODEL ... --out FILE` (add --debug for the traceback)"
    )
    assert result.stderr.strip().splitlines() == [expected]
