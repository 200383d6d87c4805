"""The contract checks of the data side and the eval-mode model side, in the order
:func:`mmvq.testing.check_adapter` runs them: ``config``, ``preprocess``, ``collate``,
``num_tokens``, ``encode``, ``decode``, ``reconstruction_loss``, ``postprocess``, ``metrics``,
``deterministic_eval``. Each fills in the :class:`Probe` the later ones (and the gradient,
persistence and bad-input checks) read."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from mmvq.adapter import AdapterConfig, ModalityAdapter, Tokens
from mmvq.testing.runner import Batch, Runner, all_finite, close, require, shape, to_device
from mmvq.utils.checks import is_int

__all__ = ["Probe", "run_model_checks"]


@dataclass
class Probe:
    """The adapter under test and what the checks found so far."""

    adapter: ModalityAdapter
    examples: list[Any]
    rtol: float
    atol: float
    seed: int
    items: list[dict[str, Tensor]] = dataclasses.field(default_factory=list)
    batch: Batch = dataclasses.field(default_factory=dict)
    num_tokens: int = 0
    z: Tensor | None = None
    mask: Tensor | None = None
    recon: Tensor | None = None
    recon_free: Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.examples)


def _config(runner: Runner, probe: Probe) -> None:
    cls = type(probe.adapter)
    with runner.check("config") as detail:
        cfg = probe.adapter.config
        require(
            isinstance(cfg, AdapterConfig) and dataclasses.is_dataclass(cfg),
            f"adapter.config must be an AdapterConfig dataclass, got {type(cfg).__name__}",
        )
        require(
            isinstance(cfg, cls.config_class),
            f"adapter.config is a {type(cfg).__name__}, not {cls.__name__}.config_class "
            f"({cls.config_class.__name__})",
        )
        back = cls.config_class.from_dict(json.loads(json.dumps(cfg.to_dict())))
        require(
            back == cfg,
            f"config changed through to_dict -> JSON -> from_dict: {cfg!r} became {back!r}; make "
            "every field JSON-serialisable (lists for tuples are restored only when the default "
            "is a tuple)",
        )
        detail.append(f"{type(cfg).__name__} round-trips through JSON")


def _preprocess(runner: Runner, probe: Probe) -> None:
    with runner.check("preprocess") as detail:
        for i, example in enumerate(probe.examples):
            item = probe.adapter.preprocess(example)
            require(
                isinstance(item, dict) and len(item) > 0,
                f"preprocess(examples[{i}]) must return a non-empty dict[str, Tensor], got "
                f"{type(item).__name__}",
            )
            for key, value in item.items():
                require(
                    isinstance(key, str) and isinstance(value, Tensor),
                    f"preprocess(examples[{i}])[{key!r}] must be a Tensor, got "
                    f"{type(value).__name__}",
                )
            probe.items.append(item)
        detail.append(f"{probe.size} examples -> keys {sorted(probe.items[0])}")


def _collate(runner: Runner, probe: Probe) -> None:
    with runner.check("collate") as detail:
        batch = probe.adapter.collate(probe.items)
        require(
            isinstance(batch, dict) and batch,
            f"collate must return a non-empty dict, got {type(batch).__name__}",
        )
        for key, value in batch.items():
            require(
                isinstance(value, Tensor),
                f"batch[{key!r}] must be a Tensor, got {type(value).__name__}",
            )
            require(
                value.dim() >= 1 and value.shape[0] == probe.size,
                f"batch[{key!r}] has shape {shape(value)}; its first dim must be the batch "
                f"size {probe.size}",
            )
        probe.batch = to_device(batch, probe.adapter.target_device())
        detail.append(", ".join(f"{k} {shape(v)}" for k, v in probe.batch.items()))


def _num_tokens(runner: Runner, probe: Probe) -> None:
    with runner.check("num_tokens") as detail:
        n = probe.adapter.num_tokens()
        require(is_int(n) and n > 0, f"num_tokens() must return a positive int, got {n!r}")
        probe.num_tokens = n
        detail.append(f"N={n}")


def _encode(runner: Runner, probe: Probe) -> None:
    b, n, d = probe.size, probe.num_tokens, probe.adapter.config.code_dim
    with runner.check("encode") as detail:
        with torch.no_grad():
            tokens = probe.adapter.encode(probe.batch)
        require(
            isinstance(tokens, Tokens),
            f"encode must return mmvq.Tokens, got {type(tokens).__name__}",
        )
        z, mask = tokens.z, tokens.mask
        require(
            isinstance(z, Tensor) and z.is_floating_point(),
            f"Tokens.z must be a float Tensor, got {getattr(z, 'dtype', type(z).__name__)}",
        )
        require(z.dim() == 3, f"Tokens.z must be [B, N, D], got shape {shape(z)}")
        require(
            z.shape[2] == d,
            f"Tokens.z has last dim {z.shape[2]} (shape {shape(z)}) but config.code_dim is {d}; "
            "encode must project to the shared code dimension",
        )
        require(
            shape(z)[:2] == (b, n),
            f"Tokens.z has shape {shape(z)}; expected [B={b}, N=num_tokens()={n}, D={d}]",
        )
        require(all_finite(z), "Tokens.z holds NaN or inf")
        _check_mask(mask, b, n)
        probe.z, probe.mask = z, mask
        detail.append(
            f"z {shape(z)} {z.dtype}, mask {shape(mask)} with {int(mask.sum())} real tokens"
        )


def _check_mask(mask: Any, b: int, n: int) -> None:
    require(
        isinstance(mask, Tensor) and mask.dtype == torch.bool,
        f"Tokens.mask must be a bool Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}",
    )
    require(shape(mask) == (b, n), f"Tokens.mask has shape {shape(mask)}; expected [B={b}, N={n}]")
    empty = [i for i in range(b) if not bool(mask[i].any())]
    require(
        not empty,
        f"Tokens.mask has no True token for sample(s) {empty}; every sample needs at least "
        "one real token",
    )


def _decode(runner: Runner, probe: Probe) -> None:
    b = probe.size
    with runner.check("decode") as detail:
        with torch.no_grad():
            probe.recon = probe.adapter.decode(probe.z, probe.batch)
            probe.recon_free = probe.adapter.decode(probe.z, None)
        for label, r in (("decode(h, batch)", probe.recon), ("decode(h, None)", probe.recon_free)):
            require(isinstance(r, Tensor), f"{label} must return a Tensor, got {type(r).__name__}")
            require(
                r.dim() >= 1 and r.shape[0] == b,
                f"{label} has shape {shape(r)}; its first dim must be B={b}",
            )
            require(all_finite(r), f"{label} holds NaN or inf")
        detail.append(f"with batch {shape(probe.recon)}, without {shape(probe.recon_free)}")


def _reconstruction_loss(runner: Runner, probe: Probe) -> None:
    b = probe.size
    with runner.check("reconstruction_loss") as detail:
        loss = probe.adapter.reconstruction_loss(probe.batch, probe.recon)
        require(
            isinstance(loss, Tensor) and loss.is_floating_point(),
            f"reconstruction_loss must return a float Tensor, got {type(loss).__name__}",
        )
        require(
            shape(loss) == (b,),
            f"reconstruction_loss must be per sample, shape [B={b}], got {shape(loss)}",
        )
        require(all_finite(loss), f"reconstruction_loss is not finite: {loss.tolist()}")
        detail.append(f"[{b}] mean {loss.mean().item():.4g}")


def _postprocess(runner: Runner, probe: Probe) -> None:
    b = probe.size
    with runner.check("postprocess") as detail:
        for label, r in (("recon", probe.recon), ("recon without batch", probe.recon_free)):
            out = probe.adapter.postprocess(r)
            require(
                isinstance(out, list),
                f"postprocess({label}) must return a list, got {type(out).__name__}",
            )
            require(
                len(out) == b, f"postprocess({label}) returned {len(out)} items for a batch of {b}"
            )
        detail.append(f"{b} x {type(out[0]).__name__}")


def _metrics(runner: Runner, probe: Probe) -> None:
    with runner.check("metrics") as detail:
        metrics = probe.adapter.metrics(probe.batch, probe.recon)
        require(
            isinstance(metrics, dict), f"metrics must return a dict, got {type(metrics).__name__}"
        )
        for key, value in metrics.items():
            require(isinstance(key, str), f"metrics key {key!r} must be a str")
            require(
                isinstance(value, Real) and not isinstance(value, bool),
                f"metrics[{key!r}] must be a float, got {type(value).__name__} {value!r:.40}; "
                "use float(...)",
            )
            require(math.isfinite(value), f"metrics[{key!r}] is not finite: {value}")
        detail.append(", ".join(sorted(metrics)) or "no metrics")


def _deterministic_eval(runner: Runner, probe: Probe) -> None:
    with runner.check("deterministic_eval") as detail:
        with torch.no_grad():
            again = probe.adapter.encode(probe.batch)
            recon_again = probe.adapter.decode(again.z, probe.batch)
        for label, a, b in (
            ("encode z", probe.z, again.z),
            ("encode mask", probe.mask, again.mask),
            ("decode", probe.recon, recon_again),
        ):
            problem = close(a, b, probe.rtol, probe.atol)
            require(
                problem is None,
                f"two eval-mode calls gave different {label}: {problem}; eval must not sample "
                "or use dropout",
            )
        detail.append("two eval encodes/decodes agree")


def run_model_checks(runner: Runner, probe: Probe) -> None:
    """The data-side checks, then the eval-mode model checks (the adapter is put in eval)."""
    for check in (_config, _preprocess, _collate, _num_tokens):
        check(runner, probe)
    probe.adapter.eval()
    for check in (
        _encode,
        _decode,
        _reconstruction_loss,
        _postprocess,
        _metrics,
        _deterministic_eval,
    ):
        check(runner, probe)
