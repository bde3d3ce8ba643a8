"""A fixed UHF RFID reader with an NMEA-style serial output, on a pty, a tty path or TCP.

It speaks the reader's side of the protocol, written from its description::

    $TAG,<epc hex>,<antenna 1-8>,<rssi dBm>*<XX>\\r\\n   a tag read (EPC printed in upper case)
    $HBT*<XX>\\r\\n                                     heartbeat, every ``heartbeat_interval`` s

where ``XX`` is the two-hex-digit XOR of the bytes between ``$`` and ``*``. ``present_tag`` sends a
tag a few times in a row, as a reader does while a truck stands in its field; ``send_raw`` sends
any bytes, for fault injection.

It is reached like a real one, on its own pty, an existing tty path or TCP (``simulators.serial_line``).
"""

from __future__ import annotations

import argparse
import re

from simulators.serial_line import SerialLineSimulator, add_line_options, serve_cli

DEFAULT_TAGS = ("E2801160600002084C6F1D12", "E28011606000020A3B19C4F7", "3034257BF7194E4000001A85")
_EPC = re.compile(r"[0-9A-Fa-f]+")


def checksum(body: bytes) -> int:
    """XOR of every byte of ``body`` (the bytes between ``$`` and ``*``)."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def sentence(body: str) -> bytes:
    """One complete line: ``$`` body ``*`` checksum CR LF."""
    raw = body.encode("ascii")
    return b"$" + raw + b"*" + f"{checksum(raw):02X}".encode("ascii") + b"\r\n"


def check_epc(epc: str) -> str:
    """The EPC in upper case; ``ValueError`` unless it is 8-62 hex digits, an even number."""
    if not _EPC.fullmatch(epc) or not 8 <= len(epc) <= 62 or len(epc) % 2:
        raise ValueError(f"EPC {epc!r} must be 8-62 hex digits, an even number of them")
    return epc.upper()


def tag_frame(epc: str, antenna: int = 1, rssi: int = -55) -> bytes:
    """The line a reader prints for one read of tag ``epc``."""
    if not 1 <= antenna <= 8:
        raise ValueError(f"antenna {antenna} is outside 1..8")
    if not -128 <= rssi <= 127:
        raise ValueError(f"rssi {rssi} is outside -128..127")
    return sentence(f"TAG,{check_epc(epc)},{antenna},{rssi}")


def heartbeat_frame() -> bytes:
    return sentence("HBT")


class SerialRfidSimulator(SerialLineSimulator):
    """One reader; ``SerialLineSimulator`` says where it listens and when it sends heartbeats."""

    name = "rfid-serial"
    heartbeat = heartbeat_frame()

    def present_tag(self, epc: str, antenna: int = 1, rssi: int = -55, repeats: int = 3) -> None:
        """A tag in the field: its frame ``repeats`` times back to back."""
        if repeats < 1:
            raise ValueError(f"repeats {repeats} must be at least 1")
        frame = tag_frame(epc, antenna, rssi)
        for _ in range(repeats):
            self._send(frame)


# The gated-sim command


def _tag_list(text: str) -> list[str]:
    try:
        return [check_epc(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gated-sim rfid-serial``."""
    parser = subparsers.add_parser(
        "rfid-serial",
        help="an RFID reader with NMEA-style serial output, on a pty or TCP",
        description="Present truck tags in turn, with heartbeats, on a pty or a TCP port.",
    )
    add_line_options(parser)
    parser.add_argument(
        "--tags",
        metavar="EPC[,EPC...]",
        type=_tag_list,
        default=list(DEFAULT_TAGS),
        help="tags to present in turn (hex)",
    )
    parser.add_argument("--interval", metavar="SECONDS", type=float, default=10.0, help="between tags")
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run until ``--duration`` has passed or Ctrl-C."""
    tags: list[str] = args.tags
    if not tags:
        print("rfid-serial: --tags is empty")
        return 2
    simulator = SerialRfidSimulator(tcp_port=args.tcp_port)
    return serve_cli(simulator, args, lambda turn: simulator.present_tag(tags[turn % len(tags)]))
