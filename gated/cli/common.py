"""What the command groups share: exit codes, the one-line help of each command, the database options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gated.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78
EX_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped with Ctrl-C

# Shown by `gated --help` without importing the module that runs the command.
HELP = {
    "run": "run the gate daemon",
    "check-config": "validate a config (exit 78 with one line per problem)",
    "demo": "a whole demo gate: embedded broker, simulators, daemon, scripted trucks",
    "holds": "the customs hold list: import, add, release, list, check",
    "ocr": "read container numbers from image files (or folders of images)",
    "preadvice": "which containers each truck tag is announced to carry (import, list)",
    "credentials": "the cancelled-card list drivers' credentials are checked against",
    "query": "everything known about one container number",
    "audit": "check the audit trail's hash chain (verify)",
    "users": "the console's accounts: add, passwd, unlock, list",
    "bench": "run a benchmark; the last stdout line is JSON",
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with an ``examples:`` epilog kept line by line instead of re-wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*lines: str) -> dict[str, object]:
    """``add_parser``/``ArgumentParser`` keywords for an epilog of example command lines."""
    text = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    return {"epilog": text, "formatter_class": HelpFormatter}


def database_options() -> argparse.ArgumentParser:
    """``--config PATH`` or ``--db PATH_OR_URL``, for the commands that read the database."""
    database = argparse.ArgumentParser(add_help=False)
    source = database.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="PATH", help="take the database from this config")
    source.add_argument("--db", metavar="PATH_OR_URL", help="SQLite file or SQLAlchemy URL")
    return database


def open_database(args: argparse.Namespace) -> Engine:
    """The database ``--db`` or ``--config`` names. A command that only reads (``read_only`` set
    in its defaults) refuses a SQLite file that does not exist instead of creating it."""
    from gated.config import load_config
    from gated.db import open_engine

    must_exist = bool(getattr(args, "read_only", False))
    if getattr(args, "db", None):
        return open_engine(args.db, must_exist=must_exist)
    if getattr(args, "config", None):
        storage = load_config(args.config).storage
        return open_engine(
            storage.database, password_file=storage.database_password_file, must_exist=must_exist
        )
    raise ConfigError(["give the database with --db PATH or --config PATH"])
