"""A driver credential (TWIC-style) card reader with a serial output, on a pty, a tty path or TCP.

It speaks the reader's side of the protocol, written from its description::

    STX <payload> ETX <LRC>

with STX 0x02, ETX 0x03 and LRC one byte, the XOR of every payload byte. The payload is ASCII:

    CARD,<card id>,<expiry YYYYMMDD>,<OK|FAIL>   a card presented (id: 8-32 hex digits, printed
                                                 in upper case; OK when the card passed the
                                                 reader's authentication challenge)
    HB                                           heartbeat, every ``heartbeat_interval`` s

``present_card`` sends a card (optionally a few times in a row, as a reader does while a card is
left on it); ``send_raw`` sends any bytes, for fault injection.

It is reached like a real one, on its own pty, an existing tty path or TCP (``simulators.serial_line``).
"""

from __future__ import annotations

import argparse
import re
from datetime import date, timedelta

from simulators.serial_line import SerialLineSimulator, add_line_options, serve_cli

STX = b"\x02"
ETX = b"\x03"
DEFAULT_CARDS = ("4F2A19C0D3E7B85A1122334455667788", "D1A2B3C4E5F60718", "0123456789ABCDEF0123")
_CARD_ID = re.compile(r"[0-9A-Fa-f]{8,32}")


def lrc(payload: bytes) -> int:
    """XOR of every payload byte."""
    value = 0
    for byte in payload:
        value ^= byte
    return value


def frame(payload: str) -> bytes:
    """One complete frame: STX payload ETX LRC."""
    raw = payload.encode("ascii")
    return STX + raw + ETX + bytes([lrc(raw)])


def check_card_id(card_id: str) -> str:
    """The card id in upper case; ``ValueError`` unless it is 8-32 hex digits."""
    if not isinstance(card_id, str) or not _CARD_ID.fullmatch(card_id):
        raise ValueError(f"card id {card_id!r} must be 8-32 hex digits")
    return card_id.upper()


def card_frame(card_id: str, expires: date, authenticated: bool = True) -> bytes:
    """The frame a reader sends for one card."""
    if not isinstance(expires, date):
        raise ValueError(f"expiry {expires!r} must be a date")
    outcome = "OK" if authenticated else "FAIL"
    expiry = f"{expires.year:04d}{expires.month:02d}{expires.day:02d}"  # strftime does not pad years < 1000
    return frame(f"CARD,{check_card_id(card_id)},{expiry},{outcome}")


def heartbeat_frame() -> bytes:
    return frame("HB")


class SerialCredentialSimulator(SerialLineSimulator):
    """One card reader; ``SerialLineSimulator`` says where it listens and when it sends heartbeats."""

    name = "credential-serial"
    heartbeat = heartbeat_frame()

    def present_card(
        self, card_id: str, expires: date, authenticated: bool = True, *, repeats: int = 1
    ) -> None:
        """A card held to the reader: its frame ``repeats`` times back to back."""
        if repeats < 1:
            raise ValueError(f"repeats {repeats} must be at least 1")
        frame = card_frame(card_id, expires, authenticated)
        for _ in range(repeats):
            self._send(frame)


# The gated-sim command


def _card_list(text: str) -> list[tuple[str, date, bool]]:
    """``ID[:YYYY-MM-DD[:fail]],...``; a card without a date expires a year from today."""
    cards: list[tuple[str, date, bool]] = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if not parts[0]:
            continue
        try:
            if len(parts) > 3 or (len(parts) == 3 and parts[2].lower() not in ("ok", "fail")):
                raise ValueError(f"{item.strip()!r}: expected ID[:YYYY-MM-DD[:ok|fail]]")
            card_id = check_card_id(parts[0])
            expires = date.fromisoformat(parts[1]) if len(parts) > 1 else date.today() + timedelta(days=365)
            authenticated = len(parts) < 3 or parts[2].lower() == "ok"
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
        cards.append((card_id, expires, authenticated))
    return cards


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gated-sim credential-serial``."""
    parser = subparsers.add_parser(
        "credential-serial",
        help="a driver credential (TWIC-style) card reader with serial output, on a pty or TCP",
        description="Present driver cards in turn, with heartbeats, on a pty or a TCP port.",
    )
    add_line_options(parser)
    parser.add_argument(
        "--cards",
        metavar="ID[:YYYY-MM-DD[:ok|fail]],...",
        type=_card_list,
        default=_card_list(",".join(DEFAULT_CARDS)),
        help="cards to present in turn (hex id; expiry defaults to a year from today)",
    )
    parser.add_argument("--interval", metavar="SECONDS", type=float, default=10.0, help="between cards")
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run until ``--duration`` has passed or Ctrl-C."""
    cards: list[tuple[str, date, bool]] = args.cards
    if not cards:
        print("credential-serial: --cards is empty")
        return 2
    simulator = SerialCredentialSimulator(tcp_port=args.tcp_port)
    return serve_cli(simulator, args, lambda turn: simulator.present_card(*cards[turn % len(cards)]))
