"""Image and audio columns as users have them, through every path that takes a ``datasets``
dataset: decoded ``Image()``/``Audio()`` features (here without torchcodec, the environment's
state), file paths and bytes dicts with ``mmvq.train``; a saved decoded dataset and an
audiofolder with ``mmvq eval``; a decoded dataset on disk with ``mmvq train``. Real adapters,
tiny sizes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from train_helpers import clean_accelerate, reset_accelerate  # noqa: F401 - autouse fixture

import mmvq
from mmvq.cli import main
from mmvq.model import MultimodalVQ
from mmvq.training.config import TrainConfig

pytestmark = pytest.mark.timeout(300)

AUDIO = dict(
    max_seconds=0.25,
    n_mels=16,
    base_channels=8,
    channel_mult=(1, 2),
    num_groups=4,
    attn_at_lowest=False,
    disc_base_channels=8,
    disc_num_layers=2,
)
IMAGE = dict(
    resolution=16,
    base_channels=8,
    channel_mult=(1, 2),
    num_groups=4,
    disc_base_channels=8,
    disc_num_layers=2,
)
TEXT = dict(max_length=16, d_model=32, num_layers=1, num_heads=2, decoder_layers=1)


def _model() -> MultimodalVQ:
    return MultimodalVQ.build(
        {"image": ("image", IMAGE), "audio": ("audio", AUDIO), "text": ("text", TEXT)},
        {
            "codebook": {"num_codes": 32, "code_dim": 16},
            "decoder": {"dim": 32, "depth": 1, "heads": 2},
        },
    )


def _config(output_dir: Path) -> TrainConfig:
    return TrainConfig(
        output_dir=str(output_dir),
        max_steps=1,
        per_device_batch_size=2,
        cpu=True,
        report_to="none",
        tqdm=False,
        eval_every=0,
        save_every=0,
        num_sample_rows=0,
        max_eval_samples=4,
    )


def _files(folder: Path, rows: int = 4) -> tuple[list[str], list[str]]:
    """``rows`` PNG images and WAV tones in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    images, sounds = [], []
    for i in range(rows):
        Image.new("RGB", (20, 20), (60 * i, 200 - 40 * i, 90)).save(folder / f"{i}.png")
        tone = np.sin(2 * np.pi * (300 + 100 * i) * np.arange(2000) / 8000).astype("float32")
        sf.write(folder / f"{i}.wav", tone, 8000)
        images.append(str(folder / f"{i}.png"))
        sounds.append(str(folder / f"{i}.wav"))
    return images, sounds


def _decoded(folder: Path) -> datasets.Dataset:
    """Image() and Audio() columns as a user casts them (decode=True, the default)."""
    images, sounds = _files(folder)
    ds = datasets.Dataset.from_dict(
        {"image": images, "audio": sounds, "text": [f"tone {i}" for i in range(len(images))]}
    )
    ds = ds.cast_column("image", datasets.Image()).cast_column("audio", datasets.Audio())
    assert ds.features["image"].decode and ds.features["audio"].decode
    return ds


def test_decoded_image_and_audio_columns_train_and_evaluate_in_python(tmp_path: Path) -> None:
    ds = _decoded(tmp_path / "media")
    if not datasets.config.TORCHCODEC_AVAILABLE:
        with pytest.raises(ImportError, match="torchcodec"):
            ds[0]  # what reading the column directly does here
    result = mmvq.train(_model(), ds, _config(tmp_path / "run"), eval_data=ds)
    assert result.metrics["steps"] == 1 and result.metrics["eval_samples"] == 4
    assert {"image_psnr", "audio_logmel_l1", "text_exact_match"} <= set(result.metrics)
    assert ds.features["audio"].decode  # the caller's dataset is left as it was


@pytest.mark.parametrize("form", ["paths", "bytes"])
def test_paths_and_bytes_dicts_train(tmp_path: Path, form: str) -> None:
    images, sounds = _files(tmp_path / "media")
    if form == "bytes":
        images = [{"bytes": Path(p).read_bytes(), "path": None} for p in images]
        sounds = [{"bytes": Path(p).read_bytes(), "path": None} for p in sounds]
    ds = datasets.Dataset.from_dict({"image": images, "audio": sounds, "text": ["a"] * 4})
    result = mmvq.train(_model(), ds, _config(tmp_path / "run"))
    assert result.metrics["eval_samples"] == 4 and "audio_logmel_l1" in result.metrics


def test_mmvq_eval_on_a_saved_decoded_dataset_and_an_audiofolder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = _model()
    model.save_pretrained(tmp_path / "model")
    _decoded(tmp_path / "media").save_to_disk(tmp_path / "decoded")
    code = main(["eval", str(tmp_path / "model"), str(tmp_path / "decoded"), "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["eval_samples"] == 4 and {"image_psnr", "audio_logmel_l1"} <= set(metrics)
    assert "evaluating" in err  # the progress bar

    folder = tmp_path / "sounds" / "train"
    _, sounds = _files(folder)
    (folder / "metadata.jsonl").write_text(
        "".join(
            json.dumps({"file_name": Path(s).name, "text": f"t{i}"}) + "\n"
            for i, s in enumerate(sounds)
        )
    )
    code = main(["eval", str(tmp_path / "model"), str(tmp_path / "sounds"), "--limit", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["eval_samples"] == 3 and set(metrics["perplexity"]) == {"audio", "text"}
    assert not any(k.startswith("image") for k in metrics)  # no image column: not evaluated


def test_mmvq_train_on_a_decoded_dataset_on_disk(tmp_path: Path) -> None:
    """``mmvq train CONFIG`` whose dataset_name is a save_to_disk folder of decoded columns."""
    decoded = _decoded(tmp_path / "media")
    datasets.DatasetDict({"train": decoded, "validation": decoded}).save_to_disk(tmp_path / "ds")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"dataset_name: {tmp_path / 'ds'}\nmodalities: image,audio,text\n"
        f"adapter_overrides: {json.dumps({'image': IMAGE, 'audio': AUDIO, 'text': TEXT})}\n"
        "num_codes: 32\ncode_dim: 16\ndecoder_dim: 32\ndecoder_depth: 1\ndecoder_heads: 2\n"
        f"output_dir: {tmp_path / 'out'}\nmax_steps: 1\nper_device_batch_size: 2\n"
        "report_to: none\ntqdm: false\neval_every: 0\nsave_every: 0\nnum_sample_rows: 0\n"
        "max_eval_samples: 2\n"
    )
    assert main(["train", str(config)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["eval_samples"] == 2 and "audio_logmel_l1" in metrics
    card = (tmp_path / "out" / "final" / "README.md").read_text()
    assert f"- **dataset**: {tmp_path / 'ds'}" in card
    reset_accelerate()


def test_audio_adapter_takes_a_torchcodec_style_decoder() -> None:
    """With torchcodec installed, a decoded Audio() value is an AudioDecoder; the adapter reads
    it through its get_all_samples() (data [C, T], sample_rate)."""
    import torch

    from mmvq_adapters.audio import AudioAdapter

    class AudioSamples:
        def __init__(self) -> None:
            self.data = torch.sin(torch.arange(2000) * 0.3).repeat(2, 1)  # stereo [C, T]
            self.sample_rate = 8000

    class AudioDecoder:  # the interface of torchcodec.decoders.AudioDecoder that datasets returns
        def get_all_samples(self) -> AudioSamples:
            return AudioSamples()

    adapter = AudioAdapter(**AUDIO)
    buffer = io.BytesIO()
    sf.write(buffer, AudioSamples().data[0].numpy(), 8000, format="WAV", subtype="FLOAT")
    from_decoder = adapter.preprocess(AudioDecoder())
    from_bytes = adapter.preprocess({"bytes": buffer.getvalue(), "path": None})
    assert torch.allclose(from_decoder["mel"], from_bytes["mel"], atol=1e-3)
