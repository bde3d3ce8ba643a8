"""``gated demo``: a whole gate on this machine (CONTRACT section 3)."""

from __future__ import annotations

import argparse
from typing import Any

from gated.cli.argtypes import output_folder, port
from gated.cli.common import HELP, examples


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo",
        help=HELP["demo"],
        **examples(
            "gated demo                                  # two lanes until Ctrl-C",
            "gated demo --lanes 3 --duration 120 --data-dir /tmp/demo",
            "gated demo --broker mqtt://127.0.0.1:1883   # your own broker instead of the embedded one",
        ),
    )
    demo.add_argument("--lanes", type=int, default=2, help="number of lanes (default 2)")
    demo.add_argument("--duration", type=float, default=None, help="stop after SECONDS and exit 0")
    demo.add_argument("--mqtt-port", type=port, default=1883, help="embedded broker port (default 1883)")
    demo.add_argument("--broker", default=None, metavar="URL", help="use mqtt://host:port instead")
    demo.add_argument(
        "--console-port",
        type=port,
        default=8080,
        help="the operator console's port on 127.0.0.1 (default 8080; 0: any free port)",
    )
    demo.add_argument(
        "--data-dir",
        type=output_folder,
        default=None,
        help="where the demo keeps its database (default: temp)",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gated.broker import require_amqtt

    if args.broker is None:
        require_amqtt()  # before the simulators start: amqtt is an extra, not a dependency
    from simulators.demo import run_demo

    return run_demo(
        lanes=args.lanes,
        duration=args.duration,
        mqtt_port=args.mqtt_port,
        broker=args.broker,
        data_dir=None if args.data_dir is None else str(args.data_dir),
        console_port=args.console_port,
    )
