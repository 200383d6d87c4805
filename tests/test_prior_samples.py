"""A prior's samples as files (mmvq/prior/samples.py) and the script over it,
``recipes/generate_images.py``: N images written, the same seed the same files, the same files as
``mmvq generate --prior``, a caption drawn, the prior found in the model's ``prior/`` folder. The
prior is tiny and untrained: what is checked is the plumbing (the grammar keeps samples valid)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from train_helpers import tiny_model, tiny_prior

from mmvq.cli import main as mmvq_main
from mmvq.prior import MultimodalPrior
from mmvq.prior.samples import load_prior, sampling_config, write_prior_samples

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "generate_images.py"


@pytest.fixture(scope="module")
def vq(tmp_path_factory) -> Path:
    """A saved tiny model with a tiny prior in its ``prior/`` folder."""
    root = tmp_path_factory.mktemp("prior_samples")
    model = tiny_model(seed=1).eval()
    model.save_pretrained(str(root / "vq"))
    tiny_prior(model).save_pretrained(root / "vq" / "prior")
    return root / "vq"


def _script_main():
    spec = importlib.util.spec_from_file_location("generate_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_script_writes_n_images_and_the_seed_reproduces_them(vq, tmp_path, capsys) -> None:
    generate_images = _script_main()
    argv = ["--model", str(vq), "--num_images", "3", "--seed", "7"]
    paths = generate_images([*argv, "--out", str(tmp_path / "a")])
    names = ["image_000.png", "image_001.png", "image_002.png", "prior_ids.json"]
    assert [p.name for p in paths] == names and sorted(_contents(tmp_path / "a")) == names
    assert Image.open(tmp_path / "a" / "image_000.png").size == (16, 16)
    generate_images([*argv, "--out", str(tmp_path / "b")])
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")  # same seed, same files
    generate_images(
        ["--model", str(vq), "--num_images", "3", "--seed", "8", "--out", str(tmp_path / "c")]
    )
    ids = {n: json.loads((tmp_path / n / "prior_ids.json").read_text())["input_ids"] for n in "ac"}
    assert ids["a"] != ids["c"] and len(ids["a"]) == 3
    # the same sampling as `mmvq generate --prior` (its prior named explicitly)
    code = mmvq_main(
        ["generate", str(vq), "--prior", str(vq / "prior"), "--to", "image", "--num-images", "3",
         "--seed", "7", "--out", str(tmp_path / "cli")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cli = _contents(tmp_path / "cli")
    assert {k: v for k, v in cli.items() if k.endswith(".png")} == {
        k: v for k, v in _contents(tmp_path / "a").items() if k.endswith(".png")
    }
    assert json.loads(cli["prior_ids.json"])["input_ids"] == ids["a"]


def test_the_script_draws_a_caption_and_runs_as_a_script(vq, tmp_path) -> None:
    out = tmp_path / "drawn"
    cmd = [sys.executable, str(SCRIPT), "--model", str(vq), "--from_text", "a small red circle",
           "--num_images", "2", "--out", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [Path(p).name for p in proc.stdout.split()] == [
        "image_000.png", "image_001.png", "prior_ids.json"
    ]  # fmt: skip
    tok = MultimodalPrior.from_pretrained(vq).tokenizer
    for row in json.loads((out / "prior_ids.json").read_text())["input_ids"]:
        assert tok.decode_codes(torch.tensor([row])).order == [["text", "image"]]
    # the same seed (default 0) in process writes the same images
    _script_main()(cmd[2:-2] + ["--out", str(tmp_path / "again")])
    assert _contents(out) == _contents(tmp_path / "again")
    # an error is one line naming the fix: a model without a prior/ folder
    bare = tmp_path / "bare"
    tiny_model().save_pretrained(str(bare))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(bare), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("generate_images.py: error: load_prior: model=") and "--prior" in last


def test_write_prior_samples_needs_an_attached_model_and_checks_options(vq, tmp_path) -> None:
    prior = load_prior(vq)
    assert prior.tokenizer.model is not None and prior.tokenizer.model.training is False
    config = sampling_config(temperature=0)
    assert config.do_sample is False
    with pytest.raises(ValueError, match=r"--temperature must be >= 0"):
        sampling_config(temperature=-1)
    detached = MultimodalPrior.from_pretrained(vq)
    with pytest.raises(ValueError, match="no model attached"):
        write_prior_samples(detached, tmp_path, 1)
    with pytest.raises(ValueError, match=r"prior='.*' holds no prior"):
        load_prior(vq, tmp_path)
