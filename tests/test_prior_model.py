"""The prior: PriorConfig JSON, save/load, seeded generation, a toy mapping learned, and
classifier-free guidance computed as documented."""

from __future__ import annotations

import json

import pytest
import torch

from mmvq.hub.safety import DATA_SUFFIXES, RemoteCodeError
from mmvq.prior import MultimodalPrior, MultimodalTokenizer, PriorCollator, PriorConfig, SpanSpec
from mmvq.prior.generation import PriorSamplingConfig, _chunks

SPANS = [SpanSpec("src", "detail", 4, 8), SpanSpec("dst", "detail", 4, 8)]
TINY = PriorConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def tiny_prior(seed: int = 0, config: PriorConfig = TINY) -> MultimodalPrior:
    torch.manual_seed(seed)
    return MultimodalPrior.build(MultimodalTokenizer.from_spans(SPANS), config)


def test_prior_config_json_round_trip() -> None:
    config = PriorConfig(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=4, attention_dropout=0.1
    )
    assert PriorConfig.from_json_string(config.to_json_string()) == config
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['layers'\]"):
        PriorConfig.from_dict({"layers": 2})
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=5"):
        PriorConfig(hidden_size=32, num_attention_heads=5)
    llama = config.llama_config(MultimodalTokenizer.from_spans(SPANS))
    assert (llama.vocab_size, llama.max_position_embeddings) == (4 + 4 + 8, 2 + 6 + 6)
    assert llama.intermediate_size == 4 * 48


def test_save_load_round_trip(tmp_path) -> None:
    prior = tiny_prior()
    prior.save_pretrained(tmp_path)
    assert (tmp_path / "lm" / "model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    saved = json.loads((tmp_path / "prior_config.json").read_text())
    assert saved["prior"] == TINY.to_dict()
    loaded = MultimodalPrior.from_pretrained(tmp_path)
    assert loaded.config == prior.config and loaded.tokenizer.vocab == prior.tokenizer.vocab
    ids = torch.tensor([[1, 4, 8, 9, 10, 11, 5]])
    with torch.no_grad():
        assert torch.equal(prior.lm(ids).logits, loaded.lm(ids).logits)
    config = PriorSamplingConfig(seed=5)
    assert torch.equal(
        prior.generate(6, config=config).sequences, loaded.generate(6, config=config).sequences
    )
    with pytest.raises(FileNotFoundError, match="not a saved mmvq prior"):
        MultimodalPrior.from_pretrained(tmp_path / "lm")


def test_a_prior_folder_with_code_is_refused(tmp_path) -> None:
    prior = tiny_prior()
    prior.save_pretrained(tmp_path / "prior")
    saved = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "README.md"]
    assert saved and all(p.suffix in DATA_SUFFIXES for p in saved)  # all a Hub download fetches
    assert (tmp_path / "prior" / "README.md").is_file()  # the card: not needed to load
    evil = tmp_path / "prior" / "lm" / "modeling_evil.py"
    evil.write_text("raise SystemExit('ran')\n")
    with pytest.raises(RemoteCodeError, match=r"carries code .*lm/modeling_evil\.py"):
        MultimodalPrior.from_pretrained(tmp_path)  # the directory holding prior/
    evil.unlink()
    config = tmp_path / "prior" / "lm" / "config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "auto_map": {"AutoModel": "x"}})
    )
    with pytest.raises(RemoteCodeError, match=r"an 'auto_map' in lm/config\.json"):
        MultimodalPrior.from_pretrained(tmp_path / "prior")


def test_same_seed_same_samples() -> None:
    prior = tiny_prior()
    a = prior.generate(10, modalities=["dst"], config=PriorSamplingConfig(seed=1, batch_size=4))
    b = prior.generate(10, modalities=["dst"], config=PriorSamplingConfig(seed=1, batch_size=4))
    c = prior.generate(10, modalities=["dst"], config=PriorSamplingConfig(seed=2, batch_size=4))
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)
    assert a.sequences.shape[0] == 10
    # the caller's RNG is left alone
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    prior.generate(2, config=PriorSamplingConfig(seed=7))
    assert torch.equal(torch.rand(3), expected)


def test_generation_chunks_are_bounded() -> None:
    assert _chunks(3, 5, 4) == [(0, 4), (0, 1), (1, 4), (1, 1), (2, 4), (2, 1)]
    assert _chunks(2, 2, 64) == [(0, 2), (1, 2)]
    prior = tiny_prior()
    src = {("src", "detail"): torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0], [1, 1, 1, 1]])}
    out = prior.generate(
        5, source=src, target="dst", config=PriorSamplingConfig(seed=0, batch_size=4)
    )
    assert out.sequences.shape[0] == 15
    for r, seq in enumerate(prior.tokenizer.parse(out.sequences)):
        assert seq.order == ["src", "dst"]
        assert seq.blocks[0].codes["detail"] == src[("src", "detail")][r // 5].tolist()


def toy_rows(n: int = 12, seed: int = 0) -> list[dict]:
    """``dst`` is a fixed function of ``src`` (reversed, times 3 plus 1, mod 8)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        src = torch.randint(0, 8, (4,), generator=gen)
        dst = (src.flip(0) * 3 + 1) % 8
        rows.append(
            {"codes.src.detail": src.tolist(), "codes.dst.detail": dst.tolist(), "index": i}
        )
    return rows


def test_tiny_prior_learns_a_deterministic_mapping() -> None:
    prior = tiny_prior(
        config=PriorConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    )
    rows = toy_rows()
    collate = PriorCollator(prior.tokenizer, modality_order=None)
    batch = collate(rows)
    opt = torch.optim.AdamW(prior.lm.parameters(), lr=3e-3)
    prior.lm.train()
    for _ in range(60):
        loss = prior.lm(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert float(loss.detach()) < 0.5
    src = {("src", "detail"): torch.tensor([r["codes.src.detail"] for r in rows])}
    out = prior.generate(1, source=src, target="dst", config=PriorSamplingConfig(do_sample=False))
    got = out.codes.codes[("dst", "detail")]
    want = torch.tensor([r["codes.dst.detail"] for r in rows])
    assert torch.equal(got, want)


def test_classifier_free_guidance_is_the_documented_mix() -> None:
    """Greedy generate(guidance_scale=s) picks argmax of uncond + s (cond - uncond) over the
    valid ids at every step, the unconditional branch being [bos] <dst> + generated ids."""
    prior = tiny_prior(seed=3)
    tok, lm = prior.tokenizer, prior.lm
    src = {("src", "detail"): torch.tensor([[3, 1, 4, 1]])}
    scale = 2.5
    out = prior.generate(
        1,
        source=src,
        target="dst",
        config=PriorSamplingConfig(do_sample=False, guidance_scale=scale),
    )
    seq = out.sequences[0].tolist()
    start = seq.index(tok.begin_token_id("dst")) + 1
    lo, hi = tok.code_range("detail")
    plain = (
        prior.generate(1, source=src, target="dst", config=PriorSamplingConfig(do_sample=False))
        .sequences[0]
        .tolist()
    )
    with torch.no_grad():
        for t in range(start, start + 4):
            cond = torch.log_softmax(lm(torch.tensor([seq[:t]])).logits[0, -1], -1)
            uncond_ids = [tok.bos_token_id, tok.begin_token_id("dst")] + seq[start:t]
            uncond = torch.log_softmax(lm(torch.tensor([uncond_ids])).logits[0, -1], -1)
            mixed = uncond + scale * (cond - uncond)
            assert seq[t] == lo + int(mixed[lo:hi].argmax()), t
    assert seq != plain  # guidance changed the choice somewhere (else the test proves nothing)
