"""``gated run`` and ``gated check-config``."""

from __future__ import annotations

import argparse
from typing import Any

from gated.cli.common import EX_OK, HELP
from gated.errors import ConfigError


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", help=HELP["run"])
    run.add_argument("--config", required=True, metavar="PATH")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help=HELP["check-config"])
    check.add_argument("--config", required=True, metavar="PATH")
    check.set_defaults(handler=_check_config)


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
