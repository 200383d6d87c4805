"""LM-vocabulary mode: the codes appended after a locally trained HF tokenizer's vocabulary, a tiny
causal LM resized to it, fine-tuned on interleaved sequences, generating under the grammar."""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_data, tiny_model
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from mmvq.hub.safety import DATA_SUFFIXES
from mmvq.prior import ConstrainedLogitsProcessor, MultimodalTokenizer
from mmvq.prior.glue import encode_examples
from mmvq_adapters.text_utils import train_bpe_tokenizer


@pytest.fixture(scope="module", name="setup")
def setup_fixture():
    torch.manual_seed(0)
    model = tiny_model().eval()
    train, _ = tiny_data(16, 2)
    captions = list(train["text"])
    base = train_bpe_tokenizer(captions * 4, 300)
    base_size = len(base)
    tok = MultimodalTokenizer.from_model(
        model, lm_tokenizer=base, lm_modalities={"text": 24}, padding={"image": False}
    )
    return model, train, tok, base_size


def test_vocabulary_appends_after_the_base_tokenizer(setup) -> None:
    model, _, tok, base_size = setup
    v = tok.vocab
    # the BPE tokenizer's own pad/eos are kept; bos, the markers and blank are added after it
    assert v.special["pad"] == tok.base_tokenizer.pad_token_id < base_size
    assert v.special["eos"] == tok.base_tokenizer.eos_token_id < base_size
    assert v.special["bos"] >= base_size and v.special["blank"] >= base_size
    assert min(min(p) for p in v.markers.values()) >= base_size
    assert tok.modalities == ["image", "text"] and list(v.lm_modalities) == ["text"]
    lo, hi = tok.code_range("detail")
    assert hi - lo == model.config.codebook.num_codes
    ranges = sorted([tok.code_range("concept"), (lo, hi)])  # both levels, after the base
    assert ranges[0][0] == len(tok.base_tokenizer) and ranges[0][1] == ranges[1][0]
    assert tok.vocab_size == ranges[1][1]
    assert {s.modality for s in tok.spans} == {"image"}  # text has no code span here


def test_text_stays_the_base_tokenizers_tokens(setup) -> None:
    model, train, tok, _ = setup
    examples = [{"image": train[i]["image"], "text": train[i]["text"]} for i in range(4)]
    examples.append({"text": "a <|image|> circle"})
    enc = tok(examples, modality_order=["text", "image"], return_tensors="pt")
    row = enc["input_ids"][0].tolist()
    caption_ids = tok.base_tokenizer(train[0]["text"], add_special_tokens=False)["input_ids"]
    start = row.index(tok.begin_token_id("text")) + 1
    assert row[start : start + len(caption_ids)] == caption_ids
    decoded = tok.decode_codes(enc["input_ids"])
    assert decoded.texts["text"] == [e["text"] for e in examples]
    codes = encode_examples(model, examples[:4])[("image", "detail")]
    assert torch.equal(decoded.codes[("image", "detail")][:4], codes.cpu())
    assert decoded.order[4] == ["text"]
    # a marker spelled inside a text stays text: never a begin marker
    last = enc["input_ids"][4].tolist()
    assert last.count(tok.begin_token_id("image")) == 0


def test_save_load_lm_mode(setup, tmp_path) -> None:
    model, train, tok, _ = setup
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "lm_tokenizer" / "tokenizer.json").is_file()
    # data file types only: a Hub download of the prior's folder fetches every one
    assert all(p.suffix in DATA_SUFFIXES for p in tmp_path.rglob("*") if p.is_file())
    loaded = MultimodalTokenizer.from_pretrained(tmp_path, model=model)
    examples = [{"image": train[i]["image"], "text": train[i]["text"]} for i in range(3)]
    assert loaded(examples)["input_ids"] == tok(examples)["input_ids"]
    assert loaded.vocab == tok.vocab


def test_fine_tune_a_causal_lm_on_interleaved_data(setup) -> None:
    _, train, tok, _ = setup
    torch.manual_seed(0)
    # an "existing" LM over the base vocabulary, then resized to the multimodal one
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok.base_tokenizer) - 8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=128,
        )
    )
    lm.resize_token_embeddings(tok.vocab_size)
    examples = [{"image": train[i]["image"], "text": train[i]["text"]} for i in range(16)]
    enc = tok(examples, modality_order="random", seed=0, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = lm(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    # text -> image and image -> text under the grammar, through HF generate
    for source, target in (("text", "image"), ("image", "text")):
        prompt = tok([{source: examples[0][source]}], add_eos=False)["input_ids"][0]
        prompt = torch.tensor([prompt + [tok.begin_token_id(target)]])
        seqs = lm.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            temperature=1.5,
            max_new_tokens=tok.sequence_length([target]),
            num_return_sequences=4,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            logits_processor=LogitsProcessorList([ConstrainedLogitsProcessor(tok.vocab, [target])]),
        )
        outputs = tok.decode(seqs)
        assert all(o is not None for o in outputs[target])
        if target == "text":
            assert all(isinstance(t, str) and t for t in outputs["text"])
        else:
            assert all(img.size == (16, 16) for img in outputs["image"])


def test_lm_mode_refuses_bad_text(setup) -> None:
    _, _, tok, _ = setup
    with pytest.raises(ValueError, match=r"texts\['text'\] row 0 has \d+ tokens, more than the 24"):
        tok([{"text": "a small red circle " * 10}])
    with pytest.raises(ValueError, match="must be a non-empty str"):
        tok([{"text": "   "}])
