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


def test_parse_mapping_reads_dicts_json_and_pairs_with_nested_values():
    from mmvq.utils.configs import parse_mapping

    assert parse_mapping(None, "O") == {} and parse_mapping("  ", "O") == {}
    assert parse_mapping({"a": 1}, "O") == {"a": 1}
    assert parse_mapping('{"a": [1, 2]}', "O") == {"a": [1, 2]}
    # values parse as JSON when they can; commas inside braces do not split pairs
    assert parse_mapping('name=static,weights={"x": 1, "y": 2},n=3,s=abc', "O") == {
        "name": "static",
        "weights": {"x": 1, "y": 2},
        "n": 3,
        "s": "abc",
    }
    # Python's spellings of the constants, as typed on a command line, mean the constants
    assert parse_mapping("a=True,b=false,c=None,d=Truely", "O") == {
        "a": True,
        "b": False,
        "c": None,
        "d": "Truely",
    }
    assert parse_mapping("col=2019,b=", "O", json_values=False) == {"col": "2019", "b": ""}
    assert parse_mapping("gradnorm", "O", shorthand="name") == {"name": "gradnorm"}
    with pytest.raises(ValueError, match=r"^O: 'x' is not key=value; write e.g. 'k=v'$"):
        parse_mapping("a=1,x", "O", example="k=v")
    with pytest.raises(KeyError, match="is not valid JSON"):
        parse_mapping("{bad", "O", error=KeyError)
    assert parse_mapping("[1]", "O", shorthand="k") == {"k": [1]}  # a bare JSON value
    with pytest.raises(TypeError, match="must be a dict or a string"):
        parse_mapping(3, "O")
