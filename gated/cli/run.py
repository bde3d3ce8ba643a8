"""``gated run`` and ``gated check-config``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from gated.cli.common import EX_OK, HELP, examples
from gated.errors import ConfigError

if TYPE_CHECKING:
    from gated.config import GateConfig


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        help=HELP["run"],
        **examples(
            "gated run --config /etc/gated/gated.toml",
            "gated --log-level DEBUG run --config gate.toml    # every connection and migration",
            "systemctl start gated                             # the same under systemd (systemd/)",
        ),
    )
    run.add_argument("--config", required=True, metavar="PATH")
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check-config",
        help=HELP["check-config"],
        **examples(
            "gated check-config --config config/one-lane.toml",
            "gated check-config --config gate.toml && systemctl restart gated",
        ),
    )
    check.add_argument("--config", required=True, metavar="PATH")
    check.set_defaults(handler=_check_config)


def _run(args: argparse.Namespace) -> int:
    from gated.daemon import Daemon

    # The same refusals as check-config, in the same words, before anything starts.
    return Daemon(_checked_config(args.config)).run_forever()


def _check_config(args: argparse.Namespace) -> int:
    config = _checked_config(args.config)
    devices = sum(len(lane.devices) for lane in config.lanes)
    lanes = len(config.lanes)
    print(f"{args.config}: valid ({_count(lanes, 'lane')}, {_count(devices, 'device')})")
    return EX_OK


def _checked_config(path: str) -> GateConfig:
    """The config at ``path``, or ``ConfigError`` with every problem beyond its schema too."""
    from gated.config import device_problems, load_config
    from gated.mqtt_link import check_broker_link

    config = load_config(path)
    problems = device_problems(config, path)
    problems += [f"{path}: {problem}" for problem in check_broker_link(config.mqtt)]
    if problems:
        raise ConfigError(problems)
    return config


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
