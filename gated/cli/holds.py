"""``gated holds ...``: the sub-commands live in ``gated.holds_cli`` (and ``gated.holds_send`` for
customs' ``keygen`` and ``send``), imported only when ``gated holds`` runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    from gated import holds_cli

    holds_cli.register(commands, parents=[database])
