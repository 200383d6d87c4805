"""Saving and loading a MultimodalVQ through a local directory (mmvq/hub/format.py, Hub mixin)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from plugin_utils import VECTOR_PLUGIN_DIR, plugin_path
from plugins.vector_adapter import VectorAdapter
from safetensors.torch import load_file, save_file, save_model
from tiny_models import (
    TEXT_SPEC,
    VECTOR_DIST_NAME,
    VECTOR_DIST_VERSION,
    tiny_model,
    vector_batch,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
)
from torch import nn

from mmvq.hub.format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    PretrainedError,
    PretrainedNotFoundError,
    load_weights,
)
from mmvq.model import MultimodalVQ


def _edit_config(directory: Path, edit) -> None:
    path = directory / CONFIG_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path: Path, vector_plugin: None) -> tuple[MultimodalVQ, Path]:
    model = tiny_model(seed=1)
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    return model, directory


def test_round_trip_is_bit_identical_with_identical_outputs(saved) -> None:
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = MultimodalVQ.from_pretrained(directory)
    assert not loaded.training
    assert loaded.modalities == model.modalities
    expected, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    batch = vector_batch(model)
    codes, again = model.encode(batch), loaded.encode(batch)
    for level, by_modality in codes.levels():
        assert all(torch.equal(c, getattr(again, level)[m]) for m, c in by_modality.items())
    translated = model.decode(codes.select(["a"]), targets=["b"])["b"]
    assert torch.equal(translated, loaded.decode(codes.select(["a"]), targets=["b"])["b"])


def test_config_json_records_versions_distribution_and_adapter_configs(saved) -> None:
    model, directory = saved
    data = json.loads((directory / CONFIG_NAME).read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["mmvq_version"] == __import__("mmvq").__version__
    assert data["modalities"] == ["a", "b"]
    assert data["model"] == model.config.to_dict()
    record = data["adapters"]["b"]
    assert record == {
        "name": "vector",
        "distribution": VECTOR_DIST_NAME,
        "version": VECTOR_DIST_VERSION,
        "config": model.adapters["b"].config.to_dict(),
    }
    assert "module" not in json.dumps(data) and "vector_adapter" not in json.dumps(
        data
    )  # no import paths


def test_weights_file_is_plain_safetensors(saved) -> None:
    model, directory = saved
    state = load_file(str(directory / WEIGHTS_NAME))
    assert set(state) == set(model.state_dict())


def test_saves_are_byte_identical(saved, tmp_path: Path) -> None:
    model, directory = saved
    first = (directory / WEIGHTS_NAME).read_bytes()
    for i in range(
        4
    ):  # safetensors metadata order must not vary (a re-push skips unchanged weights)
        model.save_pretrained(tmp_path / f"again{i}")
        assert (tmp_path / f"again{i}" / WEIGHTS_NAME).read_bytes() == first
        assert (tmp_path / f"again{i}" / CONFIG_NAME).read_bytes() == (
            directory / CONFIG_NAME
        ).read_bytes()


@pytest.mark.usefixtures("vector_plugin")
def test_adapter_extras_round_trip_text_tokenizer(
    tmp_path: Path,
) -> None:
    model = tiny_model(seed=2, extra={"text": TEXT_SPEC})
    model.save_pretrained(tmp_path)
    extras = tmp_path / "adapters" / "text"
    assert extras.is_dir() and any(extras.rglob("*.json"))
    assert not (tmp_path / "adapters" / "a").exists()  # vector writes no extra files
    loaded = MultimodalVQ.from_pretrained(tmp_path)
    text = loaded.adapters["text"]
    batch = {"text": text.collate([text.preprocess("a red dot")])}
    assert torch.equal(
        batch["text"]["input_ids"],
        model.adapters["text"].collate([model.adapters["text"].preprocess("a red dot")])[
            "input_ids"
        ],
    )
    assert torch.equal(model.encode(batch).detail["text"], loaded.encode(batch).detail["text"])


@pytest.mark.usefixtures("vector_plugin")
def test_resave_removes_stale_adapter_files(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "adapters" / "gone" / "old.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left over")
    tiny_model().save_pretrained(tmp_path)
    assert not stale.exists()


# ---------------------------------------------------------------------------- bad inputs
def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / WEIGHTS_NAME).write_bytes(b"")
    with pytest.raises(
        PretrainedNotFoundError, match="has no config.json: it is not a model saved by mmvq"
    ):
        MultimodalVQ.from_pretrained(tmp_path)


def test_missing_directory_and_file_instead_of_directory(tmp_path: Path) -> None:
    with pytest.raises(PretrainedNotFoundError, match="no such directory"):
        MultimodalVQ.from_pretrained(tmp_path / "nope")
    with pytest.raises(PretrainedNotFoundError, match="no such directory"):
        MultimodalVQ.from_pretrained("./relative/nope")
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(PretrainedError, match="is a file; from_pretrained needs the directory"):
        MultimodalVQ.from_pretrained(file)


def test_missing_weights(saved) -> None:
    _, directory = saved
    (directory / WEIGHTS_NAME).unlink()
    with pytest.raises(PretrainedNotFoundError, match="has no model.safetensors"):
        MultimodalVQ.from_pretrained(directory)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_safetensors(saved, damage: str) -> None:
    _, directory = saved
    path = directory / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else b"\x07not safetensors at all"
    )
    with pytest.raises(
        PretrainedError, match="not a valid safetensors file .*truncated or corrupt"
    ):
        MultimodalVQ.from_pretrained(directory)


def test_config_naming_an_unregistered_adapter(saved) -> None:
    _, directory = saved

    def rename(data: dict) -> None:
        data["adapters"]["b"].update(name="nosuch", distribution="mmvq-nosuch", version="2.0")

    _edit_config(directory, rename)
    with pytest.raises(PretrainedError) as info:
        MultimodalVQ.from_pretrained(directory)
    message = str(info.value)
    assert "modality 'b' needs adapter 'nosuch'" in message
    assert "pip install 'mmvq-nosuch==2.0'" in message


def test_plugin_not_installed_names_the_distribution(tmp_path: Path) -> None:
    with plugin_path(VECTOR_PLUGIN_DIR):  # installed while saving ...
        tiny_model().save_pretrained(tmp_path)
    with pytest.raises(PretrainedError) as info:  # ... and uninstalled when loading
        MultimodalVQ.from_pretrained(tmp_path)
    message = str(info.value)
    assert (
        "modality 'a' needs adapter 'vector' (saved from distribution mmvq-vector-plugin 0.1)"
        in message
    )
    assert f"pip install '{VECTOR_DIST_NAME}=={VECTOR_DIST_VERSION}'" in message


def test_mismatched_tensor_shapes_are_listed(saved) -> None:
    _, directory = saved
    _edit_config(directory, lambda d: d["adapters"]["b"]["config"].update(hidden=24))
    with pytest.raises(PretrainedError) as info:
        MultimodalVQ.from_pretrained(directory)
    message = str(info.value)
    assert "does not match the model built from config.json" in message
    assert "adapters.b.encoder.0.weight file [32, 4] vs model [24, 4]" in message
    assert "adapters.b.decoder.0.weight" in message


def test_missing_and_unexpected_tensors_are_listed(saved) -> None:
    _, directory = saved
    path = directory / WEIGHTS_NAME
    state = load_file(str(path))
    state.pop("decoder.in_proj.bias")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(path))
    with pytest.raises(
        PretrainedError,
        match=r"missing from the file \(1\): decoder.in_proj.bias; "
        r"unexpected in the file \(1\): extra.weight",
    ):
        MultimodalVQ.from_pretrained(directory)


def test_tied_weights_load_through_the_alias_check(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

    source, target = Tied(), Tied()
    save_model(source, str(tmp_path / "w.safetensors"))
    assert len(load_file(str(tmp_path / "w.safetensors"))) == 3  # the shared weight is stored once
    load_weights(target, tmp_path / "w.safetensors")
    assert torch.equal(target.b.weight, source.a.weight) and target.a.weight is target.b.weight


@pytest.mark.parametrize(
    ("version", "match"),
    [
        (
            "2.0",
            (
                r"format_version 2.0 \(written by mmvq 9.9.9\); this mmvq .* reads format "
                r"1.x only: upgrade mmvq"
            ),
        ),
        ("0.3", r"format_version 0.3 .*load it with mmvq 9.9.9 .*and re-save it"),
        ("one", r"format_version must be 'MAJOR.MINOR'"),
    ],
)
def test_other_major_format_versions_fail_clearly(saved, version: str, match: str) -> None:
    _, directory = saved
    _edit_config(directory, lambda d: d.update(format_version=version, mmvq_version="9.9.9"))
    with pytest.raises(PretrainedError, match=match):
        MultimodalVQ.from_pretrained(directory)


def test_same_major_newer_minor_loads(saved) -> None:
    model, directory = saved
    _edit_config(
        directory, lambda d: d.update(format_version="1.7", mmvq_version="0.9.0", future_key=1)
    )
    loaded = MultimodalVQ.from_pretrained(directory)
    assert torch.equal(loaded.codebook.code_vectors, model.codebook.code_vectors)


def test_config_without_format_version_or_not_json(saved) -> None:
    _, directory = saved
    _edit_config(directory, lambda d: d.pop("format_version"))
    with pytest.raises(
        PretrainedError, match="has no 'format_version': it was not written by mmvq"
    ):
        MultimodalVQ.from_pretrained(directory)
    (directory / CONFIG_NAME).write_text("{not json")
    with pytest.raises(PretrainedError, match="config.json is not valid JSON"):
        MultimodalVQ.from_pretrained(directory)


def test_model_config_from_another_version_fails_clearly(saved) -> None:
    _, directory = saved
    _edit_config(directory, lambda d: d["model"].update(future_option=1))
    with pytest.raises(PretrainedError, match=r"'model' does not fit this mmvq .*future_option"):
        MultimodalVQ.from_pretrained(directory)


def test_adapter_version_mismatch_warns(saved) -> None:
    _, directory = saved
    _edit_config(directory, lambda d: d["adapters"]["a"].update(version="0.0.1"))
    with pytest.warns(
        UserWarning, match=f"saved with adapter 'vector' from {VECTOR_DIST_NAME} 0.0.1"
    ):
        MultimodalVQ.from_pretrained(directory)


@pytest.mark.usefixtures("vector_plugin")
def test_saving_an_unregistered_adapter_fails_before_writing(
    tmp_path: Path,
) -> None:
    class Unregistered(VectorAdapter):
        pass

    model = tiny_model()
    model.adapters["a"] = Unregistered(model.adapters["a"].config)
    with pytest.raises(
        PretrainedError, match="cannot save modality 'a': .*Unregistered is not registered"
    ):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_warnings_on_a_clean_round_trip(saved) -> None:
    _, directory = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultimodalVQ.from_pretrained(directory)
