"""``gated audit verify``: check the audit trail's hash chain (``gated.audit``)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from gated.cli.common import EX_FAILURE, EX_OK, HELP, examples, open_database

_ANCHOR = re.compile(r"(?P<seq>[0-9]{1,18}):(?P<hash>[0-9a-f]{64})")


def anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as the daemon publishes the head (``seq`` and ``hash`` of its audit message)."""
    found = _ANCHOR.fullmatch(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SEQ:HASH (a record number, a colon, 64 hex digits)"
        )
    return int(found["seq"]), found["hash"]


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    group = commands.add_parser("audit", help=HELP["audit"])
    actions = group.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        parents=[database],
        help="check the hash chain: exit 0 when intact, 1 naming the first record changed",
        **examples(
            "gated audit verify --config /etc/gated/gated.toml",
            "gated audit verify --db /var/lib/gated/gated.db --json",
            "gated audit verify --db gated.db --anchor 1042:5f0c...e9 (a head published on MQTT)",
        ),
    )
    verify.add_argument(
        "--anchor",
        type=anchor,
        metavar="SEQ:HASH",
        help="a head kept outside the database (the daemon publishes it on MQTT): the chain must hold it",
    )
    verify.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    verify.set_defaults(handler=_verify, read_only=True)


def _verify(args: argparse.Namespace) -> int:
    from gated.audit import verify

    engine = open_database(args)
    try:
        with engine.connect() as connection:
            verdict = verify(connection, args.anchor)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(verdict.to_json()))
    elif verdict.problem is None:
        print(f"audit trail intact: {verdict.records} records, head {verdict.head_seq}:{verdict.head_hash}")
    else:
        print(f"audit trail broken at {verdict.problem}")
    return EX_OK if verdict.intact else EX_FAILURE
