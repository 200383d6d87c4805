"""Tests of the mmvq.data package: loading, column mapping, validation, torch datasets and
collation.

The adapters here are small real ones written for these tests (an image-ish one taking PIL /
paths / ``{"path", "bytes"}``, a byte-level text one with padding, a wav one read with soundfile).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mmvq.adapter import AdapterConfig, AdapterInputError, DataColumn, ModalityAdapter, Tokens
from mmvq.data import (
    DataConfig,
    DataError,
    MultimodalCollator,
    MultimodalDataset,
    MultimodalIterableDataset,
    as_torch_dataset,
    load_data,
    validate_dataset,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------------ test adapters
@dataclass
class TinyImageConfig(AdapterConfig):
    resolution: int = 8


class TinyImageAdapter(ModalityAdapter):
    """RGB image -> ``pixels`` [3, r, r] in [0, 1]; one token per image."""

    config_class = TinyImageConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        r = self.config.resolution
        self.enc = nn.Linear(3 * r * r, self.config.code_dim)
        self.dec = nn.Linear(self.config.code_dim, 3 * r * r)

    def preprocess(self, example: Any) -> dict[str, Tensor]:
        if isinstance(example, dict) and ("bytes" in example or "path" in example):
            example = io.BytesIO(example["bytes"]) if example.get("bytes") else example.get("path")
        if isinstance(example, (str, io.BytesIO)):
            try:
                example = Image.open(example)
                example.load()
            except (OSError, ValueError) as err:
                raise AdapterInputError(
                    f"image: cannot open {example!r} ({err}); pass a readable image file"
                ) from err
        if not isinstance(example, Image.Image):
            raise AdapterInputError(
                f"image: expected a PIL image, a path or {{'path', 'bytes'}}, got "
                f"{type(example).__name__}; convert the value to an image"
            )
        r = self.config.resolution
        x = np.asarray(example.convert("RGB").resize((r, r), Image.NEAREST), dtype=np.float32) / 255
        return {"pixels": torch.from_numpy(x.copy()).permute(2, 0, 1)}

    def num_tokens(self) -> int:
        return 1

    def encode(self, batch):
        z = self.enc(batch["pixels"].flatten(1))[:, None]
        return Tokens(z, torch.ones(z.shape[:2], dtype=torch.bool))

    def decode(self, h, batch=None):
        r = self.config.resolution
        return self.dec(h[:, 0]).view(-1, 3, r, r)

    def reconstruction_loss(self, batch, recon):
        return ((batch["pixels"] - recon) ** 2).flatten(1).mean(1)

    def postprocess(self, recon):
        return [
            Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
            for x in recon
        ]


@dataclass
class ByteTextConfig(AdapterConfig):
    max_length: int = 64


class ByteTextAdapter(ModalityAdapter):
    """UTF-8 bytes + 1 as ids (0 = padding); collate pads to the longest."""

    config_class = ByteTextConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.emb = nn.Embedding(257, self.config.code_dim)
        self.out = nn.Linear(self.config.code_dim, 257)

    def preprocess(self, example: Any) -> dict[str, Tensor]:
        if not isinstance(example, str):
            raise AdapterInputError(
                f"text: expected a str, got {type(example).__name__} ({example!r:.40}); map the "
                "column to text"
            )
        ids = (
            torch.tensor(list(example.encode("utf-8"))[: self.config.max_length], dtype=torch.long)
            + 1
        )
        return {"ids": ids}

    def collate(self, items):
        length = max(len(i["ids"]) for i in items)
        ids = torch.zeros(len(items), length, dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item["ids"])] = item["ids"]
        return {"ids": ids, "mask": ids > 0}

    def num_tokens(self) -> int:
        return self.config.max_length

    def encode(self, batch):
        return Tokens(self.emb(batch["ids"]), batch["mask"])

    def decode(self, h, batch=None):
        return self.out(h)

    def reconstruction_loss(self, batch, recon):
        loss = nn.functional.cross_entropy(recon.transpose(1, 2), batch["ids"], reduction="none")
        return (loss * batch["mask"]).sum(1) / batch["mask"].sum(1).clamp(min=1)

    def postprocess(self, recon):
        return [
            bytes((i - 1) for i in row.argmax(-1).tolist() if i > 0).decode("utf-8", "replace")
            for row in recon
        ]


@dataclass
class WavConfig(AdapterConfig):
    samples: int = 400


class WavAdapter(ModalityAdapter):
    """``{"path", "bytes"}`` (Audio(decode=False)) or a path -> ``wave`` [samples] via soundfile."""

    config_class = WavConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.enc = nn.Linear(self.config.samples, self.config.code_dim)
        self.dec = nn.Linear(self.config.code_dim, self.config.samples)

    def preprocess(self, example: Any) -> dict[str, Tensor]:
        if isinstance(example, dict):
            source = io.BytesIO(example["bytes"]) if example.get("bytes") else example.get("path")
        elif isinstance(example, str):
            source = example
        else:
            raise AdapterInputError(
                f"audio: expected a path or {{'path', 'bytes'}}, got {type(example).__name__}; "
                "cast the column with datasets.Audio(decode=False)"
            )
        try:
            wave, _ = sf.read(source, dtype="float32")
        except Exception as err:  # soundfile raises several types
            raise AdapterInputError(f"audio: cannot read {source!r}: {err}") from err
        out = np.zeros(self.config.samples, dtype=np.float32)
        out[: min(len(wave), len(out))] = wave[: len(out)]
        return {"wave": torch.from_numpy(out)}

    def num_tokens(self) -> int:
        return 1

    def encode(self, batch):
        z = self.enc(batch["wave"])[:, None]
        return Tokens(z, torch.ones(z.shape[:2], dtype=torch.bool))

    def decode(self, h, batch=None):
        return self.dec(h[:, 0])

    def reconstruction_loss(self, batch, recon):
        return ((batch["wave"] - recon) ** 2).mean(1)

    def postprocess(self, recon):
        return list(recon.numpy())


def adapters(*names: str) -> dict[str, ModalityAdapter]:
    table = {"image": TinyImageAdapter, "text": ByteTextAdapter, "audio": WavAdapter}
    return {n: table[n]() for n in names}


def decode_ids(ids: Tensor) -> str:
    return bytes(int(i) - 1 for i in ids if i > 0).decode()


# ------------------------------------------------------------------------------ fixtures
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


@pytest.fixture
def image_folder(tmp_path):
    """An imagefolder: train/ with 6 solid-colour PNGs + metadata.jsonl (file_name, caption)."""
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    with open(root / "train" / "metadata.jsonl", "w") as f:
        for i, colour in enumerate(COLOURS):
            Image.new("RGB", (12, 12), colour).save(root / "train" / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "caption": f"colour {i}"}) + "\n")
    return root


def write_wav(path, value: float, n: int = 400, sr: int = 8000) -> np.ndarray:
    wave = np.full(n, value, dtype=np.float32)
    sf.write(path, wave, sr)
    return wave


@pytest.fixture
def jsonl_file(tmp_path):
    """data/train.jsonl with relative image + wav paths and text; row 2 lacks audio."""
    root = tmp_path / "data"
    (root / "media").mkdir(parents=True)
    rows = []
    for i in range(5):
        Image.new("RGB", (10, 10), COLOURS[i]).save(root / "media" / f"im{i}.png")
        audio = None
        if i != 2:
            write_wav(root / "media" / f"a{i}.wav", 0.1 * (i + 1))
            audio = f"media/a{i}.wav"
        rows.append({"img": f"media/im{i}.png", "sound": audio, "text": f"example {i}"})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hf_dataset(columns: dict[str, list]):
    import datasets

    return datasets.Dataset.from_dict(columns)


# --------------------------------------------------------------------------- DataConfig
def test_column_map_defaults_disable_and_plugins():
    assert DataConfig().column_map(["image", "text"]) == {"image": "image", "text": "text"}
    assert DataConfig(columns={"text": "caption"}).column_map(["image", "text"]) == {
        "image": "image",
        "text": "caption",
    }
    assert DataConfig(columns="text=").column_map(["image", "text"]) == {"image": "image"}
    assert DataConfig(columns={"image": None}).column_map(["image", "text"]) == {"text": "text"}
    # without modalities: the ones the columns option maps (and does not drop)
    assert DataConfig(columns={"image": "", "depth": "d"}).column_map() == {"depth": "d"}
    # a plugin modality reads the column of its own name unless mapped
    assert DataConfig().column_map(["depth"]) == {"depth": "depth"}
    for extra in (
        "depth=depth_map, text=caption",
        '{"depth": "depth_map", "text": "caption"}',
        {"depth": "depth_map", "text": "caption"},
    ):
        cfg = DataConfig(columns=extra)
        assert cfg.column_map(["text", "depth"]) == {"text": "caption", "depth": "depth_map"}


def test_data_config_rejects_bad_settings():
    with pytest.raises(DataError, match="columns: 'depth' is not key=value; write e.g."):
        DataConfig(columns="depth")
    with pytest.raises(DataError, match="columns is not valid JSON"):
        DataConfig(columns="{depth")
    with pytest.raises(DataError, match="columns must map modality names to column names"):
        DataConfig(columns={"depth": 3})
    with pytest.raises(DataError, match="builtin_options: 'x' is not key=value"):
        DataConfig(builtin_options="x")
    with pytest.raises(DataError, match="both dataset_name='imagefolder' and train_file"):
        DataConfig(dataset_name="imagefolder", train_file="x.jsonl")
    with pytest.raises(DataError, match=r"train_file='data.txt' has extension '.txt'; use one of"):
        DataConfig(train_file="data.txt")
    with pytest.raises(DataError, match="validation_file='v.jsonl' needs train_file"):
        DataConfig(validation_file="v.jsonl")
    with pytest.raises(DataError, match="max_train_samples must be None or an int >= 1, got 0"):
        DataConfig(max_train_samples=0)
    with pytest.raises(DataError, match="builtin must be one of"):
        DataConfig(builtin="mnist")


def test_data_config_parses_from_command_line():
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(DataConfig).parse_args_into_dataclasses(
        [
            "--columns",
            "text=caption,depth=d",
            "--builtin_options",
            "with_audio=true",
            "--max_train_samples",
            "10",
        ]
    )
    assert cfg.column_map(["text", "depth"]) == {"text": "caption", "depth": "d"}
    assert cfg.builtin_options == {"with_audio": True} and cfg.max_train_samples == 10


# ------------------------------------------------------------------------------ loading
def test_load_builtin_shapes():
    import datasets

    cfg = DataConfig(builtin_num_train=20, builtin_num_eval=6, builtin_options={"resolution": 16})
    train, evaluation = load_data(cfg, ["image", "text"])
    assert isinstance(train, datasets.Dataset) and len(train) == 20 and len(evaluation) == 6
    assert "audio" not in train.column_names
    assert train[0]["text"].startswith("a ")

    train, evaluation = load_data(
        DataConfig(builtin_num_train=8, builtin_num_eval=2, max_train_samples=5),
        ["image", "text", "audio"],
    )
    assert len(train) == 5
    feature = train.features["audio"]
    assert isinstance(feature, datasets.Audio) and not feature.decode

    train, evaluation = load_data(DataConfig(builtin_num_train=4, eval_split=""), ["image"])
    assert evaluation is None

    train, _ = load_data(
        DataConfig(builtin_num_train=6, streaming=True, shuffle_buffer_size=0), ["text"]
    )
    assert isinstance(train, datasets.IterableDataset)
    assert len(list(train)) == 6


def test_load_data_errors():
    with pytest.raises(
        DataError,
        match=r"eval split 'dev' not found; the data has splits \['train', 'validation'\]",
    ):
        load_data(DataConfig(builtin_num_train=4, eval_split="dev"), ["image"])
    with pytest.raises(DataError, match="train split 'training' not found"):
        load_data(DataConfig(builtin_num_train=4, train_split="training"), ["image"])
    with pytest.raises(DataError, match="No data source"):
        load_data(DataConfig(builtin=None), ["image"])
    with pytest.raises(
        DataError,
        match=r"No requested modality \['image'\] is mapped to a column: set "
        r"DataConfig.columns\['image'\] \(--image_column\)",
    ):
        load_data(DataConfig(columns="image="), ["image"])
    with pytest.raises(  # a config names the DataConfig field and the recipes' flag
        DataError,
        match=r"column 'caption' \(modality 'text'\) is not in the dataset; available columns: "
        r"\[.*\]\. Set DataConfig.columns\['text'\] \(--text_column\) to one of them",
    ):
        load_data(DataConfig(builtin_num_train=4, columns="text=caption"), ["text"])
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(train_file="/nonexistent/train.jsonl"), ["image"])


def test_imagefolder_with_metadata(image_folder):
    cfg = DataConfig(dataset_name="imagefolder", data_dir=str(image_folder), columns="text=caption")
    train, evaluation = load_data(cfg, ["image", "text"])
    assert evaluation is None and len(train) == 6
    ads = adapters("image", "text")
    cmap = cfg.column_map(["image", "text"])
    summary = validate_dataset(train, cmap, ads, batch_size=4, drop_last=True)
    assert summary.num_rows == 6 and summary.rows_per_modality == {"image": 6, "text": 6}

    loader = DataLoader(
        MultimodalDataset(train, ads, cmap), batch_size=3, collate_fn=MultimodalCollator(ads)
    )
    batches = list(loader)
    assert len(batches) == 2
    for b, batch in enumerate(batches):
        assert set(batch) == {"image", "text"}
        assert batch["image"]["pixels"].shape == (3, 3, 8, 8)
        assert batch["image"]["present"].tolist() == [True] * 3
        for row in range(3):
            i = 3 * b + row
            expected = torch.tensor(COLOURS[i], dtype=torch.float32) / 255
            assert torch.equal(batch["image"]["pixels"][row, :, 0, 0], expected)
            assert decode_ids(batch["text"]["ids"][row]) == f"colour {i}"


def test_jsonl_with_image_and_audio_paths(jsonl_file, tmp_path):
    import datasets

    cfg = DataConfig(train_file=str(jsonl_file), columns="image=img,audio=sound")
    modalities = ["image", "text", "audio"]
    train, evaluation = load_data(cfg, modalities)
    assert evaluation is None and len(train) == 5
    assert (
        isinstance(train.features["sound"], datasets.Audio) and not train.features["sound"].decode
    )
    row = train[0]
    assert os.path.isabs(row["img"]) and os.path.isfile(row["img"])
    assert os.path.isabs(row["sound"]["path"]) and os.path.isfile(row["sound"]["path"])
    assert train[2]["sound"] is None

    ads = adapters(*modalities)
    cmap = cfg.column_map(modalities)
    summary = validate_dataset(train, cmap, ads, batch_size=5, drop_last=False)
    assert summary.rows_per_modality == {"image": 5, "text": 5, "audio": 4}
    batch = MultimodalCollator(ads)([MultimodalDataset(train, ads, cmap)[i] for i in range(5)])
    assert batch["audio"]["present"].tolist() == [True, True, False, True, True]
    assert batch["audio"]["wave"].shape == (5, 400)
    assert torch.equal(batch["audio"]["wave"][2], torch.zeros(400))  # zeroed placeholder
    np.testing.assert_allclose(batch["audio"]["wave"][3].numpy(), 0.4, atol=1e-3)
    assert torch.equal(batch["image"]["pixels"][1, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]))

    # the same file streamed: paths resolved too, and features kept
    stream, _ = load_data(
        DataConfig(
            train_file=str(jsonl_file),
            columns="image=img,audio=sound",
            streaming=True,
            shuffle_buffer_size=0,
        ),
        modalities,
    )
    rows = list(stream)
    assert (
        len(rows) == 5 and os.path.isabs(rows[0]["img"]) and os.path.isabs(rows[0]["sound"]["path"])
    )

    # a missing file is reported at load time with file, line, row, column and path
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n" + json.dumps({"img": "nope.png", "text": "x"}) + "\n")
    with pytest.raises(
        DataError,
        match=r"broken.jsonl line 2 \(row 0\), column 'img' names file 'nope.png', which does "
        "not exist",
    ):
        load_data(DataConfig(train_file=str(broken), columns="image=img"), ["image", "text"])


def test_columns_are_read_as_the_given_adapters_declare(jsonl_file):
    import datasets

    class SoundAdapter(WavAdapter):
        data_column = DataColumn(file_paths=True, undecoded="Audio")

    class PlainImageAdapter(TinyImageAdapter):
        pass  # declares nothing: its column is read as it is

    cfg = DataConfig(train_file=str(jsonl_file), columns="snd=sound,pic=img")
    train, _ = load_data(cfg, {"snd": SoundAdapter, "pic": PlainImageAdapter()})
    feature = train.features["sound"]
    assert isinstance(feature, datasets.Audio) and not feature.decode
    assert os.path.isabs(train[0]["sound"]["path"]) and os.path.isfile(train[0]["sound"]["path"])
    assert train[0]["img"] == "media/im0.png"  # not declared as file paths: left as written


def test_audiofolder_without_torchcodec(tmp_path):
    import datasets

    root = tmp_path / "sounds"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        with open(root / split / "metadata.jsonl", "w") as f:
            for i in range(3):
                write_wav(root / split / f"{i}.wav", 0.1 * (i + 1))
                f.write(json.dumps({"file_name": f"{i}.wav", "text": f"{split} {i}"}) + "\n")
    cfg = DataConfig(dataset_name="audiofolder", data_dir=str(root))
    train, evaluation = load_data(cfg, ["audio", "text"])
    assert len(train) == 3 and len(evaluation) == 3
    assert isinstance(train.features["audio"], datasets.Audio)
    ads = adapters("audio", "text")
    ds = MultimodalDataset(evaluation, ads, cfg.column_map(["audio", "text"]))
    item = ds[1]
    np.testing.assert_allclose(item["audio"]["wave"].numpy(), 0.2, atol=1e-3)
    assert decode_ids(item["text"]["ids"]) == "test 1"


class SoundAdapter(WavAdapter):
    data_column = DataColumn(file_paths=True, undecoded="Audio")


def test_decoded_audio_feature_is_read_undecoded_everywhere(tmp_path):
    """A decoded Audio() column (datasets' default) goes through MultimodalDataset, the stream
    wrapper and validate_dataset without a decoder; a decoded Image() gives PIL images."""
    import datasets

    for i in range(3):
        write_wav(tmp_path / f"{i}.wav", 0.1 * (i + 1))
        Image.new("RGB", (8, 8), COLOURS[i]).save(tmp_path / f"{i}.png")
    ds = datasets.Dataset.from_dict(
        {
            "audio": [str(tmp_path / f"{i}.wav") for i in range(3)],
            "image": [str(tmp_path / f"{i}.png") for i in range(3)],
        }
    )
    ds = ds.cast_column("audio", datasets.Audio()).cast_column("image", datasets.Image())
    ads = {"audio": SoundAdapter(), "image": TinyImageAdapter()}
    cmap = {"audio": "audio", "image": "image"}
    validate_dataset(ds, cmap, ads, batch_size=3, drop_last=True)
    item = MultimodalDataset(ds, ads, cmap)[1]
    np.testing.assert_allclose(item["audio"]["wave"].numpy(), 0.2, atol=1e-3)
    np.testing.assert_allclose(item["image"]["pixels"][:, 0, 0].numpy(), np.array(COLOURS[1]) / 255)
    stream = ds.to_iterable_dataset()
    validate_dataset(stream, cmap, ads, batch_size=3, drop_last=True)
    rows = list(MultimodalIterableDataset(stream, ads, cmap, rank=0, world_size=1))
    assert [round(float(r["audio"]["wave"][0]), 2) for r in rows] == [0.1, 0.2, 0.3]
    assert ds.features["audio"].decode  # the caller's dataset is not changed


def test_a_local_folder_as_dataset_name(tmp_path, image_folder):
    """dataset_name may be a folder: its builder is inferred (an audiofolder needs no
    torchcodec), or it was written by save_to_disk."""
    import datasets

    sounds = tmp_path / "sounds"
    sounds.mkdir()
    for i in range(3):
        write_wav(sounds / f"{i}.wav", 0.1 * (i + 1))
    train, evaluation = load_data(DataConfig(dataset_name=str(sounds)), ["audio"])
    assert len(train) == 3 and evaluation is None
    assert (
        isinstance(train.features["audio"], datasets.Audio) and not train.features["audio"].decode
    )
    train, _ = load_data(
        DataConfig(dataset_name=str(image_folder), columns="text=caption"), ["image", "text"]
    )
    assert len(train) == 6 and train[0]["caption"] == "colour 0"
    datasets.DatasetDict({"train": train, "test": train.select([0, 1])}).save_to_disk(
        tmp_path / "saved"
    )
    train, evaluation = load_data(
        DataConfig(dataset_name=str(tmp_path / "saved"), columns="text=caption"), ["text"]
    )
    assert len(train) == 6 and len(evaluation) == 2


# --------------------------------------------------------------------------- collation
def test_collator_layout_placeholders_and_omission():
    ads = adapters("image", "text", "audio")
    ds = hf_dataset(
        {
            "image": [Image.new("RGB", (8, 8), c) for c in COLOURS[:3]],
            "text": ["ab", None, "abcdef"],
        }
    )
    examples = [MultimodalDataset(ds, ads, {"image": "image", "text": "text"})[i] for i in range(3)]
    assert set(examples[1]) == {"image"}
    batch = MultimodalCollator(ads)(examples)
    assert set(batch) == {"image", "text"}  # audio absent from every row: omitted
    assert batch["text"]["present"].dtype == torch.bool
    assert batch["text"]["present"].tolist() == [True, False, True]
    assert batch["image"]["present"].tolist() == [True, True, True]
    assert batch["text"]["ids"].shape == (3, 6)
    assert not batch["text"]["ids"][1].any() and not batch["text"]["mask"][1].any()
    assert decode_ids(batch["text"]["ids"][2]) == "abcdef"


def test_collator_is_picklable_and_works_in_workers():
    ads = adapters("image", "text")
    collator = pickle.loads(pickle.dumps(MultimodalCollator(ads)))
    ds = hf_dataset(
        {
            "text": [f"row {i}" for i in range(8)],
            "image": [None] * 4 + [Image.new("RGB", (8, 8))] * 4,
        }
    )
    torch_ds = MultimodalDataset(ds, ads, {"text": "text", "image": "image"})
    loader = DataLoader(torch_ds, batch_size=4, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert "image" not in batches[0] and batches[1]["image"]["present"].all()
    assert [decode_ids(i) for b in batches for i in b["text"]["ids"]] == [
        f"row {i}" for i in range(8)
    ]


def test_collator_rejects_bad_batches():
    ads = adapters("text")
    collator = MultimodalCollator(ads)
    with pytest.raises(DataError, match="empty batch"):
        collator([])
    with pytest.raises(DataError, match=r"modalities \['depth'\] without an adapter"):
        collator([{"depth": {"x": torch.zeros(2)}}])
    with pytest.raises(DataError, match="must be a non-empty"):
        collator([{}])

    class BadCollate(ByteTextAdapter):
        def collate(self, items):
            return {"ids": torch.zeros(1, 3)}

    with pytest.raises(
        DataError, match=r"BadCollate.collate returned 'ids' of shape \(1, 3\).*batch size 2"
    ):
        MultimodalCollator({"text": BadCollate()})([{"text": {"ids": torch.ones(2)}}] * 2)
    with pytest.raises(DataError, match=r"adapters\['text'\] must be a ModalityAdapter"):
        MultimodalCollator({"text": object()})


# ------------------------------------------------------------------------ torch datasets
def test_dataset_wraps_adapter_errors_with_row_and_column():
    ads = adapters("text")
    ds = hf_dataset({"caption": ["fine", "ok", "x"], "n": [1, 2, 3]})
    assert decode_ids(MultimodalDataset(ds, ads, {"text": "caption"})[0]["text"]["ids"]) == "fine"
    torch_ds = MultimodalDataset(ds, ads, {"text": "n"})
    with pytest.raises(
        AdapterInputError,
        match=r"row 1, column 'n' \(modality 'text', value of type int\): text: expected a str",
    ):
        torch_ds[1]
    with pytest.raises(
        DataError,
        match=r"column 'caption' \(modality 'text'\) is not in the dataset; available columns: "
        r"\['n'\]\. Set column_map\['text'\] to one of them, or leave 'text' unmapped",
    ):
        MultimodalDataset(hf_dataset({"n": [1]}), ads, {"text": "caption"})
    with pytest.raises(DataError, match=r"maps modalities \['image'\] that have no adapter"):
        MultimodalDataset(ds, ads, {"image": "caption"})
    with pytest.raises(DataError, match="row 0 has no modality"):
        MultimodalDataset(hf_dataset({"caption": [None, "x"]}), ads, {"text": "caption"})[0]


def test_a_batch_of_rows_reads_as_its_rows_one_by_one():
    """MultimodalDataset.__getitems__ (what a DataLoader calls) reads the uncached rows of a
    batch at once: the examples are those of __getitem__, in order, duplicates and cached rows
    included, and a bad row still raises naming its row."""

    class CachableText(ByteTextAdapter):
        def preprocess_is_deterministic(self) -> bool:
            return True

    ads = {"text": CachableText()}
    ds = hf_dataset({"caption": [f"caption {i}" for i in range(6)], "n": list(range(6))})
    cmap, subset, batch = {"text": "caption"}, [5, 3, 1, 0], [2, 0, 0, 3, 1]

    def texts(examples):
        return [decode_ids(e["text"]["ids"]) for e in examples]

    expected = texts([MultimodalDataset(ds, ads, cmap, indices=subset)[i] for i in batch])
    assert expected == ["caption 1", "caption 5", "caption 5", "caption 0", "caption 3"]
    for cache in (False, True):
        torch_ds = MultimodalDataset(ds, ads, cmap, indices=subset, cache=cache)
        assert torch_ds.caching == cache
        torch_ds[3]  # row 0: cached when caching, before the batch is read
        assert texts(torch_ds.__getitems__(batch)) == expected
        assert texts(torch_ds.__getitems__([])) == []
    loader = DataLoader(
        MultimodalDataset(ds, ads, cmap), batch_size=4, collate_fn=MultimodalCollator(ads)
    )
    ids = [b["text"]["ids"] for b in loader]
    rows = MultimodalCollator(ads)([MultimodalDataset(ds, ads, cmap)[i] for i in range(4)])
    assert torch.equal(ids[0], rows["text"]["ids"])
    with pytest.raises(AdapterInputError, match=r"row 4, column 'n' \(modality 'text'"):
        MultimodalDataset(ds, ads, {"text": "n"}).__getitems__([4, 5])


def _stream(n: int, shards: int):
    return hf_dataset({"text": [f"t{i}" for i in range(n)]}).to_iterable_dataset(num_shards=shards)


def _texts(torch_ds, **loader_kwargs) -> list[str]:
    collator = MultimodalCollator(torch_ds.adapters)
    loader = DataLoader(torch_ds, batch_size=2, collate_fn=collator, **loader_kwargs)
    return [decode_ids(ids) for batch in loader for ids in batch["text"]["ids"]]


@pytest.mark.parametrize("shards", [1, 4])
def test_iterable_dataset_splits_across_ranks_and_workers(shards):
    ads = adapters("text")
    everything = sorted(f"t{i}" for i in range(12))
    for workers in (0, 2):  # in the main process, then in 2 DataLoader workers per rank
        seen = []
        for rank in range(2):
            ds = MultimodalIterableDataset(
                _stream(12, shards), ads, {"text": "text"}, rank=rank, world_size=2
            )
            seen.append(_texts(ds, num_workers=workers))
        assert not set(seen[0]) & set(seen[1]), workers
        assert 5 <= len(seen[0]) <= 7, workers  # a fair share each
        assert sorted(seen[0] + seen[1]) == everything, workers  # no duplicate, no loss


def test_iterable_dataset_defaults_to_accelerate_state_and_validates():
    ads = adapters("text")
    ds = as_torch_dataset(_stream(5, 1), ads, {"text": "text"})
    assert isinstance(ds, MultimodalIterableDataset)
    assert (ds.rank, ds.world_size) == (0, 1)
    assert sorted(_texts(ds)) == [f"t{i}" for i in range(5)]
    ds.set_epoch(1)
    assert isinstance(
        as_torch_dataset(hf_dataset({"text": ["a"]}), ads, {"text": "text"}), MultimodalDataset
    )
    with pytest.raises(DataError, match="0 <= rank < world_size"):
        MultimodalIterableDataset(_stream(3, 1), ads, {"text": "text"}, rank=2, world_size=2)
    with pytest.raises(DataError, match="needs a datasets.IterableDataset"):
        MultimodalIterableDataset(
            hf_dataset({"text": ["a"]}), ads, {"text": "text"}, rank=0, world_size=1
        )
    with pytest.raises(DataError, match="for streaming use MultimodalIterableDataset"):
        MultimodalDataset(_stream(3, 1), ads, {"text": "text"})
    bad = hf_dataset({"text": ["ok", None]}).to_iterable_dataset()
    with pytest.raises(DataError, match=r"example 1 of the stream \(rank 0/1\) has no modality"):
        list(MultimodalIterableDataset(bad, ads, {"text": "text"}, rank=0, world_size=1))


# --------------------------------------------------------------------------- validation
def test_validate_dataset_catches_each_problem():
    ads = adapters("image", "text")
    good = hf_dataset({"caption": ["a", "b", "c"], "image": [Image.new("RGB", (8, 8))] * 3})
    cmap = {"image": "image", "text": "caption"}
    summary = validate_dataset(good, cmap, ads, batch_size=3, drop_last=True)
    assert summary.num_rows == 3 and summary.checked_rows == 3

    with pytest.raises(
        DataError,
        match=r"column 'text' \(modality 'text'\) is not in the dataset; available columns: "
        r"\['caption', 'image'\]\. Set column_map\['text'\] to one of them",
    ):
        validate_dataset(
            good, {"image": "image", "text": "text"}, ads, batch_size=2, drop_last=False
        )
    with pytest.raises(DataError, match=r"Set column_map\['depth'\] to one of them, or leave"):
        validate_dataset(
            good, {"depth": "depth"}, {"depth": TinyImageAdapter()}, batch_size=2, drop_last=False
        )

    typed = hf_dataset({"caption": ["a", "b", "c"], "num": [1, 2, 3]})
    with pytest.raises(
        AdapterInputError, match=r"row 0, column 'num' \(modality 'image', value of type int\)"
    ):
        validate_dataset(
            typed, {"image": "num", "text": "caption"}, ads, batch_size=2, drop_last=False
        )

    empty = good.select([])
    with pytest.raises(DataError, match=r"the dataset is empty \(0 rows\)"):
        validate_dataset(empty, cmap, ads, batch_size=2, drop_last=False)

    with pytest.raises(
        DataError,
        match=r"batch_size=8 is larger than the dataset \(3 usable rows\) and drop_last=True"
        r".*at most 3.*drop_last=False",
    ):
        validate_dataset(good, cmap, ads, batch_size=8, drop_last=True)
    assert validate_dataset(good, cmap, ads, batch_size=8, drop_last=False).num_rows == 3

    holes = hf_dataset(
        {
            "caption": ["a", None, None, "d", None],
            "image": [None, Image.new("RGB", (8, 8)), None, None, None],
        }
    )
    with pytest.raises(DataError, match=r"2 row\(s\) have no modality.*rows \[2, 4\]"):
        validate_dataset(holes, cmap, ads, batch_size=1, drop_last=False)
    counts = validate_dataset(holes.select([0, 1, 3]), cmap, ads, batch_size=1, drop_last=False)
    assert counts.rows_per_modality == {"image": 1, "text": 2}

    with pytest.raises(DataError, match="batch_size must be a positive int"):
        validate_dataset(good, cmap, ads, batch_size=0, drop_last=False)


def test_validate_stream():
    ads = adapters("text")
    summary = validate_dataset(_stream(20, 2), {"text": "text"}, ads, batch_size=4, drop_last=True)
    assert summary.num_rows is None and summary.checked_rows == 8
    with pytest.raises(DataError, match="stream is empty"):
        validate_dataset(
            _stream(3, 1).filter(lambda r: False),
            {"text": "text"},
            ads,
            batch_size=4,
            drop_last=True,
        )
    with pytest.raises(
        DataError,
        match=r"column 'caption' \(modality 'text'\) is not in the dataset; available columns: "
        r"\['text'\]",
    ):
        validate_dataset(_stream(3, 1), {"text": "caption"}, ads, batch_size=4, drop_last=True)


# ------------------------------------------------------------- built-in adapters (integration)
def test_builtin_adapters_on_the_builtin_dataset():
    from mmvq_adapters.audio import AudioAdapter
    from mmvq_adapters.image import ImageAdapter
    from mmvq_adapters.shapes import ShapeAttributes, render_image
    from mmvq_adapters.text import TextAdapter

    ads = {
        "image": ImageAdapter(resolution=16, base_channels=8, num_groups=4, channel_mult=(1, 2)),
        "text": TextAdapter(d_model=32, num_layers=1, num_heads=2),
        "audio": AudioAdapter(base_channels=8, num_groups=4, channel_mult=(1, 2)),
    }
    cfg = DataConfig(builtin_num_train=8, builtin_num_eval=2, builtin_options={"resolution": 16})
    train, _ = load_data(cfg, list(ads))
    cmap = cfg.column_map(list(ads))
    validate_dataset(train, cmap, ads, batch_size=4, drop_last=True)
    loader = DataLoader(
        MultimodalDataset(train, ads, cmap), batch_size=4, collate_fn=MultimodalCollator(ads)
    )
    batch = next(iter(loader))
    assert set(batch) == {"image", "text", "audio"}
    assert all(batch[m]["present"].all() for m in batch)
    assert batch["image"]["pixel_values"].shape == (4, 3, 16, 16)
    assert batch["audio"]["mel"].shape[0] == 4
    for row in range(4):
        truth = ShapeAttributes(*(train[row][k] for k in ("colour", "shape", "size", "position")))
        expected = (
            torch.from_numpy(np.array(render_image(truth, 16))).permute(2, 0, 1).float() / 127.5 - 1
        )
        assert torch.allclose(batch["image"]["pixel_values"][row], expected, atol=1e-5)
        text = ads["text"].tokenizer.decode(
            batch["text"]["input_ids"][row], skip_special_tokens=True
        )
        assert text == train[row]["text"]
