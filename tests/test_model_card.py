"""The model card (README.md) written by save_pretrained / push_to_hub (mmvq/hub/model_card.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from tiny_models import (
    VECTOR_DIST_NAME,
    VECTOR_DIST_VERSION,
    tiny_model,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
)

from mmvq.hub.model_card import (
    ModelCardInputError,
    build_model_card,
    check_card_inputs,
    load_metrics,
)

pytestmark = pytest.mark.usefixtures("vector_plugin")

METRICS = {
    "step": 1200,
    "eval": {
        "usage": {"a": 0.8125, "b": 0.25},
        "perplexity": {"a": 21.5, "b": 6.03125},
        "b/mse": 0.0123456,
    },
}


@pytest.fixture
def sample_png(tmp_path: Path) -> Path:
    path = tmp_path / "grid.png"
    Image.new("RGB", (12, 8), (200, 10, 10)).save(path)
    return path


def test_saved_card_content(tmp_path: Path, sample_png: Path) -> None:
    model = tiny_model()
    model.save_pretrained(
        tmp_path / "m",
        metrics=METRICS,
        sample_image=sample_png,
        training_data="4k random vectors",
        repo_id="org/tiny",
    )
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "mmvq"
    assert {"mmvq", "a", "b"} <= set(card.data.tags)
    text = card.text
    # modalities, adapters, distributions, versions, tokens per sample, usage and perplexity
    assert (
        f"| a | `vector` | {VECTOR_DIST_NAME} | {VECTOR_DIST_VERSION} | 4 | 0.8125 | 21.5 |" in text
    )
    assert (
        f"| b | `vector` | {VECTOR_DIST_NAME} | {VECTOR_DIST_VERSION} | 3 | 0.25 | 6.031 |" in text
    )
    assert "Detail codes: **32** of dimension **16**" in text
    assert "Concept codes: **4** per sample and modality from a codebook of **256**" in text
    assert "4k random vectors" in text
    assert "| eval/b/mse | 0.01235 |" in text and "| step | 1200 |" in text
    assert "![Sample grid](sample_grid.png)" in text
    assert Image.open(tmp_path / "m" / "sample_grid.png").size == (12, 8)
    assert 'MultimodalVQ.from_pretrained("org/tiny")' in text
    assert f"pip install mmvq {VECTOR_DIST_NAME}" in text
    assert "mmvq encode org/tiny --a EXAMPLE" in text


def test_card_without_extras_says_what_is_missing(tmp_path: Path) -> None:
    tiny_model().save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| a | `vector` |" in text and "not measured | not measured |" in text
    assert "No evaluation recorded" in text and "No sample grid" in text and "Not recorded" in text
    assert not list(tmp_path.glob("sample_grid.*"))


def test_metrics_from_a_json_file_and_dataset_ids(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(METRICS))
    card = build_model_card(
        tiny_model(), metrics=path, training_data={"datasets": ["org/shapes"], "examples": 4096}
    )
    assert card.data.datasets == ["org/shapes"]
    assert "- **examples**: 4096" in card.text and "| 0.8125 |" in card.text


def test_resave_without_image_removes_the_old_grid(tmp_path: Path, sample_png: Path) -> None:
    model = tiny_model()
    model.save_pretrained(tmp_path, sample_image=sample_png)
    assert (tmp_path / "sample_grid.png").is_file()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "sample_grid.png").exists()
    assert "sample_grid" not in (tmp_path / "README.md").read_text()


def test_pil_sample_image_and_jpeg_names(tmp_path: Path) -> None:
    model = tiny_model()
    model.save_pretrained(tmp_path / "pil", sample_image=Image.new("RGB", (4, 4)))
    assert (tmp_path / "pil" / "sample_grid.png").is_file()
    jpeg = tmp_path / "grid.jpeg"
    Image.new("RGB", (4, 4)).save(jpeg)
    model.save_pretrained(tmp_path / "jpg", sample_image=jpeg)
    assert (tmp_path / "jpg" / "sample_grid.jpg").is_file()


def test_load_metrics_of_nothing() -> None:
    assert load_metrics(None) == {}


# ---------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": [1, 2]}, "metrics must be a dict of metric name -> value or a path"),
        ({"metrics": "missing.json"}, "metrics='missing.json': no such file"),
        ({"sample_image": "missing.png"}, "sample_image='missing.png': no such file"),
        ({"sample_image": 3}, "sample_image must be an image file path or a PIL.Image"),
        ({"training_data": 5}, "training_data must be a description string"),
    ],
)
def test_bad_card_inputs_fail_before_anything_is_written(
    tmp_path: Path, kwargs: dict, match: str
) -> None:
    with pytest.raises(ModelCardInputError, match=match):
        tiny_model().save_pretrained(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_metrics_file_and_fake_image(tmp_path: Path) -> None:
    bad_json = tmp_path / "m.json"
    bad_json.write_text("{oops")
    with pytest.raises(ModelCardInputError, match="is not valid JSON"):
        check_card_inputs(metrics=bad_json)
    not_object = tmp_path / "list.json"
    not_object.write_text("[1]")
    with pytest.raises(ModelCardInputError, match="must hold a JSON object"):
        check_card_inputs(metrics=not_object)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(ModelCardInputError, match="fake.png' is not a readable image"):
        check_card_inputs(sample_image=fake)
    wrong = tmp_path / "grid.bmpx"
    wrong.write_bytes(b"x")
    with pytest.raises(ModelCardInputError, match="has extension '.bmpx'"):
        check_card_inputs(sample_image=wrong)


def test_unknown_model_card_kwargs(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError,
        match=r"model_card_kwargs has unknown key\(s\) \['languge'\]; the mmvq card takes "
        "metrics, sample_image, training_data, license",
    ):
        tiny_model().save_pretrained(tmp_path, model_card_kwargs={"languge": "en"})
    with pytest.raises(ModelCardInputError, match="license='Apache 2' must be a Hub license"):
        tiny_model().save_pretrained(tmp_path, license="Apache 2")
    assert not (tmp_path / "README.md").exists()  # nothing written


def test_metadata_model_index_and_license(tmp_path: Path) -> None:
    """The card's metadata parses with huggingface_hub: license, library, pipeline tag, datasets
    and one model-index entry per evaluation metric (bookkeeping keys left out)."""
    metrics = {"a_mse": 0.25, "codebook_usage": 0.5, "perplexity": {"a": 3.0}, "steps": 40}
    balance = {
        "balancer": "pareto",
        "balance_weight_per_modality": {"a": 1.5, "b": 0.5},
        "balance_grad_share_per_modality": {"a": 0.75, "b": 0.25},
    }
    metrics.update(balance)
    tiny_model().save_pretrained(
        tmp_path,
        metrics=metrics,
        license="mit",
        training_data={"datasets": ["org/vectors"], "dataset_name": "Vectors", "eval_split": "val"},
        repo_id="org/tiny",
    )
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.license == "mit" and data.library_name == "mmvq"
    assert data.pipeline_tag == "any-to-any" and data.datasets == ["org/vectors"]
    assert data.model_name == "tiny"
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"a_mse", "codebook_usage", "perplexity/a"}  # not "steps"
    assert results["a_mse"].metric_value == 0.25
    assert results["perplexity/a"].dataset_type == "org/vectors"
    assert results["a_mse"].dataset_name == "Vectors" and results["a_mse"].dataset_split == "val"
    assert "| steps | 40 |" in card.text  # the table keeps everything
    # the balancer's final weights and gradient shares: in the modality table, not model-index
    assert "| 1.5 | 0.75 |" in card.text and "| 0.5 | 0.25 |" in card.text
    assert "(modality balancer:\npareto)" in card.text
    # the metrics are kept beside the card, as transformers' Trainer names them
    kept = json.loads((tmp_path / "eval_results.json").read_text())
    assert kept == {
        "a_mse": 0.25,
        "codebook_usage": 0.5,
        "perplexity/a": 3.0,
        "steps": 40,
        "balancer": "pareto",
        "balance_weight_per_modality/a": 1.5,
        "balance_weight_per_modality/b": 0.5,
        "balance_grad_share_per_modality/a": 0.75,
        "balance_grad_share_per_modality/b": 0.25,
    }


def test_card_inputs_read_back_from_a_saved_directory(tmp_path: Path, sample_png: Path) -> None:
    from mmvq.hub.card_inputs import read_card_inputs

    data = {"datasets": ["org/vectors"], "examples": "4096", "eval_split": "validation"}
    model = tiny_model()
    model.save_pretrained(
        tmp_path / "m", metrics=METRICS, sample_image=sample_png, training_data=data, license="mit"
    )
    inputs = read_card_inputs(tmp_path / "m")
    assert inputs["training_data"] == data and inputs["license"] == "mit"
    assert inputs["sample_image"] == str(tmp_path / "m" / "sample_grid.png")
    model.save_pretrained(tmp_path / "again", **inputs)
    assert (tmp_path / "again" / "README.md").read_text() == (
        tmp_path / "m" / "README.md"
    ).read_text()
    tiny_model().save_pretrained(tmp_path / "bare")
    assert read_card_inputs(tmp_path / "bare") == dict.fromkeys(
        ("metrics", "sample_image", "training_data", "license")
    )
