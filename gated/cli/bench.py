"""``gated bench NAME``: one benchmark (CONTRACT section 6); ``gated.bench`` loads only that one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
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
            "gated bench holds --rows 20000              # a million holds by default",
            "gated bench lanes --max-lanes 4 --seconds 60 # lanes sustained with real OCR",
            "make bench                                  # every benchmark",
        ),
    )
    bench.add_argument("name", choices=BENCHES, help="which benchmark")
    bench.add_argument("--quick", action="store_true", help="a short run (for smoke tests)")
    bench.add_argument(
        "--rows", type=_rows, metavar="N", help="holds: how many holds to import (default 1,000,000)"
    )
    lanes = "lanes: "
    bench.add_argument(
        "--max-lanes", type=_positive(int), metavar="N", help=lanes + "most lanes (default 12)"
    )
    bench.add_argument(
        "--seconds", type=_positive(float), metavar="S", help=lanes + "measured seconds per step (default 90)"
    )
    bench.add_argument(
        "--p99-bound", type=_positive(float), metavar="S", help=lanes + "decision p99 bound (default 5 s)"
    )
    bench.add_argument(
        "--headway",
        type=float,
        metavar="S",
        help=lanes + "seconds between trucks on a lane (default 30; 0: each as soon as the last has left)",
    )
    bench.set_defaults(handler=_bench)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be more than 0")
        return value

    return parse


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

    lane_options = {
        "max_lanes": args.max_lanes,
        "seconds": args.seconds,
        "p99_bound": args.p99_bound,
        "headway": args.headway,
    }
    given = {key: value for key, value in lane_options.items() if value is not None}
    if given and args.name != "lanes":
        raise GatedError("--max-lanes, --seconds, --p99-bound and --headway are for `gated bench lanes`")
    if given:
        from gated.bench.lanes import bench_lanes

        if args.headway is not None and args.headway < 0:
            raise GatedError("--headway must not be negative")
        result = bench_lanes(args.quick, **given)
    elif args.rows is not None:
        if args.name != "holds":
            raise GatedError("--rows is for `gated bench holds`")
        from gated.bench.holds import bench_holds

        result = bench_holds(args.quick, rows=args.rows)
    else:
        result = run_bench(args.name, quick=args.quick)
    print(json.dumps(result))
    return EX_OK
