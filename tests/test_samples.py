"""Writing samples by output type (mmvq/outputs/samples.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmvq.outputs.samples import write_samples


def _png(colour):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def test_images_text_and_waveforms(tmp_path):
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    wav = io.BytesIO()
    soundfile.write(wav, np.zeros(80, dtype=np.float32), 800, format="WAV")
    samples = {
        "image": {
            "original": [_png((0, 255, 0)), None],
            "reconstruction": [red, blue],
            "from_text": [blue, None],
        },
        "text": {
            "original": ["a b", "c d"],
            "reconstruction": ["a b", "c x"],
            "from_image": [None, "c d"],
        },
        "audio": {
            "original": [{"bytes": wav.getvalue(), "path": None}],
            "reconstruction": [np.full(40, 0.5, dtype=np.float32)],
        },
    }
    written = write_samples(tmp_path, samples, {"audio": 800})
    names = sorted(p.name for p in written)
    assert names == [
        "README.txt",
        "audio_00_original.wav",
        "audio_00_reconstruction.wav",
        "image.png",
        "text.txt",
    ]

    grid = np.asarray(Image.open(tmp_path / "image.png").convert("RGB"))
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    assert tuple(grid[2 + 4, 2 + 4]) == (0, 255, 0)  # row 0: original (decoded from PNG bytes)
    assert tuple(grid[2 + 4, 12 + 4]) == (255, 0, 0)  # row 0: reconstruction
    assert tuple(grid[12 + 4, 2 + 4]) == (0, 0, 0)  # row 1: missing original drawn black
    assert (tmp_path / "text.txt").read_text().splitlines() == [
        "# original -> reconstruction -> from_image",
        "a b -> a b -> -",
        "c d -> c x -> c d",
    ]
    audio, rate = soundfile.read(tmp_path / "audio_00_reconstruction.wav")
    assert rate == 800 and len(audio) == 40 and abs(audio[0] - 0.5) < 1e-3
    assert "image: original | reconstruction | from_text" in (tmp_path / "README.txt").read_text()


def test_waveforms_need_a_sample_rate(tmp_path):
    with pytest.raises(
        ValueError, match="'audio' produces waveforms but its adapter config has no sample_rate"
    ):
        write_samples(tmp_path, {"audio": {"reconstruction": [np.zeros(10, dtype=np.float32)]}})


def test_other_outputs_are_written_as_text(tmp_path):
    write_samples(tmp_path, {"vector": {"reconstruction": [[1.0, 2.0]], "original": [None]}})
    assert (tmp_path / "vector.txt").read_text().splitlines() == ["# reconstruction", "[1.0, 2.0]"]
