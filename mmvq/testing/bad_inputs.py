"""The ``bad_inputs`` check: each input the adapter declares in
:meth:`~mmvq.adapter.ModalityAdapter.bad_inputs` is refused by ``preprocess`` with the declared
error and a message containing the declared text."""

from __future__ import annotations

import inspect

from mmvq.adapter import BadInput, ModalityAdapter
from mmvq.testing.runner import CheckFailed, Runner, require

__all__ = ["run_bad_input_check"]


def run_bad_input_check(runner: Runner, adapter: ModalityAdapter) -> None:
    """Every input ``adapter.bad_inputs()`` declares is refused with its error and message."""
    with runner.check("bad_inputs") as detail:
        declared = adapter.bad_inputs()
        require(
            isinstance(declared, list),
            f"bad_inputs() must return a list of BadInput, got {type(declared).__name__}",
        )
        for bad in declared:
            require(
                isinstance(bad, BadInput),
                f"bad_inputs() entries must be mmvq.BadInput, got {type(bad).__name__}",
            )
            require(
                inspect.isclass(bad.error) and issubclass(bad.error, Exception),
                f"BadInput {bad.description!r}: error must be an exception class, got "
                f"{bad.error!r}",
            )
            try:
                adapter.preprocess(bad.example)
            except bad.error as exc:
                require(
                    bad.match.lower() in str(exc).lower(),
                    f"bad input {bad.description!r}: the {type(exc).__name__} message {str(exc)!r} "
                    f"does not contain {bad.match!r}",
                )
                continue
            except Exception as exc:
                raise CheckFailed(
                    f"bad input {bad.description!r}: preprocess raised {type(exc).__name__}: {exc} "
                    f"instead of {bad.error.__name__} (containing {bad.match!r}); reject bad input "
                    "at the boundary with a clear error"
                ) from exc
            raise CheckFailed(
                f"bad input {bad.description!r}: preprocess accepted it; expected "
                f"{bad.error.__name__} containing {bad.match!r}"
            )
        detail.append(f"{len(declared)} declared bad input(s) rejected with their messages")
