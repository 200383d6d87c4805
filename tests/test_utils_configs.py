from dataclasses import dataclass

import pytest

from mmvq.utils.configs import check_known_fields, from_preset


@dataclass
class _Cfg:
    a: int = 1
    b: str = "x"


def test_check_known_fields_names_owner_noun_and_fields():
    check_known_fields(_Cfg, ["a", "b"], "Owner")
    with pytest.raises(
        ValueError,
        match=r"Owner got unknown option\(s\) \['c', 'd'\]; _Cfg has the fields \['a', 'b'\]",
    ):
        check_known_fields(_Cfg, ["a", "d", "c"], "Owner", "option")


def test_from_preset_applies_overrides_and_rejects_unknowns():
    presets = {"small": {"a": 2}, "big": {"a": 9, "b": "y"}}
    assert from_preset(_Cfg, presets, "small", {"b": "z"}) == _Cfg(2, "z")
    with pytest.raises(
        ValueError, match=r"unknown _Cfg preset 'tiny'; available presets: \['big', 'small'\]"
    ):
        from_preset(_Cfg, presets, "tiny", {})
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['q'\]"):
        from_preset(_Cfg, presets, "big", {"q": 1})
