"""The ``gated`` command line (CONTRACT section 2): one module per command group.

Only the command being run gets its full parser, from its module; the others appear in
``gated --help`` by name and one line. Handlers import what they need when they run, so
``gated holds list`` or ``gated check-config`` never load the OCR engines, the demo's broker
or the simulators.

Exit codes: 0 ok, 1 runtime failure, 2 usage error (argparse), 78 configuration error, 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from gated import __version__
from gated.cli.common import (
    EX_CONFIG,
    EX_FAILURE,
    EX_INTERRUPTED,
    EX_OK,
    EX_USAGE,
    HELP,
    database_options,
    examples,
    open_database,
)
from gated.errors import ConfigError, GatedError

__all__ = ["EX_CONFIG", "EX_FAILURE", "EX_INTERRUPTED", "EX_OK", "EX_USAGE", "main"]

# Each command, in `gated --help` order, and the module of gated.cli that adds its parser.
COMMANDS = {
    "run": "run",
    "check-config": "run",
    "demo": "demo",
    "holds": "holds",
    "ocr": "ocr",
    "preadvice": "preadvice",
    "credentials": "credentials",
    "query": "query",
    "audit": "audit",
    "users": "users",
    "bench": "bench",
}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = _parser(_command(words)).parse_args(words)
    os.umask(0o027)  # the database, evidence and outbox are not for other local accounts
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # a library that called basicConfig() at import (python-escpos does) set WARNING
    )
    # pymodbus logs every server start and client retry at INFO; ours says what matters.
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    # Alembic says which migration it runs at INFO, before every database command's answer.
    if args.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if hasattr(args, "func"):  # the holds sub-commands
            return int(args.func(args, open_database(args)))
        return int(args.handler(args))
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    except GatedError as error:
        print(f"gated: {error}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EX_INTERRUPTED


def _command(words: Sequence[str]) -> str | None:
    """The command ``words`` name: the first word that is neither an option of ``gated`` itself
    nor the value of ``--log-level`` (which argparse also accepts abbreviated)."""
    rest = iter(words)
    for word in rest:
        if len(word) > 2 and "--log-level".startswith(word):
            next(rest, None)
        elif not word.startswith("-"):
            return word
    return None


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gated",
        description="Port gate automation: device drivers, normalised readings over MQTT, customs "
        "hold checks and gate decisions.",
        **examples(  # type: ignore[arg-type]
            "gated demo --duration 60                     # a whole demo gate, nothing to install",
            "gated check-config --config config/one-lane.toml",
            "gated run --config /etc/gated/gated.toml",
            "gated COMMAND --help                         # each command's options and examples",
        ),
    )
    parser.add_argument("--version", action="version", version=f"gated {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = COMMANDS.get(command or "")
    registered = False
    for name, module in COMMANDS.items():
        if module != chosen:
            commands.add_parser(name, help=HELP[name])
        elif not registered:  # the chosen module adds all of its commands, in this same order
            importlib.import_module(f"gated.cli.{module}").register(commands, database_options())
            registered = True
    return parser
