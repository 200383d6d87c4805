"""Prior training on Accelerate: outputs, the datasets.map codes cache, exact resume, and the
collator's random order / condition dropout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import clean_accelerate, tiny_data, tiny_model  # noqa: F401 (autouse fixture)

from mmvq.hub.card_inputs import cell
from mmvq.prior import MultimodalPrior, PriorCollator, PriorConfig, PriorTrainConfig, train_prior
from mmvq.prior.data import encode_dataset, observed_padding
from mmvq.prior.glue import split_codes
from mmvq.training.run_identity import OutputDirError

TINY = PriorConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def config(out, **overrides) -> PriorTrainConfig:
    options = {
        "output_dir": str(out),
        "max_steps": 4,
        "per_device_batch_size": 4,
        "report_to": "none",
        "tqdm": False,
        "log_every": 1,
        "cpu": True,
        "max_eval_samples": 8,
        "lr_warmup_steps": 1,
    }
    options.update(overrides)
    return PriorTrainConfig(**options)


def test_train_prior_writes_a_loadable_prior(tmp_path) -> None:
    model = tiny_model().eval()
    train, evals = tiny_data(24, 6)
    result = train_prior(model, train, config(tmp_path, eval_every=2), TINY, evals)
    out = tmp_path
    assert (out / "final" / "lm" / "model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["eval_loss"] > 0
    assert metrics == result.metrics
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert any("eval_loss" in r for r in log)
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    # the final prior's model card shows the run's metrics (and keeps them beside it)
    card = (out / "final" / "README.md").read_text()
    assert f"| eval_loss | {cell(metrics['eval_loss'])} |" in card
    assert f"| eval_perplexity | {cell(metrics['eval_perplexity'])} |" in card
    assert json.loads((out / "final" / "eval_results.json").read_text()) == metrics
    prior = MultimodalPrior.from_pretrained(out / "final", model=model)
    assert prior.tokenizer.vocab == result.prior.tokenizer.vocab
    # the tokenizer's padding comes from the data: captions pad, images never do
    assert {s.modality: s.padding for s in prior.tokenizer.spans} == {"image": False, "text": True}
    sample = prior.generate(2, modalities=["image"])
    assert len(sample.outputs["image"]) == 2
    assert model.training is False and not any(p.requires_grad for p in model.parameters())


def test_codes_are_encoded_once_and_cached(tmp_path) -> None:
    model = tiny_model().eval()
    train, _ = tiny_data(12, 2)
    first = encode_dataset(model, train, batch_size=5, cache_dir=tmp_path, keep_columns=["colour"])
    files = [f["filename"] for f in first.cache_files]
    assert len(files) == 1 and files[0].startswith(str(tmp_path))
    mtime = (tmp_path / files[0].split("/")[-1]).stat().st_mtime_ns
    again = encode_dataset(model, train, batch_size=5, cache_dir=tmp_path, keep_columns=["colour"])
    assert [f["filename"] for f in again.cache_files] == files
    assert (tmp_path / files[0].split("/")[-1]).stat().st_mtime_ns == mtime  # loaded, not rewritten
    assert again["codes.image.detail"] == first["codes.image.detail"]
    assert sorted(first.column_names) == [
        "codes.image.concept",
        "codes.image.detail",
        "codes.text.concept",
        "codes.text.detail",
        "colour",
        "index",
    ]
    # another model (other weights) is another cache entry
    other = encode_dataset(tiny_model(seed=1).eval(), train, batch_size=5, cache_dir=tmp_path)
    assert [f["filename"] for f in other.cache_files] != files
    assert observed_padding(first) == {
        ("image", "concept"): False,
        ("image", "detail"): False,
        ("text", "concept"): False,
        ("text", "detail"): True,
    }
    # the codes are the model's own
    batch = model.prepare([{"image": train[0]["image"], "text": train[0]["text"]}])
    codes = split_codes(model.encode(batch))
    assert first[0]["codes.image.detail"] == codes[("image", "detail")][0].tolist()


def test_resume_is_exact(tmp_path, capsys) -> None:
    """Run 9 steps (two epochs of 6 batches) saving every 3; resume a copy of checkpoint-6 (and of
    the run's run.json: the same run) in a fresh directory: the final weights are identical, and
    the resume is logged (mmvq's logger, visible at the default verbosity)."""
    model = tiny_model().eval()
    train, _ = tiny_data(24, 2)
    full = tmp_path / "full"
    opts = {"max_steps": 9, "save_every": 3, "keep_last_checkpoints": 0, "condition_dropout": 0.5}
    train_prior(model, train, config(full, **opts), TINY)
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-6", resumed / "checkpoints" / "checkpoint-6")
    shutil.copy(full / "run.json", resumed / "run.json")
    result = train_prior(
        model, train, config(resumed, resume_from_checkpoint="latest", **opts), TINY
    )
    assert [h["step"] for h in result.history] == [7, 8, 9]
    assert "resumed from" in capsys.readouterr().err
    a = load_file(str(full / "final" / "lm" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "lm" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and resuming into another prior size is refused clearly: another model is another run
    bigger = PriorConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(OutputDirError, match=r"belongs to another run .*: its model differ"):
        train_prior(model, train, config(resumed, resume_from_checkpoint="latest", **opts), bigger)
    # ... and so is a checkpoint of another shape given by path to a fresh directory
    with pytest.raises(ValueError, match="another shape"):
        resume = str(full / "checkpoints" / "checkpoint-6")
        train_prior(model, train, config(tmp_path / "new", resume_from_checkpoint=resume), bigger)


def test_collator_orders_and_condition_dropout(tmp_path) -> None:
    model = tiny_model().eval()
    train, _ = tiny_data(40, 2)
    codes = encode_dataset(model, train, batch_size=20)
    from mmvq.prior import MultimodalTokenizer

    tok = MultimodalTokenizer.from_model(model, padding=observed_padding(codes))
    rows = [codes[i] for i in range(40)]
    collate = PriorCollator(tok, modality_order="random", condition_dropout=0.5, seed=0)
    batch = collate(rows)
    orders = [tuple(o) for o in tok.decode_codes(batch["input_ids"]).order]
    assert {("image", "text"), ("text", "image"), ("image",), ("text",)} <= set(orders)
    single = sum(len(o) == 1 for o in orders)
    assert 8 <= single <= 32  # about half of 40 rows keep one modality
    assert torch.equal(
        batch["labels"][batch["attention_mask"] == 0],
        torch.full_like(batch["labels"][batch["attention_mask"] == 0], -100),
    )
    # a function of (seed, epoch, row index) only: same rows, same batch; next epoch differs
    assert torch.equal(collate(rows)["input_ids"], batch["input_ids"])
    collate.set_epoch(1)
    assert not torch.equal(collate(rows)["input_ids"], batch["input_ids"])
    fixed = PriorCollator(tok, modality_order=None)(rows)
    assert {tuple(o) for o in tok.decode_codes(fixed["input_ids"]).order} == {("image", "text")}


def _files(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_output_dir_of_another_run_is_refused_untouched(tmp_path) -> None:
    """Another seed, options or tokenizer model: refused before anything is written, naming the
    folder, what differs and the fix; the earlier run's files are untouched."""
    model = tiny_model().eval()
    train, _ = tiny_data(12, 2)
    out = tmp_path / "run"
    train_prior(model, train, config(out, max_steps=2), TINY)
    recorded = json.loads((out / "run.json").read_text())
    before = _files(out)
    others = [
        (model, config(out, max_steps=2, seed=3), "seed"),
        (model, config(out, max_steps=2, learning_rate=1e-4), "config"),
        (tiny_model(seed=1).eval(), config(out, max_steps=2), "model"),  # other codes
    ]
    for other_model, cfg, what in others:
        with pytest.raises(OutputDirError) as err:
            train_prior(other_model, train, cfg, TINY)
        message = str(err.value)
        assert f"output_dir {str(out)!r} belongs to another run" in message
        assert f"its {what} differ" in message and "--overwrite_output_dir" in message
        assert _files(out) == before
    assert json.loads((out / "run.json").read_text()) == recorded
    # the same run again is refused too (it would overwrite its checkpoints): resume it
    with pytest.raises(OutputDirError, match=r"already holds this run's progress .*resume_from"):
        train_prior(model, train, config(out, max_steps=2), TINY)
    # another training set is another run
    other_data, _ = tiny_data(14, 2)
    with pytest.raises(OutputDirError, match=r"its data differ"):
        train_prior(model, other_data, config(out, max_steps=2), TINY)


def test_same_run_resumes_and_extends_and_overwrite_starts_over(tmp_path) -> None:
    model = tiny_model().eval()
    train, _ = tiny_data(12, 2)
    out = tmp_path / "run"
    first = train_prior(model, train, config(out, max_steps=2), TINY)
    fingerprint = json.loads((out / "run.json").read_text())["fingerprint"]
    # the same run, longer (max_steps is not part of its identity), resumed from step 2
    longer = train_prior(
        model, train, config(out, max_steps=4, resume_from_checkpoint="latest"), TINY
    )
    assert [h["step"] for h in longer.history] == [3, 4]
    assert json.loads((out / "run.json").read_text())["fingerprint"] == fingerprint
    assert first.metrics["steps"] == 2 and longer.metrics["steps"] == 4
    # --overwrite_output_dir: another run replaces it, from step 1, its old checkpoints gone
    again = train_prior(
        model, train, config(out, max_steps=1, seed=5, overwrite_output_dir=True), TINY
    )
    assert [h["step"] for h in again.history] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1"]
    assert json.loads((out / "run.json").read_text())["fingerprint"] != fingerprint
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1
    assert (out / "cache").is_dir()  # the codes cache is kept: it is keyed by its inputs


def test_a_run_failing_before_its_first_step_leaves_the_directory_unclaimed(tmp_path) -> None:
    model = tiny_model().eval()
    train, _ = tiny_data(6, 2)
    out = tmp_path / "run"
    with pytest.raises(Exception, match="nope"):
        train_prior(model, train, config(out), TINY, column_map={"image": "nope"})
    assert not (out / "run.json").exists()
    train_prior(model, train, config(out, max_steps=1), TINY)  # so another run may take it
    assert (out / "final").is_dir()
