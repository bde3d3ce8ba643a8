"""``gated bench NAME``: one benchmark (CONTRACT section 6); ``gated.bench`` loads only that one."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gated.bench import BENCHES
from gated.cli.common import EX_OK, HELP, examples
from gated.errors import GatedError


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    bench = commands.add_parser(
        "bench",
        help=HELP["bench"],
        **examples(
            "gated bench policy --quick                  # a short smoke run",
            "gated bench store | tail -1                 # the JSON figures only",
            "gated bench holds --rows 20000              # a million holds by default",
            "make bench                                  # every benchmark",
        ),
    )
    bench.add_argument("name", choices=BENCHES, help="which benchmark")
    bench.add_argument("--quick", action="store_true", help="a short run (for smoke tests)")
    bench.add_argument(
        "--rows", type=_rows, metavar="N", help="holds: how many holds to import (default 1,000,000)"
    )
    bench.set_defaults(handler=_bench)


def _rows(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1 row")
    return value


def _bench(args: argparse.Namespace) -> int:
    from gated.bench import run_bench

    if args.rows is not None:
        if args.name != "holds":
            raise GatedError("--rows is for `gated bench holds`")
        from gated.bench.holds import bench_holds

        result = bench_holds(args.quick, rows=args.rows)
    else:
        result = run_bench(args.name, quick=args.quick)
    print(json.dumps(result))
    return EX_OK
