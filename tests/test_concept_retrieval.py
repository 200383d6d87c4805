"""mmvq.concept.retrieval: R@1 by concept codes, exact on hand-made codes."""

from __future__ import annotations

import pytest
import torch

from mmvq.concept.retrieval import RetrievalAccumulator, content_keys, retrieval_at_1


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool)


def test_perfect_codes_retrieve_every_partner():
    codes = torch.tensor([[1, 2], [3, 4], [5, 6]])
    assert retrieval_at_1(codes, codes, _eye(3)) == 1.0


def test_wrong_codes_retrieve_nothing():
    query = torch.tensor([[1, 2], [3, 4]])
    gallery = torch.tensor([[3, 4], [1, 2]])
    assert retrieval_at_1(query, gallery, _eye(2)) == 0.0


def test_ties_count_in_expectation():
    # query 0 ties between gallery 0 (its partner) and gallery 1: half a hit; query 1 matches
    # nothing, so both gallery rows tie at 0 and it hits its partner half the time too
    query = torch.tensor([[1, 2], [7, 8]])
    gallery = torch.tensor([[1, 2], [1, 2]])
    assert retrieval_at_1(query, gallery, _eye(2)) == pytest.approx(0.5)


def test_duplicates_are_hits():
    query = torch.tensor([[1, 2], [1, 2]])
    gallery = torch.tensor([[1, 2], [1, 2]])
    same = torch.ones(2, 2, dtype=torch.bool)  # the two rows hold the same content
    assert retrieval_at_1(query, gallery, same) == 1.0
    assert retrieval_at_1(query, gallery, _eye(2)) == 0.5


def test_content_keys_identify_identical_rows_and_skip_absent():
    sub = {"x": torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])}
    keys = content_keys(sub, torch.tensor([True, True, False]))
    assert keys[0] == keys[1] and keys[2] is None


def test_accumulator_over_batches_with_duplicate_content():
    acc = RetrievalAccumulator(["a", "b"])
    # rows 0 and 2 hold the same "a" input (e.g. one caption twice); codes agree across modalities
    batch1 = {
        "a": {"x": torch.tensor([[1.0], [2.0]])},
        "b": {"y": torch.tensor([[10.0], [20.0]])},
    }
    batch2 = {"a": {"x": torch.tensor([[1.0]])}, "b": {"y": torch.tensor([[11.0]])}}
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, True])}
    acc.add(
        {"a": torch.tensor([[1, 1], [2, 2]]), "b": torch.tensor([[1, 1], [2, 2]])}, batch1, present
    )
    one = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    acc.add({"a": torch.tensor([[1, 1]]), "b": torch.tensor([[1, 1]])}, batch2, one)
    result = acc.compute()
    # b->a: query row 0 ties rows 0 and 2 (same "a" content: both hits) -> 1; a->b likewise
    assert result == {"retrieval_r1_a_to_b": 1.0, "retrieval_r1_b_to_a": 1.0}


def test_accumulator_skips_rows_without_both_modalities():
    acc = RetrievalAccumulator(["a", "b"])
    batch = {"a": {"x": torch.tensor([[1.0], [2.0], [3.0]])}}
    acc.add({"a": torch.tensor([[1], [2], [3]])}, batch, {"a": torch.ones(3, dtype=torch.bool)})
    assert acc.compute() == {}
