"""Tests of the built-in text adapter (mmvq_adapters.text) and its tokenizer helpers."""

from __future__ import annotations

import json
import socket
import time
import warnings
from importlib.metadata import entry_points

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchmetrics.functional.text import char_error_rate
from transformers import ByT5Tokenizer

from mmvq.adapter import AdapterInputError, Tokens
from mmvq.testing import check_adapter
from mmvq_adapters.text import (
    TEXT_PRESETS,
    TextAdapter,
    TextAdapterConfig,
    TextTruncationWarning,
)
from mmvq_adapters.text_utils import builtin_byt5, resolve_tokenizer, train_bpe_tokenizer

CAPTIONS = [
    "a small red circle at the top left",
    "a large blue square at the bottom right",
    "two green triangles in the middle",
    "a yellow star near the top",
]
CORPUS = CAPTIONS * 4 + [
    "a red square at the left",
    "a blue circle in the middle",
    "three yellow stars near the bottom",
]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(CORPUS, vocab_size=300, min_frequency=2)


def perfect_logits(adapter: TextAdapter, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits whose argmax is the batch's own ids (a perfect reconstruction)."""
    return F.one_hot(batch["input_ids"], adapter.config.vocab_size).float() * 10.0


# ---------------------------------------------------------------------------------- config
def test_presets_and_default():
    small = TextAdapterConfig.preset("cpu-small")
    assert (small.max_length, small.d_model, small.num_layers, small.num_heads) == (48, 128, 2, 4)
    assert small.latent_tokens == 0
    base = TextAdapterConfig.preset("gpu-base", code_dim=32)
    assert (
        base.code_dim == 32 and base.max_length > small.max_length and base.d_model > small.d_model
    )
    assert TextAdapterConfig.preset("cpu-small", latent_tokens=16).latent_tokens == 16
    assert set(TEXT_PRESETS) >= {"cpu-small", "gpu-base"}


def test_unknown_preset_lists_presets():
    with pytest.raises(
        ValueError, match=r"unknown TextAdapterConfig preset 'tiny'.*cpu-small.*gpu-base"
    ):
        TextAdapterConfig.preset("tiny")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("truncation", "cut", "truncation must be one of"),
        ("max_length", 1, "max_length must be an int >= 2"),
        ("num_heads", 3, "not divisible by num_heads=3"),
        ("latent_tokens", -1, "latent_tokens must be an int >= 0"),
        ("dropout", 1.5, r"dropout must be in \[0, 1\)"),
        ("tokenizer", "", "tokenizer must be a non-empty str"),
        ("vocab_size", -5, "vocab_size must be an int >= 0"),
    ],
)
def test_bad_config_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        TextAdapterConfig(**{field: value})


def test_config_json_round_trip_records_vocab():
    adapter = TextAdapter()
    assert adapter.config.tokenizer == "byt5"
    assert adapter.config.vocab_size == len(builtin_byt5()) == 259
    again = TextAdapterConfig.from_dict(adapter.config.to_dict())
    assert again == adapter.config


def test_builtin_is_registered_through_entry_point():
    eps = {ep.name: ep for ep in entry_points(group="mmvq.adapters")}
    assert eps["text"].value == "mmvq_adapters.text:TextAdapter"
    assert eps["text"].load() is TextAdapter


# ------------------------------------------------------------------------------ tokenizer
def test_default_tokenizer_is_byt5_without_files():
    tok = resolve_tokenizer("byt5")
    assert isinstance(tok, ByT5Tokenizer)
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0


def test_unavailable_tokenizer_name_is_clear_and_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the text adapter tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(AdapterInputError) as err:
        TextAdapter(tokenizer="no-such-org/no-such-tokenizer-xyz")
    message = str(err.value)
    assert "'no-such-org/no-such-tokenizer-xyz'" in message
    assert "not available offline" in message and "never downloads" in message
    assert "local path" in message and "tokenizer instance" in message
    assert time.perf_counter() - start < 5.0
    # The same through the config field.
    with pytest.raises(AdapterInputError, match="not available offline"):
        TextAdapter(TextAdapterConfig(tokenizer="no-such-org/no-such-tokenizer-xyz"))


def test_saved_config_with_unloadable_tokenizer_waits_for_load_extra():
    config = TextAdapterConfig(tokenizer="custom", vocab_size=300, max_length=16, d_model=32)
    adapter = TextAdapter(config)  # builds the model: the tokenizer may come from load_extra
    assert adapter.config.vocab_size == 300 and adapter.num_tokens() == 16
    with pytest.raises(
        AdapterInputError,
        match=r"no tokenizer yet: config.tokenizer='custom'.*not available offline.*load_extra",
    ):
        adapter.preprocess("a red circle")
    with pytest.raises(AdapterInputError, match="no tokenizer yet"):
        adapter.postprocess(torch.zeros(1, 16, 300))


def test_tokenizer_wrong_type_is_clear():
    with pytest.raises(AdapterInputError, match=r"tokenizer must be .*got 3 \(int\)"):
        TextAdapter(tokenizer=3)


def test_tokenizer_from_local_path(tmp_path):
    builtin_byt5().save_pretrained(tmp_path / "tok")
    adapter = TextAdapter(tokenizer=str(tmp_path / "tok"))
    assert adapter.config.tokenizer == str(tmp_path / "tok")
    assert adapter.config.vocab_size == 259
    reference = TextAdapter()
    for text in CAPTIONS:
        assert torch.equal(
            adapter.preprocess(text)["input_ids"], reference.preprocess(text)["input_ids"]
        )


def test_instance_vocab_mismatch_with_config_is_error(bpe):
    with pytest.raises(
        AdapterInputError, match=r"has 300 ids but TextAdapterConfig.vocab_size=259"
    ):
        TextAdapter(TextAdapterConfig(vocab_size=259), tokenizer=bpe)


def test_train_bpe_tokenizer_round_trips_strings(bpe):
    assert len(bpe) <= 300
    assert (bpe.pad_token_id, bpe.eos_token_id, bpe.unk_token_id) == (0, 1, 2)
    # Byte-level: unseen characters and literal special-token text round-trip exactly.
    for text in CAPTIONS + ["Zürich, 12°C — naïve </s> <eos> text"]:
        ids = bpe(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert bpe.unk_token_id not in ids
        assert bpe.decode(ids, skip_special_tokens=True) == text
    # Merges were learned: a frequent caption takes fewer tokens than its bytes.
    assert len(bpe(CAPTIONS[0], add_special_tokens=False)["input_ids"]) < len(CAPTIONS[0].encode())


@pytest.mark.parametrize(
    "texts, vocab_size, match",
    [
        ("one string", 300, "got a single str"),
        (["ok", 5], 300, r"item 1 is 5 \(int\)"),
        (["", "  "], 300, "no non-empty string"),
        (CORPUS, 100, r"vocab_size=100\) is too small.*at least 259"),
    ],
)
def test_train_bpe_tokenizer_bad_inputs(texts, vocab_size, match):
    with pytest.raises(AdapterInputError, match=match):
        train_bpe_tokenizer(texts, vocab_size)


# ----------------------------------------------------------------------------- data side
def test_preprocess_pads_and_appends_eos():
    adapter = TextAdapter()
    item = adapter.preprocess("hi")
    ids, mask = item["input_ids"], item["attention_mask"]
    assert ids.shape == mask.shape == (48,) and ids.dtype == torch.long
    expected = adapter.tokenizer("hi", add_special_tokens=False)["input_ids"] + [
        adapter.tokenizer.eos_token_id
    ]
    assert ids[:3].tolist() == expected
    assert mask.tolist() == [1, 1, 1] + [0] * 45
    assert (ids[3:] == adapter.tokenizer.pad_token_id).all()


def test_literal_special_token_text_is_not_eos():
    adapter = TextAdapter()
    text = "a </s> b <pad>"
    batch = adapter.tokenize([text])
    assert int(batch["attention_mask"].sum()) == len(text.encode()) + 1
    assert adapter.postprocess(perfect_logits(adapter, batch)) == [text]


def test_collate_stacks_and_rejects_foreign_items():
    adapter = TextAdapter()
    batch = adapter.collate([adapter.preprocess(t) for t in CAPTIONS])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 48)
    other = TextAdapter(max_length=16).preprocess("hi")
    with pytest.raises(AdapterInputError, match=r"item 1\['input_ids'\] is \(16,\).*\(48,\)"):
        adapter.collate([adapter.preprocess("hi"), other])
    with pytest.raises(AdapterInputError, match="empty list"):
        adapter.collate([])


@pytest.mark.parametrize(
    "example, match",
    [
        (None, "text is None"),
        ("", "text is empty"),
        ("  \n\t", "text is empty"),
        (42, r"text must be a str, got 42 \(int\)"),
        (["a", "red", "circle"], r"text must be a str, got \['a', 'red', 'circle'\] \(list\)"),
        (b"bytes", r"text must be a str, got b'bytes' \(bytes\)"),
    ],
)
def test_preprocess_rejects_bad_inputs(example, match):
    with pytest.raises(AdapterInputError, match=match):
        TextAdapter().preprocess(example)


def test_too_long_text_errors_with_truncation_error():
    adapter = TextAdapter(max_length=8, truncation="error")
    with pytest.raises(
        AdapterInputError, match=r"text has 11 tokens \(EOS included\) but max_length=8"
    ):
        adapter.preprocess("0123456789")
    assert adapter.preprocess("0123456")["attention_mask"].sum() == 8  # exactly fits


def test_too_long_text_warns_and_truncates_with_truncation_warn():
    adapter = TextAdapter(max_length=8, truncation="warn")
    with pytest.warns(TextTruncationWarning, match=r"text has 11 tokens .*max_length=8"):
        item = adapter.preprocess("0123456789")
    assert item["attention_mask"].tolist() == [1] * 8
    assert item["input_ids"][-1].item() == adapter.tokenizer.eos_token_id
    assert adapter.postprocess(perfect_logits(adapter, adapter.collate([item]))) == ["0123456"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.preprocess("0123456")  # fits: no warning


def test_declared_bad_inputs_all_raise():
    for truncation in ("warn", "error"):
        adapter = TextAdapter(truncation=truncation)
        declared = adapter.bad_inputs()
        assert {"None", "empty string", "an int", "a list of words"} <= {
            b.description for b in declared
        }
        assert any(b.description == "longer than max_length" for b in declared) == (
            truncation == "error"
        )
        for bad in declared:
            with pytest.raises(bad.error) as err:
                adapter.preprocess(bad.example)
            assert bad.match.lower() in str(err.value).lower(), bad.description


# ---------------------------------------------------------------------------- model side
@pytest.mark.parametrize("latent_tokens", [0, 6])
def test_encode_decode_shapes_and_masks(latent_tokens):
    adapter = TextAdapter(max_length=24, d_model=32, latent_tokens=latent_tokens, code_dim=16)
    batch = adapter.tokenize(["hi", "a red circle"])
    tokens = adapter.encode(batch)
    assert isinstance(tokens, Tokens)
    n = adapter.num_tokens()
    assert n == (latent_tokens or 24)
    assert (
        tokens.z.shape == (2, n, 16)
        and tokens.mask.shape == (2, n)
        and tokens.mask.dtype == torch.bool
    )
    if latent_tokens:
        assert tokens.mask.all()
    else:
        assert torch.equal(tokens.mask, batch["attention_mask"].bool())
    recon = adapter.decode(tokens.z, batch)
    assert recon.shape == (2, 24, adapter.config.vocab_size)
    assert torch.equal(recon, adapter.decode(tokens.z, None))  # batch does not change the head
    loss = adapter.reconstruction_loss(batch, recon)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    missing = [
        name
        for name, p in adapter.named_parameters()
        if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize("latent_tokens", [0, 6])
def test_padding_does_not_leak_into_real_tokens(latent_tokens):
    adapter = TextAdapter(max_length=16, d_model=32, latent_tokens=latent_tokens).eval()
    batch = adapter.tokenize(["hi there"])
    garbage = dict(batch)
    ids = batch["input_ids"].clone()
    ids[batch["attention_mask"] == 0] = 77
    garbage["input_ids"] = ids
    z, mask = adapter.encode(batch)
    z2, _ = adapter.encode(garbage)
    torch.testing.assert_close(z[mask], z2[mask])


def test_all_padding_row_gives_finite_tokens():
    adapter = TextAdapter(max_length=12, d_model=32)
    batch = adapter.tokenize(["hi", "yo"])
    batch["attention_mask"][1] = 0  # e.g. a row where the modality is absent
    tokens = adapter.encode(batch)
    assert torch.isfinite(tokens.z).all() and not tokens.mask[1].any()


def test_loss_excludes_padding_and_keeps_eos():
    adapter = TextAdapter(max_length=12, d_model=32)
    batch = adapter.tokenize(["abc", "hello w"])
    logits = torch.randn(2, 12, adapter.config.vocab_size)
    loss = adapter.reconstruction_loss(batch, logits)
    mask = batch["attention_mask"].bool()
    for i in range(2):
        expected = F.cross_entropy(logits[i][mask[i]], batch["input_ids"][i][mask[i]])
        torch.testing.assert_close(loss[i], expected)
    changed = logits.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    torch.testing.assert_close(adapter.reconstruction_loss(batch, changed), loss)
    eos_pos = int(mask[0].sum()) - 1
    assert batch["input_ids"][0, eos_pos] == adapter.tokenizer.eos_token_id
    changed = logits.clone()
    changed[0, eos_pos] += 50 * F.one_hot(torch.tensor(5), adapter.config.vocab_size)
    assert adapter.reconstruction_loss(batch, changed)[0] > loss[0] + 1


def test_loss_is_fp32_under_autocast():
    adapter = TextAdapter(max_length=12, d_model=32)
    batch = adapter.tokenize(["abc"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon = adapter.decode(adapter.encode(batch).z)
        loss = adapter.reconstruction_loss(batch, recon)
    assert loss.dtype == torch.float32


def test_metrics_and_postprocess():
    adapter = TextAdapter(max_length=40, d_model=32)
    batch = adapter.tokenize(CAPTIONS)
    logits = perfect_logits(adapter, batch)
    # Garbage after EOS must be ignored by postprocess.
    after = batch["attention_mask"] == 0
    logits[after] = 10.0 * F.one_hot(torch.tensor(ord("x") + 3), adapter.config.vocab_size).float()
    assert adapter.postprocess(logits) == CAPTIONS
    assert adapter.metrics(batch, logits) == {"token_accuracy": 1.0, "exact_match": 1.0, "cer": 0.0}
    # Corrupt one character of the first caption: 'a' -> 'o'.
    wrong = logits.clone()
    wrong[0, 0] = 10.0 * F.one_hot(torch.tensor(ord("o") + 3), adapter.config.vocab_size).float()
    outs = adapter.postprocess(wrong)
    assert outs[0] == "o" + CAPTIONS[0][1:]
    m = adapter.metrics(batch, wrong)
    assert m["exact_match"] == 0.75
    assert m["token_accuracy"] == pytest.approx(1 - 1 / batch["attention_mask"].sum().item())
    assert m["cer"] == pytest.approx(float(char_error_rate(outs, CAPTIONS)))
    assert 0 < m["cer"] < 0.05
    # Rows marked absent are left out.
    batch["present"] = torch.tensor([False, True, True, True])
    assert adapter.metrics(batch, wrong)["exact_match"] == 1.0


def test_model_side_bad_inputs_are_clear():
    adapter = TextAdapter(max_length=12, d_model=32, code_dim=16)
    batch = adapter.tokenize(["abc"])
    with pytest.raises(
        AdapterInputError, match=r"must hold 'input_ids' and 'attention_mask', got \['input_ids'\]"
    ):
        adapter.encode({"input_ids": batch["input_ids"]})
    with pytest.raises(
        AdapterInputError, match=r"batch\['input_ids'\] has shape \(1, 10\), expected \[B, 12\]"
    ):
        adapter.encode(
            {
                "input_ids": batch["input_ids"][:, :10],
                "attention_mask": batch["attention_mask"][:, :10],
            }
        )
    with pytest.raises(AdapterInputError, match="dtype torch.float32, expected torch.long"):
        adapter.encode(
            {"input_ids": batch["input_ids"].float(), "attention_mask": batch["attention_mask"]}
        )
    with pytest.raises(AdapterInputError, match=r"outside the vocabulary \[0, 259\)"):
        adapter.encode(
            {"input_ids": batch["input_ids"] + 1000, "attention_mask": batch["attention_mask"]}
        )
    with pytest.raises(
        AdapterInputError, match=r"decode h has shape \(1, 12, 8\), expected \[B, 12, 16\]"
    ):
        adapter.decode(torch.zeros(1, 12, 8))
    with pytest.raises(
        AdapterInputError, match=r"logits\) has shape \(1, 12, 7\), expected \[B, 12, 259\]"
    ):
        adapter.reconstruction_loss(batch, torch.zeros(1, 12, 7))
    with pytest.raises(AdapterInputError, match="batch size 2 but the batch has 1"):
        adapter.metrics(batch, torch.zeros(2, 12, 259))
    with pytest.raises(AdapterInputError, match="expected \\[B, 12, 259\\]"):
        adapter.postprocess(torch.zeros(12, 259))


def overfit(adapter: TextAdapter, texts: list[str], max_steps: int, lr: float) -> tuple[int, dict]:
    """Train encode -> decode directly (no codebook) until exact match is 100%."""
    batch = adapter.tokenize(texts)
    opt = torch.optim.Adam(adapter.parameters(), lr=lr)
    metrics: dict = {}
    for step in range(1, max_steps + 1):
        recon = adapter.decode(adapter.encode(batch).z, batch)
        loss = adapter.reconstruction_loss(batch, recon).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 5 == 0:
            adapter.eval()
            with torch.no_grad():
                metrics = adapter.metrics(batch, adapter.decode(adapter.encode(batch).z))
            adapter.train()
            if metrics["exact_match"] == 1.0:
                return step, metrics
    return max_steps, metrics


# Threshold: 100% exact match of 4 captions within 60 Adam steps (per-position tokens; reached in
# ~20) and within 250 steps (16 latent tokens; reached in ~80).
@pytest.mark.parametrize("latent_tokens, max_steps", [(0, 60), (16, 250)])
def test_overfit_four_captions(latent_tokens, max_steps):
    adapter = TextAdapter(TextAdapterConfig.preset("cpu-small", latent_tokens=latent_tokens))
    steps, metrics = overfit(adapter, CAPTIONS, max_steps=max_steps, lr=1e-3)
    print(f"latent_tokens={latent_tokens}: exact match after {steps} steps: {metrics}")
    assert metrics["exact_match"] == 1.0, f"no 100% exact match within {max_steps} steps: {metrics}"
    assert metrics["token_accuracy"] == 1.0 and metrics["cer"] == 0.0
    assert (
        adapter.postprocess(adapter.decode(adapter.encode(adapter.tokenize(CAPTIONS)).z))
        == CAPTIONS
    )


# ---------------------------------------------------------------------------- persistence
def save(adapter: TextAdapter, directory) -> None:
    adapter.save_extra(directory)
    save_file(adapter.state_dict(), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(adapter.config.to_json_string())


def test_bpe_tokenizer_end_to_end_and_save_load(bpe, tmp_path):
    adapter = TextAdapter(TextAdapterConfig.preset("cpu-small", max_length=32), tokenizer=bpe)
    assert adapter.config.vocab_size == len(bpe)
    assert adapter.config.tokenizer == "custom"
    steps, metrics = overfit(adapter, CAPTIONS, max_steps=60, lr=1e-3)
    assert metrics["exact_match"] == 1.0, metrics
    save(adapter, tmp_path)

    loaded = TextAdapter.from_config_dict(json.loads((tmp_path / "config.json").read_text()))
    with pytest.raises(AdapterInputError, match=r"no tokenizer yet.*load_extra"):
        loaded.preprocess("a red circle")
    loaded.load_extra(tmp_path)
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    loaded.eval()
    adapter.eval()
    probe = CAPTIONS + ["Zürich — an unseen text"]
    a, b = adapter.tokenize(probe), loaded.tokenize(probe)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    with torch.no_grad():
        out_a = adapter.decode(adapter.encode(a).z)
        out_b = loaded.decode(loaded.encode(b).z)
    torch.testing.assert_close(out_a, out_b)
    assert loaded.postprocess(out_b)[:4] == CAPTIONS


def test_byt5_save_load_round_trip(tmp_path):
    adapter = TextAdapter(max_length=16, d_model=32)
    save(adapter, tmp_path)
    loaded = TextAdapter.from_config_dict(adapter.config.to_dict())
    loaded.load_extra(tmp_path)
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    texts = ["hi", "a red dot"]
    assert torch.equal(adapter.tokenize(texts)["input_ids"], loaded.tokenize(texts)["input_ids"])
    assert loaded.config == adapter.config
    for key, value in adapter.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_load_extra_vocab_mismatch_is_clear(bpe, tmp_path):
    TextAdapter(max_length=16, d_model=32).save_extra(tmp_path)  # a byt5 tokenizer (259 ids)
    adapter = TextAdapter(max_length=16, d_model=32, tokenizer=bpe)
    with pytest.raises(
        AdapterInputError, match=r"has 259 ids but TextAdapterConfig.vocab_size=300"
    ):
        adapter.load_extra(tmp_path)


def test_load_extra_missing_directory_is_clear(tmp_path):
    with pytest.raises(AdapterInputError, match="no saved tokenizer at"):
        TextAdapter(max_length=16, d_model=32).load_extra(tmp_path / "nowhere")


# ------------------------------------------------------------------------- contract kit
EXAMPLES = ["hi", "a small red circle at the top left", "Zürich, 12°C"]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(max_length=40, d_model=32, code_dim=16),
        dict(max_length=40, d_model=32, code_dim=16, latent_tokens=6, truncation="error"),
    ],
)
def test_check_adapter_contract(overrides):
    report = check_adapter(TextAdapter, EXAMPLES, config=TextAdapterConfig(**overrides))
    assert {"gradient", "state_dict", "extra_files", "bad_inputs"} <= set(report.names)


def test_check_adapter_contract_with_bpe_tokenizer(bpe):
    adapter = TextAdapter(max_length=40, d_model=32, code_dim=16, tokenizer=bpe)
    report = check_adapter(adapter, EXAMPLES)
    assert {"state_dict", "extra_files", "bad_inputs"} <= set(report.names)
