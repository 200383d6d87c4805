"""The argument checks every config shares (mmvq/utils/checks.py): one helper per check."""

from __future__ import annotations

import math

import pytest
import torch

from mmvq.utils.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    describe_value,
    is_int,
    is_real,
)


def test_predicates_refuse_bools_and_non_finite_numbers() -> None:
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_real(0.5) and is_real(2) and not is_real(False) and not is_real(math.nan)
    assert not is_real(math.inf) and not is_real("1")


def test_each_check_words_its_error() -> None:
    check_positive_int("A.n", 1)
    with pytest.raises(ValueError, match=r"^A\.n must be a positive int, got 0; e\.g\. 4\.$"):
        check_positive_int("A.n", 0, fix="; e.g. 4.")
    with pytest.raises(KeyError):
        check_positive_int("A.n", True, error=KeyError)
    check_int("A.k", 0, minimum=0)
    check_int("A.k", None, minimum=1, optional=True)
    with pytest.raises(ValueError, match=r"^A\.k must be an int >= 2, got 1$"):
        check_int("A.k", 1, minimum=2)
    with pytest.raises(ValueError, match=r"^A\.k must be None or an int >= 1, got 0\.$"):
        check_int("A.k", 0, minimum=1, optional=True, fix=".")
    check_number("A.x", 0.0, low=0.0)
    with pytest.raises(ValueError, match=r"^A\.x must be a finite number > 0, got 0$"):
        check_number("A.x", 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"must be a finite number >= 0.0 and <= 1.0, got 1.5"):
        check_number("A.x", 1.5, low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"finite number >= 0, got nan"):
        check_number("A.x", math.nan, low=0)
    with pytest.raises(ValueError, match=r"^A\.b must be True or False, got 'yes'$"):
        check_bool("A.b", "yes")
    with pytest.raises(ValueError, match=r"^A\.c must be one of \('a', 'b'\), got 'z'\.$"):
        check_choice("A.c", "z", ["a", "b"], fix=".")


def test_describe_value_shows_a_tensor_dtype_and_shape_else_the_type() -> None:
    assert describe_value(torch.zeros(2, 3, dtype=torch.int32)) == "torch.int32 (2, 3)"
    assert describe_value([1, 2]) == "list"
    assert describe_value(None) == "NoneType"
