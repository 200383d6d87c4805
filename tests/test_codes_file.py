"""The codes JSON file of `mmvq encode` / `mmvq decode` (mmvq/outputs/codes_file.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmvq.concept import MultimodalCodes
from mmvq.outputs.codes_file import (
    CODES_FORMAT,
    CodesFileError,
    codes_from_dict,
    codes_to_dict,
    read_codes,
)


def test_round_trip(tmp_path: Path) -> None:
    codes = {"text": torch.tensor([[3, 1, -1], [0, 2, 2]]), "image": torch.tensor([[5, 6]])}
    data = codes_to_dict(codes, num_codes=8, model="org/m")
    assert data["format"] == CODES_FORMAT and data["num_codes"] == 8 and data["model"] == "org/m"
    assert "concept_codes" not in data
    path = tmp_path / "codes.json"
    path.write_text(json.dumps(data))
    back, sizes = read_codes(path)
    assert sizes == {"detail": 8} and set(back.detail) == set(codes) and not back.concept
    for m in codes:
        assert torch.equal(back.detail[m], codes[m]) and back.detail[m].dtype == torch.long


def test_round_trip_of_both_levels_and_concepts_alone() -> None:
    codes = MultimodalCodes(
        concept={"text": torch.tensor([[1, 2, 3, 4]])}, detail={"text": torch.tensor([[5, -1]])}
    )
    data = codes_to_dict(codes, num_codes=8, num_concept_codes=16)
    back, sizes = codes_from_dict(json.loads(json.dumps(data)))
    assert sizes == {"detail": 8, "concept": 16}
    assert torch.equal(back.concept["text"], codes.concept["text"])
    assert torch.equal(back.detail["text"], codes.detail["text"])
    concept_only = MultimodalCodes(concept=codes.concept)
    alone, _ = codes_from_dict(codes_to_dict(concept_only, num_codes=8, num_concept_codes=16))
    assert not alone.detail and torch.equal(alone.concept["text"], codes.concept["text"])


def test_version_1_files_are_still_read() -> None:
    back, sizes = codes_from_dict(
        {"format": CODES_FORMAT, "version": 1, "num_codes": 4, "codes": {"t": [[1, 2]]}}
    )
    assert sizes == {"detail": 4} and back.detail["t"].tolist() == [[1, 2]]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "is not an mmvq codes file"),
        ({"format": "other"}, "is not an mmvq codes file"),
        ({"format": CODES_FORMAT, "version": 9, "codes": {}}, "has version 9"),
        ({"format": CODES_FORMAT, "version": 1, "codes": {}}, "must map at least one modality"),
        (
            {"format": CODES_FORMAT, "version": 1, "codes": {"t": [[1, 2], [3]]}},
            r"codes\['t'\] must be",
        ),
        ({"format": CODES_FORMAT, "version": 1, "codes": {"t": [[1.5]]}}, r"codes\['t'\] must be"),
        ({"format": CODES_FORMAT, "version": 1, "codes": {"t": [[True]]}}, r"codes\['t'\] must be"),
        ({"format": CODES_FORMAT, "version": 1, "codes": {"t": []}}, r"codes\['t'\] must be"),
    ],
)
def test_bad_layouts(data: object, match: str) -> None:
    with pytest.raises(CodesFileError, match=match):
        codes_from_dict(data)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(CodesFileError, match="does not exist; write one with `mmvq encode"):
        read_codes(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CodesFileError, match="is not valid JSON"):
        read_codes(bad)
