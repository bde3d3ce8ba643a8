"""Driver credential (TWIC-style) card readers that report each card on a serial line.

The reader does the card authentication challenge itself and reports the outcome. The protocol
(8N1, binary framing around an ASCII payload)::

    STX <payload> ETX <LRC>

- ``STX`` is 0x02, ``ETX`` is 0x03, ``LRC`` is one byte: the XOR of every payload byte (not STX,
  not ETX). The LRC may take any value, 0x02 and 0x03 included: the byte after ETX is always the LRC.
- The payload is printable ASCII (0x20-0x7E), one of:

  - ``CARD,<card id>,<expiry>,<auth>`` one card presented:

    - ``<card id>``: 8 to 32 hex digits (a FASC-N or card UUID in hex, either case; gated reports
      it in lower case);
    - ``<expiry>``: the card's expiry date, ``YYYYMMDD``, a real calendar date;
    - ``<auth>``: ``OK`` when the card passed the reader's authentication challenge, ``FAIL`` when
      it did not.

  - ``HB`` heartbeat, once a second.

A frame is at most ``MAX_FRAME`` bytes. Anything else (a wrong LRC, bad or extra fields, an
unknown message, a control or non-ASCII byte in the payload, bytes between frames, a frame cut
short by the next STX, an overlong frame) is a malformed frame: a ``ProtocolError``, counted by the
driver loop and never fatal. Bytes between frames are reported once per run as a malformed
fragment; the frame after them is still read.

A card left on the reader may be reported again and again. The driver reports a read once, then
stays quiet about the same read (same card, expiry and authentication outcome) for as long as it
keeps arriving with gaps shorter than ``repeat_window`` seconds. A different outcome for the same
card (a failed authentication, then a good one) is a new read and is reported. If nothing at all
arrives (not even a heartbeat) for ``silence_timeout`` seconds the reader counts as gone.

Each read becomes a ``Reading`` of kind ``credential``, source ``card``, value
``{"card_id": "<lower-case hex>", "expires": "YYYY-MM-DD", "authenticated": bool}``, quality
``good`` when authenticated and ``bad`` otherwise. Whether the card may pass (expiry, cancelled
list) is decided by ``gated.credentials``, not here.

The driver opens its port with ``serial.serial_for_url``: a tty or pty path, ``socket://host:port``
(a serial device server) or ``loop://``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from drivers.serial_frames import SerialFrameDriver, SerialReaderSettings
from gated.errors import ProtocolError
from gated.model import Kind, Quality, Reading, Source

STX = 0x02
ETX = 0x03
MAX_FRAME = 64
"""Longest frame accepted, in bytes, STX, ETX and LRC included."""


SOURCE = Source.CARD
"""The ``source`` of every reading this driver emits."""

CARD_ID_MIN_DIGITS = 8
CARD_ID_MAX_DIGITS = 32

_CARD_ID = re.compile(rb"[0-9A-Fa-f]+")
_CARD_ID_NORMAL = re.compile(r"[0-9a-f]+")
_EXPIRY = re.compile(rb"[0-9]{8}")
_AUTH = {b"OK": True, b"FAIL": False}
_SHOWN = 48


@dataclass(frozen=True, slots=True)
class CardRead:
    """One card as the reader reported it."""

    card_id: str
    expires: date
    authenticated: bool

    def __post_init__(self) -> None:
        if not (
            isinstance(self.card_id, str)
            and _CARD_ID_NORMAL.fullmatch(self.card_id)
            and CARD_ID_MIN_DIGITS <= len(self.card_id) <= CARD_ID_MAX_DIGITS
        ):
            raise ValueError(f"card id {self.card_id!r} must be 8-32 lower-case hex digits")

    def value(self) -> dict[str, str | bool]:
        """The reading value: what ``gated.credentials.check_card`` takes."""
        return {
            "card_id": self.card_id,
            "expires": self.expires.isoformat(),
            "authenticated": self.authenticated,
        }


def _show(data: bytes) -> str:
    """The offending bytes for an error message, cut short."""
    if len(data) > _SHOWN:
        return f"{data[:_SHOWN]!r}... ({len(data)} bytes)"
    return repr(data)


def _malformed(what: str, frame: bytes) -> ProtocolError:
    return ProtocolError(f"malformed credential frame: {what}: {_show(frame)}")


def lrc(payload: bytes) -> int:
    """XOR of every payload byte."""
    value = 0
    for byte in payload:
        value ^= byte
    return value


def parse_frame(frame: bytes) -> CardRead | None:
    """Decode one frame (STX ... ETX LRC): a ``CardRead``, or ``None`` for a heartbeat.

    Raises ``ProtocolError`` for anything malformed, and no other exception."""
    frame = bytes(frame)
    if not frame:
        raise _malformed("empty frame", frame)
    if frame[0] != STX:
        raise _malformed("does not start with STX", frame)
    if len(frame) > MAX_FRAME:
        raise _malformed(f"frame longer than {MAX_FRAME} bytes", frame)
    if len(frame) < 3 or frame[-2] != ETX:
        raise _malformed("no ETX before the LRC byte", frame)
    payload, given = frame[1:-2], frame[-1]
    if any(byte < 0x20 or byte > 0x7E for byte in payload):
        raise _malformed("control or non-ASCII byte in the payload", frame)
    expected = lrc(payload)
    if given != expected:
        raise _malformed(f"LRC 0x{given:02X} does not match 0x{expected:02X}", frame)
    if not payload:
        raise _malformed("empty payload", frame)
    fields = payload.split(b",")
    if fields == [b"HB"]:
        return None
    if fields[0] != b"CARD":
        raise _malformed("unknown message", frame)
    if len(fields) != 4:
        raise _malformed(f"CARD needs 3 fields, got {len(fields) - 1}", frame)
    card_id, expiry, auth = fields[1], fields[2], fields[3]
    if not _CARD_ID.fullmatch(card_id):
        raise _malformed("card id is not hex", frame)
    if not CARD_ID_MIN_DIGITS <= len(card_id) <= CARD_ID_MAX_DIGITS:
        raise _malformed(f"card id has {len(card_id)} hex digits (8-32)", frame)
    if not _EXPIRY.fullmatch(expiry):
        raise _malformed("expiry is not YYYYMMDD", frame)
    try:
        expires = date(int(expiry[:4]), int(expiry[4:6]), int(expiry[6:]))
    except ValueError:
        raise _malformed("expiry is not a calendar date", frame) from None
    if auth not in _AUTH:
        raise _malformed("auth is not OK or FAIL", frame)
    return CardRead(card_id=card_id.decode("ascii").lower(), expires=expires, authenticated=_AUTH[auth])


class FrameSplitter:
    """Cuts a byte stream into candidate frames, keeping at most ``MAX_FRAME`` bytes buffered.

    ``feed`` returns, in stream order, each complete frame and each run of bytes between frames
    (bytes, for ``parse_frame``, which rejects the latter), and a ``ProtocolError`` for each
    overlong frame or run, which is then dropped up to the next STX. An STX before a frame's ETX
    starts a new frame; what came before it is returned on its own."""

    def __init__(self) -> None:
        self._buffer = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        out: list[bytes | ProtocolError] = []
        buffer = self._buffer + bytes(data)
        while buffer:
            if self._discarding:
                start = buffer.find(STX)
                if start < 0:
                    buffer = b""
                    break
                buffer = buffer[start:]
                self._discarding = False
            if buffer[0] != STX:
                start = buffer.find(STX)
                if start > 0:
                    out.append(buffer[:start])
                    buffer = buffer[start:]
                    continue
                if len(buffer) > MAX_FRAME:
                    out.append(_malformed(f"more than {MAX_FRAME} bytes outside a frame, dropped", buffer))
                    buffer = b""
                    self._discarding = True
                break
            # ETX may sit at most at MAX_FRAME - 2, leaving room for the LRC byte.
            limit = min(len(buffer), MAX_FRAME - 1)
            end = next((i for i in range(1, limit) if buffer[i] in (STX, ETX)), -1)
            if end < 0:
                if len(buffer) >= MAX_FRAME - 1:
                    out.append(_malformed(f"frame longer than {MAX_FRAME} bytes, dropped", buffer))
                    buffer = buffer[1:]
                    self._discarding = True
                    continue
                break
            if buffer[end] == STX:
                out.append(buffer[:end])
                buffer = buffer[end:]
                continue
            if end + 1 >= len(buffer):
                break  # the LRC byte has not arrived yet
            out.append(buffer[: end + 2])
            buffer = buffer[end + 2 :]
        self._buffer = buffer
        return out


class CredentialSerialDevice(SerialReaderSettings):
    driver: Literal["credential-serial"]


class SerialCredentialDriver(SerialFrameDriver[CardRead]):
    """Reads card frames from a serial credential reader and reports each presented card once."""

    kind = Kind.CREDENTIAL
    # A card shown before the line dropped is not the driver at the reader now.
    clear_queue_on_connect = True

    def new_splitter(self) -> FrameSplitter:
        return FrameSplitter()

    def parse(self, frame: bytes) -> CardRead | None:
        return parse_frame(frame)

    def repeat_key(self, read: CardRead) -> CardRead:
        return read

    def reading(self, read: CardRead) -> Reading:
        return Reading(
            lane=self.lane,
            kind=Kind.CREDENTIAL,
            device=self.device,
            source=SOURCE,
            value=dict(read.value()),
            ts=self.clock.now(),
            quality=Quality.GOOD if read.authenticated else Quality.BAD,
            units=None,
        )
