"""``gated credentials import|status``: the cancelled-card list drivers' credentials are checked against."""

from __future__ import annotations

import argparse
from typing import Any

from gated.cli.common import EX_OK, HELP, open_database
from gated.errors import ConfigError


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    credentials = commands.add_parser("credentials", help=HELP["credentials"])
    credential_commands = credentials.add_subparsers(
        dest="credentials_command", metavar="COMMAND", required=True
    )
    cr_import = credential_commands.add_parser(
        "import",
        parents=[database],
        help="replace the cancelled-card list (one card id per line, or CSV card_id,reason)",
    )
    cr_import.add_argument("file", metavar="FILE")
    cr_import.add_argument(
        "--list-date", default=None, help="the list's date (RFC 3339) unless the file has '# list-date:'"
    )
    cr_import.add_argument(
        "--allow-empty",
        action="store_true",
        help="import a list with no cards (refused by default: a truncated file would accept every card)",
    )
    cr_import.add_argument(
        "--allow-shrink",
        action="store_true",
        help="import a list with fewer than half the cards of the current one (if that has 10 or more)",
    )
    cr_import.add_argument(
        "--allow-old",
        action="store_true",
        help="import a list dated before the current list or more than 7 days ago",
    )
    cr_import.set_defaults(handler=_credentials_import)
    cr_status = credential_commands.add_parser("status", parents=[database], help="the list's date and size")
    cr_status.set_defaults(handler=_credentials_status)


def _credentials_import(args: argparse.Namespace) -> int:
    from datetime import datetime

    from gated.credentials import CancelledCardList

    list_date = None
    if args.list_date:
        try:
            list_date = datetime.fromisoformat(args.list_date.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError([f"--list-date: {args.list_date!r} is not an RFC 3339 time"]) from None
    cards = CancelledCardList(open_database(args))
    # Read only for the message: the import checks against the list in its own transaction.
    before = cards.state()
    state = cards.import_file(
        args.file,
        list_date=list_date,
        allow_empty=args.allow_empty,
        allow_shrink=args.allow_shrink,
        allow_old=args.allow_old,
    )
    was = "no list before" if before is None else f"was {before.count}"
    print(f"{args.file}: {state.count} cancelled cards, list of {state.list_date.isoformat()} ({was})")
    return EX_OK


def _credentials_status(args: argparse.Namespace) -> int:
    from gated.credentials import CancelledCardList

    state = CancelledCardList(open_database(args)).state()
    if state is None:
        print("no cancelled-card list imported: every credential is refused")
        return EX_OK
    listed, imported = state.list_date.isoformat(), state.imported_at.isoformat()
    print(f"{state.count} cancelled cards, list of {listed}, imported {imported}")
    return EX_OK
