"""``mmvq eval MODEL DATA``: metrics of a saved model on a data file or a dataset directory; how
DATA is read is shared with ``mmvq encode MODEL --data DATA`` (:func:`data_options`,
:func:`check_data_args`, :func:`load_data_arg`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mmvq.cli.models import load_model, model_arguments, named_values
from mmvq.cli.parser import subcommand

_DATA_FILES = (".json", ".jsonl", ".csv", ".parquet")


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument(
        "data",
        metavar="DATA",
        help="a .jsonl/.json/.csv/.parquet file (columns of file-based modalities hold file "
        "paths), or a dataset directory (datasets.save_to_disk, an imagefolder or audiofolder, "
        "or a folder of data files load_dataset reads)",
    )
    parser.add_argument("--out", help="also write the metrics JSON to this file")
    data_options(parser, "evaluate")
    parser.add_argument(
        "--sample-dir", help="also write sample reconstructions / translations of 8 examples here"
    )


def data_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """The options that say which columns of DATA to read, in what batches (``mmvq eval``,
    ``mmvq encode --data``)."""
    parser.add_argument(
        "--column",
        action="append",
        metavar="MODALITY=COLUMN",
        help="column of a modality (default: the column named like the modality); repeatable",
    )
    parser.add_argument(
        "--modalities",
        help=f"comma-separated modalities to {verb} (default: those whose column DATA has)",
    )
    parser.add_argument(
        "--split", help="split of a dataset directory (default: validation, test, then train)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="examples per batch (default: 16)"
    )
    parser.add_argument("--limit", type=int, help=f"{verb} the first N examples only")


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


def _file_columns(path: Any) -> list[str]:
    """Column names of a data file, peeked at (its header or first record)."""
    import csv

    suffix = path.suffix.lower()
    if suffix not in _DATA_FILES:
        raise ValueError(
            f"DATA {str(path)!r} has extension {suffix!r}; pass one of {list(_DATA_FILES)} or a "
            "dataset directory"
        )
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return next(csv.reader(f), [])
    return _first_record_keys(path)


def _directory_split(path: Any, split: str | None, adapters: dict[str, Any], columns: dict) -> Any:
    """One split of a dataset directory: ``save_to_disk`` output, or a folder ``load_dataset``
    reads (imagefolder, audiofolder, data files), media columns undecoded as the adapters
    declare (an audiofolder needs no torchcodec)."""
    from mmvq.data import DataConfig
    from mmvq.data.load import load_splits

    config = DataConfig(dataset_name=str(path), builtin=None, columns=columns)
    splits = load_splits(config, adapters)
    names = list(splits)
    chosen = split or next((s for s in ("validation", "test", "train") if s in splits), names[0])
    if chosen not in splits:
        raise ValueError(f"DATA {str(path)!r} has no split {chosen!r}; its splits are {names}")
    return splits[chosen]


def _column_map(args: argparse.Namespace, model: Any, columns: dict, available: list[str]) -> dict:
    """``{modality: column}`` to evaluate: ``--modalities`` (or every modality whose column DATA
    has), each read from ``--column`` or the column of its own name."""
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
    return cmap


def check_data_args(args: argparse.Namespace) -> Any:
    """DATA's path (it must exist) and the numeric data options, checked."""
    from pathlib import Path

    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(
            f"DATA {args.data!r} does not exist; pass a .jsonl/.csv/.parquet file or a dataset "
            "directory (save_to_disk output, an imagefolder or audiofolder)"
        )
    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return path


def load_data_arg(args: argparse.Namespace, path: Any, model: Any) -> tuple[Any, dict]:
    """DATA as a dataset and its column map (``--column``, ``--modalities``, ``--split``,
    ``--limit``; a file goes through the data layer, which resolves relative paths; a directory
    through :func:`mmvq.data.load.load_splits`)."""
    from mmvq.data import DataConfig, load_data

    columns = {m: v[-1] for m, v in named_values([], args.column, None, "--column").items()}
    if path.is_file():
        cmap = _column_map(args, model, columns, _file_columns(path))
        config = DataConfig(
            train_file=str(path),
            builtin=None,
            eval_split="",
            columns=cmap,
            max_train_samples=args.limit,
        )
        dataset, _ = load_data(config, {m: model.adapters[m] for m in cmap})
        return dataset, cmap
    dataset = _directory_split(path, args.split, dict(model.adapters), columns)
    cmap = _column_map(args, model, columns, list(dataset.column_names))
    if args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    return dataset, cmap


def data_loader(model: Any, dataset: Any, column_map: dict, batch_size: int) -> Any:
    """Batches of ``dataset``'s rows, in order, preprocessed and collated by ``model``'s adapters
    of the modalities in ``column_map``."""
    import torch

    from mmvq.data import MultimodalCollator, MultimodalDataset

    adapters = {m: model.adapters[m] for m in column_map}
    return torch.utils.data.DataLoader(
        MultimodalDataset(dataset, adapters, column_map),
        batch_size=batch_size,
        collate_fn=MultimodalCollator(adapters),
    )


@subcommand(
    "eval",
    help="evaluate a model on a data file or dataset directory; prints (and writes) metrics JSON",
    arguments=_eval_arguments,
)
def eval_command(args: argparse.Namespace) -> int:
    """``mmvq eval MODEL DATA``: per-modality reconstruction loss, adapter metrics, code stats."""
    from pathlib import Path

    from mmvq.training.evaluate import evaluate

    path = check_data_args(args)
    model = load_model(args)
    dataset, cmap = load_data_arg(args, path, model)
    loader = data_loader(model, dataset, cmap, args.batch_size)
    metrics = evaluate(model, loader, max_samples=args.limit, sample_dir=args.sample_dir)
    print(json.dumps(metrics, indent=2))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
