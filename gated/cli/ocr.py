"""``gated ocr IMAGE ...``: the command lives in ``ocr.cli``, which loads OpenCV, so it is imported
only when ``gated ocr`` runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, database: argparse.ArgumentParser) -> None:
    from ocr import cli

    cli.register(commands)
