"""The adapter contract kit: :func:`check_adapter` runs every rule of :mod:`mmvq.adapter`.

Any adapter, built-in or third party, can prove it honours the contract the core relies on
(shapes and masks, a gradient through encode -> decode, persistence through safetensors,
deterministic evaluation, clear errors on bad input) with one call in its own test suite::

    # tests/test_my_adapter.py of a plugin distribution
    from mmvq.testing import check_adapter
    from my_plugin import MyAdapter, MyAdapterConfig

    def test_my_adapter_honours_the_mmvq_contract():
        report = check_adapter(MyAdapter, [example_a, example_b], config=MyAdapterConfig(width=8))
        assert "bad_inputs" in report.names  # the report lists the checks that ran

``examples`` are raw examples as users hold them (what ``preprocess`` accepts); give at least two,
ideally of different sizes where the modality has sizes, and keep the config small so the check
runs in seconds on a CPU. Declare the inputs ``preprocess`` must refuse in
:meth:`~mmvq.adapter.ModalityAdapter.bad_inputs`; each is checked to raise its declared error with
a message containing its ``match``. The first failing check raises :class:`AssertionError` naming
the check, what was expected, what was found, and the checks that passed before it; errors
raised by the adapter itself are chained as the cause.

Checks, in order (the names appear in :attr:`CheckReport.names`): ``config``, ``preprocess``,
``collate``, ``num_tokens``, ``encode``, ``decode``, ``reconstruction_loss``, ``postprocess``,
``metrics``, ``deterministic_eval``, ``gradient``, ``last_layer``, ``gan``, ``state_dict``,
``extra_files``, ``bad_inputs``. ``last_layer`` and ``gan`` are skipped (and listed in
:attr:`CheckReport.skipped`) when the adapter returns ``None`` for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from mmvq.adapter import AdapterConfig, BadInput, ModalityAdapter, Tokens

__all__ = ["CheckReport", "CheckResult", "check_adapter"]

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


class _CheckFailed(AssertionError):
    """A contract violation found by a check (message only; wrapped by :class:`_Runner`)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _CheckFailed(message)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


class _Runner:
    def __init__(self, adapter: ModalityAdapter) -> None:
        self.adapter = adapter
        self.report = CheckReport(type(adapter).__qualname__)

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        """Run one check; its body appends a detail string to the yielded list."""
        detail: list[str] = []
        try:
            yield detail
        except _CheckFailed as exc:
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


def _instantiate(
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


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _all_finite(t: Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> str | None:
    """``None`` when equal within tolerance, else a short description of the difference."""
    if _shape(a) != _shape(b):
        return f"shapes differ: {_shape(a)} vs {_shape(b)}"
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


def check_adapter(
    adapter_or_class: ModalityAdapter | type[ModalityAdapter],
    examples: Sequence[Any],
    *,
    config: AdapterConfig | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> CheckReport:
    """Check that an adapter honours the :class:`~mmvq.adapter.ModalityAdapter` contract.

    Args:
        adapter_or_class: an adapter instance, or a class (built with ``config`` or its
            default config).
        examples: at least two raw examples that ``preprocess`` accepts.
        config: the config to build ``adapter_or_class`` with when it is a class.
        rtol, atol: tolerances for outputs that must be equal (eval determinism, reload).
        seed: seeds the RNG inside the check (the caller's RNG state is restored after).

    Returns:
        A :class:`CheckReport` listing the checks that passed and those skipped.

    Raises:
        AssertionError: the first failing check, with a message naming it.
        ValueError, TypeError: the arguments of ``check_adapter`` itself are unusable.
    """
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(
            f"check_adapter: examples must be a list of raw examples, got {type(examples).__name__}"
        )
    if len(examples) < 2:
        raise ValueError(
            f"check_adapter: give at least 2 examples (got {len(examples)}) so that batching is "
            "checked; examples of different sizes exercise padding best."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = _instantiate(adapter_or_class, config)
        runner = _Runner(adapter)
        was_training = adapter.training
        try:
            _run_checks(runner, adapter, list(examples), rtol=rtol, atol=atol, seed=seed)
        finally:
            adapter.train(was_training)
    return runner.report


def _run_checks(
    runner: _Runner,
    adapter: ModalityAdapter,
    examples: list[Any],
    *,
    rtol: float,
    atol: float,
    seed: int,
) -> None:
    cls = type(adapter)
    B = len(examples)
    device = adapter.target_device()

    with runner.check("config") as detail:
        cfg = adapter.config
        _require(
            isinstance(cfg, AdapterConfig) and dataclasses.is_dataclass(cfg),
            f"adapter.config must be an AdapterConfig dataclass, got {type(cfg).__name__}",
        )
        _require(
            isinstance(cfg, cls.config_class),
            f"adapter.config is a {type(cfg).__name__}, not {cls.__name__}.config_class "
            f"({cls.config_class.__name__})",
        )
        text = json.dumps(cfg.to_dict())
        back = cls.config_class.from_dict(json.loads(text))
        _require(
            back == cfg,
            f"config changed through to_dict -> JSON -> from_dict: {cfg!r} became {back!r}; make "
            "every field JSON-serialisable (lists for tuples are restored only when the default "
            "is a tuple)",
        )
        detail.append(f"{type(cfg).__name__} round-trips through JSON")

    with runner.check("preprocess") as detail:
        items = []
        for i, example in enumerate(examples):
            item = adapter.preprocess(example)
            _require(
                isinstance(item, dict) and len(item) > 0,
                f"preprocess(examples[{i}]) must return a non-empty dict[str, Tensor], got "
                f"{type(item).__name__}",
            )
            for key, value in item.items():
                _require(
                    isinstance(key, str) and isinstance(value, Tensor),
                    f"preprocess(examples[{i}])[{key!r}] must be a Tensor, got "
                    f"{type(value).__name__}",
                )
            items.append(item)
        detail.append(f"{B} examples -> keys {sorted(items[0])}")

    with runner.check("collate") as detail:
        batch = adapter.collate(items)
        _require(
            isinstance(batch, dict) and batch,
            f"collate must return a non-empty dict, got {type(batch).__name__}",
        )
        for key, value in batch.items():
            _require(
                isinstance(value, Tensor),
                f"batch[{key!r}] must be a Tensor, got {type(value).__name__}",
            )
            _require(
                value.dim() >= 1 and value.shape[0] == B,
                f"batch[{key!r}] has shape {_shape(value)}; its first dim must be the batch "
                f"size {B}",
            )
        batch = _to(batch, device)
        detail.append(", ".join(f"{k} {_shape(v)}" for k, v in batch.items()))

    with runner.check("num_tokens") as detail:
        N = adapter.num_tokens()
        _require(
            isinstance(N, int) and not isinstance(N, bool) and N > 0,
            f"num_tokens() must return a positive int, got {N!r}",
        )
        detail.append(f"N={N}")
    D = adapter.config.code_dim

    adapter.eval()
    with runner.check("encode") as detail:
        with torch.no_grad():
            tokens = adapter.encode(batch)
        _require(
            isinstance(tokens, Tokens),
            f"encode must return mmvq.Tokens, got {type(tokens).__name__}",
        )
        z, mask = tokens.z, tokens.mask
        _require(
            isinstance(z, Tensor) and z.is_floating_point(),
            f"Tokens.z must be a float Tensor, got {getattr(z, 'dtype', type(z).__name__)}",
        )
        _require(z.dim() == 3, f"Tokens.z must be [B, N, D], got shape {_shape(z)}")
        _require(
            z.shape[2] == D,
            f"Tokens.z has last dim {z.shape[2]} (shape {_shape(z)}) but config.code_dim is {D}; "
            "encode must project to the shared code dimension",
        )
        _require(
            _shape(z)[:2] == (B, N),
            f"Tokens.z has shape {_shape(z)}; expected [B={B}, N=num_tokens()={N}, D={D}]",
        )
        _require(_all_finite(z), "Tokens.z holds NaN or inf")
        _require(
            isinstance(mask, Tensor) and mask.dtype == torch.bool,
            f"Tokens.mask must be a bool Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}",
        )
        _require(
            _shape(mask) == (B, N), f"Tokens.mask has shape {_shape(mask)}; expected [B={B}, N={N}]"
        )
        empty = [i for i in range(B) if not bool(mask[i].any())]
        _require(
            not empty,
            f"Tokens.mask has no True token for sample(s) {empty}; every sample needs at least "
            "one real token",
        )
        detail.append(
            f"z {_shape(z)} {z.dtype}, mask {_shape(mask)} with {int(mask.sum())} real tokens"
        )

    with runner.check("decode") as detail:
        with torch.no_grad():
            recon = adapter.decode(z, batch)
            recon_free = adapter.decode(z, None)
        for label, r in (("decode(h, batch)", recon), ("decode(h, None)", recon_free)):
            _require(isinstance(r, Tensor), f"{label} must return a Tensor, got {type(r).__name__}")
            _require(
                r.dim() >= 1 and r.shape[0] == B,
                f"{label} has shape {_shape(r)}; its first dim must be B={B}",
            )
            _require(_all_finite(r), f"{label} holds NaN or inf")
        detail.append(f"with batch {_shape(recon)}, without {_shape(recon_free)}")

    with runner.check("reconstruction_loss") as detail:
        loss = adapter.reconstruction_loss(batch, recon)
        _require(
            isinstance(loss, Tensor) and loss.is_floating_point(),
            f"reconstruction_loss must return a float Tensor, got {type(loss).__name__}",
        )
        _require(
            _shape(loss) == (B,),
            f"reconstruction_loss must be per sample, shape [B={B}], got {_shape(loss)}",
        )
        _require(_all_finite(loss), f"reconstruction_loss is not finite: {loss.tolist()}")
        detail.append(f"[{B}] mean {loss.mean().item():.4g}")

    with runner.check("postprocess") as detail:
        for label, r in (("recon", recon), ("recon without batch", recon_free)):
            out = adapter.postprocess(r)
            _require(
                isinstance(out, list),
                f"postprocess({label}) must return a list, got {type(out).__name__}",
            )
            _require(
                len(out) == B, f"postprocess({label}) returned {len(out)} items for a batch of {B}"
            )
        detail.append(f"{B} x {type(out[0]).__name__}")

    with runner.check("metrics") as detail:
        metrics = adapter.metrics(batch, recon)
        _require(
            isinstance(metrics, dict), f"metrics must return a dict, got {type(metrics).__name__}"
        )
        for key, value in metrics.items():
            _require(isinstance(key, str), f"metrics key {key!r} must be a str")
            _require(
                isinstance(value, Real) and not isinstance(value, bool),
                f"metrics[{key!r}] must be a float, got {type(value).__name__} {value!r:.40}; "
                "use float(...)",
            )
            _require(math.isfinite(value), f"metrics[{key!r}] is not finite: {value}")
        detail.append(", ".join(sorted(metrics)) or "no metrics")

    with runner.check("deterministic_eval") as detail:
        with torch.no_grad():
            again = adapter.encode(batch)
            recon_again = adapter.decode(again.z, batch)
        for label, a, b in (
            ("encode z", z, again.z),
            ("encode mask", mask, again.mask),
            ("decode", recon, recon_again),
        ):
            problem = _close(a, b, rtol, atol)
            _require(
                problem is None,
                f"two eval-mode calls gave different {label}: {problem}; eval must not sample "
                "or use dropout",
            )
        detail.append("two eval encodes/decodes agree")

    _check_gradients(runner, adapter, batch, B)
    _check_persistence(runner, adapter, examples, batch, rtol=rtol, atol=atol, seed=seed)
    _check_bad_inputs(runner, adapter)


def _nonzero_finite(grads: dict[str, Tensor | None]) -> list[str]:
    return [
        n
        for n, g in grads.items()
        if g is not None and bool(torch.isfinite(g).all()) and bool((g != 0).any())
    ]


def _check_gradients(runner: _Runner, adapter: ModalityAdapter, batch: Batch, B: int) -> None:
    adapter.train()
    named = [(n, p) for n, p in adapter.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]

    with runner.check("gradient") as detail:
        _require(
            bool(params),
            "the adapter has no parameter that requires grad; encode/decode must be trainable",
        )
        z = adapter.encode(batch).z
        _require(
            z.requires_grad,
            "Tokens.z does not require grad in train mode; encode must not detach or run under "
            "no_grad",
        )
        # A tiny straight-through quantiser stands in for the codebook between encode and decode.
        h = z + (torch.round(z * 4) / 4 - z).detach()
        recon = adapter.decode(h, batch)
        loss = adapter.reconstruction_loss(batch, recon).mean()
        _require(
            loss.requires_grad,
            "reconstruction_loss does not require grad; it must be differentiable in recon",
        )
        (gz,) = torch.autograd.grad(loss, z, retain_graph=True, allow_unused=True)
        _require(
            gz is not None and bool((gz != 0).any()),
            "the reconstruction loss does not depend on the decoder input h: no gradient reaches "
            "encode's output; decode must use h",
        )
        _require(bool(torch.isfinite(gz).all()), "the gradient at encode's output holds NaN or inf")
        enc = dict(
            zip(
                names,
                torch.autograd.grad(
                    z, params, grad_outputs=gz, retain_graph=True, allow_unused=True
                ),
            )
        )
        full = dict(
            zip(names, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
        )
        bad = [n for n, g in full.items() if g is not None and not bool(torch.isfinite(g).all())]
        _require(not bad, f"non-finite gradients in {bad}")
        enc_ok = _nonzero_finite(enc)
        _require(
            bool(enc_ok),
            "no encode parameter gets a nonzero gradient from the reconstruction loss through "
            "encode -> decode",
        )
        recon_fixed = adapter.decode(h.detach(), batch)
        dec_loss = adapter.reconstruction_loss(batch, recon_fixed).mean()
        dec = dict(zip(names, torch.autograd.grad(dec_loss, params, allow_unused=True)))
        dec_ok = _nonzero_finite(dec)
        _require(
            bool(dec_ok), "no decode parameter gets a nonzero gradient from the reconstruction loss"
        )
        detail.append(
            f"{len(enc_ok)} encode and {len(dec_ok)} decode parameter tensors get gradients"
        )

    last = adapter.last_layer()
    if last is None:
        runner.skip("last_layer", "last_layer() is None (no adaptive GAN weight)")
    else:
        with runner.check("last_layer") as detail:
            _require(
                isinstance(last, Tensor) and last.requires_grad,
                f"last_layer() must return a Tensor that requires grad, got {type(last).__name__}",
            )
            _require(
                any(last is p for p in params),
                "last_layer() must be one of the adapter's own parameters (the decoder's last "
                "weight)",
            )
            (g,) = torch.autograd.grad(loss, last, retain_graph=True, allow_unused=True)
            _require(
                g is not None and bool((g != 0).any()),
                "the reconstruction loss gives no gradient to last_layer(); it must be the weight "
                "of decode's last layer",
            )
            detail.append(f"weight {_shape(last)} receives the reconstruction gradient")

    disc = adapter.discriminator()
    if disc is None:
        runner.skip("gan", "discriminator() is None (no GAN loss for this modality)")
        return
    with runner.check("gan") as detail:
        _require(
            isinstance(disc, nn.Module),
            f"discriminator() must return an nn.Module or None, got {type(disc).__name__}",
        )
        other = adapter.discriminator()
        shared = {id(p) for p in disc.parameters()} & {id(p) for p in other.parameters()}
        _require(
            other is not disc and not shared,
            "discriminator() must build a fresh module on each call",
        )
        disc = disc.to(adapter.target_device())
        pair = adapter.gan_inputs(batch, recon)
        _require(
            isinstance(pair, tuple) and len(pair) == 2,
            f"gan_inputs must return (real, fake), got {type(pair).__name__}",
        )
        real, fake = pair
        for label, t in (("real", real), ("fake", fake)):
            _require(
                isinstance(t, Tensor) and t.shape[0] == B,
                f"gan_inputs {label} must be a Tensor with batch dim {B}, got "
                f"{_shape(t) if isinstance(t, Tensor) else type(t).__name__}",
            )
        logits_real, logits_fake = disc(real), disc(fake)
        for label, t in (("real", logits_real), ("fake", logits_fake)):
            _require(
                isinstance(t, Tensor) and t.shape[0] == B and _all_finite(t),
                f"discriminator({label}) must give finite logits with batch dim {B}",
            )
        gen = dict(
            zip(
                names,
                torch.autograd.grad(
                    logits_fake.sum(), params, retain_graph=True, allow_unused=True
                ),
            )
        )
        _require(
            bool(_nonzero_finite(gen)),
            "the discriminator's verdict on fake gives the adapter no gradient; gan_inputs must "
            "not detach fake from recon",
        )
        d_params = [p for p in disc.parameters() if p.requires_grad]
        _require(bool(d_params), "the discriminator has no trainable parameters")
        d_grads = torch.autograd.grad(logits_real.sum(), d_params, allow_unused=True)
        _require(
            any(g is not None and bool((g != 0).any()) for g in d_grads),
            "the discriminator gets no gradient from its verdict on real",
        )
        detail.append(f"{type(disc).__name__} judges real {_shape(real)} and fake {_shape(fake)}")


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _check_persistence(
    runner: _Runner,
    adapter: ModalityAdapter,
    examples: list[Any],
    batch: Batch,
    *,
    rtol: float,
    atol: float,
    seed: int,
) -> None:
    cls = type(adapter)
    adapter.eval()
    with tempfile.TemporaryDirectory(prefix="mmvq-check-") as tmp:
        root = Path(tmp)
        extra, extra_again, weights = (
            root / "extra",
            root / "extra_again",
            root / "model.safetensors",
        )
        extra.mkdir()
        extra_again.mkdir()

        with runner.check("state_dict") as detail:
            adapter.save_extra(extra)
            save_model(adapter, str(weights))
            config = cls.config_class.from_dict(json.loads(adapter.config.to_json_string()))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)  # a different init than the checked adapter's
                fresh = cls(config)
            fresh.to(adapter.target_device())
            fresh.load_extra(extra)
            missing, unexpected = load_model(fresh, str(weights), strict=False)
            _require(
                not missing and not unexpected,
                f"safetensors round trip: missing keys {sorted(missing)}, unexpected keys "
                f"{sorted(unexpected)}; the constructor from config must build the same modules",
            )
            fresh.eval()
            with torch.no_grad():
                ref, got = adapter.encode(batch), fresh.encode(batch)
                checks = [
                    ("encode z", ref.z, got.z),
                    ("encode mask", ref.mask, got.mask),
                    ("decode", adapter.decode(ref.z, batch), fresh.decode(ref.z, batch)),
                ]
            for label, a, b in checks:
                problem = _close(a, b, rtol, atol)
                _require(
                    problem is None,
                    f"a fresh adapter loaded from the safetensors weights (+ load_extra) gives a "
                    f"different {label}: {problem}; is some state kept outside state_dict "
                    "(non-persistent buffers, plain attributes)?",
                )
            n = len(adapter.state_dict())
            detail.append(f"{n} tensors via safetensors; reloaded outputs identical")

        with runner.check("extra_files") as detail:
            for i, example in enumerate(examples):
                a, b = adapter.preprocess(example), fresh.preprocess(example)
                _require(
                    sorted(a) == sorted(b),
                    f"after load_extra, preprocess(examples[{i}]) gives keys {sorted(b)} instead "
                    f"of {sorted(a)}",
                )
                for key in a:
                    problem = _close(a[key], b[key], rtol, atol)
                    _require(
                        problem is None,
                        f"after load_extra, preprocess(examples[{i}])[{key!r}] differs: {problem}; "
                        "save_extra must write what preprocess depends on (e.g. the tokenizer)",
                    )
            fresh.save_extra(extra_again)
            files, files_again = _relative_files(extra), _relative_files(extra_again)
            _require(
                files == files_again,
                f"save_extra after load_extra wrote {files_again}, the original wrote {files}",
            )
            detail.append(f"{len(files)} extra file(s); preprocess identical after reload")


def _check_bad_inputs(runner: _Runner, adapter: ModalityAdapter) -> None:
    with runner.check("bad_inputs") as detail:
        declared = adapter.bad_inputs()
        _require(
            isinstance(declared, list),
            f"bad_inputs() must return a list of BadInput, got {type(declared).__name__}",
        )
        for bad in declared:
            _require(
                isinstance(bad, BadInput),
                f"bad_inputs() entries must be mmvq.BadInput, got {type(bad).__name__}",
            )
            _require(
                inspect.isclass(bad.error) and issubclass(bad.error, Exception),
                f"BadInput {bad.description!r}: error must be an exception class, got "
                f"{bad.error!r}",
            )
            try:
                adapter.preprocess(bad.example)
            except bad.error as exc:
                _require(
                    bad.match.lower() in str(exc).lower(),
                    f"bad input {bad.description!r}: the {type(exc).__name__} message {str(exc)!r} "
                    f"does not contain {bad.match!r}",
                )
                continue
            except Exception as exc:
                raise _CheckFailed(
                    f"bad input {bad.description!r}: preprocess raised {type(exc).__name__}: {exc} "
                    f"instead of {bad.error.__name__} (containing {bad.match!r}); reject bad input "
                    "at the boundary with a clear error"
                ) from exc
            raise _CheckFailed(
                f"bad input {bad.description!r}: preprocess accepted it; expected "
                f"{bad.error.__name__} containing {bad.match!r}"
            )
        detail.append(f"{len(declared)} declared bad input(s) rejected with their messages")
