"""The catalogue of bad inputs and faults run by ``tests/test_bad_inputs.py``: one
:class:`~bad_inputs.helpers.Case` each, grouped by where the input enters
(:data:`~bad_inputs.helpers.KINDS`: one module per kind), each naming the exact error type and a
pattern its message must contain (the field, row, option or file it is about)."""

from bad_inputs import adapter, api, checkpoint, cli, data, hub  # noqa: F401 - they register
from bad_inputs.helpers import CASES, KINDS, Case, CliFailure, Ctx

__all__ = ["CASES", "KINDS", "Case", "CliFailure", "Ctx"]
