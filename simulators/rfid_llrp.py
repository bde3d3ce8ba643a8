"""A fixed UHF RFID reader (Impinj/Zebra style) speaking LLRP 1.0.1 on TCP, the reader's side.

Written from the LLRP specification (EPCglobal LLRP 1.0.1), not from gated's driver. Every message
starts with a 10-byte header ``!HII``: 3 reserved bits, a 3-bit version (1), a 10-bit message type;
the length of the whole message in bytes, header included; a message id, which a response echoes.
Parameters are TLV (``!HH``: 6 reserved bits and a 10-bit type, then the length including the
4-byte header) or, for types 1-127, TV (one byte ``0x80 | type`` and a value of fixed size).

What it does, as a reader does:

- on connect it sends READER_EVENT_NOTIFICATION with a ConnectionAttemptEvent, Success; a second
  client while one is connected gets "a client initiated connection already exists" and is closed;
- it answers GET_READER_CAPABILITIES, GET_READER_CONFIG, SET_READER_CONFIG, ADD_ROSPEC,
  ENABLE_ROSPEC, START_ROSPEC, STOP_ROSPEC, DISABLE_ROSPEC, DELETE_ROSPEC, DELETE_ACCESSSPEC and
  CLOSE_CONNECTION with the matching response and an LLRPStatus; ENABLE_EVENTS_AND_REPORTS and
  KEEPALIVE_ACK need no answer; anything else gets an ERROR_MESSAGE (UnsupportedMessage);
- a ROSpec whose start trigger is Null runs after START_ROSPEC; any other start trigger (Immediate,
  the one sllurp uses, which never sends START_ROSPEC) runs as soon as it is enabled;
- while a ROSpec runs, ``present_tag`` sends one RO_ACCESS_REPORT per sighting, each with one
  TagReportData (EPC-96 for 96-bit EPCs, EPCData otherwise; ROSpecID, AntennaID, PeakRSSI,
  FirstSeenTimestampUTC, TagSeenCount);
- it sends KEEPALIVE every ``keepalive_interval`` seconds when given, else at the interval the client
  asked for in SET_READER_CONFIG's KeepaliveSpec.

``send_raw`` sends any bytes to the connected client, for fault injection. ``garbage`` makes a
reader that babbles: from the moment a client connects (right after the connection event, so
during the client's handshake) it sends garbage as fast as the client takes it, between its
answers, until the client hangs up: ``"framed"`` is well-framed messages that no reader sends or
that are malformed inside, ``"random"`` is bytes from a seeded generator.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import re
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from gated.cli.argtypes import port
from simulators.lifecycle import Simulator, listening_socket

log = logging.getLogger(__name__)

DEFAULT_PORT = 5084
VERSION = 1
DEFAULT_TAGS = ("E2801160600002084C6F1D12", "E28011606000020A3B19C4F7", "3034257BF7194E4000001A85")

# Message types (LLRP 1.0.1 section 16.1).
GET_READER_CAPABILITIES = 1
GET_READER_CONFIG = 2
SET_READER_CONFIG = 3
CLOSE_CONNECTION_RESPONSE = 4
GET_READER_CAPABILITIES_RESPONSE = 11
GET_READER_CONFIG_RESPONSE = 12
SET_READER_CONFIG_RESPONSE = 13
CLOSE_CONNECTION = 14
ADD_ROSPEC = 20
DELETE_ROSPEC = 21
START_ROSPEC = 22
STOP_ROSPEC = 23
ENABLE_ROSPEC = 24
DISABLE_ROSPEC = 25
ADD_ROSPEC_RESPONSE = 30
DELETE_ROSPEC_RESPONSE = 31
START_ROSPEC_RESPONSE = 32
STOP_ROSPEC_RESPONSE = 33
ENABLE_ROSPEC_RESPONSE = 34
DISABLE_ROSPEC_RESPONSE = 35
DELETE_ACCESSSPEC = 41
DELETE_ACCESSSPEC_RESPONSE = 51
RO_ACCESS_REPORT = 61
KEEPALIVE = 62
READER_EVENT_NOTIFICATION = 63
ENABLE_EVENTS_AND_REPORTS = 64
KEEPALIVE_ACK = 72
ERROR_MESSAGE = 100

_RESPONSE = {
    GET_READER_CAPABILITIES: GET_READER_CAPABILITIES_RESPONSE,
    GET_READER_CONFIG: GET_READER_CONFIG_RESPONSE,
    SET_READER_CONFIG: SET_READER_CONFIG_RESPONSE,
    CLOSE_CONNECTION: CLOSE_CONNECTION_RESPONSE,
    ADD_ROSPEC: ADD_ROSPEC_RESPONSE,
    DELETE_ROSPEC: DELETE_ROSPEC_RESPONSE,
    START_ROSPEC: START_ROSPEC_RESPONSE,
    STOP_ROSPEC: STOP_ROSPEC_RESPONSE,
    ENABLE_ROSPEC: ENABLE_ROSPEC_RESPONSE,
    DISABLE_ROSPEC: DISABLE_ROSPEC_RESPONSE,
    DELETE_ACCESSSPEC: DELETE_ACCESSSPEC_RESPONSE,
}

# Parameter types (section 16.2). TV parameters are 1-127, TLV parameters 128-1023.
TV_ANTENNA_ID = 1
TV_FIRST_SEEN_UTC = 2
TV_PEAK_RSSI = 6
TV_TAG_SEEN_COUNT = 8
TV_ROSPEC_ID = 9
TV_EPC96 = 13
P_UTC_TIMESTAMP = 128
P_GENERAL_DEVICE_CAPABILITIES = 137
P_RECEIVE_SENSITIVITY_TABLE_ENTRY = 139
P_PER_ANTENNA_AIR_PROTOCOL = 140
P_GPIO_CAPABILITIES = 141
P_LLRP_CAPABILITIES = 142
P_REGULATORY_CAPABILITIES = 143
P_UHF_BAND_CAPABILITIES = 144
P_TRANSMIT_POWER_LEVEL_TABLE_ENTRY = 145
P_FREQUENCY_INFORMATION = 146
P_FREQUENCY_HOP_TABLE = 147
P_ROSPEC = 177
P_RO_BOUNDARY_SPEC = 178
P_ROSPEC_START_TRIGGER = 179
P_KEEPALIVE_SPEC = 220
P_TAG_REPORT_DATA = 240
P_EPC_DATA = 241
P_READER_EVENT_NOTIFICATION_DATA = 246
P_CONNECTION_ATTEMPT_EVENT = 256
P_LLRP_STATUS = 287
P_C1G2_LLRP_CAPABILITIES = 327
P_UHF_C1G2_RF_MODE_TABLE = 328
P_UHF_C1G2_RF_MODE_TABLE_ENTRY = 329

# LLRPStatus codes (section 16.2.8.1) and ConnectionAttemptEvent statuses (16.2.7.6.10).
SUCCESS = 0
FIELD_ERROR = 101
UNSUPPORTED_MESSAGE = 109
UNSUPPORTED_VERSION = 110
CONNECTION_SUCCESS = 0
CONNECTION_CLIENT_EXISTS = 2

ANTENNAS = 4
HEADER = struct.Struct("!HII")
_EPC = re.compile(r"[0-9A-Fa-f]+")
_SEND_TIMEOUT = 1.0
_MAX_MESSAGE = 1 << 20

GARBAGE_KINDS = ("framed", "random")
_GARBAGE_CHUNK = 16384

# ROSpec states and the start trigger that waits for START_ROSPEC.
_DISABLED, _INACTIVE, _ACTIVE = 0, 1, 2
_START_NULL = 0


# The encoder: the reader's side of the wire format


def message(message_type: int, body: bytes = b"", message_id: int = 0, version: int = VERSION) -> bytes:
    """One complete LLRP message: header and body."""
    if not 0 <= message_type < 1024 or not 0 <= version < 8:
        raise ValueError(f"message type {message_type} or version {version} out of range")
    return HEADER.pack((version << 10) | message_type, HEADER.size + len(body), message_id) + body


def tlv(param_type: int, body: bytes = b"") -> bytes:
    """A TLV parameter: ``!HH`` type and length (header included), then the body."""
    if not 128 <= param_type < 1024:
        raise ValueError(f"TLV parameter type {param_type} is outside 128..1023")
    return struct.pack("!HH", param_type, 4 + len(body)) + body


def tv(param_type: int, value: bytes) -> bytes:
    """A TV parameter: one byte ``0x80 | type``, then its fixed-size value."""
    if not 1 <= param_type < 128:
        raise ValueError(f"TV parameter type {param_type} is outside 1..127")
    return bytes([0x80 | param_type]) + value


def llrp_status(code: int = SUCCESS, description: str = "") -> bytes:
    text = description.encode("utf-8")
    return tlv(P_LLRP_STATUS, struct.pack("!HH", code, len(text)) + text)


def check_epc(epc: str) -> bytes:
    """The EPC as bytes; ``ValueError`` unless it is 2-62 bytes of hex (4-124 hex digits, even)."""
    if not isinstance(epc, str) or not _EPC.fullmatch(epc) or len(epc) % 2 or not 4 <= len(epc) <= 124:
        raise ValueError(f"EPC {epc!r} must be 4-124 hex digits, an even number of them")
    return bytes.fromhex(epc)


def epc_parameter(epc: str, *, compact: bool = True) -> bytes:
    """EPC-96 (TV 13) for a 96-bit EPC when ``compact``, else EPCData (TLV 241) with its bit length."""
    raw = check_epc(epc)
    if compact and len(raw) == 12:
        return tv(TV_EPC96, raw)
    return tlv(P_EPC_DATA, struct.pack("!H", len(raw) * 8) + raw)


def tag_report_data(
    epc: str,
    *,
    antenna: int | None = None,
    rssi: int | None = None,
    first_seen_us: int | None = None,
    seen_count: int | None = None,
    rospec_id: int | None = None,
    compact: bool = True,
) -> bytes:
    """One TagReportData parameter; the optional fields in the order the specification lists them."""
    body = epc_parameter(epc, compact=compact)
    if rospec_id is not None:
        body += tv(TV_ROSPEC_ID, struct.pack("!I", rospec_id))
    if antenna is not None:
        body += tv(TV_ANTENNA_ID, struct.pack("!H", antenna))
    if rssi is not None:
        body += tv(TV_PEAK_RSSI, struct.pack("!b", rssi))
    if first_seen_us is not None:
        body += tv(TV_FIRST_SEEN_UTC, struct.pack("!Q", first_seen_us))
    if seen_count is not None:
        body += tv(TV_TAG_SEEN_COUNT, struct.pack("!H", seen_count))
    return tlv(P_TAG_REPORT_DATA, body)


def ro_access_report(reports: list[bytes], message_id: int = 0) -> bytes:
    return message(RO_ACCESS_REPORT, b"".join(reports), message_id)


def keepalive(message_id: int = 0) -> bytes:
    return message(KEEPALIVE, b"", message_id)


def connection_event(
    status: int = CONNECTION_SUCCESS, message_id: int = 0, utc_us: int | None = None
) -> bytes:
    """READER_EVENT_NOTIFICATION carrying a UTCTimestamp and a ConnectionAttemptEvent."""
    stamp = int(time.time() * 1_000_000) if utc_us is None else utc_us
    data = tlv(P_UTC_TIMESTAMP, struct.pack("!Q", stamp)) + tlv(
        P_CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status)
    )
    return message(READER_EVENT_NOTIFICATION, tlv(P_READER_EVENT_NOTIFICATION_DATA, data), message_id)


def response(message_type: int, message_id: int, code: int = SUCCESS, description: str = "") -> bytes:
    return message(message_type, llrp_status(code, description), message_id)


def capabilities() -> bytes:
    """What GET_READER_CAPABILITIES_RESPONSE carries after its LLRPStatus: a 4-antenna Gen2 reader."""
    firmware = b"gated-sim 1.0"
    general = (
        struct.pack("!HHIIH", ANTENNAS, 0x4000, 25882, 1, len(firmware))
        + firmware
        + tlv(P_RECEIVE_SENSITIVITY_TABLE_ENTRY, struct.pack("!Hh", 1, 0))
        + b"".join(
            tlv(P_PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", n, 1, 1)) for n in range(1, ANTENNAS + 1)
        )
        + tlv(P_GPIO_CAPABILITIES, struct.pack("!HH", 4, 4))
    )
    llrp = struct.pack("!BBHIIIII", 0x40, 7, 0, 1, 1, 1, 1, 1)
    powers = b"".join(
        tlv(P_TRANSMIT_POWER_LEVEL_TABLE_ENTRY, struct.pack("!Hh", index, 1000 + 25 * (index - 1)))
        for index in range(1, 82)
    )
    hops = struct.pack("!BBH", 1, 0, 4) + b"".join(
        struct.pack("!I", khz) for khz in (865700, 866300, 866900, 867500)
    )
    frequency = tlv(P_FREQUENCY_INFORMATION, struct.pack("!B", 0x80) + tlv(P_FREQUENCY_HOP_TABLE, hops))
    mode = struct.pack("!IBBBBIIIII", 1002, 0x80, 2, 0, 4, 320000, 1500, 25000, 25000, 0)
    modes = tlv(P_UHF_C1G2_RF_MODE_TABLE, tlv(P_UHF_C1G2_RF_MODE_TABLE_ENTRY, mode))
    regulatory = struct.pack("!HH", 826, 2) + tlv(P_UHF_BAND_CAPABILITIES, powers + frequency + modes)
    return (
        tlv(P_GENERAL_DEVICE_CAPABILITIES, general)
        + tlv(P_LLRP_CAPABILITIES, llrp)
        + tlv(P_REGULATORY_CAPABILITIES, regulatory)
        + tlv(P_C1G2_LLRP_CAPABILITIES, struct.pack("!BH", 0, 2))
    )


# Reading what the client sends


def framed_garbage(size: int, first_id: int = 1) -> bytes:
    """About ``size`` bytes of complete messages a client must refuse: a message type no reader
    sends, a TagReportData whose parameter runs past its end, and LLRP version 2, in turn."""
    broken_report = struct.pack("!HH", P_TAG_REPORT_DATA, 40) + tv(TV_EPC96, bytes(11))  # 40 > 17
    kinds = (
        lambda number: message(0, b"", number),
        lambda number: message(RO_ACCESS_REPORT, broken_report, number),
        lambda number: message(KEEPALIVE, b"", number, version=2),
    )
    parts: list[bytes] = []
    total, number = 0, first_id
    while total < size:
        part = kinds[number % len(kinds)](number & 0xFFFFFFFF)
        parts.append(part)
        total += len(part)
        number += 1
    return b"".join(parts)


def _params(data: bytes) -> list[tuple[int, bytes]]:
    """The TLV parameters of a body, as (type, body); ``ValueError`` for a malformed list.

    A client sends no TV parameters in the messages this reader understands."""
    out: list[tuple[int, bytes]] = []
    position = 0
    while position < len(data):
        if data[position] & 0x80 or position + 4 > len(data):
            raise ValueError("malformed parameter")
        word, length = struct.unpack_from("!HH", data, position)
        if length < 4 or position + length > len(data):
            raise ValueError("malformed parameter length")
        out.append((word & 0x3FF, data[position + 4 : position + length]))
        position += length
    return out


def _find(params: list[tuple[int, bytes]], param_type: int) -> bytes | None:
    for found, body in params:
        if found == param_type:
            return body
    return None


@dataclass(slots=True)
class _ROSpec:
    start_trigger: int
    state: int = _DISABLED


class LlrpReaderSimulator(Simulator):
    """One LLRP reader on ``host``:``port`` (``port=0`` picks a free port, kept across restarts).

    ``keepalive_interval`` (seconds) overrides what the client asks for; ``keepalives=False`` makes
    a reader that never sends them (a reader gone quiet)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        keepalive_interval: float | None = None,
        keepalives: bool = True,
        garbage: str | None = None,
        seed: int = 0,
    ) -> None:
        if keepalive_interval is not None and keepalive_interval <= 0:
            raise ValueError(f"keepalive_interval {keepalive_interval} must be positive")
        if garbage is not None and garbage not in GARBAGE_KINDS:
            raise ValueError(f"garbage {garbage!r} is not one of {', '.join(GARBAGE_KINDS)}")
        self.host = host
        self._port = port
        self.keepalive_interval = keepalive_interval
        self.keepalives = keepalives
        self.garbage = garbage
        """What a connected client gets between the answers (None: nothing); may change live."""
        self._rng = random.Random(seed)
        self.garbage_sent = 0
        """Bytes of garbage sent, over all connections."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._buffer = b""
        self._rospecs: dict[int, _ROSpec] = {}
        self._asked_keepalive: float | None = None
        self._next_keepalive: float | None = None
        self._next_id = 0
        self._received: list[int] = []
        self.reports_sent = 0
        self.keepalives_sent = 0
        self.keepalive_acks = 0
        self.connections = 0

    # Lifecycle

    def start(self) -> LlrpReaderSimulator:
        with self._lock:
            if self._thread is not None:
                return self
            server = listening_socket(self.host, self._port, backlog=4)
            self._server = server
            self._port = server.getsockname()[1]
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rfid-llrp-sim", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the client connection and the listening socket; safe to call twice."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            self._thread = None
            self._drop_client()
            if self._server is not None:
                self._server.close()
                self._server = None

    # State, for tests and the command line

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    @property
    def client_connected(self) -> bool:
        with self._lock:
            return self._client is not None

    @property
    def inventorying(self) -> bool:
        """A client is connected and one of its ROSpecs is running."""
        with self._lock:
            return self._client is not None and any(s.state == _ACTIVE for s in self._rospecs.values())

    @property
    def received(self) -> list[int]:
        """The message types the clients sent, in order."""
        with self._lock:
            return list(self._received)

    # What it says

    def present_tag(self, epc_hex: str, antenna: int = 1, rssi: int = -55, repeats: int = 3) -> None:
        """A tag in the field: ``repeats`` sightings, one RO_ACCESS_REPORT each, while inventorying.

        With no ROSpec running, nothing is sent (the reader is not reading)."""
        check_epc(epc_hex)
        if not 1 <= antenna <= ANTENNAS:
            raise ValueError(f"antenna {antenna} is outside 1..{ANTENNAS}")
        if not -128 <= rssi <= 127:
            raise ValueError(f"rssi {rssi} is outside -128..127")
        if repeats < 1:
            raise ValueError(f"repeats {repeats} must be at least 1")
        with self._lock:
            self._require_running()
            active = [number for number, spec in self._rospecs.items() if spec.state == _ACTIVE]
            if self._client is None or not active:
                log.debug("rfid-llrp sim: no ROSpec running, tag %s not read", epc_hex)
                return
            for _ in range(repeats):
                data = tag_report_data(
                    epc_hex,
                    rospec_id=active[0],
                    antenna=antenna,
                    rssi=rssi,
                    first_seen_us=int(time.time() * 1_000_000),
                    seen_count=1,
                )
                self._send(ro_access_report([data], self._reader_id()))
                self.reports_sent += 1

    def send_raw(self, data: bytes) -> None:
        """Any bytes to the connected client, exactly as given (fault injection)."""
        with self._lock:
            self._require_running()
            self._send(bytes(data))

    def _require_running(self) -> None:
        if self._thread is None or self._stop.is_set():
            raise RuntimeError("the simulator is not running")

    def _reader_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return self._next_id

    def _send(self, data: bytes) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.sendall(data)
        except OSError as error:
            log.info("rfid-llrp sim: client gone: %s", error)
            self._drop_client()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._buffer = b""
        self._rospecs.clear()
        self._asked_keepalive = self._next_keepalive = None
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    # Background thread: accept, read requests, send keepalives

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                watched = [sock for sock in (self._server, self._client) if sock is not None]
                wait = 0.1
                if self._next_keepalive is not None:
                    wait = max(0.0, min(wait, self._next_keepalive - time.monotonic()))
                if self._client is not None and self.garbage is not None:
                    wait = 0.0
            try:
                readable = select.select(watched, [], [], wait)[0] if watched else []
            except (OSError, ValueError):
                readable = []
                self._stop.wait(0.05)
            with self._lock:
                if self._stop.is_set():
                    break
                for sock in readable:
                    if sock is self._server:
                        self._accept()
                    elif sock is self._client:
                        self._read_client()
                self._keepalive_due()
                self._babble()

    def _keepalive_due(self) -> None:
        interval = self.keepalive_interval if self.keepalive_interval is not None else self._asked_keepalive
        if self._client is None or not self.keepalives or interval is None:
            self._next_keepalive = None
            return
        now = time.monotonic()
        if self._next_keepalive is None:
            self._next_keepalive = now + interval
        elif now >= self._next_keepalive:
            self._next_keepalive = now + interval
            self._send(keepalive(self._reader_id()))
            self.keepalives_sent += 1

    def _babble(self) -> None:
        """One chunk of garbage to the client, when the reader babbles."""
        kind = self.garbage
        if self._client is None or kind is None:
            return
        if kind == "framed":
            chunk = framed_garbage(_GARBAGE_CHUNK, self._reader_id())
        else:
            chunk = self._rng.randbytes(_GARBAGE_CHUNK)
        client = self._client
        self._send(chunk)
        if self._client is client:
            self.garbage_sent += len(chunk)

    def _accept(self) -> None:
        server = self._server
        if server is None:
            return
        try:
            client, peer = server.accept()
        except OSError:
            return
        client.settimeout(_SEND_TIMEOUT)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._client is not None and select.select([self._client], [], [], 0)[0]:
            self._read_client()  # the old client may have just left
        if self._client is not None:
            with contextlib.suppress(OSError):
                client.sendall(connection_event(CONNECTION_CLIENT_EXISTS, self._reader_id()))
            client.close()
            log.info("rfid-llrp sim: refused %s, a client is already connected", peer)
            return
        self._client = client
        self.connections += 1
        log.info("rfid-llrp sim: client %s connected", peer)
        self._send(connection_event(CONNECTION_SUCCESS, self._reader_id()))

    def _read_client(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            data = client.recv(65536)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            log.info("rfid-llrp sim: client disconnected")
            self._drop_client()
            return
        self._buffer += data
        while self._client is not None and len(self._buffer) >= HEADER.size:
            word, length, message_id = HEADER.unpack_from(self._buffer)
            if length < HEADER.size or length > _MAX_MESSAGE:
                log.warning("rfid-llrp sim: bad message length %d, closing the connection", length)
                self._drop_client()
                return
            if len(self._buffer) < length:
                return
            body, self._buffer = self._buffer[HEADER.size : length], self._buffer[length:]
            self._handle((word >> 10) & 0x7, word & 0x3FF, message_id, body)

    def _handle(self, version: int, message_type: int, message_id: int, body: bytes) -> None:
        self._received.append(message_type)
        if version != VERSION:
            status = llrp_status(UNSUPPORTED_VERSION, f"LLRP version {version} is not supported")
            self._send(message(ERROR_MESSAGE, status, message_id))
            return
        if message_type in (KEEPALIVE_ACK, ENABLE_EVENTS_AND_REPORTS):
            if message_type == KEEPALIVE_ACK:
                self.keepalive_acks += 1
            return
        reply = _RESPONSE.get(message_type)
        if reply is None:
            status = llrp_status(UNSUPPORTED_MESSAGE, f"message type {message_type} is not supported")
            self._send(message(ERROR_MESSAGE, status, message_id))
            return
        try:
            code, text, extra = self._answer(message_type, body)
        except (ValueError, struct.error) as error:
            code, text, extra = FIELD_ERROR, f"malformed message: {error}", b""
        self._send(message(reply, llrp_status(code, text) + extra, message_id))
        if message_type == CLOSE_CONNECTION:
            self._drop_client()

    def _answer(self, message_type: int, body: bytes) -> tuple[int, str, bytes]:
        """Apply one request; its status code, description and the parameters after the status."""
        if message_type == GET_READER_CAPABILITIES:
            return SUCCESS, "", capabilities()
        if message_type == GET_READER_CONFIG:
            interval = self._asked_keepalive
            spec = (
                struct.pack("!BI", 0, 0) if interval is None else struct.pack("!BI", 1, int(interval * 1000))
            )
            return SUCCESS, "", tlv(P_KEEPALIVE_SPEC, spec)
        if message_type == SET_READER_CONFIG:
            (flags,) = struct.unpack_from("!B", body)
            if flags & 0x80:
                self._rospecs.clear()
                self._asked_keepalive = None
            asked = _find(_params(body[1:]), P_KEEPALIVE_SPEC)
            if asked is not None:
                trigger, milliseconds = struct.unpack_from("!BI", asked)
                self._asked_keepalive = milliseconds / 1000 if trigger == 1 and milliseconds > 0 else None
                self._next_keepalive = None
            return SUCCESS, "", b""
        if message_type == CLOSE_CONNECTION:
            return SUCCESS, "", b""
        if message_type == DELETE_ACCESSSPEC:
            (number,) = struct.unpack_from("!I", body)
            if number != 0:
                return FIELD_ERROR, f"no AccessSpec {number}", b""
            return SUCCESS, "", b""
        if message_type == ADD_ROSPEC:
            return self._add_rospec(body)
        (number,) = struct.unpack_from("!I", body)
        return self._rospec_command(message_type, number)

    def _add_rospec(self, body: bytes) -> tuple[int, str, bytes]:
        spec = _find(_params(body), P_ROSPEC)
        if spec is None:
            return FIELD_ERROR, "ADD_ROSPEC without a ROSpec", b""
        number, _priority, state = struct.unpack_from("!IBB", spec)
        if number == 0 or number in self._rospecs:
            return FIELD_ERROR, f"ROSpecID {number} is 0 or already in use", b""
        if state != _DISABLED:
            return FIELD_ERROR, "a new ROSpec must be Disabled", b""
        boundary = _find(_params(spec[6:]), P_RO_BOUNDARY_SPEC)
        start = None if boundary is None else _find(_params(boundary), P_ROSPEC_START_TRIGGER)
        if start is None or not start:
            return FIELD_ERROR, "ROSpec without a start trigger", b""
        self._rospecs[number] = _ROSpec(start_trigger=start[0])
        return SUCCESS, "", b""

    def _rospec_command(self, message_type: int, number: int) -> tuple[int, str, bytes]:
        if number == 0 and message_type in (DELETE_ROSPEC, ENABLE_ROSPEC, DISABLE_ROSPEC):
            chosen = list(self._rospecs)
        elif number in self._rospecs:
            chosen = [number]
        else:
            return FIELD_ERROR, f"no ROSpec {number}", b""
        for key in chosen:
            spec = self._rospecs[key]
            if message_type == DELETE_ROSPEC:
                del self._rospecs[key]
            elif message_type == ENABLE_ROSPEC:
                if spec.state == _DISABLED:
                    spec.state = _INACTIVE if spec.start_trigger == _START_NULL else _ACTIVE
            elif message_type == DISABLE_ROSPEC:
                spec.state = _DISABLED
            elif message_type == START_ROSPEC:
                if spec.state == _DISABLED:
                    return FIELD_ERROR, f"ROSpec {key} is disabled", b""
                spec.state = _ACTIVE
            elif message_type == STOP_ROSPEC:
                if spec.state == _DISABLED:
                    return FIELD_ERROR, f"ROSpec {key} is disabled", b""
                spec.state = _INACTIVE
        return SUCCESS, "", b""


# The gated-sim command


def _tag_list(text: str) -> list[str]:
    try:
        tags = [item.strip() for item in text.split(",") if item.strip()]
        for tag in tags:
            check_epc(tag)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return tags


def register_cli(subparsers: Any) -> None:
    """Add ``gated-sim rfid-llrp``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rfid-llrp",
        help="a fixed UHF RFID reader speaking LLRP on TCP",
        description="Present truck tags in turn to whichever LLRP client connects.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help="TCP port (0 picks a free one)")
    parser.add_argument(
        "--tags",
        metavar="EPC[,EPC...]",
        type=_tag_list,
        default=list(DEFAULT_TAGS),
        help="tags to present in turn (hex)",
    )
    parser.add_argument("--interval", metavar="SECONDS", type=float, default=10.0, help="between tags")
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.add_argument(
        "--garbage", choices=GARBAGE_KINDS, default=None, help="babble: send garbage to every client"
    )
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run until ``--duration`` has passed or Ctrl-C."""
    tags: list[str] = args.tags
    if not tags:
        print("rfid-llrp: --tags is empty")
        return 2
    if args.interval <= 0:
        print("rfid-llrp: --interval must be positive")
        return 2
    deadline = None if args.duration is None else time.monotonic() + args.duration
    simulator = LlrpReaderSimulator(host=args.host, port=args.port, garbage=args.garbage)
    try:
        simulator.start()
    except OSError as error:
        print(f"rfid-llrp: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    with simulator:
        print(f"rfid-llrp: listening on {simulator.host}:{simulator.port}", flush=True)
        turn = 0
        try:
            while deadline is None or time.monotonic() < deadline:
                simulator.present_tag(tags[turn % len(tags)])
                turn += 1
                left = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                time.sleep(max(0.0, left))
        except KeyboardInterrupt:
            pass
    return 0
