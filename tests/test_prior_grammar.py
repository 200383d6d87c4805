"""The constrained-decoding logits processor against the sequential parser: with random logits no
invalid id ever gets through, and at every step it allows exactly the ids the parser accepts."""

from __future__ import annotations

import pytest
import torch

from mmvq.prior import (
    ConstrainedLogitsProcessor,
    MalformedSequenceError,
    MultimodalPrior,
    MultimodalTokenizer,
    PriorConfig,
    SpanSpec,
)
from mmvq.prior.generation import PriorSamplingConfig
from mmvq.prior.grammar import check_prefix

LAYOUTS = {
    "two modalities": [
        SpanSpec("image", "detail", 3, 5),
        SpanSpec("text", "detail", 3, 5, padding=True),
    ],
    "two levels, three modalities": [
        SpanSpec("image", "concept", 2, 3),
        SpanSpec("image", "detail", 2, 5),
        SpanSpec("text", "concept", 2, 3),
        SpanSpec("text", "detail", 3, 5, padding=True),
        SpanSpec("audio", "detail", 2, 5, padding=True),
    ],
}


def is_valid_prefix(ids: list[int], tok: MultimodalTokenizer) -> bool:
    try:
        check_prefix(ids, tok.vocab)
    except MalformedSequenceError:
        return False
    return True


def sample_with_random_logits(
    tok: MultimodalTokenizer,
    prompt: list[int],
    targets,
    steps: int,
    gen: torch.Generator,
    check_every_id: bool,
) -> torch.Tensor:
    """Random logits (a sharp, random preference each step) through the processor; every step
    checks the sampled id, and optionally the whole mask, against the parser."""
    processor = ConstrainedLogitsProcessor(tok.vocab, targets)
    rows = 6
    ids = torch.tensor([prompt] * rows)
    for _ in range(steps):
        scores = torch.randn(rows, tok.vocab_size, generator=gen) * 4
        processed = processor(ids, scores)
        allowed = torch.isfinite(processed)
        assert allowed.any(dim=1).all(), "some row has no allowed id"
        if check_every_id:
            for r in range(rows):
                prefix = ids[r].tolist()
                for v in range(tok.vocab_size):
                    ok = is_valid_prefix(prefix + [v], tok)
                    assert bool(allowed[r, v]) == ok, (prefix, v, tok.vocab.describe(v))
        probs = torch.softmax(processed, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        for r in range(rows):
            assert allowed[r, nxt[r, 0]]
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_processor_allows_exactly_the_valid_ids(layout: str) -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS[layout])
    gen = torch.Generator().manual_seed(0)
    longest = tok.sequence_length()
    for _ in range(4):
        ids = sample_with_random_logits(tok, [tok.bos_token_id], None, longest + 2, gen, True)
        for r, row in enumerate(ids.tolist()):
            seq = tok.parse([row])[0]  # complete: ends with eos, then pads
            assert seq.complete, r


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_many_random_sequences_all_valid_in_every_order(layout: str) -> None:
    """Hundreds of sequences from random logits: every block order shows up, all parse."""
    tok = MultimodalTokenizer.from_spans(LAYOUTS[layout])
    gen = torch.Generator().manual_seed(1)
    orders = set()
    for _ in range(60):
        ids = sample_with_random_logits(
            tok, [tok.bos_token_id], None, tok.sequence_length(), gen, False
        )
        for seq in tok.parse(ids):
            assert seq.complete
            orders.add(tuple(seq.order))
    modalities = tok.modalities
    import itertools

    full_orders = set(itertools.permutations(modalities))
    assert full_orders <= orders, full_orders - orders


def test_targets_restrict_what_is_generated() -> None:
    tok = MultimodalTokenizer.from_spans(LAYOUTS["two levels, three modalities"])
    gen = torch.Generator().manual_seed(2)
    prompt = [tok.bos_token_id, tok.begin_token_id("text")]
    for _ in range(20):
        ids = sample_with_random_logits(tok, prompt, ["text"], tok.sequence_length(), gen, False)
        for seq in tok.parse(ids):
            assert seq.order == ["text"]
    # conditional: the source is in the prompt, the target must follow, then eos
    src = tok({("audio", "detail"): torch.tensor([[1, -1]])}, add_eos=False)["input_ids"][0]
    prompt = src + [tok.begin_token_id("image")]
    for _ in range(20):
        ids = sample_with_random_logits(tok, prompt, ["image"], tok.sequence_length(), gen, False)
        for seq in tok.parse(ids):
            assert seq.order == ["audio", "image"]
    with pytest.raises(ValueError, match="target modality 'video'"):
        ConstrainedLogitsProcessor(tok.vocab, ["video"])


def test_hf_generate_with_a_random_lm_never_emits_an_invalid_id() -> None:
    """The processor inside transformers' generate(): an untrained LM at high temperature,
    unconditional and conditional, many seeds: every sequence parses."""
    tok = MultimodalTokenizer.from_spans(LAYOUTS["two levels, three modalities"])
    torch.manual_seed(0)
    prior = MultimodalPrior.build(
        tok, PriorConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    seen = set()
    for seed in range(8):
        config = PriorSamplingConfig(seed=seed, temperature=3.0, batch_size=16)
        out = prior.generate(16, config=config)
        for seq in tok.parse(out.sequences):
            assert seq.complete
            seen.add(tuple(seq.order))
        out = prior.generate(8, modalities=["audio"], config=config)
        assert all(o == ["audio"] for o in out.codes.order)
    assert len(seen) > 6  # many subsets and orders: the constraint does not collapse choices
