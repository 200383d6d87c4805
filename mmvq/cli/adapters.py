"""``mmvq adapters``: the registered modality adapters, their distribution and version."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from mmvq.cli.parser import subcommand

if TYPE_CHECKING:  # pragma: no cover
    from mmvq.registry import AdapterInfo


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
