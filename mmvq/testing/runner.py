"""The machinery of :func:`mmvq.testing.check_adapter`: the report, one check's context (pass,
skip, or fail with a message naming the check), and the comparison helpers checks share."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmvq.adapter import AdapterConfig, ModalityAdapter

__all__ = [
    "Batch",
    "CheckFailed",
    "CheckReport",
    "CheckResult",
    "Runner",
    "all_finite",
    "close",
    "instantiate",
    "require",
    "shape",
    "to_device",
]

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class CheckResult:
    """One check: its name and what it established (or, when skipped, why)."""

    name: str
    detail: str


@dataclass
class CheckReport:
    """What :func:`check_adapter` ran.

    Attributes:
        adapter: the adapter class's qualified name.
        passed: the checks that ran and passed, in order.
        skipped: checks that did not apply (e.g. no discriminator), with the reason.
    """

    adapter: str
    passed: list[CheckResult] = field(default_factory=list)
    skipped: list[CheckResult] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Names of the checks that passed."""
        return [c.name for c in self.passed]

    def __str__(self) -> str:
        lines = [f"check_adapter({self.adapter}): {len(self.passed)} checks passed"]
        lines += [f"  ok    {c.name}: {c.detail}" for c in self.passed]
        lines += [f"  skip  {c.name}: {c.detail}" for c in self.skipped]
        return "\n".join(lines)


class CheckFailed(AssertionError):
    """A contract violation found by a check (message only; wrapped by :class:`Runner`)."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


class Runner:
    def __init__(self, adapter: ModalityAdapter) -> None:
        self.adapter = adapter
        self.report = CheckReport(type(adapter).__qualname__)

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        """Run one check; its body appends a detail string to the yielded list."""
        detail: list[str] = []
        try:
            yield detail
        except CheckFailed as exc:
            raise AssertionError(self._message(name, str(exc))) from exc.__cause__
        except Exception as exc:  # an error raised by the adapter's own code
            raise AssertionError(
                self._message(name, f"the adapter raised {type(exc).__name__}: {exc}")
            ) from exc
        self.report.passed.append(CheckResult(name, "; ".join(detail) or "ok"))

    def skip(self, name: str, reason: str) -> None:
        self.report.skipped.append(CheckResult(name, reason))

    def _message(self, name: str, problem: str) -> str:
        passed = ", ".join(self.report.names) or "none"
        return (
            f"check_adapter({self.report.adapter}) failed check {name!r}: {problem} "
            f"[checks passed before it: {passed}]"
        )


def instantiate(
    adapter_or_class: ModalityAdapter | type[ModalityAdapter], config: AdapterConfig | None
) -> ModalityAdapter:
    if inspect.isclass(adapter_or_class) and issubclass(adapter_or_class, ModalityAdapter):
        return adapter_or_class(config) if config is not None else adapter_or_class()
    if isinstance(adapter_or_class, ModalityAdapter):
        if config is not None:
            raise ValueError(
                "check_adapter: config is only used when a class is given; got an adapter instance "
                f"({type(adapter_or_class).__name__}) and a config. Pass the class, or drop config."
            )
        return adapter_or_class
    raise TypeError(
        "check_adapter: adapter_or_class must be a ModalityAdapter subclass or instance, got "
        f"{type(adapter_or_class).__name__} {adapter_or_class!r:.80}"
    )


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def all_finite(t: Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def close(a: Tensor, b: Tensor, rtol: float, atol: float) -> str | None:
    """``None`` when equal within tolerance, else a short description of the difference."""
    if shape(a) != shape(b):
        return f"shapes differ: {shape(a)} vs {shape(b)}"
    if a.dtype != b.dtype:
        return f"dtypes differ: {a.dtype} vs {b.dtype}"
    if not a.is_floating_point():
        return None if torch.equal(a, b) else f"{int((a != b).sum())} elements differ"
    try:
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=False)
    except AssertionError:
        diff = (a.float() - b.float()).abs().max().item()
        return f"max abs difference {diff:.3g} exceeds rtol={rtol}, atol={atol}"
    return None
