"""Fixed UHF RFID readers that print truck tags as NMEA-style ASCII lines on a serial port.

The protocol (one line per frame, 8N1, ASCII only)::

    $TAG,<epc>,<antenna>,<rssi>*<XX>\\r\\n     one read of one tag
    $HBT*<XX>\\r\\n                            heartbeat, once a second

- ``<epc>``: the tag's EPC in hex, 8 to 62 hex digits, an even number of them (either case; gated
  reports it in lower case).
- ``<antenna>``: the antenna that read it, ``1`` to ``8``.
- ``<rssi>``: received signal strength in dBm, a decimal integer from -128 to 127 (e.g. ``-55``).
- ``<XX>``: two hex digits, the XOR of every byte between ``$`` and ``*``.

A line is at most 256 bytes including its terminator. Anything else (wrong checksum, bad or extra
fields, an unknown sentence, a control or non-ASCII byte, an overlong line) is a malformed frame: a
``ProtocolError``, counted by the driver loop and never fatal. A frame starts at ``$``, so bytes
in front of a ``$`` on the same line are reported as a malformed fragment of their own and the
frame after them is still read. Empty lines are ignored.

Readers repeat a tag many times a second while a truck stands in the field. The driver reports an
EPC once, then stays quiet about it for as long as it keeps being read with gaps shorter than
``repeat_window`` seconds: one truck, one reading. If nothing at all arrives (not even a heartbeat)
for ``silence_timeout`` seconds the reader counts as gone.

The driver opens its port with ``serial.serial_for_url``: a tty or pty path, ``socket://host:port``
(a serial device server) or ``loop://``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from drivers.serial_frames import SerialFrameDriver, SerialReaderSettings
from gated.errors import ProtocolError
from gated.model import Kind, Quality, Reading, Source

MAX_LINE = 256
"""Longest line accepted, in bytes, terminator included."""


EPC_MIN_DIGITS = 8
EPC_MAX_DIGITS = 62
RSSI_MIN = -128
RSSI_MAX = 127

_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
_EPC = re.compile(rb"[0-9A-Fa-f]+")
_EPC_NORMAL = re.compile(r"[0-9a-f]+")
_ANTENNA = re.compile(rb"[1-8]")
_RSSI = re.compile(rb"-?[0-9]{1,3}")
_SHOWN = 48


@dataclass(frozen=True, slots=True)
class TagRead:
    """One tag read as the reader reported it."""

    epc: str
    antenna: int
    rssi: int

    def __post_init__(self) -> None:
        if not (
            isinstance(self.epc, str)
            and _EPC_NORMAL.fullmatch(self.epc)
            and EPC_MIN_DIGITS <= len(self.epc) <= EPC_MAX_DIGITS
            and len(self.epc) % 2 == 0
        ):
            raise ValueError(f"epc {self.epc!r} must be 8-62 lower-case hex digits, an even number")
        if not 1 <= self.antenna <= 8:
            raise ValueError(f"antenna {self.antenna} is outside 1..8")
        if not RSSI_MIN <= self.rssi <= RSSI_MAX:
            raise ValueError(f"rssi {self.rssi} is outside {RSSI_MIN}..{RSSI_MAX}")


def _show(data: bytes) -> str:
    """The offending bytes for an error message, cut short."""
    if len(data) > _SHOWN:
        return f"{data[:_SHOWN]!r}... ({len(data)} bytes)"
    return repr(data)


def _malformed(what: str, line: bytes) -> ProtocolError:
    return ProtocolError(f"malformed RFID frame: {what}: {_show(line)}")


def _checksum(body: bytes) -> int:
    value = 0
    for byte in body:
        value ^= byte
    return value


def parse_frame(line: bytes) -> TagRead | None:
    """Decode one line: a ``TagRead``, or ``None`` for a heartbeat.

    A trailing ``\\r\\n`` (or a bare ``\\n`` or ``\\r``) is allowed. Raises ``ProtocolError`` for
    anything malformed, and no other exception."""
    line = bytes(line)
    if len(line) > MAX_LINE:
        raise _malformed(f"line longer than {MAX_LINE} bytes", line)
    frame = line
    if frame.endswith(b"\n"):
        frame = frame[:-1]
    if frame.endswith(b"\r"):
        frame = frame[:-1]
    if not frame:
        raise _malformed("empty line", line)
    if any(byte < 0x20 or byte > 0x7E for byte in frame):
        raise _malformed("control or non-ASCII byte", line)
    if not frame.startswith(b"$"):
        raise _malformed("does not start with '$'", line)
    star = frame.rfind(b"*")
    if star < 0:
        raise _malformed("no '*' before the checksum", line)
    body, given = frame[1:star], frame[star + 1 :]
    if not _HEX2.fullmatch(given):
        raise _malformed("checksum is not two hex digits", line)
    expected = _checksum(body)
    if int(given, 16) != expected:
        raise _malformed(f"checksum {given.decode()} does not match {expected:02X}", line)
    fields = body.split(b",")
    if fields == [b"HBT"]:
        return None
    if fields[0] != b"TAG":
        raise _malformed("unknown sentence", line)
    if len(fields) != 4:
        raise _malformed(f"TAG needs 3 fields, got {len(fields) - 1}", line)
    epc, antenna, rssi = fields[1], fields[2], fields[3]
    if not _EPC.fullmatch(epc):
        raise _malformed("EPC is not hex", line)
    if not EPC_MIN_DIGITS <= len(epc) <= EPC_MAX_DIGITS or len(epc) % 2:
        raise _malformed(f"EPC has {len(epc)} hex digits (8-62, even)", line)
    if not _ANTENNA.fullmatch(antenna):
        raise _malformed("antenna is not 1-8", line)
    if not _RSSI.fullmatch(rssi) or not RSSI_MIN <= int(rssi) <= RSSI_MAX:
        raise _malformed(f"RSSI is not an integer in {RSSI_MIN}..{RSSI_MAX}", line)
    return TagRead(epc=epc.decode("ascii").lower(), antenna=int(antenna), rssi=int(rssi))


class FrameSplitter:
    """Cuts a byte stream into candidate frames, keeping at most ``MAX_LINE`` bytes buffered.

    ``feed`` returns, in stream order, each complete line (bytes, for ``parse_frame``) and a
    ``ProtocolError`` for each overlong line, which is dropped up to the next ``$`` or newline.
    A ``$`` inside a line starts a new frame; what came before it is returned on its own."""

    def __init__(self) -> None:
        self._buffer = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        out: list[bytes | ProtocolError] = []
        buffer = self._buffer + data
        while buffer:
            newline = buffer.find(b"\n")
            dollar = buffer.find(b"$", 1)
            if self._discarding:
                ends = [i for i in (buffer.find(b"$"), newline + 1 if newline >= 0 else -1) if i >= 0]
                if not ends:
                    buffer = b""
                    break
                buffer = buffer[min(ends) :]
                self._discarding = False
                continue
            if dollar > 0 and (newline < 0 or dollar < newline):
                self._emit(buffer[:dollar], out)
                buffer = buffer[dollar:]
            elif newline >= 0:
                self._emit(buffer[: newline + 1], out)
                buffer = buffer[newline + 1 :]
            elif len(buffer) > MAX_LINE:
                out.append(_malformed(f"line longer than {MAX_LINE} bytes, dropped", buffer))
                buffer = b""
                self._discarding = True
            else:
                break
        self._buffer = buffer
        return out

    @staticmethod
    def _emit(line: bytes, out: list[bytes | ProtocolError]) -> None:
        if len(line) > MAX_LINE:
            out.append(_malformed(f"line longer than {MAX_LINE} bytes", line))
        elif line.strip(b" \t\r\n"):
            out.append(line)


class RfidSerialDevice(SerialReaderSettings):
    driver: Literal["rfid-serial"]
    repeat_window_seconds: float = Field(5.0, gt=0, description="Report one tag once per window.")


class SerialRfidDriver(SerialFrameDriver[TagRead]):
    """Reads tag frames from a serial RFID reader and reports each truck's EPC once."""

    kind = Kind.RFID

    def new_splitter(self) -> FrameSplitter:
        return FrameSplitter()

    def parse(self, frame: bytes) -> TagRead | None:
        return parse_frame(frame)

    def repeat_key(self, read: TagRead) -> str:
        return read.epc

    def reading(self, tag: TagRead) -> Reading:
        return Reading(
            lane=self.lane,
            kind=Kind.RFID,
            device=self.device,
            source=Source.EPC,
            value=tag.epc,
            ts=self.clock.now(),
            quality=Quality.GOOD,
            units=None,
        )
