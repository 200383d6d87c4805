"""The training loop end to end on tiny real models: outputs, NaN skipping, balancers, alignment,
GAN head and the bad inputs that must fail before training starts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from train_helpers import (  # clean_accelerate: an autouse fixture
    clean_accelerate,  # noqa: F401
    tiny_config,
    tiny_data,
    tiny_model,
    torch_dataset,
)

from mmvq.adapter import AdapterConfig, AdapterInputError, ModalityAdapter, Tokens
from mmvq.data import DataError
from mmvq.training import TrainingError, train
from mmvq_adapters.shapes import shapes_text_to_image_scorer


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def _train_records(output_dir: Path) -> list[dict]:
    return [r for r in _log(output_dir) if "eval" not in r]


# ------------------------------------------------------------------------ end to end
def test_short_run_writes_samples_metrics_logs_and_checkpoints(tmp_path, data):
    train_ds, eval_ds = data
    model = tiny_model()
    cfg = tiny_config(
        tmp_path / "run",
        max_steps=4,
        eval_every=2,
        save_every=2,
        keep_last_checkpoints=1,
        alignment="weight=0.1",
        report_to="tensorboard",
    )
    result = train(
        model,
        train_ds,
        cfg,
        eval_ds,
        translation_scorers={"text->image": shapes_text_to_image_scorer},
    )
    out = tmp_path / "run"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    for key in (
        "image_psnr",
        "image_ssim",
        "text_exact_match",
        "text_token_accuracy",
        "text_to_image_score",
        "image_to_text_exact_match",
        "codebook_usage",
        "same_code_agreement",
        "train_seconds",
    ):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["steps"] == 4 and metrics["nonfinite_steps"] == 0
    assert set(metrics["perplexity"]) == {"image", "text"}
    assert 0.0 < metrics["codebook_usage"] <= 1.0 and 0.0 <= metrics["text_to_image_score"] <= 1.0

    for step in (2, 4):
        grid = Image.open(out / "samples" / f"step-{step}" / "image.png")
        # 4 rows (examples) x 3 columns (original | reconstruction | from_text) of 16 px, 2 px
        # padding
        assert grid.size == (3 * 18 + 2, 4 * 18 + 2)
        lines = (out / "samples" / f"step-{step}" / "text.txt").read_text().splitlines()
        assert lines[0] == "# original -> reconstruction -> from_image" and len(lines) == 5
        assert all(line.startswith("a ") for line in lines[1:])  # the real captions come first

    records = _train_records(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    last = records[-1]
    for key in (
        "loss/rec/image",
        "loss/rec/text",
        "loss/vq/image",
        "balance/weight/text",
        "balance/grad_norm/image",
        "codebook/usage/image",
        "codebook/perplexity/text",
        "codebook/overlap/image-text",
        "codebook/agreement/image-text",
        "lr",
        "loss/align",
        "gan/g_loss/image",
        "gan/adaptive_weight/image",
        "gan/d_loss/image",
        "grad_norm/generator",
    ):
        assert key in last, key
    assert "gan/g_loss/image" not in records[0]  # no GAN loss before gan_start_step=2
    assert len([r for r in _log(out) if "eval" in r]) == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-4"]
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert [h["step"] for h in result.history] == [1, 2, 3, 4]


def test_training_lowers_the_loss(tmp_path, data):
    train_ds, _ = data
    result = train(
        tiny_model(),
        train_ds,
        tiny_config(tmp_path, max_steps=12, gan_weight=0.0, learning_rate=3e-3),
    )
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


def test_ema_weights_are_evaluated_and_trail_the_live_weights(tmp_path, data):
    train_ds, eval_ds = data
    result = train(
        tiny_model(), train_ds, tiny_config(tmp_path, max_steps=3, ema_decay=0.5), eval_ds
    )
    live = dict(result.model.named_parameters())
    ema = dict(result.ema_model.named_parameters())
    assert not any(p.requires_grad for p in ema.values())
    assert any(not torch.equal(live[k], ema[k]) for k in live)


# -------------------------------------------------------------------- non-finite
class _Poisoned(torch.utils.data.Dataset):
    """The real examples, with NaN pixels in the examples listed in ``bad``."""

    def __init__(self, base, bad):
        self.base, self.bad = base, set(bad)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        example = self.base[i]
        if i in self.bad:
            example["image"] = {
                "pixel_values": torch.full_like(example["image"]["pixel_values"], float("nan"))
            }
        return example


def test_nan_batch_skips_the_step_and_leaves_weights_and_codebook_untouched(tmp_path, data):
    train_ds, eval_ds = data
    opts = dict(shuffle=False, gan_start_step=0, num_sample_rows=0)
    model = tiny_model()
    one = train(
        model,
        torch_dataset(model, train_ds),
        tiny_config(tmp_path / "one", max_steps=1, **opts),
        eval_ds,
    )

    model = tiny_model()
    poisoned = _Poisoned(torch_dataset(model, train_ds), bad=[5])  # the second batch of 4
    two = train(model, poisoned, tiny_config(tmp_path / "two", max_steps=2, **opts), eval_ds)

    assert two.metrics["nonfinite_steps"] == 1
    assert [h["skipped"] for h in two.history] == [False, True]
    before, after = one.model.state_dict(), two.model.state_dict()
    assert before.keys() == after.keys()
    for name in before:  # parameters and buffers (codebook vectors, EMA statistics, counters)
        assert torch.equal(before[name], after[name]), name
    assert any(name.startswith("codebook.") for name in before)
    records = _train_records(tmp_path / "two")
    assert records[-1]["nonfinite_steps"] == 1.0


@dataclass
class _PairConfig(AdapterConfig):
    size: int = 8


class _PairAdapter(ModalityAdapter):
    """A plugin-style adapter whose target is separate from its input: an overflowing target makes
    the loss infinite while the codes stay finite."""

    config_class = _PairConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.enc = torch.nn.Linear(self.config.size // 2, self.config.code_dim)
        self.dec = torch.nn.Linear(self.config.code_dim, self.config.size // 2)

    def preprocess(self, example):
        return {
            "x": torch.as_tensor(example[0], dtype=torch.float32),
            "target": torch.as_tensor(example[1], dtype=torch.float32),
        }

    def num_tokens(self):
        return 2

    def encode(self, batch):
        z = self.enc(batch["x"].view(batch["x"].shape[0], 2, -1))
        return Tokens(z, torch.ones(z.shape[:2], dtype=torch.bool))

    def decode(self, h, batch=None):
        return self.dec(h).flatten(1)

    def reconstruction_loss(self, batch, recon):
        return (recon - batch["target"]).pow(2).mean(1)

    def postprocess(self, recon):
        return [r.tolist() for r in recon]


class _PairData(torch.utils.data.Dataset):
    def __init__(self, adapter, n, huge, huge_input=()):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            x = torch.randn(8, generator=g)
            target = torch.full((8,), 1e30) if i in huge else x.clone()
            if i in huge_input:  # finite data that the encoder overflows to inf
                x = torch.full((8,), 3e38)
            self.items.append({"pair": adapter.preprocess((x, target))})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_infinite_loss_skips_the_step_and_leaves_weights_and_codebook_untouched(tmp_path):
    from mmvq.model import MultimodalVQ, MultimodalVQConfig

    def model():
        torch.manual_seed(0)
        config = MultimodalVQConfig(
            codebook={"num_codes": 8, "code_dim": 8}, decoder={"dim": 16, "depth": 1, "heads": 2}
        )
        return MultimodalVQ({"pair": _PairAdapter(code_dim=8)}, config)

    opts = dict(shuffle=False, num_sample_rows=0, max_eval_samples=4)
    m = model()
    one = train(
        m,
        _PairData(m.adapters["pair"], 8, huge=()),
        tiny_config(tmp_path / "one", max_steps=1, **opts),
    )
    m = model()
    two = train(
        m,
        _PairData(m.adapters["pair"], 8, huge={4}),
        tiny_config(tmp_path / "two", max_steps=2, **opts),
    )
    assert two.metrics["nonfinite_steps"] == 1 and [h["skipped"] for h in two.history] == [
        False,
        True,
    ]
    before, after = one.model.state_dict(), two.model.state_dict()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_encoder_overflow_skips_the_step_on_a_codebook_left_untouched(tmp_path):
    """Non-finite tokens born inside the encoder (the batch itself is finite) reach the codebook:
    it must not raise nor update its statistics; the step is skipped like any non-finite loss."""
    from mmvq.model import MultimodalVQ, MultimodalVQConfig

    def model():
        torch.manual_seed(0)
        config = MultimodalVQConfig(
            codebook={"num_codes": 8, "code_dim": 8}, decoder={"dim": 16, "depth": 1, "heads": 2}
        )
        return MultimodalVQ({"pair": _PairAdapter(code_dim=8)}, config)

    opts = dict(shuffle=False, num_sample_rows=0, max_eval_samples=4)
    m = model()
    one = train(
        m,
        _PairData(m.adapters["pair"], 8, huge=()),
        tiny_config(tmp_path / "one", max_steps=1, **opts),
    )
    m = model()
    data = _PairData(m.adapters["pair"], 8, huge=(), huge_input={5})
    two = train(m, data, tiny_config(tmp_path / "two", max_steps=2, **opts))
    assert [h["skipped"] for h in two.history] == [False, True]
    before, after = one.model.state_dict(), two.model.state_dict()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_persistent_nan_aborts_with_a_clear_error(tmp_path, data):
    train_ds, _ = data
    model = tiny_model()
    poisoned = _Poisoned(torch_dataset(model, train_ds), bad=range(len(train_ds)))
    with pytest.raises(TrainingError, match="non-finite for 3 steps in a row"):
        train(model, poisoned, tiny_config(tmp_path, max_steps=6, max_consecutive_nonfinite=3))


# -------------------------------------------------------------- balancers / align
@pytest.mark.parametrize("name", ["static", "uncertainty", "gradnorm", "dwa", "pareto"])
def test_each_balancer_runs_inside_the_loop(tmp_path, data, name):
    train_ds, _ = data
    balancer = f'{{"name": "{name}", "weights": {{"image": 2.0, "text": 1.0}}}}'
    result = train(
        tiny_model(),
        train_ds,
        tiny_config(
            tmp_path,
            max_steps=4,
            balancer=balancer,
            balancer_window=1,
            gan_weight=0.0,
            num_sample_rows=0,
        ),
    )
    assert result.metrics["steps"] == 4
    records = _train_records(tmp_path)
    first, last = records[0], records[-1]
    # metrics.json (and so the model card) names the balancer, its final weights, the shares
    assert result.metrics["balancer"] == name
    assert result.metrics["balance_weight_per_modality"] == result.balancer.weights()
    shares = result.metrics["balance_grad_share_per_modality"]
    assert shares["image"] == pytest.approx(
        sum(r["balance/grad_share/image"] for r in records) / len(records)
    )
    assert last["balance/grad_norm/image"] > 0 and last["balance/grad_norm/text"] > 0
    for r in records:  # the shares of the weighted gradients on the shared layer
        assert r["balance/grad_share/image"] + r["balance/grad_share/text"] == pytest.approx(1.0)
    if name == "static":
        assert [r["balance/weight/image"] for r in records] == [2.0] * 4
    else:  # the weights are learned / adapted inside the loop
        moved = [
            abs(r["balance/weight/image"] - first["balance/weight/image"]) for r in records[1:]
        ]
        assert max(moved) > 1e-4
    if name == "uncertainty":
        assert "balance/log_var/image" in last
    if name == "pareto":  # the configured weights, except at steps whose gradients conflict
        for r in records:
            assert (r["balance/weight/image"] == 2.0) == (r["balance/conflict"] == 0.0)


def test_alignment_loss_is_added_when_its_weight_is_positive(tmp_path, data):
    train_ds, _ = data
    train(
        tiny_model(),
        train_ds,
        tiny_config(
            tmp_path / "on",
            max_steps=2,
            alignment="weight=0.5,temperature=0.5",
            gan_weight=0.0,
            num_sample_rows=0,
        ),
    )
    train(
        tiny_model(),
        train_ds,
        tiny_config(tmp_path / "off", max_steps=2, gan_weight=0.0, num_sample_rows=0),
    )
    on, off = _train_records(tmp_path / "on")[-1], _train_records(tmp_path / "off")[-1]
    assert on["loss/align"] > 0 and "align/acc/image-text" in on
    assert "loss/align" not in off
    # the weighted alignment term is part of the total loss
    parts = sum(on[f"loss/{k}/{m}"] for k in ("rec", "vq") for m in ("image", "text"))
    parts += sum(v for k, v in on.items() if k.startswith("loss/concept/"))  # weighted already
    assert any(k.startswith("loss/concept/") for k in on)
    assert on["loss/total"] == pytest.approx(parts + 0.5 * on["loss/align"], rel=1e-4)


def test_gradient_accumulation_and_bf16_autocast_run(tmp_path, data):
    train_ds, _ = data
    result = train(
        tiny_model(),
        train_ds,
        tiny_config(
            tmp_path,
            max_steps=2,
            gradient_accumulation_steps=2,
            mixed_precision="bf16",
            gan_start_step=0,
            num_sample_rows=0,
        ),
    )
    assert result.metrics["steps"] == 2 and result.metrics["nonfinite_steps"] == 0
    assert len(result.history) == 2
    for name, buf in result.model.codebook.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name


# ------------------------------------------------------------------- bad inputs
def _assert_nothing_trained(output_dir: Path) -> None:
    assert (
        not (output_dir / "checkpoints").exists() and not (output_dir / "train_log.jsonl").exists()
    )


def test_missing_column_fails_before_training(tmp_path, data):
    """An error of the Python API names the Python argument (column_map), not a CLI flag."""
    train_ds, _ = data
    with pytest.raises(
        DataError,
        match=r"column 'text' \(modality 'text'\) is not in the dataset.*Set column_map\['text'\]",
    ) as info:
        train(tiny_model(), train_ds.remove_columns("text"), tiny_config(tmp_path))
    assert "--" not in str(info.value)
    _assert_nothing_trained(tmp_path)


def test_without_eval_data_the_message_says_what_is_evaluated(tmp_path, data, capsys):
    train_ds, _ = data
    small = train_ds.select(range(8))
    result = train(tiny_model(), small, tiny_config(tmp_path, max_steps=1, max_eval_samples=256))
    err = capsys.readouterr().err
    said = "no eval_data: evaluating on all 8 training examples (fewer than max_eval_samples=256)"
    assert said in err and result.metrics["eval_samples"] == 8
    train(tiny_model(), small, tiny_config(tmp_path / "b", max_steps=1, max_eval_samples=4))
    assert "no eval_data: evaluating on the first 4 training examples" in capsys.readouterr().err


def test_column_of_wrong_type_fails_before_training(tmp_path, data):
    train_ds, _ = data
    numbers = train_ds.remove_columns("text").add_column("text", list(range(len(train_ds))))
    with pytest.raises(
        AdapterInputError, match=r"row 0, column 'text' \(modality 'text', value of type int\)"
    ):
        train(tiny_model(), numbers, tiny_config(tmp_path))
    _assert_nothing_trained(tmp_path)


def test_empty_dataset_fails_before_training(tmp_path, data):
    train_ds, _ = data
    with pytest.raises(DataError, match="the dataset is empty"):
        train(tiny_model(), train_ds.select([]), tiny_config(tmp_path))
    model = tiny_model()
    with pytest.raises(ValueError, match="empty"):
        train(
            model,
            torch.utils.data.Subset(torch_dataset(model, train_ds), []),
            tiny_config(tmp_path),
        )
    _assert_nothing_trained(tmp_path)


def test_batch_larger_than_dataset_with_drop_last_fails_before_training(tmp_path, data):
    train_ds, _ = data
    too_large = r"batch_size=8 is larger than the dataset \(4 usable rows\)"
    with pytest.raises(DataError, match=too_large):
        train(
            tiny_model(), train_ds.select(range(4)), tiny_config(tmp_path, per_device_batch_size=8)
        )
    model = tiny_model()
    with pytest.raises(
        ValueError, match=r"per_device_batch_size=8 is larger than train_data \(4 examples\)"
    ):
        train(
            model,
            torch.utils.data.Subset(torch_dataset(model, train_ds), range(4)),
            tiny_config(tmp_path, per_device_batch_size=8),
        )
    _assert_nothing_trained(tmp_path)
    # without drop_last the same data trains
    result = train(
        tiny_model(),
        train_ds.select(range(4)),
        tiny_config(
            tmp_path,
            per_device_batch_size=8,
            dataloader_drop_last=False,
            max_steps=1,
            num_sample_rows=0,
        ),
    )
    assert result.metrics["steps"] == 1


def test_output_dir_that_cannot_be_created_fails_before_training(tmp_path, data):
    train_ds, _ = data
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(
        ValueError, match=r"output_dir=.*not a writable directory .*a_file is a file"
    ):
        train(tiny_model(), train_ds, tiny_config(blocker / "run"))


def test_wrong_argument_types_are_rejected(tmp_path, data):
    train_ds, _ = data
    with pytest.raises(TypeError, match="config must be a mmvq.TrainConfig"):
        train(tiny_model(), train_ds, {"max_steps": 2})
    with pytest.raises(TypeError, match="model must be a mmvq.MultimodalVQ"):
        train(torch.nn.Linear(2, 2), train_ds, tiny_config(tmp_path))
    with pytest.raises(TypeError, match="train_data must be a datasets.Dataset"):
        train(tiny_model(), [1, 2, 3], tiny_config(tmp_path))


def test_streaming_data_and_dataloader_workers(tmp_path, data):
    train_ds, eval_ds = data
    stream = train_ds.to_iterable_dataset()
    result = train(
        tiny_model(),
        stream,
        tiny_config(tmp_path / "stream", max_steps=3, num_sample_rows=0, gan_weight=0.0),
        eval_ds,
    )
    assert result.metrics["steps"] == 3 and result.metrics["eval_samples"] == 6
    with pytest.raises(
        ValueError, match="stream without a length, so TrainConfig.max_steps must be > 0"
    ):
        train(tiny_model(), stream, tiny_config(tmp_path / "epochs", max_steps=0), eval_ds)
    workers = train(
        tiny_model(),
        train_ds,
        tiny_config(tmp_path / "workers", max_steps=2, dataloader_num_workers=1, num_sample_rows=0),
        eval_ds,
    )
    assert workers.metrics["steps"] == 2


def test_num_epochs_sets_the_number_of_steps(tmp_path, data):
    train_ds, _ = data
    result = train(
        tiny_model(),
        train_ds,
        tiny_config(
            tmp_path, max_steps=0, num_epochs=2, per_device_batch_size=8, num_sample_rows=0
        ),
    )
    assert result.metrics["steps"] == 6  # 24 examples / 8 per batch = 3 steps per epoch
