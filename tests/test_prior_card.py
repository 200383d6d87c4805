"""The prior's model card (mmvq/prior/card.py): written by ``save_pretrained`` beside the prior,
with the generation metrics (table and ``eval_results.json``), the layout of its sequences, an
optional sample grid, and checked inputs."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from train_helpers import tiny_model, tiny_prior

from mmvq.hub.card_inputs import ModelCardInputError
from mmvq.prior import MultimodalPrior

METRICS = {"eval_loss": 1.234567, "eval_perplexity": 3.4371, "steps": 800, "num_parameters": 9}
SHOWN = {"eval_loss": "1.235", "eval_perplexity": "3.437", "steps": "800", "num_parameters": "9"}


def test_the_card_shows_the_metrics_layout_and_sample_grid(tmp_path) -> None:
    prior = tiny_prior(tiny_model())
    grid = Image.new("RGB", (8, 8), (255, 0, 0))
    out = prior.save_pretrained(
        tmp_path / "prior", metrics=METRICS, sample_image=grid, repo_id="org/shapes"
    )
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "mmvq"
    assert card.data.tags == ["mmvq", "prior", "causal-lm", "image", "text"]
    text = card.text
    for key, value in SHOWN.items():  # 4 significant digits
        assert f"| {key} | {value} |" in text, key
    assert "# shapes prior" in text and f"**{prior.num_parameters():,}** parameters" in text
    assert f"Vocabulary: **{prior.tokenizer.vocab_size}** ids" in text
    for span in prior.tokenizer.spans:
        assert f"| {span.modality} | {span.level} | {span.length} | {span.num_codes} |" in text
    assert "![Sample grid](sample_grid.png)" in text and (out / "sample_grid.png").is_file()
    assert json.loads((out / "eval_results.json").read_text()) == METRICS
    assert 'MultimodalPrior.from_pretrained("org/shapes", model=model)' in text
    # the card and grid do not stop the prior from loading (no code in the folder)
    assert MultimodalPrior.from_pretrained(out).tokenizer.vocab == prior.tokenizer.vocab
    # saved again without metrics or grid: the card says so, stale files are gone
    prior.save_pretrained(out)
    text = ModelCard.load(out / "README.md").text
    assert "No evaluation recorded" in text and "No sample grid" in text
    assert not (out / "sample_grid.png").exists() and not (out / "eval_results.json").exists()


def test_a_metrics_file_is_read_and_bad_inputs_are_refused_before_writing(tmp_path) -> None:
    prior = tiny_prior(tiny_model())
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    out = prior.save_pretrained(tmp_path / "a", metrics=metrics)
    assert "| eval_perplexity | 3.437 |" in (out / "README.md").read_text()
    with pytest.raises(ModelCardInputError, match=r"metrics='.*nowhere\.json': no such file"):
        prior.save_pretrained(tmp_path / "b", metrics=tmp_path / "nowhere.json")
    with pytest.raises(ModelCardInputError, match="sample_image"):
        prior.save_pretrained(tmp_path / "c", sample_image=metrics)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
