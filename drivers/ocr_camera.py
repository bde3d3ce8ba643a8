"""Driver for a "smart" gate OCR camera that reads container numbers itself and pushes its results.

Protocol
--------
The camera is a TCP server; the driver connects to it and only listens. The camera sends UTF-8 JSON
objects, one per line, each line ended by ``\\n`` and at most 65536 bytes long (not counting the
``\\n``). Every message has ``event``, ``camera`` (non-empty text) and ``ts`` (RFC 3339 with a ``Z``
or numeric offset, e.g. ``2026-01-01T12:00:00.000Z``):

- ``{"event": "heartbeat", "camera": "cam-1", "ts": ...}``, every second, also while idle;
- ``{"event": "read", "camera": ..., "ts": ..., "passage": "<camera's passage id>", "slot": 1,
  "view": "rear"|"side"|"top"|"front", "code": "<text as read, may be empty>",
  "confidence": 0.0-1.0, "size_type": "22G1" or null}``: one container number as read in one view;
  ``slot`` (an integer 1-4) is the container's position on the truck, ``size_type`` the ISO size/type
  code as read, or null;
- ``{"event": "passage_end", "camera": ..., "ts": ..., "passage": "...", "containers": 0-4}``: the truck
  has passed; ``containers`` is how many containers the camera saw.

Fields not listed here are ignored, so newer firmware may add some. Anything else is a malformed
frame: not JSON, not an object, a duplicated key, a missing or ill-typed field (``true`` is not a
number), an unknown event, a confidence outside 0..1, NaN or Infinity, an overlong line or invalid
UTF-8. A malformed frame raises ``ProtocolError`` for that line only; the lines around it are kept.

The camera counts as unavailable when the connection fails or closes, and when no byte at all (not
even a heartbeat) has arrived for ``silence_timeout`` seconds; a new connection counts as up only
once the camera has sent something, so a camera that accepts connections but stays silent does not
flap between online and offline.

Readings
--------
A ``read`` gives a ``container_number`` reading. The code is normalised (upper case, spaces, dashes,
dots and slashes removed) and never otherwise changed: a misread is reported as read, not "corrected"
into a number whose check digit fits.

- value: the normalised number when it has the ISO 6346 shape (3 letters, U/J/Z, 6 digits, a digit),
  else None;
- quality: GOOD when shaped, with a valid check digit and a confidence of at least
  ``min_confidence``; UNCERTAIN when shaped but the check digit does not fit or the confidence is
  lower; BAD when not shaped (empty, garbage);
- confidence: the camera's.

A ``size_type`` matching ``[0-9L][0-9][A-Z][0-9]`` gives a ``size_type`` reading as well (GOOD at or
above ``min_confidence``, else UNCERTAIN). A ``passage_end`` gives a ``passage_end`` reading whose value
is the number of containers seen. Heartbeats give no reading.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypedDict, Unpack

from pydantic import Field, field_validator

from drivers.base import Driver
from gated.clock import Clock
from gated.errors import ContainerNumberError, DeviceUnavailable, ProtocolError
from gated.iso6346 import ContainerNumber
from gated.model import Kind, Quality, Reading, Source
from gated.settings import DeviceSettings, Host

MAX_LINE: Final = 65536
VIEWS: Final = frozenset({"rear", "side", "top", "front"})
MAX_SLOT: Final = 4
MAX_CONTAINERS: Final = 4
SIZE_TYPE_SOURCE: Final = Source.SIZE_TYPE

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_SIZE_TYPE = re.compile(r"[0-9L][0-9][A-Z][0-9]")
_EXCERPT = 60
_RECV_BYTES = 65536


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The camera is alive."""

    camera: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class ContainerRead:
    """One container number as the camera read it in one view."""

    camera: str
    ts: datetime
    passage: str
    slot: int
    view: str
    code: str
    confidence: float
    size_type: str | None


@dataclass(frozen=True, slots=True)
class PassageEnd:
    """The camera finished a truck and saw ``containers`` containers on it."""

    camera: str
    ts: datetime
    passage: str
    containers: int


CameraMessage = Heartbeat | ContainerRead | PassageEnd


def _excerpt(line: bytes) -> str:
    shown = line[:_EXCERPT]
    return repr(shown) + ("..." if len(line) > _EXCERPT else "")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class _Fields:
    """Typed access to the fields of one decoded message; every failure is a ``ProtocolError``."""

    def __init__(self, obj: dict[str, Any], event: str, line: bytes) -> None:
        self.obj = obj
        self.event = event
        self.line = line

    def fail(self, problem: str) -> ProtocolError:
        return ProtocolError(f"{self.event} message: {problem}: {_excerpt(self.line)}")

    def get(self, name: str) -> Any:
        if name not in self.obj:
            raise self.fail(f"missing field {name!r}")
        return self.obj[name]

    def text(self, name: str, *, allow_empty: bool = False) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self.fail(f"field {name!r} must be a string, got {type(value).__name__}")
        if not value and not allow_empty:
            raise self.fail(f"field {name!r} is empty")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"field {name!r} must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.fail(f"field {name!r} is {value}, outside {low}..{high}")
        return value

    def fraction(self, name: str) -> float:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"field {name!r} must be a number, got {type(value).__name__}")
        number = float(value)
        if not math.isfinite(number) or not 0.0 <= number <= 1.0:
            raise self.fail(f"field {name!r} is {value}, outside 0..1")
        return number

    def timestamp(self, name: str) -> datetime:
        value = self.text(name)
        if not _RFC3339.fullmatch(value):
            raise self.fail(f"field {name!r} is not an RFC 3339 time with offset")
        try:
            moment = datetime.fromisoformat(value.upper())
        except ValueError as error:
            raise self.fail(f"field {name!r} is not a valid time ({error})") from None
        return moment


def parse_message(line: bytes) -> CameraMessage:
    """Decode one line from the camera (with or without its ``\\n``).

    Raises ``ProtocolError``, naming the problem and showing the start of the line, for anything
    that is not a valid message, and never any other exception."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes is longer than {MAX_LINE}: {_excerpt(line)}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(f"invalid UTF-8 at byte {error.start}: {_excerpt(line)}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(f"JSON nested too deeply: {_excerpt(line)}") from None
    except ValueError as error:
        raise ProtocolError(f"not JSON ({error}): {_excerpt(line)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a JSON object: {_excerpt(line)}")
    event = obj.get("event")
    if not isinstance(event, str):
        raise ProtocolError(f"missing or non-string field 'event': {_excerpt(line)}")
    fields = _Fields(obj, event, line)
    if event == "heartbeat":
        return Heartbeat(camera=fields.text("camera"), ts=fields.timestamp("ts"))
    if event == "read":
        view = fields.text("view")
        if view not in VIEWS:
            raise fields.fail(f"field 'view' is {view!r}, not one of {sorted(VIEWS)}")
        size_type = fields.get("size_type")
        if size_type is not None and not isinstance(size_type, str):
            raise fields.fail(f"field 'size_type' must be a string or null, got {type(size_type).__name__}")
        return ContainerRead(
            camera=fields.text("camera"),
            ts=fields.timestamp("ts"),
            passage=fields.text("passage"),
            slot=fields.integer("slot", 1, MAX_SLOT),
            view=view,
            code=fields.text("code", allow_empty=True),
            confidence=fields.fraction("confidence"),
            size_type=size_type,
        )
    if event == "passage_end":
        return PassageEnd(
            camera=fields.text("camera"),
            ts=fields.timestamp("ts"),
            passage=fields.text("passage"),
            containers=fields.integer("containers", 0, MAX_CONTAINERS),
        )
    raise ProtocolError(f"unknown event {event[:_EXCERPT]!r}: {_excerpt(line)}")


def readings_from(
    message: CameraMessage, *, lane: str, device: str, ts: datetime, min_confidence: float
) -> list[Reading]:
    """The readings one camera message gives (see the module docstring). Pure: no I/O."""
    if isinstance(message, Heartbeat):
        return []
    if isinstance(message, PassageEnd):
        return [Reading(lane, Kind.OCR, device, Source.PASSAGE_END, message.containers, ts, Quality.GOOD)]
    confident = message.confidence >= min_confidence
    value: str | None = None
    quality = Quality.BAD
    if message.code.isascii():
        try:
            number = ContainerNumber.parse(message.code, require_valid_check_digit=False)
        except ContainerNumberError:
            pass
        else:
            value = str(number)
            quality = Quality.GOOD if number.check_digit_valid and confident else Quality.UNCERTAIN
    readings = [
        Reading(
            lane,
            Kind.OCR,
            device,
            Source.CONTAINER_NUMBER,
            value,
            ts,
            quality,
            confidence=message.confidence,
        )
    ]
    if message.size_type is not None and _SIZE_TYPE.fullmatch(message.size_type):
        readings.append(
            Reading(
                lane,
                Kind.OCR,
                device,
                SIZE_TYPE_SOURCE,
                message.size_type,
                ts,
                Quality.GOOD if confident else Quality.UNCERTAIN,
                confidence=message.confidence,
            )
        )
    return readings


class _DriverOptions(TypedDict, total=False):
    backoff_initial: float
    backoff_max: float


class OcrCameraDevice(DeviceSettings):
    driver: Literal["ocr-camera"]
    host: Host = Field(description="The camera's name or address only (no user, password or path).")
    port: int = Field(ge=1, le=65535)
    min_confidence: float = Field(0.9, ge=0, le=1)
    silence_timeout_seconds: float = Field(3.0, gt=0)

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        # A user:password@ written here would be shown in every connection error: refuse it unshown.
        if not value or any(char in value for char in "@/") or not value.isprintable() or " " in value:
            raise ValueError("a host is a name or an address, without a user, password, scheme or path")
        return value


class SmartCameraDriver(Driver):
    """Connects to the camera's TCP port and turns its pushed messages into readings."""

    kind = Kind.OCR

    def __init__(
        self,
        lane: str,
        settings: OcrCameraDevice,
        *,
        clock: Clock | None = None,
        **kwargs: Unpack[_DriverOptions],
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        self.host = settings.host
        self.port = settings.port
        self.min_confidence = settings.min_confidence
        self.silence_timeout = settings.silence_timeout_seconds
        self.poll_timeout = min(0.25, self.silence_timeout / 4)
        self._sock: socket.socket | None = None
        self._partial = bytearray()
        self._discarding = False
        self._lines: deque[bytes] = deque()
        self._last_data = 0.0

    def connect(self) -> None:
        self.close()
        self._partial.clear()
        self._lines.clear()
        self._discarding = False
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.silence_timeout)
        except OSError as error:
            raise DeviceUnavailable(f"cannot connect to camera at {where}: {error}") from error
        self._sock = sock
        try:
            data = sock.recv(_RECV_BYTES)
        except TimeoutError:
            self.close()
            raise DeviceUnavailable(
                f"camera at {where} accepted the connection but sent nothing for {self.silence_timeout} s"
            ) from None
        except OSError as error:
            self.close()
            raise DeviceUnavailable(f"camera at {where}: {error}") from error
        if not data:
            self.close()
            raise DeviceUnavailable(f"camera at {where} closed the connection")
        sock.settimeout(self.poll_timeout)
        self._last_data = self.clock.monotonic()
        self._feed(data)

    def step(self) -> Sequence[Reading]:
        if not self._lines:
            self._receive()
        readings: list[Reading] = []
        while self._lines:
            try:
                message = parse_message(self._lines[0])
            except ProtocolError:
                if readings:
                    return readings
                self._lines.popleft()
                raise
            self._lines.popleft()
            readings.extend(
                readings_from(
                    message,
                    lane=self.lane,
                    device=self.device,
                    ts=self.clock.now(),
                    min_confidence=self.min_confidence,
                )
            )
        return readings

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _receive(self) -> None:
        if self._sock is None:
            raise DeviceUnavailable("not connected to the camera")
        try:
            data = self._sock.recv(_RECV_BYTES)
        except TimeoutError:
            silent = self.clock.monotonic() - self._last_data
            if silent > self.silence_timeout:
                raise DeviceUnavailable(f"camera silent for {silent:.1f} s") from None
            return
        except OSError as error:
            raise DeviceUnavailable(f"camera connection failed: {error}") from error
        if not data:
            raise DeviceUnavailable("camera closed the connection")
        self._last_data = self.clock.monotonic()
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Split received bytes into complete lines; an overlong line is queued cut short (so it
        fails to parse) and the rest of it is skipped up to its end."""
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if self._discarding:
                if end >= 0:
                    self._discarding = False
            else:
                self._partial += chunk
                if len(self._partial) > MAX_LINE:
                    self._lines.append(bytes(self._partial[: MAX_LINE + 1]))
                    self._partial.clear()
                    self._discarding = end < 0
                elif end >= 0:
                    self._lines.append(bytes(self._partial))
                    self._partial.clear()
            if end < 0:
                break
            start = end + 1
