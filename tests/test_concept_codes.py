"""mmvq.concept.codes: the two-level codes container, concept similarity and retrieval."""

from __future__ import annotations

import pytest
import torch

from mmvq.concept import CodeSpan, MultimodalCodes, concept_similarity, retrieve


def test_similarity_is_the_fraction_of_slots_that_agree():
    a = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0], [9, 9, 9, 9]])
    sim = concept_similarity(a, b)
    assert sim.tolist() == [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]


def test_similarity_compares_slot_by_slot_not_sets():
    a = torch.tensor([[1, 2]])
    b = torch.tensor([[2, 1]])  # same set, swapped slots
    assert concept_similarity(a, b).item() == 0.0


def test_absent_rows_match_nothing():
    a = torch.tensor([[-1, -1], [3, 4]])
    b = torch.tensor([[-1, -1], [3, 4]])
    assert concept_similarity(a, b).tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_similarity_refuses_mismatched_slots():
    with pytest.raises(ValueError, match="same S"):
        concept_similarity(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))


def test_retrieve_orders_by_score_and_breaks_ties_by_index():
    query = torch.tensor([[1, 2, 3]])
    gallery = torch.tensor([[1, 0, 0], [1, 2, 3], [1, 2, 0], [1, 2, 3]])
    scores, index = retrieve(query, gallery, k=3)
    assert index.tolist() == [[1, 3, 2]]
    assert scores[0, 0].item() == 1.0 and scores[0, 2].item() == pytest.approx(2 / 3)


def test_codes_container_round_trip_and_views():
    codes = MultimodalCodes(
        concept={"a": torch.tensor([[1, 2], [3, 4]])},
        detail={"a": torch.tensor([[5, 6, 7], [8, 9, -1]]), "b": torch.tensor([[1], [2]])},
    )
    assert codes.modalities == ["a", "b"]
    only_b = codes.select(["b"])
    assert not only_b.concept and list(only_b.detail) == ["b"]
    second = codes.rows(torch.tensor([False, True]))
    assert second.detail["a"].tolist() == [[8, 9, -1]]
    assert codes.to_dict()["concept"] == {"a": [[1, 2], [3, 4]]}
    plain = MultimodalCodes.from_mapping({"a": torch.tensor([[1]])})
    assert plain.detail["a"].tolist() == [[1]] and not plain.concept
    with pytest.raises(TypeError, match="MultimodalCodes"):
        MultimodalCodes.from_mapping([1, 2])


def test_code_span_fields():
    span = CodeSpan("a", "concept", 4, 256)
    assert (span.modality, span.level, span.length, span.num_codes) == ("a", "concept", 4, 256)
