"""What the catalogue's cases share: :class:`Case`, :func:`case` (registers one), :class:`Ctx`
and the helpers that build bad inputs.

Cases get a :class:`Ctx`: a fresh temporary folder, shared read-only resources built once (a
finished tiny training run, copied per case; a saved model) and ``ctx.cli(...)``, which runs the
real ``mmvq`` command in-process and raises :class:`CliFailure` (exit code and stderr) when it
fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from toy_adapters import VecAdapter

from mmvq.adapter import AdapterInputError, Tokens
from mmvq.adapter_checks import AdapterContractError
from mmvq.data import DataConfig, DataError, load_data, validate_dataset
from mmvq.generation import SamplingConfig
from mmvq.hub.format import PretrainedError, PretrainedNotFoundError
from mmvq.hub.safety import RemoteCodeError
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.training import TrainConfig, train
from mmvq.training.checkpoint import (
    CheckpointDamagedError,
    CheckpointMismatchError,
    CheckpointWriteError,
)
from mmvq.training.run_identity import OutputDirError

__all__ = [  # the cases import these from here
    "CASES",
    "KINDS",
    "AdapterContractError",
    "AdapterInputError",
    "Case",
    "CheckpointDamagedError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "CliFailure",
    "Ctx",
    "DataError",
    "MultimodalVQ",
    "MultimodalVQConfig",
    "OutputDirError",
    "PretrainedError",
    "PretrainedNotFoundError",
    "RemoteCodeError",
    "SamplingConfig",
    "TrainConfig",
    "Tokens",
    "VecAdapter",
    "case",
    "truncate",
    "validate_dataset",
    "write",
]

KINDS = {
    "api": "Python API: configs, model building, batches, generation",
    "adapter": "raw inputs to the built-in adapters (audio, image, text) and plugin contracts",
    "data": "data files and datasets, checked before the first step",
    "checkpoint": "run directories and checkpoints: identity, locks, damage, full disk",
    "hub": "saved models and Hub repos: damaged files, code in a repo",
    "cli": "the mmvq command and the recipe scripts: one line on stderr, exit code 2",
}


class CliFailure(Exception):
    """``mmvq`` exited with ``code``; the message is its stderr."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(stderr)
        self.code = code


@dataclass
class Ctx:
    """What a case may use (see the module docstring)."""

    tmp: Path
    run_dir: Callable[[], Path]
    model_dir: Path
    data: tuple[Any, Any]
    hub: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cli(self, *argv: str) -> str:
        from mmvq.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        if code != 0:
            raise CliFailure(code, err.getvalue())
        return err.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    run: Callable[[Ctx], Any]
    error: type[BaseException]
    match: str


CASES: list[Case] = []


def case(kind: str, error: type[BaseException], match: str, name: str | None = None) -> Callable:
    """Register the decorated function as a case."""

    def register(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        CASES.append(Case(name or fn.__name__, kind, fn, error, match))
        return fn

    return register


# ------------------------------------------------------------------------------- helpers
RUN = dict(max_steps=2, save_every=1, num_sample_rows=0, max_eval_samples=4)


def train_config(out: Path, **overrides: Any) -> TrainConfig:
    from train_helpers import tiny_config

    return tiny_config(out, **{**RUN, **overrides})


def train_tiny(ctx: Ctx, out: Path, **overrides: Any) -> Any:
    from train_helpers import tiny_model

    return train(tiny_model(), ctx.data[0], train_config(out, **overrides))


def vec_model(adapter: Any) -> MultimodalVQ:
    cfg = {"codebook": {"num_codes": 16, "code_dim": 8}, "decoder": {"dim": 16, "depth": 1}}
    cfg["decoder"]["heads"] = 2
    return MultimodalVQ({"v": adapter}, cfg)


def vec_batch(model: MultimodalVQ) -> dict:
    return model.prepare([{"v": [0.1] * 12}, {"v": [0.2] * 12}])


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a ``width x height`` image with almost no data: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def image_model_batch() -> tuple[MultimodalVQ, dict]:
    from tiny_models import IMAGE_SPEC
    from tiny_models import tiny_config as model_config

    model = MultimodalVQ.build({"image": IMAGE_SPEC}, model_config())
    return model, model.prepare([{"image": PIL.Image.new("RGB", (16, 16), "red")}])


def with_pixels(batch: dict, pixels: Any) -> dict:
    return {"image": {**batch["image"], "pixel_values": pixels}}


def audio(value: Any) -> Any:
    from mmvq_adapters.audio import AudioAdapter

    return AudioAdapter(sample_rate=8000).preprocess(value)


def image(value: Any) -> Any:
    from mmvq_adapters.image import ImageAdapter

    return ImageAdapter(resolution=16).preprocess(value)


def text(value: Any) -> Any:
    from mmvq_adapters.text import TextAdapter

    return TextAdapter(max_length=16, truncation="error").preprocess(value)


def tone(seconds: float = 0.25, rate: int = 8000) -> np.ndarray:
    return np.sin(np.linspace(0, 200, int(seconds * rate))).astype(np.float32) * 0.5


def write(ctx: Ctx, name: str, content: str | bytes) -> Path:
    """``ctx.tmp / name`` holding ``content`` (bytes as they are, text as UTF-8)."""
    path = ctx.tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def truncate(path: Path, size: int) -> None:
    """Keep only the first ``size`` bytes of ``path`` (a write cut short)."""
    path.write_bytes(path.read_bytes()[:size])


def jsonl(ctx: Ctx, name: str, lines: list[str]) -> Path:
    return write(ctx, name, "".join(line + "\n" for line in lines))


def load(path: Path, **options: Any) -> Any:
    return load_data(DataConfig(train_file=str(path), **options), ["image", "text"])


def rows_with_image(ctx: Ctx, n: int, bad: dict[int, str]) -> Path:
    """A JSON-lines file of ``n`` rows (a good 16 px PNG each) where ``bad`` maps row -> the
    file that row names instead."""
    good = ctx.tmp / "good.png"
    PIL.Image.new("RGB", (16, 16), "blue").save(good)
    rows = [json.dumps({"image": bad.get(i, good.name), "text": f"row {i}"}) for i in range(n)]
    return jsonl(ctx, "train.jsonl", rows)


def checkpoint_file(run: Path, name: str, step: int = 2) -> Path:
    return run / "checkpoints" / f"checkpoint-{step}" / name


def resume(ctx: Ctx, run: Path, spec: str = "latest") -> Any:
    return train_tiny(ctx, run, resume_from_checkpoint=spec)
