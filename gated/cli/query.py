"""``gated query CONTAINER``: everything known about one container number."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gated.cli.common import EX_OK, HELP, examples, open_database


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    query = commands.add_parser(
        "query",
        parents=[database],
        help=HELP["query"],
        **examples(
            "gated query MSKU4135329 --config /etc/gated/gated.toml",
            "gated query MSKU4135329 --db gated.db --json",
            "gated query MSKU4135329 --db gated.db --evidence /var/lib/gated/evidence",
        ),
    )
    query.add_argument("container")
    query.add_argument("--json", action="store_true")
    query.add_argument(
        "--evidence",
        metavar="DIR",
        default=None,
        help="the evidence folder, to show each crop's file (default: the config's storage.evidence)",
    )
    query.set_defaults(handler=_query, read_only=True)


def _query(args: argparse.Namespace) -> int:
    from gated.query import query_container, render_text

    evidence = args.evidence
    if evidence is None and args.config:
        from gated.config import load_config

        evidence = load_config(args.config).storage.evidence
    root = None if evidence is None else Path(evidence)
    report = query_container(open_database(args), args.container, evidence_root=root)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return EX_OK
