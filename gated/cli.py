"""The ``gated`` command line (CONTRACT section 2).

Exit codes: 0 ok, 1 runtime failure, 2 usage error (argparse), 78 configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gated import __version__
from gated.errors import ConfigError, GatedError

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78

log = logging.getLogger("gated")


def _parser() -> argparse.ArgumentParser:
    from gated import holds_cli
    from ocr import cli as ocr_cli

    parser = argparse.ArgumentParser(
        prog="gated",
        description="Port gate automation: device drivers, normalised readings over MQTT, customs "
        "hold checks and gate decisions.",
    )
    parser.add_argument("--version", action="version", version=f"gated {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the gate daemon")
    run.add_argument("--config", required=True, metavar="PATH")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a config (exit 78 with one line per problem)")
    check.add_argument("--config", required=True, metavar="PATH")
    check.set_defaults(handler=_check_config)

    demo = commands.add_parser(
        "demo", help="a whole demo gate: embedded broker, simulators, daemon, scripted trucks"
    )
    demo.add_argument("--lanes", type=int, default=2, help="number of lanes (default 2)")
    demo.add_argument("--duration", type=float, default=None, help="stop after SECONDS and exit 0")
    demo.add_argument("--mqtt-port", type=int, default=1883, help="embedded broker port (default 1883)")
    demo.add_argument("--broker", default=None, metavar="URL", help="use mqtt://host:port instead")
    demo.add_argument(
        "--console-port", type=int, default=None, help="(the operator console is not built yet)"
    )
    demo.add_argument("--data-dir", default=None, help="where the demo keeps its database (default: temp)")
    demo.set_defaults(handler=_demo)

    database = argparse.ArgumentParser(add_help=False)
    source = database.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="PATH", help="take the database from this config")
    source.add_argument("--db", metavar="PATH_OR_URL", help="SQLite file or SQLAlchemy URL")

    holds_cli.register(commands, parents=[database])
    ocr_cli.register(commands)

    preadvice = commands.add_parser(
        "preadvice", help="which containers each truck tag is announced to carry (import, list)"
    )
    preadvice_commands = preadvice.add_subparsers(dest="preadvice_command", metavar="COMMAND", required=True)
    pa_import = preadvice_commands.add_parser(
        "import", parents=[database], help="import pre-advice (CSV: tag,container[,truck]; or JSON lines)"
    )
    pa_import.add_argument("file", metavar="FILE")
    pa_import.add_argument("--replace", action="store_true", help="drop the old pre-advice first")
    pa_import.set_defaults(handler=_preadvice_import)
    pa_list = preadvice_commands.add_parser("list", parents=[database], help="list the pre-advice")
    pa_list.set_defaults(handler=_preadvice_list)

    credentials = commands.add_parser(
        "credentials", help="the cancelled-card list drivers' credentials are checked against"
    )
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

    query = commands.add_parser(
        "query", parents=[database], help="everything known about one container number"
    )
    query.add_argument("container")
    query.add_argument("--json", action="store_true")
    query.set_defaults(handler=_query)

    bench = commands.add_parser("bench", help="run a benchmark; the last stdout line is JSON")
    bench.add_argument(
        "name", choices=["policy", "store", "pipeline", "rpm", "ocr", "commands"], help="which benchmark"
    )
    bench.add_argument("--quick", action="store_true", help="a short run (for smoke tests)")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.umask(0o027)  # the database, evidence and outbox are not for other local accounts
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymodbus logs every server start and client retry at INFO; ours says what matters.
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if hasattr(args, "func"):  # the holds sub-commands
            return int(args.func(args, _engine(args)))
        return int(args.handler(args))
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    except GatedError as error:
        print(f"gated: {error}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_FAILURE


def _engine(args: argparse.Namespace) -> Any:
    from gated.config import load_config
    from gated.db import open_engine

    if getattr(args, "db", None):
        return open_engine(args.db)
    if getattr(args, "config", None):
        storage = load_config(args.config).storage
        return open_engine(storage.database, password_file=storage.database_password_file)
    raise ConfigError(["give the database with --db PATH or --config PATH"])


def _run(args: argparse.Namespace) -> int:
    from gated.config import load_config
    from gated.daemon import Daemon

    return Daemon(load_config(args.config)).run_forever()


def _check_config(args: argparse.Namespace) -> int:
    from gated.config import load_config
    from gated.devices import check_devices
    from gated.mqtt_link import check_broker_link

    config = load_config(args.config)
    problems = check_devices([(lane.id, device) for lane in config.lanes for device in lane.devices])
    problems += [f"{args.config}: {problem}" for problem in check_broker_link(config.mqtt)]
    if problems:
        raise ConfigError(problems)
    devices = sum(len(lane.devices) for lane in config.lanes)
    print(f"{args.config}: valid ({len(config.lanes)} lanes, {devices} devices)")
    return EX_OK


def _demo(args: argparse.Namespace) -> int:
    from simulators.demo import run_demo

    return run_demo(
        lanes=args.lanes,
        duration=args.duration,
        mqtt_port=args.mqtt_port,
        broker=args.broker,
        data_dir=args.data_dir,
    )


def _query(args: argparse.Namespace) -> int:
    from gated.query import query_container, render_text

    report = query_container(_engine(args), args.container)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return EX_OK


def _bench(args: argparse.Namespace) -> int:
    from gated.bench import run_bench

    result = run_bench(args.name, quick=args.quick)
    print(json.dumps(result))
    return EX_OK


def _preadvice_import(args: argparse.Namespace) -> int:
    from gated.preadvice import PreadviceStore

    added = PreadviceStore(_engine(args)).import_file(args.file, replace=args.replace)
    print(f"{args.file}: {added} pre-advice lines added")
    return EX_OK


def _preadvice_list(args: argparse.Namespace) -> int:
    from gated.preadvice import PreadviceStore

    for row in PreadviceStore(_engine(args)).all():
        print(f"{row.tag}\t{row.container}\t{row.truck or ''}")
    return EX_OK


def _credentials_import(args: argparse.Namespace) -> int:
    from datetime import datetime

    from gated.credentials import CancelledCardList

    list_date = None
    if args.list_date:
        try:
            list_date = datetime.fromisoformat(args.list_date.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError([f"--list-date: {args.list_date!r} is not an RFC 3339 time"]) from None
    cards = CancelledCardList(_engine(args))
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

    state = CancelledCardList(_engine(args)).state()
    if state is None:
        print("no cancelled-card list imported: every credential is refused")
        return EX_OK
    listed, imported = state.list_date.isoformat(), state.imported_at.isoformat()
    print(f"{state.count} cancelled cards, list of {listed}, imported {imported}")
    return EX_OK
