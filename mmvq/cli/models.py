"""What the model commands (``encode``, ``decode``, ``generate``, ``eval``) share: the ``MODEL``
argument and its loading, inputs given as ``--<modality> VALUE`` / ``MODALITY=VALUE``, and writing
outputs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "MODEL_HELP",
    "emit_json",
    "load_model",
    "model_arguments",
    "model_modalities",
    "named_values",
    "prepare_batch",
    "write_postprocessed",
]

MODEL_HELP = "a directory written by save_pretrained, or a Hub repo id such as org/name"


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL`` plus how to fetch it (Hub revision, token, cache) and where to run it."""
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--revision", help="Hub branch, tag or commit of MODEL (default: main)")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the logged-in one)")
    parser.add_argument("--cache-dir", help="Hub cache directory (default: the HF cache)")
    parser.add_argument("--device", default="cpu", help="device to run on (default: cpu)")


def _model_dir(args: argparse.Namespace) -> Any:
    """MODEL's local directory (a Hub repo is downloaded once and remembered in ``args``)."""
    if getattr(args, "model_dir", None) is None:
        from mmvq.hub import resolve_model_dir

        args.model_dir = resolve_model_dir(
            args.model, revision=args.revision, token=args.token, cache_dir=args.cache_dir
        )
    return args.model_dir


def model_modalities(args: argparse.Namespace) -> list[str]:
    """The modalities of MODEL, from its ``config.json`` (the model is not built)."""
    from mmvq.hub.format import CONFIG_NAME, PretrainedConfig

    return PretrainedConfig.read(_model_dir(args) / CONFIG_NAME).modalities


def load_model(args: argparse.Namespace) -> Any:
    """MODEL, on ``--device``."""
    from mmvq.model import MultimodalVQ

    return MultimodalVQ.from_pretrained(_model_dir(args), map_location=args.device)


def named_values(
    pairs: Sequence[tuple[str, str]],
    assignments: Sequence[str] | None,
    json_assignments: Sequence[str] | None,
    flag: str,
) -> dict[str, list[Any]]:
    """``{modality: [value, ...]}`` from ``--<m> V`` pairs and ``M=V`` / ``M=JSON`` strings."""
    values: dict[str, list[Any]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    for parse_json, items in ((False, assignments or []), (True, json_assignments or [])):
        for item in items:
            name, eq, value = item.partition("=")
            option = f"{flag}-json" if parse_json else flag
            if not eq or not name:
                raise ValueError(
                    f"{option} {item!r} must be MODALITY=VALUE (a modality of the model, '=', "
                    "the value)"
                )
            if parse_json:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{option} {item!r}: the value is not valid JSON ({exc})"
                    ) from None
            values.setdefault(name, []).append(value)
    return values


def prepare_batch(
    model: Any, values: dict[str, list[Any]], flag: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    """The batch of one example per position of ``values`` (``model.prepare``); errors name
    the option that gave the refused value."""
    from mmvq.adapter import AdapterInputError

    known = list(model.modalities)
    for name in values:
        if name not in model.adapters:
            raise ValueError(
                f"{flag(name)}: unknown modality {name!r}; this model's modalities are {known} "
                f"(pass {flag(known[0])} VALUE)"
            )
    counts = {name: len(v) for name, v in values.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"every modality needs the same number of values (one per example), got {counts}"
        )
    size = next(iter(counts.values()))
    examples = [{name: items[i] for name, items in values.items()} for i in range(size)]
    try:
        return model.prepare(examples)
    except AdapterInputError as exc:
        if exc.modality is None:
            raise
        raise ValueError(f"{flag(exc.modality)}: {exc}") from None


def write_postprocessed(
    model: Any, recon: dict[str, Any], out_dir: str, start: int = 0, total: int | None = None
) -> list[str]:
    """Write each target's ``postprocess`` outputs into ``out_dir`` (numbered from ``start``, of
    ``total``); return the paths."""
    from mmvq.outputs.files import sample_rate_of, write_outputs

    paths = []
    for name, value in recon.items():
        adapter = model.adapters[name]
        outputs = adapter.postprocess(value)
        paths += write_outputs(
            outputs, out_dir, name, sample_rate=sample_rate_of(adapter), start=start, total=total
        )
    return [str(p) for p in paths]


def check_out_dir(out: str, option: str = "--out") -> None:
    """``out`` can be (or become) a directory: not an existing file, nor under one."""
    from pathlib import Path

    path = Path(out)
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "is an existing file" if blocker == path else f"is under the file {blocker}"
        raise ValueError(
            f"{option} {out!r} {what}; give a directory for the outputs (created if missing)"
        )


def check_out_file(out: str | None, option: str = "--out") -> None:
    """``out`` can be written as a file: not a directory, its folder not a file."""
    from pathlib import Path

    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{option} {out!r} is a directory; give a file name such as {path}/x.json")
    check_out_dir(str(path.parent), f"{option} {out!r}: its folder")


def emit_json(data: Any, out: str | None, what: str) -> None:
    """Print ``data`` as JSON, or write it to ``out`` and say so."""
    from pathlib import Path

    encoded = json.dumps(data)
    if out is None:
        print(encoded)
        return
    path = Path(out)
    check_out_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(encoded + "\n", encoding="utf-8")
    print(f"wrote {what} to {path}")
