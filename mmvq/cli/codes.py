"""``mmvq encode`` (inputs -> codes JSON), ``mmvq decode`` (codes JSON -> files) and ``mmvq
generate`` (inputs -> N variations of other modalities, by code-level temperature sampling; with
``--prior``, samples of a prior over the codes: :mod:`mmvq.cli.prior`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mmvq.cli.evaluation import check_data_args, data_loader, data_options, load_data_arg
from mmvq.cli.models import (
    check_out_dir,
    check_out_file,
    emit_json,
    load_model,
    model_arguments,
    model_modalities,
    named_values,
    prepare_batch,
    write_postprocessed,
)
from mmvq.cli.parser import ModalityOptions, subcommand
from mmvq.cli.prior import generate_with_prior, prior_arguments


def _encode_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument(
        "--input",
        action="append",
        metavar="MODALITY=VALUE",
        help="an input of any modality (same as --MODALITY VALUE); repeat for a batch",
    )
    parser.add_argument(
        "--input-json",
        action="append",
        metavar="MODALITY=JSON",
        help="an input given as JSON (e.g. a list of numbers for a plugin modality)",
    )
    parser.add_argument(
        "--level",
        choices=("both", "concept", "detail"),
        default="both",
        help="which codes to write: the concept codes (a few per input, shared by every "
        "modality: a compact modality-invariant summary for an index or an LM), the detail "
        "codes (one per token), or both (default)",
    )
    parser.add_argument(
        "--out",
        help="write the codes JSON here instead of printing it (with --data: the JSON-lines "
        "file, one codes row per DATA row)",
    )
    parser.add_argument(
        "--data",
        metavar="DATA",
        help="encode every row of a .jsonl/.json/.csv/.parquet file or a dataset directory (as "
        "`mmvq eval` reads it) in batches, into --out as JSON lines",
    )
    data_options(parser, "encode")
    parser.epilog = (
        "Inputs (after MODEL): --<modality> VALUE for each modality of the model (the names "
        "come from MODEL, a plugin modality's too). VALUE goes to the adapter's preprocess "
        "(a file path or a string). Repeat a flag to encode a batch. Or --data DATA --out "
        'FILE.jsonl: one line per DATA row, {"row": i, "codes": {modality: [...]}, '
        '"concept_codes": {modality: [...]}} (-1: padding).'
    )


@subcommand(
    "encode",
    help="encode inputs into codes (JSON)",
    arguments=_encode_arguments,
    modality_options=ModalityOptions("", "modality_inputs", model_modalities),
)
def encode_command(args: argparse.Namespace) -> int:
    """``mmvq encode MODEL --text "..." --image x.png`` -> ``{"codes": {modality: [[...]]}}``."""
    from mmvq.outputs.codes_file import codes_to_dict

    values = named_values(args.modality_inputs, args.input, args.input_json, "--input")
    if args.data is not None:
        return _encode_data(args, values)
    if not values:
        raise ValueError(
            "give at least one input after MODEL: --<modality> VALUE (or --input MODALITY=VALUE), "
            "or a data file with --data DATA --out FILE.jsonl"
        )
    check_out_file(args.out)
    model = load_model(args)
    batch = prepare_batch(model, values, lambda m: f"--{m}")
    codes = _select_level(model.encode(batch), args.level, model)
    data = codes_to_dict(
        codes,
        num_codes=model.config.codebook.num_codes,
        num_concept_codes=model.config.concept.num_codes if codes.concept else None,
        model=args.model,
    )
    emit_json(data, args.out, "codes")
    return 0


def _check_level(level: str, model: Any) -> None:
    """``--level concept`` needs a model with a concept level."""
    if level == "concept" and model.concept is None:
        raise ValueError(
            "--level concept: MODEL has no concept level (it was trained with num_concepts=0); "
            "use --level detail"
        )


def _select_level(codes: Any, level: str, model: Any) -> Any:
    """``codes`` with only the ``--level`` asked for."""
    _check_level(level, model)
    if level == "concept":
        codes.detail.clear()
    elif level == "detail":
        codes.concept.clear()
    return codes


def _encode_data(args: argparse.Namespace, values: dict[str, list]) -> int:
    """``mmvq encode MODEL --data DATA --out FILE.jsonl``: every row of DATA, in batches of
    ``--batch-size`` with a progress bar, one JSON line each (written to ``FILE.jsonl.tmp``, then
    renamed: a failed run leaves no partial file)."""
    import os
    from pathlib import Path

    if values:
        raise ValueError("--data encodes a data file: give it without --<modality> inputs")
    if not args.out:
        raise ValueError("--data needs --out FILE.jsonl (one codes row per DATA row)")
    check_out_file(args.out)
    path = check_data_args(args)
    model = load_model(args).eval()
    _check_level(args.level, model)
    dataset, cmap = load_data_arg(args, path, model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            _write_code_rows(f, data_loader(model, dataset, cmap, args.batch_size), model, args)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    print(out)
    return 0


def _write_code_rows(f: Any, loader: Any, model: Any, args: argparse.Namespace) -> None:
    """One JSON line per row of ``loader``'s batches, with a progress bar."""
    import torch
    from tqdm.auto import tqdm

    from mmvq.utils.batches import to_device

    row = 0
    with tqdm(total=len(loader.dataset), unit="row", desc="encoding") as bar:
        for batch in loader:
            with torch.no_grad():
                encoded = model.encode(to_device(batch, model.device))
            codes = _select_level(encoded, args.level, model)
            size = len(next(iter({**codes.detail, **codes.concept}.values())))
            for i in range(size):
                record = {"row": row + i}
                record["codes"] = {m: c[i].tolist() for m, c in codes.detail.items()}
                if codes.concept:
                    record["concept_codes"] = {m: c[i].tolist() for m, c in codes.concept.items()}
                f.write(json.dumps(record) + "\n")
            row += size
            bar.update(size)


# ------------------------------------------------------------------------------- decode
def _decode_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument(
        "codes", metavar="CODES", help="a codes JSON file written by `mmvq encode --out`"
    )
    parser.add_argument(
        "--to",
        action="append",
        metavar="MODALITY",
        help="modality to produce (repeatable; default: the modalities in CODES). A modality "
        "missing from CODES is translated from the others",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the outputs")


@subcommand(
    "decode",
    help="decode a codes file into files (PNG / .txt / .wav / .json by output type)",
    arguments=_decode_arguments,
)
def decode_command(args: argparse.Namespace) -> int:
    """``mmvq decode MODEL codes.json --to image --out DIR``."""
    from mmvq.outputs.codes_file import read_codes

    check_out_dir(args.out)
    codes, sizes = read_codes(args.codes)
    model = load_model(args)
    ours = {"detail": model.config.codebook.num_codes}
    if model.concept is not None:
        ours["concept"] = model.config.concept.num_codes
    for level, size in sizes.items():
        if level in ours and size != ours[level]:
            raise ValueError(
                f"{args.codes} holds {level} codes of a {size}-code codebook but MODEL's has "
                f"{ours[level]}; decode with the model that encoded them"
            )
    targets = args.to or codes.modalities
    for m in codes.modalities + targets:
        if m not in model.adapters:
            raise ValueError(
                f"unknown modality {m!r}; this model's modalities are {list(model.modalities)}"
            )
    recon = model.decode(codes.to(model.device), targets=targets)
    for path in write_postprocessed(model, recon, args.out):
        print(path)
    return 0


# ----------------------------------------------------------------------------- generate
def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument(
        "--from",
        dest="from_inputs",
        action="append",
        metavar="MODALITY=VALUE",
        help="a source input of any modality (same as --from-MODALITY VALUE)",
    )
    parser.add_argument(
        "--from-json",
        dest="from_json",
        action="append",
        metavar="MODALITY=JSON",
        help="a source input given as JSON (e.g. a list of numbers for a plugin modality)",
    )
    parser.add_argument(
        "--to",
        action="append",
        metavar="MODALITY",
        help="modality to generate (repeatable; default: every modality not given as a source)",
    )
    parser.add_argument(
        "--num-samples",
        "--num-images",
        dest="num_samples",
        type=int,
        default=1,
        help="variations per input (default: 1)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="code sampling temperature; 0 = deterministic translation (default: 1.0)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        help="sample among the k nearest codes (with --prior: the k likeliest ids); 0 = all "
        "(default: 16; with --prior: all)",
    )
    prior_arguments(parser)
    parser.add_argument("--seed", type=int, help="seed of the sampling (default: random)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="outputs decoded (and written) at a time, with --prior the sequences sampled at a "
        "time: bounds the memory (default: 16)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory for the outputs (+ codes.json)"
    )
    parser.epilog = (
        "Sources (after MODEL): --from-<modality> VALUE for a modality of the model. "
        "The fusion decoder is deterministic, so variations are drawn at the code level: each "
        "source token's code is sampled from softmax(-||z - e_k||^2 / (T * D)) over its top-k "
        "nearest codes, and every sampled code sequence is translated by the decoder (T = 0 gives "
        "plain translation). DIR/codes.json keeps the sampled source codes: `mmvq decode MODEL "
        "DIR/codes.json` with the same --to targets reproduces the outputs. With --prior PRIOR "
        "the samples come from a prior over MODEL's codes instead (recipes/train_prior.py): "
        "no source gives unconditional samples, a source gives samples of one --to modality "
        "conditioned on it; --temperature 0 is greedy, --top-k/--top-p filter the prior's ids."
    )


@subcommand(
    "generate",
    help="translate inputs into other modalities, N variations by code-level temperature sampling",
    arguments=_generate_arguments,
    modality_options=ModalityOptions("from-", "source_inputs", model_modalities),
)
def generate_command(args: argparse.Namespace) -> int:
    """``mmvq generate MODEL --from-text "a small red circle" --num-images 10 --out DIR``."""
    from pathlib import Path

    import torch

    from mmvq.concept import MultimodalCodes
    from mmvq.generation import SamplingConfig, generate_batches
    from mmvq.outputs.codes_file import codes_to_dict

    values = named_values(args.source_inputs, args.from_inputs, args.from_json, "--from")
    if not values and not args.prior:
        raise ValueError(
            "give at least one source after MODEL: --from-<modality> VALUE (or --from "
            "MODALITY=VALUE)"
        )
    _check_generate_options(args, values)
    if args.prior:
        return generate_with_prior(args, values)
    top_k = DEFAULT_TOP_K if args.top_k is None else args.top_k
    sampling = SamplingConfig(temperature=args.temperature, top_k=top_k or None, seed=args.seed)
    model = load_model(args)
    batch = prepare_batch(model, values, lambda m: f"--from-{m}")
    targets = args.to or [m for m in model.modalities if m not in values]
    if not targets:
        raise ValueError(
            "every modality of the model is a source; choose a target with --to MODALITY"
        )
    total = len(next(iter(values.values()))) * args.num_samples
    concept: dict[str, list] = {}
    detail: dict[str, list] = {}
    written = 0
    for part in generate_batches(
        model, batch, targets, args.num_samples, sampling, batch_size=args.batch_size
    ):
        for path in write_postprocessed(model, part.recon, args.out, written, total):
            print(path)
        for m, c in part.codes.concept.items():
            concept.setdefault(m, []).append(c.cpu())
        for m, c in part.codes.detail.items():
            detail.setdefault(m, []).append(c.cpu())
        written += next(iter(part.codes.detail.values())).shape[0]
    codes_path = Path(args.out) / "codes.json"
    joined = MultimodalCodes(
        {m: torch.cat(parts) for m, parts in concept.items()},
        {m: torch.cat(parts) for m, parts in detail.items()},
    )
    data = codes_to_dict(
        joined,
        num_codes=model.config.codebook.num_codes,
        num_concept_codes=model.config.concept.num_codes if joined.concept else None,
        model=args.model,
    )
    codes_path.write_text(json.dumps(data) + "\n", encoding="utf-8")
    print(codes_path)
    return 0


MAX_GENERATED = 100_000
"""Outputs one ``mmvq generate`` call writes at most (inputs x --num-samples)."""
DEFAULT_TOP_K = 16
"""``--top-k`` of code-level sampling when not given (with ``--prior``: all ids)."""


def _check_generate_options(args: argparse.Namespace, values: dict[str, list]) -> None:
    """The numeric options, and the number of outputs, before the model is loaded (no
    ``values``, with ``--prior``: ``--num-samples`` unconditional outputs)."""
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.top_k is not None and args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0: all codes), got {args.top_k}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    inputs = max((len(v) for v in values.values()), default=1)
    if inputs * args.num_samples > MAX_GENERATED:
        raise ValueError(
            f"--num-samples {args.num_samples} x {inputs} input(s) asks for "
            f"{inputs * args.num_samples} outputs, more than the {MAX_GENERATED} one call writes; "
            "lower --num-samples (run several times with different --seed values for more)"
        )
    check_out_dir(args.out)
