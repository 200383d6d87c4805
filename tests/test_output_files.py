"""Writing postprocessed outputs to files by type (mmvq/outputs/files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mmvq.outputs.files import sample_rate_of, write_output, write_outputs


def test_each_type_gets_its_file(tmp_path: Path) -> None:
    image = Image.new("RGB", (5, 4), (1, 2, 3))
    assert write_output(image, tmp_path / "i").name == "i.png"
    assert Image.open(tmp_path / "i.png").getpixel((0, 0)) == (1, 2, 3)
    assert write_output("héllo", tmp_path / "t").read_text(encoding="utf-8") == "héllo"
    wave = np.sin(np.linspace(0, 20, 800)).astype(np.float32) * 0.5
    for name, value, rate in [
        ("w1", wave, 8000),
        ("w2", torch.from_numpy(wave), 8000),
        ("w3", (wave, 16000), None),
        ("w4", {"array": wave, "sampling_rate": 4000}, None),
    ]:
        path = write_output(value, tmp_path / name, sample_rate=rate)
        data, sr = soundfile.read(path)
        assert path.suffix == ".wav" and len(data) == 800
        assert sr == (rate or (16000 if name == "w3" else 4000))
        np.testing.assert_allclose(data, wave, atol=1e-4)
    assert write_output(wave, tmp_path / "raw").suffix == ".npy"  # no sample rate: not audio
    matrix = write_output(np.ones((2, 2)), tmp_path / "m")
    assert matrix.name == "m.npy" and np.load(matrix).shape == (2, 2)
    assert json.loads(write_output([0.5, 1.0], tmp_path / "v").read_text()) == [0.5, 1.0]


def test_write_outputs_names_and_unsupported_type(tmp_path: Path) -> None:
    paths = write_outputs(["a", "b"], tmp_path / "out", "text")
    assert [p.name for p in paths] == ["text_000.txt", "text_001.txt"]
    with pytest.raises(TypeError, match="cannot write an output of type object"):
        write_output(object(), tmp_path / "x")


def test_sample_rate_of() -> None:
    class Config:
        sample_rate = 8000

    class Adapter:
        config = Config()

    assert sample_rate_of(Adapter()) == 8000
    assert sample_rate_of(object()) is None
