"""Tests of mmvq.testing.check_adapter: a third-party adapter passes, broken ones fail clearly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from plugin_utils import VECTOR_DIST_NAME, VECTOR_PLUGIN_DIR, plugin_path
from plugins.vector_adapter import VectorAdapter, VectorAdapterConfig
from torch import Tensor, nn

from mmvq.adapter import AdapterInputError, BadInput, Tokens
from mmvq.registry import adapter_info, get_adapter
from mmvq.testing import CheckReport, check_adapter

torch.set_num_threads(1)

EXAMPLES = [[float(i) / 8 for i in range(8)], torch.linspace(-1, 1, 8), (0.5,) * 8]
ALL_CHECKS = [
    "config", "preprocess", "collate", "num_tokens", "encode", "decode", "reconstruction_loss",
    "postprocess", "metrics", "deterministic_eval", "gradient", "last_layer", "gan", "state_dict",
    "extra_files", "bad_inputs",
]  # fmt: skip


def test_vector_plugin_loaded_through_its_entry_point_passes_the_contract() -> None:
    with plugin_path(VECTOR_PLUGIN_DIR):
        cls = get_adapter("vector")
        assert adapter_info("vector").distribution == VECTOR_DIST_NAME
        rng_before = torch.random.get_rng_state()
        report = check_adapter(cls, EXAMPLES, config=VectorAdapterConfig(code_dim=12, hidden=16))
    assert isinstance(report, CheckReport)
    assert report.adapter == "VectorAdapter"
    assert report.names == ALL_CHECKS and report.skipped == []
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is untouched
    assert "16 checks passed" in str(report) and "bad_inputs: 5 declared" in str(report)


class NoGanVector(VectorAdapter):
    def discriminator(self) -> None:
        return None

    def last_layer(self) -> None:
        return None


def test_optional_checks_are_skipped_and_listed() -> None:
    adapter = NoGanVector(code_dim=8)
    adapter.train()
    report = check_adapter(adapter, EXAMPLES[:2])
    assert [c.name for c in report.skipped] == ["last_layer", "gan"]
    assert "gan" not in report.names and "gradient" in report.names
    assert adapter.training  # the adapter's mode is restored


def test_bad_arguments_of_check_adapter_itself() -> None:
    with pytest.raises(ValueError, match="at least 2 examples"):
        check_adapter(VectorAdapter, EXAMPLES[:1])
    with pytest.raises(TypeError, match="must be a list of raw examples"):
        check_adapter(VectorAdapter, "0.1 0.2")
    with pytest.raises(ValueError, match="config is only used when a class is given"):
        check_adapter(VectorAdapter(), EXAMPLES, config=VectorAdapterConfig())
    with pytest.raises(TypeError, match="must be a ModalityAdapter subclass or instance"):
        check_adapter(nn.Linear, EXAMPLES)  # type: ignore[arg-type]


# ------------------------------------------------------------------ broken adapters
class WrongCodeDim(VectorAdapter):
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        return Tokens(F.pad(z, (0, 1)), mask)


class FloatMask(VectorAdapter):
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        return Tokens(z, mask.float())


class EmptySample(VectorAdapter):
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        mask = mask.clone()
        mask[1] = False
        return Tokens(z, mask)


class WrongTokenCount(VectorAdapter):
    def num_tokens(self) -> int:
        return self.config.num_chunks + 1


class BatchMeanLoss(VectorAdapter):
    def reconstruction_loss(self, batch: dict[str, Tensor], recon: Tensor) -> Tensor:
        return super().reconstruction_loss(batch, recon).mean()


class IgnoresH(VectorAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guess = nn.Parameter(torch.zeros(self.config.length))

    def decode(self, h: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        return self.guess.expand(h.shape[0], -1)


class DetachedEncode(VectorAdapter):
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        return Tokens(z.detach(), mask)


class NoisyEval(VectorAdapter):
    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        return Tokens(z + 0.1 * torch.randn_like(z), mask)


class StateOutsideStateDict(VectorAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("offset", torch.randn(self.config.code_dim), persistent=False)

    def encode(self, batch: dict[str, Tensor]) -> Tokens:
        z, mask = super().encode(batch)
        return Tokens(z + self.offset, mask)


class ShortPostprocess(VectorAdapter):
    def postprocess(self, recon: Tensor) -> list[list[float]]:
        return super().postprocess(recon)[:-1]


class TensorMetrics(VectorAdapter):
    def metrics(self, batch: dict[str, Tensor], recon: Tensor) -> dict[str, float]:
        return {"mse": F.mse_loss(recon, batch["values"])}  # type: ignore[dict-item]


class DetachedFake(VectorAdapter):
    def gan_inputs(self, batch: dict[str, Tensor], recon: Tensor) -> tuple[Tensor, Tensor]:
        return batch["values"], recon.detach()


class SharedDiscriminator(VectorAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._disc = super().discriminator()

    def discriminator(self) -> nn.Module:
        return self._disc


class ForeignLastLayer(VectorAdapter):
    def last_layer(self) -> Tensor:
        return torch.zeros(3, requires_grad=True)


class AcceptsShortVectors(VectorAdapter):
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        values = torch.as_tensor(example, dtype=torch.float32).flatten()
        return {"values": F.pad(values, (0, self.config.length - values.numel()))}

    def bad_inputs(self) -> list[BadInput]:
        return [BadInput("too short", [0.0] * (self.config.length - 1), "must have length")]


class VagueError(VectorAdapter):
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        if isinstance(example, str):
            raise AdapterInputError("bad")
        return super().preprocess(example)

    def bad_inputs(self) -> list[BadInput]:
        return [BadInput("a string", "1 2 3", "list/tuple of numbers")]


class RaisesWrongType(VectorAdapter):
    def bad_inputs(self) -> list[BadInput]:
        return [BadInput("a string", "1 2 3", "numbers", error=KeyError)]


class RejectsTuples(VectorAdapter):
    def preprocess(self, example: Any) -> dict[str, Tensor]:
        if isinstance(example, tuple):
            raise AdapterInputError("vector: tuples are not supported")
        return super().preprocess(example)


class ConcatCollate(VectorAdapter):
    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {"values": torch.cat([item["values"] for item in items])}


@dataclass
class ListyConfig(VectorAdapterConfig):
    scales: tuple[float, ...] | None = None  # a tuple that JSON turns into a list


class ListyConfigVector(VectorAdapter):
    config_class = ListyConfig


BROKEN = [
    (WrongCodeDim, {}, "encode", "last dim 17 (shape (3, 4, 17)) but config.code_dim is 16"),
    (FloatMask, {}, "encode", "Tokens.mask must be a bool Tensor, got torch.float32"),
    (EmptySample, {}, "encode", "no True token for sample(s) [1]"),
    (WrongTokenCount, {}, "encode", "expected [B=3, N=num_tokens()=5, D=16]"),
    (BatchMeanLoss, {}, "reconstruction_loss", "must be per sample, shape [B=3], got ()"),
    (IgnoresH, {}, "gradient", "does not depend on the decoder input h"),
    (DetachedEncode, {}, "gradient", "Tokens.z does not require grad in train mode"),
    (NoisyEval, {}, "deterministic_eval", "two eval-mode calls gave different encode z"),
    (StateOutsideStateDict, {}, "state_dict", "gives a different encode z"),
    (ShortPostprocess, {}, "postprocess", "returned 2 items for a batch of 3"),
    (TensorMetrics, {}, "metrics", "metrics['mse'] must be a float, got Tensor"),
    (DetachedFake, {}, "gan", "gan_inputs must not detach fake from recon"),
    (SharedDiscriminator, {}, "gan", "must build a fresh module on each call"),
    (ForeignLastLayer, {}, "last_layer", "must be one of the adapter's own parameters"),
    (AcceptsShortVectors, {}, "bad_inputs", "bad input 'too short': preprocess accepted it"),
    (VagueError, {}, "bad_inputs", "message 'bad' does not contain 'list/tuple of numbers'"),
    (RaisesWrongType, {}, "bad_inputs", "raised AdapterInputError"),
    (
        RejectsTuples,
        {},
        "preprocess",
        "the adapter raised AdapterInputError: vector: tuples are not supported",
    ),
    (
        ConcatCollate,
        {},
        "collate",
        "batch['values'] has shape (24,); its first dim must be the batch size 3",
    ),
    (
        ListyConfigVector,
        {"scales": (1.0, 2.0)},
        "config",
        "changed through to_dict -> JSON -> from_dict",
    ),
]


@pytest.mark.parametrize(
    ("cls", "overrides", "check", "fragment"), BROKEN, ids=[b[0].__name__ for b in BROKEN]
)
def test_a_broken_adapter_fails_the_named_check_with_a_clear_message(
    cls: type[VectorAdapter], overrides: dict[str, Any], check: str, fragment: str
) -> None:
    adapter = cls(cls.config_class(**overrides))
    with pytest.raises(AssertionError) as err:
        check_adapter(adapter, EXAMPLES)
    message = str(err.value)
    assert message.startswith(f"check_adapter({cls.__qualname__}) failed check {check!r}: ")
    assert fragment in message
    assert "[checks passed before it: " in message


def test_an_error_raised_by_the_adapter_is_chained() -> None:
    with pytest.raises(AssertionError) as err:
        check_adapter(RejectsTuples(), EXAMPLES)
    assert isinstance(err.value.__cause__, AdapterInputError)
    assert "checks passed before it: config]" in str(err.value)
