"""Evaluation (mmvq/training/evaluate.py): metrics checked against direct computations on the same
model."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio
from train_helpers import tiny_data, tiny_model

from mmvq.concept import concept_similarity
from mmvq.data import MultimodalCollator, MultimodalDataset
from mmvq.training.evaluate import evaluate


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", message=".*TextTruncation.*")


@pytest.fixture(scope="module")
def setup():
    _, eval_ds = tiny_data(num_train=4, num_eval=7)
    model = tiny_model(seed=1)
    model.train()
    with torch.no_grad():  # one training forward: k-means-initialised codes, so codes differ
        loader = _loader(model, eval_ds, batch_size=7)
        model(next(iter(loader)))
    model.eval()
    return model, eval_ds


def _loader(model, ds, batch_size=3, dataset=None):
    dataset = (
        dataset
        if dataset is not None
        else MultimodalDataset(ds, dict(model.adapters), {"image": "image", "text": "text"})
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=MultimodalCollator(dict(model.adapters))
    )


def _all(model, ds, n):
    return next(iter(_loader(model, ds.select(range(n)), batch_size=n)))


def test_metrics_equal_direct_computation(setup):
    model, ds = setup
    n = 5
    metrics = evaluate(
        model, _loader(model, ds, batch_size=3), max_samples=n
    )  # batches of 3 + 2 (of 3)
    assert metrics["eval_samples"] == n

    batch = _all(model, ds, n)
    with torch.no_grad():
        out = model(batch)
        psnr = peak_signal_noise_ratio(
            ((out.recon["image"] + 1) / 2).clamp(0, 1),
            (batch["image"]["pixel_values"] + 1) / 2,
            data_range=1.0,
            reduction="none",
            dim=(1, 2, 3),
        )
        codes = model.encode(batch)
        from_image = model.decode(codes.select(["image"]), targets=["text"])["text"]
    assert metrics["image_psnr"] == pytest.approx(float(psnr.mean()), abs=1e-4)

    captions = ds["text"][:n]
    texts = model.adapters["text"].postprocess(from_image)
    expected = sum(t == c for t, c in zip(texts, captions)) / n
    assert metrics["image_to_text_exact_match"] == pytest.approx(expected)
    recon_texts = model.adapters["text"].postprocess(out.recon["text"])
    assert metrics["text_exact_match"] == pytest.approx(
        sum(t == c for t, c in zip(recon_texts, captions)) / n
    )

    sizes = {"detail": model.config.codebook.num_codes, "concept": model.config.concept.num_codes}
    for level, prefix in (("detail", ""), ("concept", "concept_")):
        _check_code_statistics(metrics, getattr(codes, level), sizes[level], prefix, n)
    # retrieval by concept codes: a hit is the partner or a row with the same caption or image
    captions_equal = torch.tensor([[a == b for b in captions] for a in captions])
    pixels = batch["image"]["pixel_values"].flatten(1)
    hits = captions_equal | (torch.cdist(pixels, pixels) == 0)
    for a, b in (("image", "text"), ("text", "image")):
        sim = concept_similarity(codes.concept[a], codes.concept[b])
        top = sim == sim.max(dim=1, keepdim=True).values
        expected = ((top & hits).sum(1).float() / top.sum(1).float()).mean().item()
        assert metrics[f"retrieval_r1_{a}_to_{b}"] == pytest.approx(expected)
    assert "image_to_text_concept_only_exact_match" in metrics


def _check_code_statistics(metrics, codes, k, prefix, n) -> None:
    used = {m: set(c[c >= 0].tolist()) for m, c in codes.items()}
    usage = len(used["image"] | used["text"]) / k
    assert metrics[prefix + "codebook_usage"] == pytest.approx(usage)
    per = metrics[prefix + "codebook_usage_per_modality"]
    assert per["image"] == pytest.approx(len(used["image"]) / k)
    assert metrics[prefix + "overlap"] == pytest.approx(
        len(used["image"] & used["text"]) / len(used["image"] | used["text"])
    )
    for m in ("image", "text"):
        counts = Counter(codes[m][codes[m] >= 0].tolist())
        total = sum(counts.values())
        entropy = -sum(c / total * math.log(c / total) for c in counts.values())
        assert metrics[prefix + "perplexity"][m] == pytest.approx(math.exp(entropy), rel=1e-4)
    jaccards = []
    for i in range(n):
        a, b = set(codes["image"][i].tolist()) - {-1}, set(codes["text"][i].tolist()) - {-1}
        jaccards.append(len(a & b) / len(a | b))
    assert metrics[prefix + "same_code_agreement"] == pytest.approx(sum(jaccards) / n)


def test_scorers_get_translations_and_raw_sources_in_order(setup):
    model, ds = setup
    calls = []

    def scorer(images, captions):
        calls.append((images, captions))
        return {
            "text_to_image_score": float(len(captions)),
            "sizes": float(all(im.size == (16, 16) for im in images)),
        }

    def plain(texts, images):
        return 0.25

    metrics = evaluate(
        model, _loader(model, ds), translation_scorers={"text->image": scorer, "image->text": plain}
    )
    # per batch: the translations from both code levels, then from concept codes alone
    assert [c for call in calls[0::2] for c in call[1]] == ds["text"]
    assert [c for call in calls[1::2] for c in call[1]] == ds["text"]
    assert all(isinstance(im, Image.Image) for call in calls for im in call[0])
    for level in ("", "_concept_only"):
        assert metrics[f"text_to_image{level}_score"] == pytest.approx(
            (3 * 3 + 3 * 3 + 1 * 1) / 7
        )  # example-weighted
        assert metrics[f"text_to_image{level}_score_sizes"] == 1.0
        assert metrics[f"image_to_text{level}_score"] == 0.25


def test_rows_without_a_modality_are_left_out_of_translations(setup):
    model, ds = setup
    texts = ds["text"]
    partial = ds.remove_columns("text").add_column(
        "text", [t if i % 2 == 0 else None for i, t in enumerate(texts)]
    )
    sources = []
    metrics = evaluate(
        model,
        _loader(model, partial),
        translation_scorers={"text->image": lambda ims, caps: sources.extend(caps) or 1.0},
    )
    # scored twice (both code levels, then concept codes alone), the rows with text only
    assert sorted(sources) == sorted([t for i, t in enumerate(texts) if i % 2 == 0] * 2)
    assert metrics["eval_samples"] == 7
    assert "image_psnr" in metrics and "image_to_text_exact_match" in metrics


def test_examples_with_nonfinite_inputs_are_left_out(setup):
    model, ds = setup
    base = MultimodalDataset(ds, dict(model.adapters), {"image": "image", "text": "text"})

    class Poisoned(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            example = base[i]
            if i == 4:
                example["image"]["pixel_values"][0, 0, 0] = float("inf")
            return example

    metrics = evaluate(model, _loader(model, ds, dataset=Poisoned()))
    assert metrics["eval_samples"] == 6 and metrics["eval_nonfinite_examples"] == 1
    assert math.isfinite(metrics["image_psnr"])


def test_samples_show_originals_reconstructions_and_translations(setup, tmp_path):
    model, ds = setup
    evaluate(model, _loader(model, ds), sample_dir=tmp_path, num_sample_rows=5)
    grid = Image.open(tmp_path / "image.png")
    assert grid.size == (3 * 18 + 2, 5 * 18 + 2)
    lines = (tmp_path / "text.txt").read_text().splitlines()
    assert lines[0] == "# original -> reconstruction -> from_image"
    assert [line.split(" -> ")[0] for line in lines[1:]] == ds["text"][:5]
    assert "from_text" in (tmp_path / "README.txt").read_text()


def test_references_travel_with_the_batch_through_subsets_and_shuffling(setup):
    model, ds = setup
    dataset = MultimodalDataset(ds, dict(model.adapters), {"image": "image", "text": "text"})
    subset = torch.utils.data.Subset(dataset, [5, 2])
    loader = torch.utils.data.DataLoader(
        subset, batch_size=2, collate_fn=MultimodalCollator(dict(model.adapters))
    )
    refs = next(iter(loader)).references
    assert refs[0]["text"] == ds["text"][5] and refs[1]["text"] == ds["text"][2]
    # a shuffled loader: each row still carries its own raw values, so scorers get the captions
    # of exactly the rows they score
    shuffled = torch.utils.data.DataLoader(
        dataset,
        batch_size=3,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=MultimodalCollator(dict(model.adapters)),
    )
    captions = []
    for batch in shuffled:
        tokenizer = model.adapters["text"].tokenizer
        texts = [
            tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["text"]["input_ids"]
        ]
        assert texts == [r["text"] for r in batch.references]
        captions += texts
    assert sorted(captions) == sorted(ds["text"])
    seen = []
    evaluate(
        model,
        shuffled,
        translation_scorers={"text->image": lambda ims, caps: seen.extend(caps) or 1.0},
    )
    assert sorted(seen) == sorted(
        list(ds["text"]) * 2
    )  # both code levels, then concept codes alone
    # a collator told not to keep them: batches carry none
    bare = MultimodalCollator(dict(model.adapters), references=False)
    assert bare([dataset[0], dataset[1]]).references is None


def test_bad_arguments_are_clear_errors(setup):
    model, ds = setup
    loader = _loader(model, ds)
    with pytest.raises(ValueError, match="'<source>-><target>'"):
        evaluate(model, loader, translation_scorers={"text->sound": lambda a, b: 0.0})
    with pytest.raises(ValueError, match="'<source>-><target>'"):
        evaluate(model, loader, translation_scorers={"text": lambda a, b: 0.0})
    with pytest.raises(TypeError, match="must be callable"):
        evaluate(model, loader, translation_scorers={"text->image": 3})
    with pytest.raises(ValueError, match="max_samples must be None or >= 1"):
        evaluate(model, loader, max_samples=0)
    with pytest.raises(ValueError, match="no example to evaluate"):
        evaluate(model, [])
    assert not model.training


def test_progress_bar_on_stderr(setup, capsys):
    model, ds = setup
    evaluate(model, _loader(model, ds), max_samples=5, progress_bar=True)
    err = capsys.readouterr().err
    # sized by max_samples (the dataset has 7); the bar's last refresh is time-dependent, so only
    # its first state is asserted
    assert "evaluating" in err and "0/5 " in err
    evaluate(model, _loader(model, ds), progress_bar=False)
    assert "evaluating" not in capsys.readouterr().err
