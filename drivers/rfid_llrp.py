"""Fixed UHF RFID readers (Impinj, Zebra and the like) speaking LLRP 1.0.1 over TCP, port 5084.

A small LLRP client of our own on a plain socket: no third-party LLRP library in the daemon.

Framing: every message starts with a 10-byte header ``!HII``: 3 reserved bits (zero), a 3-bit
version (1), a 10-bit message type; the message length in bytes, header included; a message id,
which a response echoes. Parameters are TLV (``!HH``: 6 reserved bits (zero) and a 10-bit type
128-1023, then the length including the 4-byte header) or TV (one byte ``0x80 | type``, type 1-127,
then a value whose size the type fixes).

Messages the driver sends, in the order ``connect()`` sends them:

==========================  ====  ==============================================================
SET_READER_CONFIG            3    asks for a KEEPALIVE every ``silence_timeout / 3`` seconds
DELETE_ACCESSSPEC           41    id 0: every AccessSpec a previous client left behind
DELETE_ROSPEC               21    id 0: every ROSpec a previous client left behind
ADD_ROSPEC                  20    ROSpec 1: immediate start, null stop, every antenna, Gen2,
                                  a report per tag (EPC, ROSpecID, antenna, peak RSSI, first seen,
                                  seen count)
ENABLE_ROSPEC               24
START_ROSPEC                22    a refusal is only logged: an immediate-start ROSpec already runs
KEEPALIVE_ACK               72    answers each KEEPALIVE, with its message id
CLOSE_CONNECTION            14    on ``close()``, without waiting for the answer
==========================  ====  ==============================================================

Messages ``parse_message`` decodes: READER_EVENT_NOTIFICATION (63: ConnectionAttemptEvent,
ConnectionCloseEvent; other events are skipped), RO_ACCESS_REPORT (61: TagReportData with EPC-96
or EPCData and its TV fields), KEEPALIVE (62), ERROR_MESSAGE (100) and the responses
CLOSE_CONNECTION_RESPONSE (4), GET_READER_CAPABILITIES_RESPONSE (11), GET_READER_CONFIG_RESPONSE
(12), SET_READER_CONFIG_RESPONSE (13), ADD/DELETE/START/STOP/ENABLE/DISABLE_ROSPEC_RESPONSE
(30-35) and ADD/DELETE/ENABLE/DISABLE_ACCESSSPEC_RESPONSE (50-53), each with its LLRPStatus.

Anything else is a ``ProtocolError``, counted by the driver loop and never fatal: another version,
a length that does not match, a set reserved bit, a truncated or overlong parameter, an unknown TV
parameter (its size cannot be known), a parameter that does not belong where it stands (vendor
extensions, type 1023, are skipped), a missing required parameter (LLRPStatus in a response, the
EPC in a TagReportData, the event data in a notification), a message type a reader does not send.

On the stream, bytes that cannot start a message (a set reserved bit, version 0, a length outside
10 bytes..1 MiB) are skipped and reported once per run. If no valid message arrives for
``silence_timeout`` seconds (keepalives included) the reader counts as gone, and the reconnect
starts a clean stream.

Nothing a reader sends can grow the driver without bound: at most ``MAX_QUEUED`` readings and bad
frames wait between steps (more are refused and counted in ``refused``), and a reader that sends
``GARBAGE_LIMIT`` bad frames in a row, or ``GARBAGE_BYTES`` bytes without one valid message, counts
as gone, during the handshake as after it: the connection is closed and the driver loop reports
the reader offline and reconnects with backoff.

Readers report a tag many times a second while a truck stands in the field. The driver reports an
EPC once, then stays quiet about it for as long as it keeps being read with gaps shorter than
``repeat_window`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from drivers.base import BoundedQueue, Driver
from drivers.serial_frames import RepeatFilter
from gated.clock import Clock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import Kind, Quality, Reading, Source
from gated.settings import DeviceSettings, Host

log = logging.getLogger(__name__)

DEFAULT_PORT = 5084
VERSION = 1
HEADER = struct.Struct("!HII")
HEADER_SIZE = HEADER.size
MAX_MESSAGE = 1 << 20
"""Longest message accepted, in bytes (a report of a few thousand tags fits easily)."""

READ_CHUNK = 65536
ROSPEC_ID = 1
MAX_QUEUED = 4096
"""Most readings and bad frames held between steps; more are refused and counted (``refused``).
A full read of EPC-96 tag reports (17 bytes each) fits."""
GARBAGE_LIMIT = 64
"""Bad frames in a row (no valid message between them) after which the reader counts as gone."""
GARBAGE_BYTES = 2 * MAX_MESSAGE
"""Bytes received without one valid message among them after which the reader counts as gone."""

# Message types.
GET_READER_CONFIG_RESPONSE = 12
CLOSE_CONNECTION_RESPONSE = 4
GET_READER_CAPABILITIES_RESPONSE = 11
SET_READER_CONFIG = 3
SET_READER_CONFIG_RESPONSE = 13
CLOSE_CONNECTION = 14
ADD_ROSPEC = 20
DELETE_ROSPEC = 21
START_ROSPEC = 22
ENABLE_ROSPEC = 24
DELETE_ACCESSSPEC = 41
RO_ACCESS_REPORT = 61
KEEPALIVE = 62
READER_EVENT_NOTIFICATION = 63
KEEPALIVE_ACK = 72
ERROR_MESSAGE = 100

MESSAGE_NAMES = {
    1: "GET_READER_CAPABILITIES",
    2: "GET_READER_CONFIG",
    3: "SET_READER_CONFIG",
    4: "CLOSE_CONNECTION_RESPONSE",
    11: "GET_READER_CAPABILITIES_RESPONSE",
    12: "GET_READER_CONFIG_RESPONSE",
    13: "SET_READER_CONFIG_RESPONSE",
    14: "CLOSE_CONNECTION",
    20: "ADD_ROSPEC",
    21: "DELETE_ROSPEC",
    22: "START_ROSPEC",
    23: "STOP_ROSPEC",
    24: "ENABLE_ROSPEC",
    25: "DISABLE_ROSPEC",
    30: "ADD_ROSPEC_RESPONSE",
    31: "DELETE_ROSPEC_RESPONSE",
    32: "START_ROSPEC_RESPONSE",
    33: "STOP_ROSPEC_RESPONSE",
    34: "ENABLE_ROSPEC_RESPONSE",
    35: "DISABLE_ROSPEC_RESPONSE",
    41: "DELETE_ACCESSSPEC",
    50: "ADD_ACCESSSPEC_RESPONSE",
    51: "DELETE_ACCESSSPEC_RESPONSE",
    52: "ENABLE_ACCESSSPEC_RESPONSE",
    53: "DISABLE_ACCESSSPEC_RESPONSE",
    61: "RO_ACCESS_REPORT",
    62: "KEEPALIVE",
    63: "READER_EVENT_NOTIFICATION",
    72: "KEEPALIVE_ACK",
    100: "ERROR_MESSAGE",
}
RESPONSES = frozenset({4, 11, 12, 13, 30, 31, 32, 33, 34, 35, 50, 51, 52, 53, ERROR_MESSAGE})
RESPONSE_TO = {
    SET_READER_CONFIG: SET_READER_CONFIG_RESPONSE,
    ADD_ROSPEC: 30,
    DELETE_ROSPEC: 31,
    START_ROSPEC: 32,
    ENABLE_ROSPEC: 34,
    DELETE_ACCESSSPEC: 51,
    CLOSE_CONNECTION: CLOSE_CONNECTION_RESPONSE,
}

# TV parameter types and the size of their values.
TV_SIZES = {
    1: 2,  # AntennaID
    2: 8,  # FirstSeenTimestampUTC
    3: 8,  # FirstSeenTimestampUptime
    4: 8,  # LastSeenTimestampUTC
    5: 8,  # LastSeenTimestampUptime
    6: 1,  # PeakRSSI
    7: 2,  # ChannelIndex
    8: 2,  # TagSeenCount
    9: 4,  # ROSpecID
    10: 2,  # InventoryParameterSpecID
    11: 2,  # C1G2CRC
    12: 2,  # C1G2PC
    13: 12,  # EPC-96
    14: 2,  # SpecIndex
    15: 2,  # ClientRequestOpSpecResult
    16: 4,  # AccessSpecID
    17: 2,  # OpSpecID
    18: 4,  # C1G2SingulationDetails
    19: 2,  # C1G2XPCW1
    20: 2,  # C1G2XPCW2
}
TV_ANTENNA_ID, TV_FIRST_SEEN_UTC, TV_PEAK_RSSI, TV_TAG_SEEN_COUNT, TV_EPC96 = 1, 2, 6, 8, 13
TV_IN_TAG_REPORT = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 19, 20})

# TLV parameter types.
P_UTC_TIMESTAMP = 128
P_UPTIME = 129
P_ROSPEC = 177
P_RO_BOUNDARY_SPEC = 178
P_ROSPEC_START_TRIGGER = 179
P_ROSPEC_STOP_TRIGGER = 182
P_AISPEC = 183
P_AISPEC_STOP_TRIGGER = 184
P_INVENTORY_PARAMETER_SPEC = 186
P_KEEPALIVE_SPEC = 220
P_RO_REPORT_SPEC = 237
P_TAG_REPORT_CONTENT_SELECTOR = 238
P_TAG_REPORT_DATA = 240
P_EPC_DATA = 241
P_RF_SURVEY_REPORT_DATA = 242
P_READER_EVENT_NOTIFICATION_DATA = 246
P_CONNECTION_ATTEMPT_EVENT = 256
P_CONNECTION_CLOSE_EVENT = 257
P_LLRP_STATUS = 287
P_FIELD_ERROR = 288
P_PARAMETER_ERROR = 289
P_CUSTOM = 1023
OP_SPEC_RESULTS = frozenset({349, 350, 351, 352, 353, 354, 360, 361, 362})
OTHER_EVENTS = frozenset({247, 248, 249, 250, 251, 252, 253, 254, 255, 356})

CONNECTION_STATUS = {
    0: "success",
    1: "a reader initiated connection already exists",
    2: "a client initiated connection already exists",
    3: "failed",
    4: "another connection attempted",
}

_SHOWN = 48


@dataclass(frozen=True, slots=True)
class TagReport:
    """One TagReportData: the EPC in lower-case hex and the optional fields the reader sent."""

    epc: str
    antenna: int | None = None
    rssi: int | None = None
    first_seen_us: int | None = None
    seen_count: int | None = None


@dataclass(frozen=True, slots=True)
class LlrpStatus:
    """An LLRPStatus: ``code`` 0 is success."""

    code: int
    description: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True, slots=True)
class LlrpMessage:
    """One decoded message from a reader."""

    type: int
    message_id: int
    status: LlrpStatus | None = None
    tags: tuple[TagReport, ...] = ()
    connection_attempt: int | None = None
    connection_closed: bool = False

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.type, f"message type {self.type}")


def _show(data: bytes) -> str:
    if len(data) > _SHOWN:
        return f"{data[:_SHOWN].hex()}... ({len(data)} bytes)"
    return data.hex() or "(empty)"


def _malformed(what: str, frame: bytes) -> ProtocolError:
    return ProtocolError(f"malformed LLRP message: {what}: {_show(frame)}")


# The converter: bytes to LlrpMessage, nothing else


class _Malformed(ProtocolError):
    """Raised inside the decoder; ``parse_message`` turns it into one that shows the frame."""


def _params(data: bytes, where: str) -> list[tuple[int, bytes]]:
    """Split a parameter list into (type, value) pairs, TV and TLV alike."""
    out: list[tuple[int, bytes]] = []
    position = 0
    while position < len(data):
        first = data[position]
        if first & 0x80:
            kind = first & 0x7F
            size = TV_SIZES.get(kind)
            if size is None:
                raise _Malformed(f"unknown TV parameter {kind} in {where}")
            end = position + 1 + size
            if end > len(data):
                raise _Malformed(f"TV parameter {kind} truncated in {where}")
            out.append((kind, data[position + 1 : end]))
            position = end
            continue
        if position + 4 > len(data):
            raise _Malformed(f"parameter header truncated in {where}")
        word, length = struct.unpack_from("!HH", data, position)
        kind = word & 0x3FF
        if word >> 10:
            raise _Malformed(f"reserved bits set in parameter {kind} in {where}")
        if kind < 128:
            raise _Malformed(f"TLV parameter with a TV type {kind} in {where}")
        if length < 4 or position + length > len(data):
            raise _Malformed(f"parameter {kind} length {length} does not fit in {where}")
        out.append((kind, data[position + 4 : position + length]))
        position += length
    return out


def _status(body: bytes) -> LlrpStatus:
    if len(body) < 4:
        raise _Malformed("LLRPStatus truncated")
    code, count = struct.unpack_from("!HH", body)
    if 4 + count > len(body):
        raise _Malformed("LLRPStatus description longer than the parameter")
    text = body[4 : 4 + count].decode("utf-8", errors="replace")
    for kind, _ in _params(body[4 + count :], "LLRPStatus"):
        if kind not in (P_FIELD_ERROR, P_PARAMETER_ERROR, P_CUSTOM):
            raise _Malformed(f"unexpected parameter {kind} in LLRPStatus")
    return LlrpStatus(code=code, description=text)


def _epc_data(body: bytes) -> str:
    if len(body) < 2:
        raise _Malformed("EPCData truncated")
    (bits,) = struct.unpack_from("!H", body)
    if bits == 0:
        raise _Malformed("EPCData with an empty EPC")
    if len(body) - 2 != (bits + 7) // 8:
        raise _Malformed(f"EPCData of {bits} bits holds {len(body) - 2} bytes")
    return body[2:].hex()


def _tag_report(body: bytes) -> TagReport:
    epc: str | None = None
    fields: dict[int, bytes] = {}
    for kind, value in _params(body, "TagReportData"):
        if kind in (TV_EPC96, P_EPC_DATA):
            if epc is not None:
                raise _Malformed("TagReportData with two EPCs")
            epc = value.hex() if kind == TV_EPC96 else _epc_data(value)
        elif kind in TV_IN_TAG_REPORT:
            fields[kind] = value
        elif kind not in OP_SPEC_RESULTS and kind != P_CUSTOM:
            raise _Malformed(f"unexpected parameter {kind} in TagReportData")
    if epc is None:
        raise _Malformed("TagReportData without an EPC")

    def number(kind: int, fmt: str) -> int | None:
        value = fields.get(kind)
        return None if value is None else int(struct.unpack(fmt, value)[0])

    return TagReport(
        epc=epc,
        antenna=number(TV_ANTENNA_ID, "!H"),
        rssi=number(TV_PEAK_RSSI, "!b"),
        first_seen_us=number(TV_FIRST_SEEN_UTC, "!Q"),
        seen_count=number(TV_TAG_SEEN_COUNT, "!H"),
    )


def _decode(message_type: int, message_id: int, body: bytes) -> LlrpMessage:
    name = MESSAGE_NAMES.get(message_type, f"message type {message_type}")
    if message_type == RO_ACCESS_REPORT:
        tags: list[TagReport] = []
        for kind, value in _params(body, name):
            if kind == P_TAG_REPORT_DATA:
                tags.append(_tag_report(value))
            elif kind not in (P_RF_SURVEY_REPORT_DATA, P_CUSTOM):
                raise _Malformed(f"unexpected parameter {kind} in {name}")
        return LlrpMessage(message_type, message_id, tags=tuple(tags))
    if message_type == KEEPALIVE:
        for kind, _ in _params(body, name):
            if kind != P_CUSTOM:
                raise _Malformed(f"unexpected parameter {kind} in {name}")
        return LlrpMessage(message_type, message_id)
    if message_type == READER_EVENT_NOTIFICATION:
        params = _params(body, name)
        if [kind for kind, _ in params] != [P_READER_EVENT_NOTIFICATION_DATA]:
            raise _Malformed(f"{name} needs exactly one ReaderEventNotificationData")
        events = _params(params[0][1], "ReaderEventNotificationData")
        if not events or events[0][0] not in (P_UTC_TIMESTAMP, P_UPTIME) or len(events[0][1]) != 8:
            raise _Malformed("ReaderEventNotificationData does not start with a timestamp")
        attempt: int | None = None
        closed = False
        for kind, value in events[1:]:
            if kind == P_CONNECTION_ATTEMPT_EVENT:
                if len(value) != 2:
                    raise _Malformed("ConnectionAttemptEvent is not 2 bytes")
                attempt = struct.unpack("!H", value)[0]
            elif kind == P_CONNECTION_CLOSE_EVENT:
                closed = True
            elif kind not in OTHER_EVENTS and kind != P_CUSTOM:
                raise _Malformed(f"unexpected parameter {kind} in ReaderEventNotificationData")
        return LlrpMessage(message_type, message_id, connection_attempt=attempt, connection_closed=closed)
    if message_type in RESPONSES:
        params = _params(body, name)
        if not params or params[0][0] != P_LLRP_STATUS:
            raise _Malformed(f"{name} without an LLRPStatus")
        return LlrpMessage(message_type, message_id, status=_status(params[0][1]))
    raise _Malformed(f"{name} is not a message a reader sends")


def parse_message(frame: bytes) -> LlrpMessage:
    """Decode one complete message. Raises ``ProtocolError`` for anything malformed, nothing else."""
    frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise _malformed(f"{len(frame)} bytes, shorter than the header", frame)
    word, length, message_id = HEADER.unpack_from(frame)
    if word >> 13:
        raise _malformed("reserved header bits set", frame)
    version = (word >> 10) & 0x7
    if version != VERSION:
        raise _malformed(f"LLRP version {version}, expected {VERSION}", frame)
    if length != len(frame):
        raise _malformed(f"header says {length} bytes, the message has {len(frame)}", frame)
    try:
        return _decode(word & 0x3FF, message_id, frame[HEADER_SIZE:])
    except _Malformed as error:
        raise _malformed(str(error), frame) from None


def _plausible_start(data: bytes, position: int) -> bool:
    """Whether a message header could start at ``position`` (judged on the bytes there so far)."""
    first = data[position]
    if first >> 5 or not (first >> 2) & 0x7:
        return False
    if len(data) - position < 6:
        return True
    length: int = struct.unpack_from("!I", data, position + 2)[0]
    return HEADER_SIZE <= length <= MAX_MESSAGE


class MessageSplitter:
    """Cuts a TCP byte stream into messages by their length field.

    ``feed`` returns, in stream order, each complete message (bytes, for ``parse_message``) and a
    ``ProtocolError`` for each run of bytes that could not start a message, which is skipped. What
    it keeps between calls is one incomplete message: at most ``MAX_MESSAGE`` bytes."""

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        out: list[bytes | ProtocolError] = []
        buffer = self._buffer + data
        position = 0  # cut once at the end: slicing off each message would copy the rest each time
        while position < len(buffer):
            skip = position
            while skip < len(buffer) and not _plausible_start(buffer, skip):
                skip += 1
            if skip > position:
                run = buffer[position:skip]
                out.append(ProtocolError(f"malformed LLRP stream: {len(run)} bytes skipped: {_show(run)}"))
                position = skip
                continue
            if len(buffer) - position < HEADER_SIZE:
                break
            (length,) = struct.unpack_from("!I", buffer, position + 2)
            if len(buffer) - position < length:
                break
            out.append(buffer[position : position + length])
            position += length
        self._buffer = buffer[position:]
        return out


# What the driver sends


def _tlv(param_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", param_type, 4 + len(body)) + body


def encode_message(message_type: int, message_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack((VERSION << 10) | message_type, HEADER_SIZE + len(body), message_id) + body


def rospec(rospec_id: int = ROSPEC_ID) -> bytes:
    """The ROSpec parameter: immediate start, null stop, all antennas, Gen2, one report per tag."""
    boundary = _tlv(
        P_RO_BOUNDARY_SPEC,
        _tlv(P_ROSPEC_START_TRIGGER, struct.pack("!B", 1))
        + _tlv(P_ROSPEC_STOP_TRIGGER, struct.pack("!BI", 0, 0)),
    )
    aispec = _tlv(
        P_AISPEC,
        struct.pack("!HH", 1, 0)
        + _tlv(P_AISPEC_STOP_TRIGGER, struct.pack("!BI", 0, 0))
        + _tlv(P_INVENTORY_PARAMETER_SPEC, struct.pack("!HB", 1, 1)),
    )
    # ROSpecID, AntennaID, PeakRSSI, FirstSeenTimestamp, TagSeenCount (bits 15, 12, 10, 9, 7).
    selector = _tlv(P_TAG_REPORT_CONTENT_SELECTOR, struct.pack("!H", 0x9680))
    report = _tlv(P_RO_REPORT_SPEC, struct.pack("!BH", 1, 1) + selector)
    return _tlv(P_ROSPEC, struct.pack("!IBB", rospec_id, 0, 0) + boundary + aispec + report)


class RfidLlrpDevice(DeviceSettings):
    driver: Literal["rfid-llrp"]
    host: Host
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    repeat_window_seconds: float = Field(5.0, gt=0, description="Report one tag once per window.")
    silence_timeout_seconds: float = Field(3.0, gt=0, description="No keepalive for this long: offline.")


class LlrpRfidDriver(Driver):
    """Inventories an LLRP reader and reports each truck's EPC once."""

    kind = Kind.RFID

    def __init__(
        self,
        lane: str,
        settings: RfidLlrpDevice,
        *,
        read_timeout: float = 0.2,
        connect_timeout: float = 5.0,
        clock: Clock | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        silence_timeout = settings.silence_timeout_seconds
        if read_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("read_timeout and connect_timeout must be positive")
        if silence_timeout <= read_timeout:
            raise ValueError(f"silence_timeout {silence_timeout} must be longer than read_timeout")
        self.host = settings.host
        self.port = settings.port
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.silence_timeout = silence_timeout
        self.keepalive_ms = max(100, int(silence_timeout * 1000 / 3))
        self._repeats = RepeatFilter(settings.repeat_window_seconds)
        self._sock: socket.socket | None = None
        self._splitter = MessageSplitter()
        self._queue: BoundedQueue[Reading | ProtocolError] = BoundedQueue(MAX_QUEUED)
        self._failure: DeviceUnavailable | None = None
        self._last_message = 0.0
        self._next_id = 0
        self._garbage = 0  # bad frames since the last valid message
        self._garbage_bytes = 0  # bytes read since the last chunk that held a valid message
        self._first_garbage = ""
        self._refusal_logged = False
        self._reader_error_logged = False
        self.keepalives = 0
        self.reader_errors = 0
        """ERROR_MESSAGEs from the reader (the first of a connection is logged)."""
        self.garbage_disconnects = 0

    @property
    def where(self) -> str:
        return f"llrp://{self.host}:{self.port}"

    @property
    def queued(self) -> int:
        """Readings and bad frames waiting for ``step()``."""
        return len(self._queue)

    @property
    def refused(self) -> int:
        """Readings and bad frames refused because the queue was full."""
        return self._queue.refused

    # Driver

    def connect(self) -> None:
        self.close()
        self._splitter = MessageSplitter()
        self._queue.clear()
        self._failure = None
        self._garbage = self._garbage_bytes = 0
        self._refusal_logged = self._reader_error_logged = False
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as error:
            raise DeviceUnavailable(f"cannot connect to {self.where}: {error}") from error
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._last_message = self.clock.monotonic()
        try:
            self._handshake()
        except DeviceUnavailable:
            self._close_socket(polite=False)
            raise

    def step(self) -> Sequence[Reading]:
        """Readings queued from earlier reads first; a bad frame is raised in its place in order."""
        if not self._queue:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            self._fill(self.read_timeout)
            if not self._queue and self.clock.monotonic() - self._last_message > self.silence_timeout:
                raise DeviceUnavailable(
                    f"no message from {self.where} for {self.silence_timeout:g} s (not even a KEEPALIVE)"
                )
        readings: list[Reading] = []
        while self._queue:
            item = self._queue.first()
            if isinstance(item, ProtocolError):
                if readings:
                    break
                self._queue.take()
                raise item
            readings.append(item)
            self._queue.take()
        return readings

    def close(self) -> None:
        self._close_socket(polite=True)

    # The handshake

    def _handshake(self) -> None:
        event = self._await(
            lambda message: (
                message.type == READER_EVENT_NOTIFICATION and message.connection_attempt is not None
            ),
            "the reader's connection event",
        )
        if event.connection_attempt != 0:
            why = CONNECTION_STATUS.get(event.connection_attempt or 0, str(event.connection_attempt))
            raise DeviceUnavailable(f"{self.where} refused the connection: {why}")
        keepalive = _tlv(P_KEEPALIVE_SPEC, struct.pack("!BI", 1, self.keepalive_ms))
        self._request(SET_READER_CONFIG, struct.pack("!B", 0) + keepalive)
        self._request(DELETE_ACCESSSPEC, struct.pack("!I", 0))
        self._request(DELETE_ROSPEC, struct.pack("!I", 0))
        self._request(ADD_ROSPEC, rospec())
        self._request(ENABLE_ROSPEC, struct.pack("!I", ROSPEC_ID))
        started = self._request(START_ROSPEC, struct.pack("!I", ROSPEC_ID), must_succeed=False)
        if started.status is not None and not started.status.ok:
            log.debug(
                "%s: START_ROSPEC refused (%s); the ROSpec started when enabled", self.where, started.status
            )

    def _request(self, message_type: int, body: bytes, *, must_succeed: bool = True) -> LlrpMessage:
        message_id = self._send(message_type, body)
        expected = RESPONSE_TO[message_type]
        name = MESSAGE_NAMES[message_type]
        answer = self._await(
            lambda message: message.message_id == message_id and message.type in (expected, ERROR_MESSAGE),
            f"the answer to {name}",
        )
        status = answer.status
        if answer.type == ERROR_MESSAGE or (must_succeed and status is not None and not status.ok):
            detail = "" if status is None else f"status {status.code} {status.description}".rstrip()
            raise DeviceUnavailable(f"{self.where} refused {name}: {detail}")
        return answer

    def _await(self, wanted: Callable[[LlrpMessage], bool], what: str) -> LlrpMessage:
        """Read until a message ``wanted(message)`` accepts arrives; everything else is handled."""
        deadline = time.monotonic() + self.connect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceUnavailable(
                    f"{self.where}: {what} did not come within {self.connect_timeout:g} s"
                )
            found = self._fill(min(left, self.read_timeout), wanted=wanted)
            if found is not None:
                return found
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure

    # Reading and handling

    def _fill(
        self, timeout: float, wanted: Callable[[LlrpMessage], bool] | None = None
    ) -> LlrpMessage | None:
        """Read once; queue readings and errors. Returns the first message ``wanted`` accepts."""
        if self._failure is not None:
            return None
        data = self._recv(timeout)
        if not data:
            return None
        found: LlrpMessage | None = None
        valid = False
        for item in self._splitter.feed(data):
            if isinstance(item, ProtocolError):
                if not self._bad_frame(item):
                    break
                continue
            try:
                message = parse_message(item)
            except ProtocolError as error:
                if not self._bad_frame(error):
                    break
                continue
            self._last_message = self.clock.monotonic()
            self._garbage = 0
            valid = True
            if found is None and wanted is not None and wanted(message):
                found = message
                continue
            self._handle(message)
        self._garbage_bytes = 0 if valid else self._garbage_bytes + len(data)
        if self._garbage_bytes > GARBAGE_BYTES:
            self._gone_for_garbage(f"{self._garbage_bytes} bytes without a valid message")
        return found

    def _bad_frame(self, error: ProtocolError) -> bool:
        """Queue a bad frame; False once the reader has sent too many of them in a row."""
        if not self._garbage:
            self._first_garbage = str(error)
        self._garbage += 1
        if self._garbage > GARBAGE_LIMIT:
            self._gone_for_garbage(f"more than {GARBAGE_LIMIT} bad frames in a row")
            return False
        self._queue.put(error)
        return True

    def _gone_for_garbage(self, what: str) -> None:
        """The reader counts as gone: the driver loop reconnects (with backoff) to a clean stream."""
        if self._failure is None:
            self.garbage_disconnects += 1
            first = self._first_garbage or "none complete"
            self._failure = DeviceUnavailable(f"{self.where} sends garbage: {what}; first bad frame: {first}")

    def _queue_reading(self, reading: Reading) -> None:
        if not self._queue.put(reading) and not self._refusal_logged:
            self._refusal_logged = True
            log.warning(
                "%s: %d readings and errors wait already: reading %s refused (refusals are counted)",
                self.where,
                len(self._queue),
                reading.value,
            )

    def _recv(self, timeout: float) -> bytes:
        sock = self._sock
        if sock is None:
            raise DeviceUnavailable(f"{self.where} is not connected")
        try:
            sock.settimeout(timeout)
            data = sock.recv(READ_CHUNK)
        except TimeoutError:
            return b""
        except OSError as error:
            raise DeviceUnavailable(f"read from {self.where} failed: {error}") from error
        if not data:
            raise DeviceUnavailable(f"{self.where} closed the connection")
        return data

    def _handle(self, message: LlrpMessage) -> None:
        if message.type == KEEPALIVE:
            self.keepalives += 1
            try:
                self._send(KEEPALIVE_ACK, b"", message_id=message.message_id)
            except DeviceUnavailable as error:
                self._failure = self._failure or error
        elif message.type == RO_ACCESS_REPORT:
            now = self.clock.monotonic()
            for tag in message.tags:
                if self._repeats.admit(tag.epc, now):
                    self._queue_reading(self._reading(tag))
        elif message.type == READER_EVENT_NOTIFICATION and message.connection_closed:
            self._failure = self._failure or DeviceUnavailable(f"{self.where} is closing the connection")
        elif message.type == ERROR_MESSAGE:
            self.reader_errors += 1
            if not self._reader_error_logged:
                self._reader_error_logged = True
                log.warning(
                    "%s: the reader reports an error: %s (repeats are counted)", self.where, message.status
                )

    def _send(self, message_type: int, body: bytes, *, message_id: int | None = None) -> int:
        sock = self._sock
        if sock is None:
            raise DeviceUnavailable(f"{self.where} is not connected")
        if message_id is None:
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            message_id = self._next_id
        try:
            sock.settimeout(self.connect_timeout)
            sock.sendall(encode_message(message_type, message_id, body))
        except OSError as error:
            raise DeviceUnavailable(f"write to {self.where} failed: {error}") from error
        return message_id

    def _close_socket(self, *, polite: bool) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if polite:
            with contextlib.suppress(OSError):
                sock.settimeout(0.5)
                self._next_id = self._next_id % 0xFFFFFFFF + 1
                sock.sendall(encode_message(CLOSE_CONNECTION, self._next_id))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _reading(self, tag: TagReport) -> Reading:
        return Reading(
            lane=self.lane,
            kind=Kind.RFID,
            device=self.device,
            source=Source.EPC,
            value=tag.epc,
            ts=self.clock.now(),
            quality=Quality.GOOD,
            units=None,
            confidence=None,
        )
