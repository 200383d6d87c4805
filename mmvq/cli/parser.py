"""The ``mmvq`` parser: the subcommand table, the entry point :func:`main` and its error policy.

Each subcommand is one function decorated with :func:`subcommand`, which names it, gives its
help and adds its arguments; the function receives the parsed :class:`argparse.Namespace` and
returns the exit code. Adding a command is one function in one of the command modules (imported
by :mod:`mmvq.cli`)::

    def _train_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="YAML/JSON training config")

    @subcommand("train", help="train a model", arguments=_train_arguments)
    def train_command(args: argparse.Namespace) -> int:
        ...
        return 0

Modality options (``--text VALUE``, ``--from-image PATH``): a command declares
:class:`ModalityOptions`; the modality names come from the loaded model (``MODEL``'s saved config)
once the fixed arguments are parsed, and each ``--<prefix><modality>`` is then declared to a
plain argparse parser, so a plugin modality gets its option with no code of its own.

Errors: any exception a command raises is printed as ONE line on stderr
(``mmvq <command>: error: <message>``) with exit code 2; ``--debug`` (before or after the
command name) prints the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["EXIT_ERROR", "ModalityOptions", "Subcommand", "build_parser", "main", "subcommand"]

EXIT_ERROR = 2
"""Exit code of a command that failed with an error (argparse uses it for usage errors too)."""

CommandFn = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class ModalityOptions:
    """``--<prefix><modality> VALUE`` options of a command, one per modality of its model.

    Attributes:
        prefix: ``""`` (``--text``) or e.g. ``"from-"`` (``--from-text``).
        dest: the namespace attribute that receives ``[(modality, value), ...]`` in order.
        names: the modality names, from the arguments parsed so far (e.g. MODEL's modalities).
    """

    prefix: str
    dest: str
    names: Callable[[argparse.Namespace], Sequence[str]]


@dataclass(frozen=True)
class Subcommand:
    """One ``mmvq`` subcommand.

    Attributes:
        name: the word typed after ``mmvq``.
        help: one line for ``mmvq --help``.
        run: parses nothing, does the work, returns the exit code.
        arguments: adds the command's arguments to its parser (optional).
        modality_options: the command's ``--<prefix><modality>`` options (optional).
    """

    name: str
    help: str
    run: CommandFn
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    modality_options: ModalityOptions | None = None


_COMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str,
    *,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    modality_options: ModalityOptions | None = None,
) -> Callable[[CommandFn], CommandFn]:
    """Register the decorated function as the ``mmvq <name>`` command."""

    def decorator(fn: CommandFn) -> CommandFn:
        if name in _COMMANDS:
            raise ValueError(
                f"mmvq subcommand {name!r} is defined twice ({_COMMANDS[name].run} and {fn})"
            )
        _COMMANDS[name] = Subcommand(name, help, fn, arguments, modality_options)
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
    from mmvq import __version__

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
            # `--te` must not silently mean `--temperature` where --<modality> options exist
            allow_abbrev=command.modality_options is None,
        )
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def _modality_values(
    parser: argparse.ArgumentParser,
    options: ModalityOptions,
    args: argparse.Namespace,
    extras: list[str],
) -> list[tuple[str, str]]:
    """The ``--<prefix><modality> VALUE`` pairs of ``extras``, for the modalities ``options``
    names; an option of another modality is an error naming the known ones."""
    names = list(options.names(args))
    modality_parser = argparse.ArgumentParser(
        prog=parser.prog, add_help=False, allow_abbrev=False, exit_on_error=False
    )
    for name in names:
        modality_parser.add_argument(
            f"--{options.prefix}{name}", action="append", dest=name, metavar="VALUE"
        )
    try:
        parsed, rest = modality_parser.parse_known_args(extras)
    except argparse.ArgumentError as exc:
        parser.error(str(exc))
    head = f"--{options.prefix}"
    for token in rest:
        if token.startswith(head) and len(token) > len(head) and not token.startswith("---"):
            flag = token.partition("=")[0]
            raise ValueError(
                f"{flag}: unknown modality {flag[len(head) :]!r}; this model's modalities are "
                f"{names} (pass {head}{names[0]} VALUE)"
            )
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return [(name, value) for name in names for value in getattr(parsed, name) or []]


def _one_line(exc: BaseException) -> str:
    line = " ".join(str(exc).split())
    return line or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmvq`` console script; returns the exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    options = _COMMANDS[args.command].modality_options
    if extras and options is None:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        if options is not None:
            pairs = _modality_values(parser, options, args, extras) if extras else []
            setattr(args, options.dest, pairs)
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
