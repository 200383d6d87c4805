"""Tests of mmvq.quantize.stats: exact values on constructed codes, accumulation, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mmvq.quantize.stats import (
    CodebookStatsAccumulator,
    code_histogram,
    code_set_jaccard,
    paired_agreement,
    perplexity,
    usage,
)

torch.set_num_threads(1)


def test_histogram_ignores_padding_and_mask() -> None:
    codes = torch.tensor([[0, 0, 3, -1], [3, 1, -1, -1]])
    assert code_histogram(codes, 5).tolist() == [2.0, 1.0, 0.0, 2.0, 0.0]
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    assert code_histogram(codes, 5, mask).tolist() == [1.0, 1.0, 0.0, 2.0, 0.0]


def test_usage_and_perplexity_exact() -> None:
    # three codes used equally out of K = 8: usage 3/8, perplexity exactly 3
    codes = torch.tensor([[0, 0, 1, 1], [2, 2, -1, -1]])
    assert usage(codes, 8).item() == pytest.approx(3 / 8)
    assert perplexity(codes, 8).item() == pytest.approx(3.0, rel=1e-6)
    # counts (2, 1, 1): p = (1/2, 1/4, 1/4), entropy = 1.5 ln 2, perplexity = 2 ** 1.5
    codes = torch.tensor([5, 5, 6, 7, -1])
    assert usage(codes, 10).item() == pytest.approx(0.3)
    assert perplexity(codes, 10).item() == pytest.approx(2**1.5, rel=1e-6)
    # one code takes every token
    assert perplexity(torch.full((7,), 4), 10).item() == pytest.approx(1.0)


def test_empty_inputs_are_nan_not_zero() -> None:
    only_padding = torch.full((2, 3), -1)
    assert usage(only_padding, 4).item() == 0.0
    assert math.isnan(perplexity(only_padding, 4).item())
    assert math.isnan(code_set_jaccard(only_padding, only_padding, 4).item())
    none_paired = torch.zeros(2, dtype=torch.bool)
    assert math.isnan(
        paired_agreement(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long), none_paired, 4
        ).item()
    )


def test_code_set_jaccard_exact() -> None:
    a = torch.tensor([[0, 1, 2, -1]])
    b = torch.tensor([[2, 3, 3]])
    # {0,1,2} vs {2,3}: 1 shared of 4
    assert code_set_jaccard(a, b, 8).item() == pytest.approx(0.25)
    assert code_set_jaccard(a, b).item() == pytest.approx(0.25)  # num_codes inferred
    assert code_set_jaccard(a, a, 8).item() == pytest.approx(1.0)


def test_paired_agreement_exact() -> None:
    a = torch.tensor([[0, 1, -1], [2, 2, 2], [5, 6, 7]])
    b = torch.tensor([[1, 0], [3, -1], [5, 5]])
    both = torch.tensor([True, True, False])
    # row 0: {0,1} vs {0,1} = 1; row 1: {2} vs {3} = 0; row 2 not paired
    assert paired_agreement(a, b, both, 8).item() == pytest.approx(0.5)
    assert paired_agreement(a, b, torch.tensor([True, False, True]), 8).item() == pytest.approx(
        (1 + 1 / 3) / 2
    )


def test_accumulator_matches_functions_on_concatenation() -> None:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        img = torch.randint(0, 12, (4, 6), generator=g)
        txt = torch.randint(8, 16, (4, 3), generator=g)
        txt[0, 2] = -1
        batches.append({"image": img, "text": txt})
    acc = CodebookStatsAccumulator(16, ["text", "image"])
    for batch in batches:
        acc.update(batch)
    out = acc.compute()
    img = torch.cat([b["image"] for b in batches])
    txt = torch.cat([b["text"] for b in batches])
    assert out["usage/image"] == pytest.approx(usage(img, 16).item())
    assert out["perplexity/text"] == pytest.approx(perplexity(txt, 16).item(), rel=1e-6)
    assert out["overlap/image-text"] == pytest.approx(code_set_jaccard(img, txt, 16).item())
    both = torch.ones(img.shape[0], dtype=torch.bool)
    assert out["agreement/image-text"] == pytest.approx(paired_agreement(img, txt, both, 16).item())
    assert out["usage/all"] == pytest.approx(
        usage(torch.cat([img.flatten(), txt.flatten()]), 16).item()
    )
    assert set(out) == {
        "usage/image",
        "perplexity/image",
        "usage/text",
        "perplexity/text",
        "overlap/image-text",
        "agreement/image-text",
        "usage/all",
    }


def test_accumulator_pairs_only_samples_with_both() -> None:
    acc = CodebookStatsAccumulator(8, ["a", "b", "c"])
    acc.update({"a": torch.tensor([[1, 2]]), "b": torch.tensor([[1, 2]])})  # agreement 1
    acc.update(
        {"a": torch.tensor([[1, 2], [3, 3]]), "b": torch.tensor([[4, 5], [3, 3]])},
        present={"b": torch.tensor([True, False])},
    )  # row 0 agreement 0, row 1 not paired
    acc.update({"a": torch.tensor([[7]])})  # no pair at all
    out = acc.compute()
    assert out["agreement/a-b"] == pytest.approx(0.5)
    # c never seen: no c keys; a-c, b-c undefined
    assert not any("c" in key.split("/")[1].split("-") for key in out)
    acc.reset()
    assert acc.compute() == {}


def test_accumulator_all_reduce_is_noop_single_process() -> None:
    acc = CodebookStatsAccumulator(4, ["a"])
    acc.update({"a": torch.tensor([[0, 1, 1]])})
    before = acc.compute()
    acc.all_reduce()
    assert acc.compute() == before


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: usage(torch.tensor([0.0, 1.0]), 4), "integer"),
        (lambda: usage(torch.tensor([0, 4]), 4), "< num_codes"),
        (lambda: usage(torch.tensor([0, -2]), 4), ">= 0, or -1"),
        (lambda: usage(torch.tensor([0, 1]), 0), "positive int"),
        (lambda: usage([0, 1], 4), "torch.Tensor"),
        (
            lambda: code_histogram(torch.tensor([0, 1]), 4, torch.ones(3, dtype=torch.bool)),
            "same shape",
        ),
        (
            lambda: paired_agreement(
                torch.zeros(2, 3, dtype=torch.long),
                torch.zeros(3, 3, dtype=torch.long),
                torch.ones(2, dtype=torch.bool),
            ),
            "same samples",
        ),
        (
            lambda: paired_agreement(
                torch.zeros(2, 3, dtype=torch.long),
                torch.zeros(2, 3, dtype=torch.long),
                torch.ones(2),
            ),
            "bool tensor",
        ),
        (
            lambda: paired_agreement(
                torch.zeros(6, dtype=torch.long),
                torch.zeros(6, dtype=torch.long),
                torch.ones(6, dtype=torch.bool),
            ),
            r"\[B, N\]",
        ),
        (
            lambda: CodebookStatsAccumulator(4, ["a"]).update(
                {"z": torch.zeros(1, 2, dtype=torch.long)}
            ),
            "unknown modality 'z'",
        ),
        (
            lambda: CodebookStatsAccumulator(4, ["a", "b"]).update(
                {"a": torch.zeros(1, 2, dtype=torch.long), "b": torch.zeros(2, 2, dtype=torch.long)}
            ),
            "same samples",
        ),
        (
            lambda: CodebookStatsAccumulator(4, ["a"]).update(
                {"a": torch.zeros(2, 2, dtype=torch.long)},
                present={"a": torch.ones(3, dtype=torch.bool)},
            ),
            r"present\['a'\]",
        ),
        (lambda: CodebookStatsAccumulator(4, []), "non-empty"),
        (lambda: CodebookStatsAccumulator(4, ["a", "a"]), "distinct"),
    ],
)
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()
