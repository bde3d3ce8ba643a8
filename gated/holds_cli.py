"""``gated holds ...``: import, place, release, list and check customs holds from the command line.

Each sub-command's ``func(args, engine)`` returns the exit code: 0 ok, 1 when the hold list refused
the request or the database failed (one line on stderr saying why), and for ``check`` 3 when the
container is held (``EX_HELD``). argparse exits 2 on usage errors.
Every change is audited with the operator (the OS user, or the one behind sudo) and a reason.
``keygen`` and ``send`` are customs' side (``gated.holds_send``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine

from gated import holds_send
from gated.cli.common import examples
from gated.clock import rfc3339
from gated.errors import ContainerNumberError, HoldListError, StorageError
from gated.holds import MAX_ACTOR, HoldRecord, HoldStore, ImportKind, normalise_container
from gated.iso6346 import ContainerNumber
from gated.redact import printable

Handler = Callable[[argparse.Namespace, Engine], int]

EX_HELD = 3
"""``gated holds check``: the container is held (an active hold on it or on a B/L it carries)."""


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``holds`` and its sub-commands to the ``gated`` parser's subparsers. ``parents`` (e.g.
    the ``--db``/``--config`` options) are added to every sub-command."""
    inherited = list(parents)
    holds = subparsers.add_parser(
        "holds",
        help="the customs hold list: import, add, release, list, check",
        description="The customs hold list. A container may leave only with no active hold on it "
        "or on any bill of lading it carries.",
        **examples(
            "gated holds import cbp-holds.csv --replace --reason 'CBP daily list' --config gate.toml",
            "gated holds check MSKU4135329 --config gate.toml",
            "gated holds COMMAND --help",
        ),
    )
    commands = holds.add_subparsers(dest="holds_command", metavar="COMMAND", required=True)

    imp = commands.add_parser(
        "import",
        parents=inherited,
        help="import a hold list or a manifest (CSV with a header, or JSON lines)",
        description="Import a file as one transaction: any bad line rejects the whole file. "
        "Hold files have the columns container, bill_of_lading, agency, hold_type, code, reference, "
        "note and action (place or release); manifests have only container and bill_of_lading.",
        **examples(
            "gated holds import cbp-holds.csv --replace --reason 'CBP daily list' --config gate.toml",
            "gated holds import manifest.csv --kind manifest --config gate.toml",
            "gated holds import /dev/null --kind holds --allow-empty --reason 'no holds' --db gated.db",
        ),
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--kind", choices=["holds", "manifest"], help="default: told by the columns")
    imp.add_argument("--reason", help="why (kept in the audit trail; default: the file's name)")
    imp.add_argument(
        "--replace",
        action="store_true",
        help="the file is the complete list of active holds: holds it does not name are released",
    )
    imp.add_argument("--list-date", metavar="TIME", help="when the list was true (RFC 3339; default: now)")
    imp.add_argument("--allow-empty", action="store_true", help="accept a hold list without holds")
    imp.add_argument(
        "--allow-shrink", action="store_true", help="accept a full list under half the current size"
    )
    imp.add_argument(
        "--allow-old", action="store_true", help="accept a list older than the current one or a day"
    )
    imp.set_defaults(func=_guarded(_import))

    add = commands.add_parser(
        "add",
        parents=inherited,
        help="place a hold on a container or a bill of lading",
        description="Place a hold. When an identical hold is already active, say so and change nothing.",
        **examples(
            "gated holds add --container MSKU4135329 --agency CBP --type exam --reason call --db gated.db",
            "gated holds add --bl MAEU123456 --agency CBP --type customs --code 1H --reason 1H --db gated.db",
        ),
    )
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--container", metavar="C")
    target.add_argument("--bl", metavar="B", dest="bill_of_lading", help="bill of lading")
    add.add_argument("--agency", required=True, help="e.g. CBP, USDA, LINE")
    add.add_argument("--type", required=True, dest="hold_type", help="e.g. customs, exam, vacis")
    add.add_argument("--code", help="disposition code, e.g. 1H")
    add.add_argument("--reference")
    add.add_argument("--note")
    add.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    add.set_defaults(func=_guarded(_add))

    release = commands.add_parser(
        "release",
        parents=inherited,
        help="release active holds (history is kept)",
        **examples(
            "gated holds release --id 42 --reason 'CBP 1I' --config gate.toml",
            "gated holds release --container MSKU4135329 --agency CBP --code 1I --reason 1I --db gated.db",
        ),
    )
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, dest="hold_id", metavar="N", help="one hold by its id")
    which.add_argument("--container", metavar="C", help="every active hold placed on the container")
    which.add_argument("--bl", metavar="B", dest="bill_of_lading", help="every active hold on the B/L")
    agency = release.add_mutually_exclusive_group()
    agency.add_argument("--agency", help="only this agency's holds")
    agency.add_argument(
        "--all-agencies", action="store_true", help="every agency's holds on the container or B/L (say so)"
    )
    release.add_argument("--type", dest="hold_type", help="only holds of this type")
    release.add_argument("--code", help="release code, e.g. 1I")
    release.add_argument("--reference")
    release.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    release.set_defaults(func=_guarded(_release))

    show = commands.add_parser(
        "list",
        parents=inherited,
        help="list active holds (with --all, released ones too)",
        description="List holds. Reads only: a database that does not exist is an error.",
        **examples(
            "gated holds list --config gate.toml",
            "gated holds list --all --container MSKU4135329 --db gated.db --json",
        ),
    )
    show.add_argument("--all", action="store_true", help="include released holds")
    show.add_argument("--container", metavar="C")
    show.add_argument("--bl", metavar="B", dest="bill_of_lading")
    show.add_argument("--json", action="store_true", help="one JSON object on stdout")
    show.set_defaults(func=_guarded(_list), read_only=True)

    check = commands.add_parser(
        "check",
        parents=inherited,
        help="is a container free to leave as far as holds go?",
        description="Show the active holds that stop a container, directly or through a bill of "
        "lading it carries. Exit status: 0 clear (no active hold, hold list loaded); 3 held; 1 not "
        "eligible because the hold list has never been loaded, or the check failed.",
        **examples(
            "gated holds check MSKU4135329 --config gate.toml",
            "gated holds check MSKU4135329 --db gated.db --json",
            "gated holds check MSKU4135329 --config gate.toml; [ $? -eq 3 ] && echo held",
        ),
    )
    check.add_argument("container", metavar="CONTAINER")
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.set_defaults(func=_guarded(_check), read_only=True)

    holds_send.register(commands)


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace, engine: Engine) -> int:
        try:
            return handler(args, engine)
        except (HoldListError, ContainerNumberError, StorageError) as error:
            print(f"gated holds {args.holds_command}: {error}", file=sys.stderr)
            return 1

    return run


def operator() -> str:
    """Who runs the command: the OS user, or the one behind sudo."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    behind = os.environ.get("SUDO_USER")
    who = f"{behind} (sudo as {user})" if behind and behind != user else user
    return f"operator:{who}"[:MAX_ACTOR]


def _import(args: argparse.Namespace, engine: Engine) -> int:
    kind: ImportKind | None = args.kind
    list_date = None
    if args.list_date:
        try:
            list_date = datetime.fromisoformat(args.list_date)
        except ValueError:
            raise HoldListError(f"--list-date: {args.list_date!r} is not an RFC 3339 time") from None
        if list_date.tzinfo is None:
            raise HoldListError(f"--list-date: {args.list_date!r} needs its offset (e.g. Z)")
    meter = ProgressLine(sys.stderr)
    with _background():
        result = HoldStore(engine).import_file(
            args.file,
            kind,
            actor=operator(),
            reason=args.reason or f"import of {Path(args.file).name}",
            replace=args.replace,
            list_date=list_date,
            allow_empty=args.allow_empty,
            allow_shrink=args.allow_shrink,
            allow_old=args.allow_old,
            progress=meter,
        )
    meter.done()
    if result.kind == "manifest":
        print(
            f"imported manifest {result.path}: {result.rows} line(s), {result.manifest_added} new; "
            f"hold list version {result.version}"
        )
    else:
        print(
            f"imported holds {result.path}: {result.rows} row(s), {result.placed} placed, "
            f"{result.released} released, {result.unchanged} already active; "
            f"hold list version {result.version}"
        )
    return 0


@contextlib.contextmanager
def _background() -> Iterator[None]:
    """Run at a lower CPU priority (this thread only, Linux): an import is a batch job beside a
    daemon deciding in real time, whose CPU comes first. Put back afterwards where allowed."""
    thread = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(before + 10, 19))
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # lowering it back needs privileges
            os.setpriority(os.PRIO_PROCESS, thread, before)


class ProgressLine:
    """How far an import is, on stderr: one line rewritten in place on a terminal, otherwise a
    plain line every ``every`` seconds (a log stays readable; a short import says nothing)."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def __call__(self, phase: str, rows: int, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        if phase == "apply":
            text = f"{rows:,} rows checked in {elapsed:.1f} s; applying them in one transaction"
        else:
            left = f", about {elapsed * (total - done) / done:.0f} s left" if 0 < done < total else ""
            text = f"{rows:,} rows checked, {rows / elapsed:,.0f} rows/s{left}"
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _add(args: argparse.Namespace, engine: Engine) -> int:
    record, placed = HoldStore(engine).add(
        container=args.container,
        bill_of_lading=args.bill_of_lading,
        agency=args.agency,
        hold_type=args.hold_type,
        code=args.code,
        reference=args.reference,
        note=args.note,
        actor=operator(),
        reason=args.reason,
    )
    print(f"placed {_line(record)}" if placed else f"already active, nothing changed: {_line(record)}")
    return 0


def _release(args: argparse.Namespace, engine: Engine) -> int:
    if args.hold_id is None and args.agency is None and not args.all_agencies:
        raise HoldListError(
            "releasing by container or B/L needs --agency A, or --all-agencies for every agency's holds"
        )
    records = HoldStore(engine).release(
        hold_id=args.hold_id,
        container=args.container,
        bill_of_lading=args.bill_of_lading,
        agency=args.agency,
        hold_type=args.hold_type,
        code=args.code,
        reference=args.reference,
        actor=operator(),
        reason=args.reason,
    )
    for record in records:
        print(f"released {_line(record)}")
    return 0


def _list(args: argparse.Namespace, engine: Engine) -> int:
    store = HoldStore(engine)
    records = store.list_holds(
        active_only=not args.all, container=args.container, bill_of_lading=args.bill_of_lading
    )
    state = store.state()
    if args.json:
        print(json.dumps({"holds": [record.to_json() for record in records], "state": state.to_json()}))
        return 0
    for record in records:
        print(_line(record))
    what = "hold(s)" if args.all else "active hold(s)"
    print(f"{len(records)} {what} shown; hold list version {state.version}, {state.active} active")
    if not state.loaded:
        print("the hold list has never been loaded: nothing may be released automatically")
    return 0


def _check(args: argparse.Namespace, engine: Engine) -> int:
    number = normalise_container(args.container)
    check_digit_valid = ContainerNumber.parse(number, require_valid_check_digit=False).check_digit_valid
    store = HoldStore(engine)
    records = store.active_holds_for(number)
    bills = store.bills_for(number)
    state = store.state()
    eligible = state.loaded and not records
    if args.json:
        report = {
            "container": number,
            "check_digit_valid": check_digit_valid,
            "held": bool(records),
            "eligible": eligible,
            "holds": [record.to_json() for record in records],
            "bills_of_lading": bills,
            "hold_list": state.to_json(),
        }
        print(json.dumps(report))
        return _check_status(bool(records), eligible)
    carried = f" (B/L {', '.join(bills)})" if bills else ""
    if records:
        print(f"{number}{carried}: HELD by {len(records)} active hold(s)")
        for record in records:
            print(f"  {_line(record)}")
    elif not state.loaded:
        print(f"{number}{carried}: no hold found, but the hold list has never been loaded: not eligible")
    else:
        print(f"{number}{carried}: no active hold (hold list version {state.version})")
    if not check_digit_valid:
        print(f"note: {number} does not carry a valid ISO 6346 check digit")
    return _check_status(bool(records), eligible)


def _check_status(held: bool, eligible: bool) -> int:
    """0 clear, 3 held, 1 not held but not eligible (a list never loaded proves nothing)."""
    if held:
        return EX_HELD
    return 0 if eligible else 1


def _line(record: HoldRecord) -> str:
    parts = [f"hold {record.id}:"]
    if record.container:
        parts.append(record.container)
    if record.bill_of_lading:
        parts.append(f"B/L {record.bill_of_lading}")
    parts.append(f"{record.agency} {record.hold_type}")
    if record.code:
        parts.append(record.code)
    if record.reference:
        parts.append(f"ref {record.reference}")
    parts.append(f"placed {rfc3339(record.placed_at)}")
    if record.released_at is not None:
        released = f"released {rfc3339(record.released_at)}"
        if record.release_code:
            released += f" {record.release_code}"
        parts.append(released)
    if record.note:
        parts.append(f"- {record.note}")
    # One hold, one line: a note's line breaks (or any field's) must not fake another hold's line.
    return printable(" ".join(parts), None)
