"""Argument types shared by ``gated`` and ``gated-sim``: a bad value is a usage error (exit 2)
that names the option, instead of a traceback from deep inside a server."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: let the system pick a free one)."""
    return _integer(text, 0, 65535, "a TCP port")


def int_range(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type for an integer from ``low`` to ``high``; ``what`` names it in the error."""

    def parse(text: str) -> int:
        return _integer(text, low, high, what)

    parse.__name__ = what
    return parse


def _integer(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is not {what} ({low}-{high})")
    return value


def output_folder(text: str) -> Path:
    """A folder to write into: one that exists, or one to be made (with its parents). Refused when
    it, or the nearest existing folder above it, is a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    above = _nearest_existing(path)
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{above} is not a folder")
    return path


def output_file(text: str) -> Path:
    """A file to write: not a folder, and in a folder that exists (nothing is made on the way).
    Whether an existing file may be replaced is the command's call."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")
