"""``mmvq generate MODEL --prior PRIOR`` (mmvq/cli/prior.py): unconditional samples without a
source, seeded; a caption -> pictures; a picture -> a caption; clear errors. The prior is a
tiny, untrained one: what is checked is the plumbing, the grammar keeps every sample valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from train_helpers import tiny_model, tiny_prior

from mmvq.cli import main
from mmvq.prior import MultimodalPrior


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prior_cli")
    model = tiny_model(seed=1).eval()
    model.save_pretrained(str(root / "vq"))
    tiny_prior(model).save_pretrained(root / "prior")
    return root / "vq", root / "prior"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_unconditional_samples_without_a_source_are_seeded(capsys, dirs, tmp_path) -> None:
    vq, prior = dirs
    outs = []
    for name in ("a", "b"):
        argv = ["generate", vq, "--prior", prior, "--to", "image", "--num-images", "3"]
        code, out, err = run(capsys, *argv, "--seed", "7", "--out", tmp_path / name)
        assert code == 0, err
        assert [Path(p).name for p in out.split()] == [
            "image_000.png",
            "image_001.png",
            "image_002.png",
            "prior_ids.json",
        ]
        outs.append(json.loads((tmp_path / name / "prior_ids.json").read_text())["input_ids"])
        assert Image.open(tmp_path / name / "image_000.png").size == (16, 16)
    assert outs[0] == outs[1] and len(outs[0]) == 3  # same seed, same samples
    code, _, _ = run(capsys, *argv, "--seed", "8", "--out", tmp_path / "c")
    assert json.loads((tmp_path / "c" / "prior_ids.json").read_text())["input_ids"] != outs[0]


def test_a_caption_to_pictures_and_a_picture_to_a_caption(capsys, dirs, tmp_path) -> None:
    vq, prior = dirs
    code, out, err = run(
        capsys, "generate", vq, "--prior", prior, "--from-text", "a small red circle",
        "--to", "image", "--num-samples", "2", "--temperature", "0.8", "--top-k", "5",
        "--out", tmp_path / "t2i",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "t2i").iterdir()) == [
        "image_000.png",
        "image_001.png",
        "prior_ids.json",
    ]
    tok = MultimodalPrior.from_pretrained(prior).tokenizer
    rows = json.loads((tmp_path / "t2i" / "prior_ids.json").read_text())["input_ids"]
    for row in rows:  # the caption's block, then the generated picture's
        assert tok.decode_codes(torch.tensor([row])).order == [["text", "image"]]
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "red.png")
    code, out, err = run(
        capsys, "generate", vq, "--prior", prior, "--from-image", tmp_path / "red.png",
        "--temperature", "0", "--out", tmp_path / "i2t",
    )  # fmt: skip
    assert code == 0, err
    assert [Path(p).name for p in out.split()] == ["text_000.txt", "prior_ids.json"]


def test_errors_are_one_line(capsys, dirs, tmp_path) -> None:
    vq, prior = dirs
    code, _, err = run(
        capsys, "generate", vq, "--prior", prior, "--from-text", "a red circle", "--to", "image",
        "--to", "text", "--out", tmp_path / "x",
    )  # fmt: skip
    assert code == 2 and "generate one modality" in err and "Traceback" not in err
    code, _, err = run(capsys, "generate", vq, "--prior", tmp_path, "--out", tmp_path / "y")
    assert code == 2 and "prior_config.json" in err
    # the options and --out are checked before anything loads, as without --prior
    (tmp_path / "file").write_text("x")
    for extra, message in [
        (["--out", tmp_path / "file"], "is an existing file"),
        (["--num-samples", "0", "--out", tmp_path / "z"], "--num-samples must be >= 1"),
        (["--num-samples", "100001", "--out", tmp_path / "z"], "more than the 100000"),
        (["--batch-size", "0", "--out", tmp_path / "z"], "--batch-size must be >= 1"),
    ]:
        code, _, err = run(capsys, "generate", vq, "--prior", tmp_path / "nowhere", *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
