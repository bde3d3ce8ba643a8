"""``gated preadvice import|list``: which containers each truck tag is announced to carry."""

from __future__ import annotations

import argparse
from typing import Any

from gated.cli.common import EX_OK, HELP, open_database


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    preadvice = commands.add_parser("preadvice", help=HELP["preadvice"])
    preadvice_commands = preadvice.add_subparsers(dest="preadvice_command", metavar="COMMAND", required=True)
    pa_import = preadvice_commands.add_parser(
        "import", parents=[database], help="import pre-advice (CSV: tag,container[,truck]; or JSON lines)"
    )
    pa_import.add_argument("file", metavar="FILE")
    pa_import.add_argument("--replace", action="store_true", help="drop the old pre-advice first")
    pa_import.set_defaults(handler=_preadvice_import)
    pa_list = preadvice_commands.add_parser("list", parents=[database], help="list the pre-advice")
    pa_list.set_defaults(handler=_preadvice_list)


def _preadvice_import(args: argparse.Namespace) -> int:
    from gated.preadvice import PreadviceStore

    added = PreadviceStore(open_database(args)).import_file(args.file, replace=args.replace)
    print(f"{args.file}: {added} pre-advice lines added")
    return EX_OK


def _preadvice_list(args: argparse.Namespace) -> int:
    from gated.preadvice import PreadviceStore

    for row in PreadviceStore(open_database(args)).all():
        print(f"{row.tag}\t{row.container}\t{row.truck or ''}")
    return EX_OK
