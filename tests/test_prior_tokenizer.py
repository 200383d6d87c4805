"""MultimodalTokenizer (codes mode): ids <-> codes round trips for every layout, clear errors for
malformed sequences, save/load, and the real tokenizer model's codes through the glue."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from train_helpers import tiny_data, tiny_model

from mmvq.concept import MultimodalCodes
from mmvq.prior import MalformedSequenceError, MultimodalTokenizer, SpanSpec
from mmvq.prior.glue import encode_examples

LAYOUTS = {
    "detail only": [
        SpanSpec("image", "detail", 6, 16),
        SpanSpec("text", "detail", 5, 16, padding=True),
    ],
    "concept + detail": [
        SpanSpec("image", "concept", 2, 8),
        SpanSpec("image", "detail", 6, 16),
        SpanSpec("text", "concept", 2, 8),
        SpanSpec("text", "detail", 5, 16, padding=True),
    ],
    "three modalities": [
        SpanSpec("image", "detail", 4, 10),
        SpanSpec("text", "detail", 3, 10, padding=True),
        SpanSpec("audio", "detail", 5, 10),
    ],
}


def random_codes(
    spans: list[SpanSpec], size: int, seed: int
) -> dict[tuple[str, str], torch.Tensor]:
    """Random codes; padded spans end in -1 after a random length; some rows lack a modality."""
    gen = torch.Generator().manual_seed(seed)
    codes = {}
    for s in spans:
        c = torch.randint(0, s.num_codes, (size, s.length), generator=gen)
        if s.padding:
            for r in range(size):
                keep = int(torch.randint(1, s.length + 1, (1,), generator=gen))
                c[r, keep:] = -1
        codes[s.key] = c
    modalities = list(dict.fromkeys(s.modality for s in spans))
    for r in range(size):
        drop = (
            modalities[r % (len(modalities) + 1)]
            if r % (len(modalities) + 1) < len(modalities)
            else None
        )
        if drop is not None and r > 0:
            for s in spans:
                if s.modality == drop:
                    codes[s.key][r] = -1
    return codes


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("order", [None, "random", "reversed"])
def test_ids_codes_round_trip(layout: str, order: str | None) -> None:
    spans = LAYOUTS[layout]
    tok = MultimodalTokenizer.from_spans(spans)
    codes = random_codes(spans, 8, seed=len(layout))
    modality_order = list(reversed(tok.modalities)) if order == "reversed" else order
    enc = tok(codes, modality_order=modality_order, seed=3, return_tensors="pt")
    assert enc["input_ids"].shape[0] == 8
    assert int(enc["input_ids"].max()) < tok.vocab_size
    decoded = tok.decode_codes(enc["input_ids"])
    for key, c in codes.items():
        assert torch.equal(decoded.codes[key], c), key
    for r, row_order in enumerate(decoded.order):
        present = [
            m
            for m in tok.modalities
            if any((codes[s.key][r] != -1).any() for s in spans if s.modality == m)
        ]
        assert sorted(row_order) == sorted(present)
        if order == "reversed":
            assert row_order == [m for m in reversed(tok.modalities) if m in present]
    # attention mask marks exactly the ids before the padding
    lengths = enc["attention_mask"].sum(dim=1)
    for r in range(8):
        assert int(enc["input_ids"][r, lengths[r] - 1]) == tok.eos_token_id


def test_random_order_varies_and_is_seeded() -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["three modalities"])
    codes = {k: v.abs() % 10 for k, v in random_codes(tok.spans, 32, 0).items()}
    for s in tok.spans:
        if s.padding:
            codes[s.key][:, 1:] = -1
    a = tok(codes, modality_order="random", seed=1)["input_ids"]
    b = tok(codes, modality_order="random", seed=1)["input_ids"]
    c = tok(codes, modality_order="random", seed=2)["input_ids"]
    assert a == b and a != c
    orders = {tuple(o) for o in tok.decode_codes(a).order}
    assert len(orders) > 3  # 6 orders of 3 modalities: random order reaches several


def test_vocabulary_layout_is_documented_one() -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["concept + detail"])
    v = tok.vocab
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.blank_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert v.markers == {"image": (4, 5), "text": (6, 7)}
    assert tok.code_range("concept") == (8, 16)
    assert tok.code_range("detail") == (16, 32)
    assert tok.vocab_size == len(tok) == 32
    assert tok.sequence_length() == 2 + (2 + 8) + (2 + 7)


def _valid(tok: MultimodalTokenizer) -> list[int]:
    codes = {
        ("image", "detail"): torch.tensor([[1, 2, 3, 4, 5, 6]]),
        ("text", "detail"): torch.tensor([[7, 8, -1, -1, -1]]),
    }
    return tok(codes)["input_ids"][0]


MALFORMED = {
    # name: (edit of the valid sequence, expected position, words in the message)
    "truncated span": (lambda s: s[:5] + s[8:], 5, ["truncated span", "<|/image|>"]),
    "code in the text span of the wrong range": (
        lambda s: s[:10] + [0] + s[11:],
        10,
        ["pad", "expected a detail code"],
    ),
    "unknown id": (lambda s: s[:3] + [999] + s[4:], 3, ["outside the vocabulary"]),
    "missing end marker": (lambda s: s[:8] + [s[9]] + s[9:], 8, ["expected <|/image|>"]),
    "ends inside a block": (lambda s: s[:11], 11, ["ends inside the 'text' block"]),
    "no eos": (lambda s: s[:-1], 16, ["without eos"]),
    "token after eos": (lambda s: s + [20], 17, ["only pad may follow eos"]),
    "code after a blank": (lambda s: s[:13] + [21] + s[14:], 13, ["after a blank"]),
    "blank in an image span": (lambda s: s[:4] + [3] + s[5:], 4, ["blank", "without padding"]),
    "modality twice": (lambda s: s[:-1] + s[1:9] + [2], 16, ["appears twice"]),
    "no bos": (lambda s: s[1:], 0, ["expected bos"]),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_sequences_name_the_position(name: str) -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["detail only"])
    seq = _valid(tok)
    assert len(seq) == 17
    tok.decode_codes([seq])  # the valid one parses
    edit, position, words = MALFORMED[name]
    with pytest.raises(MalformedSequenceError) as info:
        tok.decode_codes([seq, edit(seq)])
    assert info.value.position == position and info.value.row == 1
    message = str(info.value)
    assert f"row 1, position {position}" in message
    for word in words:
        assert word in message, message


def test_code_of_another_level_is_refused() -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["concept + detail"])
    codes = random_codes(tok.spans, 1, seed=1)
    seq = tok(codes, modality_order=["image", "text"])["input_ids"][0]
    lo, _ = tok.code_range("concept")
    bad = seq[:4] + [lo + 1] + seq[5:]  # position 4: the image block's first detail slot
    with pytest.raises(MalformedSequenceError) as info:
        tok.decode_codes([bad])
    assert info.value.position == 4
    assert "concept code 1" in str(info.value) and "expected a detail code" in str(info.value)


def test_bad_codes_are_refused_naming_the_field() -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["detail only"])
    good = {
        ("image", "detail"): torch.zeros(1, 6, dtype=torch.long),
        ("text", "detail"): torch.zeros(1, 5, dtype=torch.long),
    }
    bad = {**good, ("image", "detail"): torch.tensor([[0, 1, 2, 3, 4, 16]])}
    with pytest.raises(ValueError, match=r"codes\['image'/detail\] row 0 position 5 is 16"):
        tok(bad)
    bad = {**good, ("image", "detail"): torch.tensor([[0, 1, 2, 3, -1, -1]])}
    with pytest.raises(ValueError, match="allows no padding; build the tokenizer with padding"):
        tok(bad)
    bad = {**good, ("text", "detail"): torch.tensor([[1, -1, 2, -1, -1]])}
    with pytest.raises(ValueError, match="position 2 is a code after padding"):
        tok(bad)
    with pytest.raises(KeyError, match="unknown modality 'audio'"):
        tok.begin_token_id("audio")
    with pytest.raises(ValueError, match="never truncated"):
        tok(good, padding="max_length", max_length=5)


def test_save_load_round_trip(tmp_path) -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["concept + detail"])
    tok.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "prior_tokenizer.json").read_text())
    assert data["format"] == "mmvq-prior-tokenizer" and data["mode"] == "codes"
    loaded = MultimodalTokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == tok.vocab
    codes = random_codes(tok.spans, 4, seed=9)
    assert loaded(codes)["input_ids"] == tok(codes)["input_ids"]
    (tmp_path / "prior_tokenizer.json").write_text(json.dumps(dict(data, format_version=99)))
    with pytest.raises(ValueError, match="format_version 99"):
        MultimodalTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no prior_tokenizer.json"):
        MultimodalTokenizer.from_pretrained(tmp_path / "missing")


def test_real_model_examples_encode_and_decode() -> None:
    """Raw examples -> the tiny model's codes -> ids -> the same codes -> outputs."""
    model = tiny_model().eval()
    train, _ = tiny_data(6, 2)
    tok = MultimodalTokenizer.from_model(model, padding={"image": False})
    assert [(s.modality, s.level, s.length, s.padding) for s in tok.spans] == [
        ("image", "concept", 4, False),
        ("image", "detail", 64, False),
        ("text", "concept", 4, False),
        ("text", "detail", 48, True),
    ]
    examples = [{"image": train[i]["image"], "text": train[i]["text"]} for i in range(4)]
    examples.append({"text": train[4]["text"]})  # a row without image
    enc = tok(examples, modality_order="random", seed=0, return_tensors="pt")
    codes = encode_examples(model, examples)
    decoded = tok.decode_codes(enc["input_ids"])
    for key, c in codes.items():
        assert torch.equal(decoded.codes[key], c.cpu()), key
    assert decoded.order[4] == ["text"]
    outputs = tok.decode(enc["input_ids"])
    assert len(outputs["image"]) == 5 and outputs["image"][4] is None
    assert outputs["image"][0].size == (16, 16)
    assert all(isinstance(t, str) for t in outputs["text"])
    # the outputs are the model's own decoding of those codes (both levels)
    both = MultimodalCodes(
        concept={"text": codes[("text", "concept")][:1]},
        detail={"text": codes[("text", "detail")][:1]},
    )
    recon = model.decode(both, targets=["text"])
    assert outputs["text"][0] == model.postprocess(recon)["text"][0]


def test_model_mismatch_is_refused() -> None:
    tok = MultimodalTokenizer.from_spans([SpanSpec("image", "detail", 7, 64)])
    with pytest.raises(ValueError, match="span image/detail is length 7 with 64 codes here"):
        tok.attach(tiny_model())
    with pytest.raises(ValueError, match="raw examples need the tokenizer model"):
        tok([{"image": Image.new("RGB", (16, 16))}])
    with pytest.raises(ValueError, match="nothing to tokenize"):
        tok([{"image": None}])
