"""The persistence checks: ``state_dict`` (a fresh adapter built from the JSON config, loaded
from safetensors weights and ``load_extra``, gives the same outputs) and ``extra_files``
(``save_extra``/``load_extra`` carry what ``preprocess`` depends on, e.g. a tokenizer)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from mmvq.adapter import ModalityAdapter
from mmvq.testing.checks import Probe
from mmvq.testing.runner import Runner, close, require

__all__ = ["run_persistence_checks"]


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _reloaded(probe: Probe, root: Path) -> ModalityAdapter:
    """A fresh adapter (another init) with the saved weights and extra files loaded."""
    adapter, cls = probe.adapter, type(probe.adapter)
    extra, weights = root / "extra", root / "model.safetensors"
    adapter.save_extra(extra)
    save_model(adapter, str(weights))
    config = cls.config_class.from_dict(json.loads(adapter.config.to_json_string()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(probe.seed + 1)  # a different init than the checked adapter's
        fresh = cls(config)
    fresh.to(adapter.target_device())
    fresh.load_extra(extra)
    missing, unexpected = load_model(fresh, str(weights), strict=False)
    require(
        not missing and not unexpected,
        f"safetensors round trip: missing keys {sorted(missing)}, unexpected keys "
        f"{sorted(unexpected)}; the constructor from config must build the same modules",
    )
    return fresh.eval()


def _state_dict(runner: Runner, probe: Probe, root: Path) -> ModalityAdapter:
    adapter, batch = probe.adapter, probe.batch
    with runner.check("state_dict") as detail:
        fresh = _reloaded(probe, root)
        with torch.no_grad():
            ref, got = adapter.encode(batch), fresh.encode(batch)
            checks = [
                ("encode z", ref.z, got.z),
                ("encode mask", ref.mask, got.mask),
                ("decode", adapter.decode(ref.z, batch), fresh.decode(ref.z, batch)),
            ]
        for label, a, b in checks:
            problem = close(a, b, probe.rtol, probe.atol)
            require(
                problem is None,
                f"a fresh adapter loaded from the safetensors weights (+ load_extra) gives a "
                f"different {label}: {problem}; is some state kept outside state_dict "
                "(non-persistent buffers, plain attributes)?",
            )
        n = len(adapter.state_dict())
        detail.append(f"{n} tensors via safetensors; reloaded outputs identical")
    return fresh


def _extra_files(runner: Runner, probe: Probe, fresh: ModalityAdapter, root: Path) -> None:
    with runner.check("extra_files") as detail:
        for i, example in enumerate(probe.examples):
            a, b = probe.adapter.preprocess(example), fresh.preprocess(example)
            require(
                sorted(a) == sorted(b),
                f"after load_extra, preprocess(examples[{i}]) gives keys {sorted(b)} instead "
                f"of {sorted(a)}",
            )
            for key in a:
                problem = close(a[key], b[key], probe.rtol, probe.atol)
                require(
                    problem is None,
                    f"after load_extra, preprocess(examples[{i}])[{key!r}] differs: {problem}; "
                    "save_extra must write what preprocess depends on (e.g. the tokenizer)",
                )
        fresh.save_extra(root / "extra_again")
        files = _relative_files(root / "extra")
        files_again = _relative_files(root / "extra_again")
        require(
            files == files_again,
            f"save_extra after load_extra wrote {files_again}, the original wrote {files}",
        )
        detail.append(f"{len(files)} extra file(s); preprocess identical after reload")


def run_persistence_checks(runner: Runner, probe: Probe) -> None:
    """``state_dict`` then ``extra_files``, in eval mode, in a temporary directory."""
    probe.adapter.eval()
    with tempfile.TemporaryDirectory(prefix="mmvq-check-") as tmp:
        root = Path(tmp)
        (root / "extra").mkdir()
        (root / "extra_again").mkdir()
        fresh = _state_dict(runner, probe, root)
        _extra_files(runner, probe, fresh, root)
