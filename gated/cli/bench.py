"""``gated bench NAME``: one benchmark (CONTRACT section 6); ``gated.bench`` loads only that one."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gated.bench import BENCHES
from gated.cli.common import EX_OK, HELP, examples


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    bench = commands.add_parser(
        "bench",
        help=HELP["bench"],
        **examples(
            "gated bench policy --quick                  # a short smoke run",
            "gated bench store | tail -1                 # the JSON figures only",
            "make bench                                  # every benchmark",
        ),
    )
    bench.add_argument("name", choices=BENCHES, help="which benchmark")
    bench.add_argument("--quick", action="store_true", help="a short run (for smoke tests)")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from gated.bench import run_bench

    result = run_bench(args.name, quick=args.quick)
    print(json.dumps(result))
    return EX_OK
