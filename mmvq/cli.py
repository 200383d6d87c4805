"""The ``mmvq`` command line (also ``python -m mmvq.cli``).

Each subcommand is one self-contained function decorated with :func:`subcommand`, which names
it, gives its help, and adds its arguments; the function receives the parsed
:class:`argparse.Namespace` and returns the exit code. Adding a command is one function::

    def _train_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="YAML/JSON training config")

    @subcommand("train", help="train a model", arguments=_train_arguments)
    def train_command(args: argparse.Namespace) -> int:
        ...
        return 0

Commands defined in another module register themselves the same way; list that module in
:data:`COMMAND_MODULES` so :func:`build_parser` imports it.

Errors: any exception a command raises is printed as ONE line on stderr
(``mmvq <command>: error: <message>``) with exit code 2; ``--debug`` (before or after the
command name) prints the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.registry import AdapterInfo

__all__ = ["EXIT_ERROR", "Subcommand", "build_parser", "main", "subcommand"]

EXIT_ERROR = 2
"""Exit code of a command that failed with an error (argparse uses it for usage errors too)."""

CommandFn = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One ``mmvq`` subcommand.

    Attributes:
        name: the word typed after ``mmvq``.
        help: one line for ``mmvq --help``.
        run: parses nothing, does the work, returns the exit code.
        arguments: adds the command's arguments to its parser (optional).
    """

    name: str
    help: str
    run: CommandFn
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


_COMMANDS: dict[str, Subcommand] = {}

COMMAND_MODULES: tuple[str, ...] = ()
"""Modules (besides this one) whose import registers more subcommands; imported by
:func:`build_parser` so that ``import mmvq.cli`` stays cheap."""


def subcommand(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[CommandFn], CommandFn]:
    """Register the decorated function as the ``mmvq <name>`` command."""

    def decorator(fn: CommandFn) -> CommandFn:
        if name in _COMMANDS:
            raise ValueError(
                f"mmvq subcommand {name!r} is defined twice ({_COMMANDS[name].run} and {fn})"
            )
        _COMMANDS[name] = Subcommand(name, help, fn, arguments)
        return fn

    return decorator


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        # On subparsers the default is suppressed so that `mmvq --debug cmd` is not reset.
        default=False if defaults else argparse.SUPPRESS,
        help="print the full traceback of an error",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``mmvq`` argument parser with one subparser per registered subcommand."""
    import importlib

    from mmvq import __version__

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="mmvq",
        description="mmvq: multimodal fusion through one shared vector-quantized codebook.",
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"mmvq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            parents=[_common_options(defaults=False)],
        )
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmvq`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"mmvq {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (or --debug)
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (add --debug for the traceback)"
        print(f"mmvq {args.command}: error: {_one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_ERROR


# ------------------------------------------------------------------------ adapters
def _adapters_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        help="show one adapter; an unknown or broken name is an error (exit 2)",
    )
    parser.add_argument("--pattern", help="only names matching this fnmatch pattern, e.g. 'im*'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="list what the metadata declares without importing any plugin (status 'declared')",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with code 1 when any adapter is broken"
    )


@subcommand(
    "adapters",
    help="list the registered modality adapters with their distribution and version",
    arguments=_adapters_arguments,
)
def adapters_command(args: argparse.Namespace) -> int:
    """``mmvq adapters``: one row per adapter; broken plugins are shown with their error."""
    from mmvq import registry

    if args.name is not None:
        if args.pattern is not None:
            raise ValueError("give either a NAME or --pattern, not both")
        infos = [registry.adapter_info(args.name)]
    else:
        infos = registry.adapter_infos(args.pattern, load=not args.no_load)

    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2))
    else:
        _print_table(infos)
    broken = [info for info in infos if info.error is not None]
    return 1 if args.check and broken else 0


def _print_table(infos: list[AdapterInfo]) -> None:
    from mmvq.registry import DISABLE_AUTOLOAD_ENV, autoload_disabled

    if autoload_disabled():
        print(
            f"(plugin autoload is off: {DISABLE_AUTOLOAD_ENV} is set; "
            "showing names registered in code)"
        )
    if not infos:
        print("no adapters registered")
        return
    rows = []
    for info in infos:
        status = "broken" if info.error else ("ok" if info.cls is not None else "declared")
        where = f"{info.distribution} {info.version}" if info.distribution else "-"
        rows.append((info.name, status, where, info.source))
    headers = ("NAME", "STATUS", "DISTRIBUTION", "SOURCE")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*headers).rstrip())
    for info, row in zip(infos, rows):
        print(fmt.format(*row).rstrip())
        if info.error:
            print(f"    error: {' '.join(info.error.split())}")
        for shadowed in info.shadows:
            print(f"    shadows entry point {shadowed}")


# ------------------------------------------------------------- model commands (shared parts)
_MODEL_HELP = "a directory written by save_pretrained, or a Hub repo id such as org/name"


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL`` plus how to fetch it (Hub revision, token, cache) and where to run it."""
    parser.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    parser.add_argument("--revision", help="Hub branch, tag or commit of MODEL (default: main)")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the logged-in one)")
    parser.add_argument("--cache-dir", help="Hub cache directory (default: the HF cache)")
    parser.add_argument("--device", default="cpu", help="device to run on (default: cpu)")


def _load_model(args: argparse.Namespace) -> Any:
    from mmvq.model import MultimodalVQ

    return MultimodalVQ.from_pretrained(
        args.model,
        revision=args.revision,
        token=args.token,
        cache_dir=args.cache_dir,
        map_location=args.device,
    )


def _accept_modality_options(parser: argparse.ArgumentParser, prefix: str, dest: str) -> None:
    """Let ``parser`` take ``--<prefix><modality> VALUE`` (or ``=VALUE``) for any modality name.

    A model's modalities are known only once MODEL is loaded, so they cannot be declared to
    argparse; the ``--<prefix>NAME VALUE`` pairs argparse leaves over are collected, in order,
    into ``args.<dest>`` as ``[(NAME, VALUE), ...]`` and checked against the model by the command.
    Give them after MODEL. Anything else left over is still a usage error.
    """
    parser.allow_abbrev = False  # `--te` must not silently mean `--temperature`
    parse_known = parser.parse_known_args
    head = "--" + prefix

    def parse_known_args(
        args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = parse_known(args, namespace)
        pairs: list[tuple[str, str]] = []
        rest: list[str] = []
        i = 0
        while i < len(extras):
            token = extras[i]
            if token.startswith(head) and len(token) > len(head) and not token.startswith("---"):
                name, eq, value = token[len(head) :].partition("=")
                if not eq:
                    if i + 1 >= len(extras):
                        parser.error(f"{token} needs a value: {token} VALUE")
                    value = extras[i + 1]
                    i += 1
                pairs.append((name, value))
            else:
                rest.append(token)
            i += 1
        setattr(namespace, dest, pairs)
        return namespace, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _named_values(
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
                    f"{option} {item!r} must be MODALITY=VALUE, e.g. {option} text=hello"
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


def _preprocess_batch(
    model: Any, values: dict[str, list[Any]], flag: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    """Batch ``{modality: adapter.collate([adapter.preprocess(v), ...])}``; errors name the flag."""
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
    batch = {}
    for name, items in values.items():
        adapter = model.adapters[name]
        try:
            processed = [adapter.preprocess(item) for item in items]
        except AdapterInputError as exc:
            raise ValueError(f"{flag(name)}: {exc}") from None
        device = adapter.target_device()
        batch[name] = {k: v.to(device) for k, v in adapter.collate(processed).items()}
    return batch


def _write_postprocessed(model: Any, recon: dict[str, Any], out_dir: str) -> list[str]:
    """Write each target's ``postprocess`` outputs into ``out_dir``; return the paths."""
    from mmvq.outputs.files import sample_rate_of, write_outputs

    paths = []
    for name, value in recon.items():
        adapter = model.adapters[name]
        outputs = adapter.postprocess(value)
        paths += write_outputs(outputs, out_dir, name, sample_rate=sample_rate_of(adapter))
    return [str(p) for p in paths]


def _emit_json(data: Any, out: str | None, what: str) -> None:
    """Print ``data`` as JSON, or write it to ``out`` and say so."""
    from pathlib import Path

    text = json.dumps(data)
    if out is None:
        print(text)
        return
    path = Path(out)
    if path.is_dir():
        raise ValueError(
            f"--out {out!r} is a directory; give a file name such as {path / (what + '.json')}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {what} to {path}")


# -------------------------------------------------------------------------------- train
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the recipe's YAML (or JSON) config file")
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        metavar="--option VALUE",
        help="recipe options that override the file's, e.g. --max_steps 100 (after CONFIG)",
    )


@subcommand("train", help="train a model from a recipe config (YAML)", arguments=_train_arguments)
def train_command(args: argparse.Namespace) -> int:
    """``mmvq train CONFIG.yaml [--option VALUE ...]``: check the file, run the recipe runner."""
    from pathlib import Path

    import yaml

    from mmvq.training.recipe import recipe_main

    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; pass the recipe's YAML config"
        )
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(
            f"config file {str(path)!r} must be .yaml, .yml or .json, not {path.suffix!r}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(
            f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping of option: value, got "
            f"{type(data).__name__}"
        )
    recipe_main([str(path), *args.overrides])
    return 0


# --------------------------------------------------------------------------------- eval
_DATA_FILES = (".json", ".jsonl", ".csv", ".parquet")


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
    parser.add_argument(
        "data",
        metavar="DATA",
        help="a .jsonl/.json/.csv/.parquet file (columns of file-based modalities hold file "
        "paths), or a "
        "dataset directory (datasets.save_to_disk, or a folder load_dataset reads)",
    )
    parser.add_argument("--out", help="also write the metrics JSON to this file")
    parser.add_argument(
        "--column",
        action="append",
        metavar="MODALITY=COLUMN",
        help="column of a modality (default: the column named like the modality); repeatable",
    )
    parser.add_argument(
        "--modalities",
        help="comma-separated modalities to evaluate (default: those whose column DATA has)",
    )
    parser.add_argument(
        "--split", help="split of a dataset directory (default: validation, test, then train)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="examples per batch (default: 16)"
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N examples only")
    parser.add_argument(
        "--sample-dir", help="also write sample reconstructions / translations of 8 examples here"
    )


def _first_record_keys(path: Any) -> list[str]:
    """Column names of a JSON / JSON-lines file from its first record."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        if head == "[":  # one JSON array of records
            f.seek(0)
            rows = json.load(f)
            return (
                list(rows[0])
                if isinstance(rows, list) and rows and isinstance(rows[0], dict)
                else []
            )
        f.seek(0)
        first = next((line for line in f if line.strip()), "{}")
    try:
        record = json.loads(first)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"DATA {str(path)!r}: the first line is not a JSON record ({exc})"
        ) from None
    return list(record) if isinstance(record, dict) else []


def _data_columns(path: Any, split: str | None) -> tuple[Any, list[str]]:
    """``(dataset or None, column names)`` of DATA; a file is only peeked at (header, first row)."""
    import csv

    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in _DATA_FILES:
            raise ValueError(
                f"DATA {str(path)!r} has extension {suffix!r}; pass one of {list(_DATA_FILES)} or "
                "a "
                "dataset directory"
            )
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return None, list(pq.read_schema(path).names)
        if suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                return None, next(csv.reader(f), [])
        return None, _first_record_keys(path)
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path))
    if isinstance(ds, (datasets.DatasetDict, dict)):
        names = list(ds)
        chosen = split or next((s for s in ("validation", "test", "train") if s in ds), names[0])
        if chosen not in ds:
            raise ValueError(f"DATA {str(path)!r} has no split {chosen!r}; its splits are {names}")
        ds = ds[chosen]
    return ds, list(ds.column_names)


@subcommand(
    "eval",
    help="evaluate a model on a data file or dataset directory; prints (and writes) metrics JSON",
    arguments=_eval_arguments,
)
def eval_command(args: argparse.Namespace) -> int:
    """``mmvq eval MODEL DATA``: per-modality reconstruction loss, adapter metrics, code stats."""
    from pathlib import Path

    import torch

    from mmvq.data import DataConfig, MultimodalCollator, MultimodalDataset, load_data
    from mmvq.training.evaluate import evaluate

    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(
            f"DATA {args.data!r} does not exist; pass a .jsonl/.csv/.parquet file or a dataset "
            "directory"
        )
    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    columns = dict(_named_values([], args.column, None, "--column"))
    columns = {m: v[-1] for m, v in columns.items()}
    dataset, available = _data_columns(path, args.split)
    model = _load_model(args)
    for m in columns:
        if m not in model.adapters:
            raise ValueError(
                f"--column {m}=...: unknown modality {m!r}; this model's modalities are "
                f"{list(model.modalities)}"
            )
    if args.modalities:
        wanted = [m.strip() for m in args.modalities.split(",") if m.strip()]
        for m in wanted:
            if m not in model.adapters:
                raise ValueError(
                    f"--modalities: unknown modality {m!r}; this model's modalities are "
                    f"{list(model.modalities)}"
                )
    else:
        wanted = [m for m in model.modalities if m in columns or m in available]
    cmap = {m: columns.get(m, m) for m in wanted}
    if not cmap:
        raise ValueError(
            f"DATA {args.data!r} has columns {available} but none named after the model's "
            f"modalities {list(model.modalities)}; map them with --column MODALITY=COLUMN"
        )
    missing = {m: c for m, c in cmap.items() if c not in available}
    if missing:
        raise ValueError(
            f"DATA {args.data!r} has no column {sorted(missing.values())} (for modality "
            f"{sorted(missing)}); its columns are {available}: fix --column / --modalities"
        )
    if dataset is None:  # a file: the data layer resolves relative image/audio paths
        config = DataConfig(
            train_file=str(path),
            builtin=None,
            eval_split="",
            columns=cmap,
            max_train_samples=args.limit,
        )
        dataset, _ = load_data(config, {m: model.adapters[m] for m in cmap})
    elif args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    adapters = {m: model.adapters[m] for m in cmap}
    loader = torch.utils.data.DataLoader(
        MultimodalDataset(dataset, adapters, cmap),
        batch_size=args.batch_size,
        collate_fn=MultimodalCollator(adapters),
    )
    metrics = evaluate(model, loader, max_samples=args.limit, sample_dir=args.sample_dir)
    print(json.dumps(metrics, indent=2))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------- encode
def _encode_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
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
    parser.add_argument("--out", help="write the codes JSON here instead of printing it")
    parser.epilog = (
        "Inputs (after MODEL): --<modality> VALUE for each modality of the model, e.g. "
        "--image cat.png --text 'a cat' --audio meow.wav. VALUE goes to the adapter's preprocess "
        "(a file path or a string). Repeat a flag to encode a batch."
    )
    _accept_modality_options(parser, "", "modality_inputs")


@subcommand("encode", help="encode inputs into codes (JSON)", arguments=_encode_arguments)
def encode_command(args: argparse.Namespace) -> int:
    """``mmvq encode MODEL --text "..." --image x.png`` -> ``{"codes": {modality: [[...]]}}``."""
    from mmvq.outputs.codes_file import codes_to_dict

    values = _named_values(args.modality_inputs, args.input, args.input_json, "--input")
    if not values:
        raise ValueError(
            "give at least one input after MODEL: --<modality> VALUE (or --input MODALITY=VALUE)"
        )
    model = _load_model(args)
    batch = _preprocess_batch(model, values, lambda m: f"--{m}")
    codes = model.encode(batch)
    data = codes_to_dict(codes, num_codes=model.config.codebook.num_codes, model=args.model)
    _emit_json(data, args.out, "codes")
    return 0


# ------------------------------------------------------------------------------- decode
def _decode_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
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

    codes, num_codes = read_codes(args.codes)
    model = _load_model(args)
    k = model.config.codebook.num_codes
    if num_codes is not None and num_codes != k:
        raise ValueError(
            f"{args.codes} holds codes of a {num_codes}-code codebook but MODEL's has {k}; decode "
            "with "
            "the model that encoded them"
        )
    targets = args.to or list(codes)
    for m in list(codes) + targets:
        if m not in model.adapters:
            raise ValueError(
                f"unknown modality {m!r}; this model's modalities are {list(model.modalities)}"
            )
    device = model.device
    recon = model.decode({m: c.to(device) for m, c in codes.items()}, targets=targets)
    for path in _write_postprocessed(model, recon, args.out):
        print(path)
    return 0


# ----------------------------------------------------------------------------- generate
def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments(parser)
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
        default=16,
        help="sample among the k nearest codes; 0 = all (default: 16)",
    )
    parser.add_argument("--seed", type=int, help="seed of the sampling (default: random)")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory for the outputs (+ codes.json)"
    )
    parser.epilog = (
        "Sources (after MODEL): --from-<modality> VALUE, e.g. --from-text 'a small red circle'. "
        "The fusion decoder is deterministic, so variations are drawn at the code level: each "
        "source token's code is sampled from softmax(-||z - e_k||^2 / (T * D)) over its top-k "
        "nearest codes, and every sampled code sequence is translated by the decoder (T = 0 gives "
        "plain translation). DIR/codes.json keeps the sampled source codes: `mmvq decode MODEL "
        "DIR/codes.json` with the same --to targets reproduces the outputs."
    )
    _accept_modality_options(parser, "from-", "source_inputs")


@subcommand(
    "generate",
    help="translate inputs into other modalities, N variations by code-level temperature sampling",
    arguments=_generate_arguments,
)
def generate_command(args: argparse.Namespace) -> int:
    """``mmvq generate MODEL --from-text "a small red circle" --num-images 10 --out DIR``."""
    from pathlib import Path

    from mmvq.outputs.codes_file import codes_to_dict
    from mmvq.generation import SamplingConfig, generate

    values = _named_values(args.source_inputs, args.from_inputs, args.from_json, "--from")
    if not values:
        raise ValueError(
            "give at least one source after MODEL: --from-<modality> VALUE (or --from "
            "MODALITY=VALUE)"
        )
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0: all codes), got {args.top_k}")
    sampling = SamplingConfig(
        temperature=args.temperature, top_k=args.top_k or None, seed=args.seed
    )
    model = _load_model(args)
    batch = _preprocess_batch(model, values, lambda m: f"--from-{m}")
    targets = args.to or [m for m in model.modalities if m not in values]
    if not targets:
        raise ValueError(
            "every modality of the model is a source; choose a target with --to MODALITY"
        )
    result = generate(model, batch, targets, args.num_samples, sampling)
    for path in _write_postprocessed(model, result.recon, args.out):
        print(path)
    codes_path = Path(args.out) / "codes.json"
    data = codes_to_dict(result.codes, num_codes=model.config.codebook.num_codes, model=args.model)
    codes_path.write_text(json.dumps(data) + "\n", encoding="utf-8")
    print(codes_path)
    return 0


# --------------------------------------------------------------------------------- push
def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repo to push to, e.g. org/name")
    parser.add_argument(
        "--private",
        action="store_true",
        help="create the repo private (an existing repo keeps its visibility)",
    )
    parser.add_argument(
        "--token", help="Hub token with write access (default: HF_TOKEN or the logged-in one)"
    )
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--commit-message", default="Upload mmvq model", help="the commit message")
    parser.add_argument(
        "--metrics", help="metrics JSON for the model card (e.g. the run's metrics.json)"
    )
    parser.add_argument(
        "--sample-image", help="image shown in the model card (default: MODEL's own sample grid)"
    )
    parser.add_argument(
        "--training-data", help="one-line description of the training data for the card"
    )


@subcommand(
    "push",
    help="push a saved model to the Hugging Face Hub (with its model card)",
    arguments=_push_arguments,
)
def push_command(args: argparse.Namespace) -> int:
    """``mmvq push MODEL REPO_ID [--private] [--token T] [--revision BRANCH]``."""
    from pathlib import Path

    from mmvq.hub.model_card import SAMPLE_IMAGE_STEM
    from mmvq.model import MultimodalVQ

    sample = args.sample_image
    if sample is None and Path(args.model).is_dir():
        sample = next(
            (str(p) for p in sorted(Path(args.model).glob(f"{SAMPLE_IMAGE_STEM}.*"))), None
        )
    model = MultimodalVQ.from_pretrained(args.model, token=args.token)
    url = model.push_to_hub(
        args.repo_id,
        private=args.private or None,
        token=args.token,
        branch=args.revision,
        commit_message=args.commit_message,
        metrics=args.metrics,
        sample_image=sample,
        training_data=args.training_data,
    )
    print(url)
    return 0


if __name__ == "__main__":
    # Run through the importable module so that commands registered from other modules (which
    # import ``mmvq.cli``) land in the same table as the ones defined here.
    from mmvq.cli import main as _main

    sys.exit(_main())
