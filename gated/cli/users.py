"""``gated users add|passwd|unlock|list``: the console's accounts (``gated.users``).

A password is never an argument (it would show in ``ps`` and the shell's history): it is asked
twice at the terminal, or read from ``--password-file`` (one line) for scripts."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from gated.cli.common import EX_OK, HELP, examples, open_database


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    group = commands.add_parser("users", help=HELP["users"])
    actions = group.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    password = argparse.ArgumentParser(add_help=False)
    password.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from FILE (default: ask at the terminal, twice)",
    )
    add = actions.add_parser(
        "add",
        parents=[database, password],
        help="add an account",
        **examples(
            "gated users add alice --role operator --config /etc/gated/gated.toml",
            "gated users add bob --role supervisor --db gated.db --password-file bob.pw",
        ),
    )
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "supervisor", "admin"])
    add.set_defaults(handler=_add)
    passwd = actions.add_parser(
        "passwd",
        parents=[database, password],
        help="set an account's password",
        **examples("gated users passwd alice --config /etc/gated/gated.toml"),
    )
    passwd.add_argument("username")
    passwd.set_defaults(handler=_passwd)
    unlock = actions.add_parser(
        "unlock",
        parents=[database],
        help="unlock an account locked by failed logins",
        **examples("gated users unlock alice --config /etc/gated/gated.toml"),
    )
    unlock.add_argument("username")
    unlock.set_defaults(handler=_unlock)
    listing = actions.add_parser(
        "list",
        parents=[database],
        help="every account: role, locked or not, recent failed logins",
        **examples("gated users list --db gated.db --json"),
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list, read_only=True)


def _accounts(args: argparse.Namespace) -> Any:
    from gated.users import Accounts

    return Accounts(open_database(args))


def _password(args: argparse.Namespace) -> str:
    from gated.errors import AccountError
    from gated.settings import read_password_file
    from gated.users import check_password

    if args.password_file:
        return check_password(read_password_file(args.password_file, "--password-file"))
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask the password at: give --password-file FILE")
    first = check_password(getpass.getpass("New password: "))
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ: nothing changed")
    return first


def _actor() -> str:
    from gated.holds_cli import operator

    return operator()


def _add(args: argparse.Namespace) -> int:
    from gated.users import Role

    account = _accounts(args).add(args.username, Role(args.role), _password(args), actor=_actor())
    print(f"added {account.username} ({account.role})")
    return EX_OK


def _passwd(args: argparse.Namespace) -> int:
    _accounts(args).passwd(args.username, _password(args), actor=_actor())
    print(f"password of {args.username} changed")
    return EX_OK


def _unlock(args: argparse.Namespace) -> int:
    from gated.users import Accounts

    accounts: Accounts = _accounts(args)
    before = accounts.get(args.username)
    accounts.unlock(args.username, actor=_actor())
    was = before is not None and before.locked(accounts.clock.now())
    print(f"{args.username} unlocked" if was else f"{args.username} was not locked (failed logins cleared)")
    return EX_OK


def _list(args: argparse.Namespace) -> int:
    from gated.users import Accounts

    accounts: Accounts = _accounts(args)
    now = accounts.clock.now()
    found = accounts.list()
    if args.json:
        print(json.dumps([account.to_json(now) for account in found], indent=2))
        return EX_OK
    if not found:
        print("no accounts (gated users add NAME --role ROLE)")
        return EX_OK
    for account in found:
        info = account.to_json(now)
        state = f"locked until {info['locked_until']}" if info["locked"] else "active"
        failures = f"{account.recent_failures} recent failed logins"
        print(f"{account.username:<24} {account.role:<10} {state}, {failures}")
    return EX_OK
