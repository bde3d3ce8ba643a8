"""The LLRP RFID reader: the simulator checked by sllurp, the message decoder, and the driver against
the simulator over real TCP."""

from __future__ import annotations

import argparse
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.rfid_llrp import (
    GARBAGE_LIMIT,
    MAX_MESSAGE,
    MAX_QUEUED,
    READ_CHUNK,
    LlrpMessage,
    LlrpRfidDriver,
    LlrpStatus,
    MessageSplitter,
    RfidLlrpDevice,
    TagReport,
    parse_message,
)
from gated.clock import ManualClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import DeviceState, Kind, Quality, Source
from simulators.rfid_llrp import (
    GARBAGE_KINDS,
    LlrpReaderSimulator,
    connection_event,
    keepalive,
    message,
    register_cli,
    response,
    ro_access_report,
    tag_report_data,
    tlv,
)
from tests.sinks import RecordingSink, driver_running, wait_until
from tests.system import free_port

EPC1 = "E2801160600002084C6F1D12"
EPC2 = "E28011606000020A3B19C4F7"
EPC3 = "3034257BF7194E4000001A85"
EPC4 = "AD0112345678"

START_ROSPEC = 22
ENABLE_ROSPEC = 24
SET_READER_CONFIG = 3
KEEPALIVE_ACK = 72

WAIT = 20.0


def make_driver(port: int, **options: Any) -> LlrpRfidDriver:
    """A driver for the reader on ``port``; ``repeat_window`` and ``silence_timeout`` go into its
    settings, the rest to the driver."""
    settings: dict[str, Any] = {"id": "rfid-1", "driver": "rfid-llrp", "host": "127.0.0.1", "port": port}
    for option in ("repeat_window", "silence_timeout"):
        if option in options:
            settings[f"{option}_seconds"] = options.pop(option)
    options = {"backoff_initial": 0.1, "backoff_max": 0.5, **options}
    return LlrpRfidDriver("lane-1", RfidLlrpDevice.model_validate(settings), **options)


@contextmanager
def running(driver: LlrpRfidDriver) -> Iterator[RecordingSink]:
    """The driver's own loop in a thread, stopped and joined at the end."""
    sink = RecordingSink("lane-1", "rfid-1", timeout=WAIT)
    with driver_running(driver, sink):
        yield sink


def online_and_inventorying(simulator: LlrpReaderSimulator, sink: RecordingSink) -> None:
    sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
    wait_until("the reader to run the driver's ROSpec", lambda: simulator.inventorying)


# The simulator, checked by an independent LLRP client


@pytest.mark.timeout(60)
def test_sllurp_inventories_the_simulator() -> None:
    from sllurp.llrp import (  # type: ignore[import-untyped]
        LLRPReaderClient,
        LLRPReaderConfig,
        LLRPReaderState,
    )

    with LlrpReaderSimulator(port=0) as simulator:
        config = LLRPReaderConfig(
            {
                "antennas": [1],
                "keepalive_interval": 300,
                "reconnect": False,
                "tag_content_selector": {"EnableAntennaID": True, "EnablePeakRSSI": True},
            }
        )
        client = LLRPReaderClient("127.0.0.1", simulator.port, config, timeout=5.0)
        reports: list[dict[str, Any]] = []
        lock = threading.Lock()
        inventorying = threading.Event()

        def on_tags(_reader: object, tags: list[dict[str, Any]]) -> None:
            with lock:
                reports.extend(tags)

        def epcs() -> list[bytes]:
            with lock:
                return [tag["EPC"] for tag in reports]

        client.add_tag_report_callback(on_tags)
        client.add_state_callback(LLRPReaderState.STATE_INVENTORYING, lambda *_: inventorying.set())
        client.connect()
        try:
            assert inventorying.wait(WAIT), "sllurp never reached its inventorying state"
            wait_until("the simulator to run sllurp's ROSpec", lambda: simulator.inventorying)
            simulator.present_tag(EPC1, antenna=2, rssi=-61, repeats=3)
            simulator.present_tag(EPC4, repeats=1)
            wait_until("sllurp to receive four tag reports", lambda: len(epcs()) >= 4)
            assert epcs() == [EPC1.lower().encode()] * 3 + [EPC4.lower().encode()]
            with lock:
                first = reports[0]
            assert (first["AntennaID"], first["PeakRSSI"], first["TagSeenCount"]) == (2, -61, 1)
            assert abs(first["FirstSeenTimestampUTC"] / 1e6 - time.time()) < 60
            wait_until("sllurp to acknowledge keepalives", lambda: simulator.keepalive_acks >= 2)
            assert START_ROSPEC not in simulator.received  # sllurp relies on the immediate start
            client.disconnect(timeout=10)
            # sllurp's thread ends once the reader's answer to CLOSE_CONNECTION is handled: on a
            # loaded machine that can take a while (a thread of its own, behind the test's).
            wait_until("sllurp's thread to end", lambda: not client.is_alive(), timeout=60)
            wait_until("the simulator to see sllurp leave", lambda: not simulator.client_connected)
        finally:
            client.hard_disconnect()
            client.join(10)
        assert not client.is_alive()


# The decoder


def own_header(message_type: int, length: int, message_id: int, version: int = 1) -> bytes:
    """The test's own header encoder: 3 reserved bits, 3-bit version, 10-bit type."""
    return bytes([(version << 2) | (message_type >> 8), message_type & 0xFF]) + struct.pack(
        "!II", length, message_id
    )


def test_known_messages_from_the_specification() -> None:
    known_keepalive = bytes.fromhex("043e 0000000a 00000007".replace(" ", ""))
    assert keepalive(7) == known_keepalive == own_header(62, 10, 7)
    assert parse_message(known_keepalive) == LlrpMessage(type=62, message_id=7)

    # RO_ACCESS_REPORT with one TagReportData: EPC-96 (TV 13), AntennaID (TV 1) 3, PeakRSSI (TV 6) -70.
    tag = b"\x8d" + bytes.fromhex(EPC1) + b"\x81\x00\x03" + b"\x86\xba"
    report_data = struct.pack("!HH", 240, 4 + len(tag)) + tag
    known_report = own_header(61, 10 + len(report_data), 99) + report_data
    assert parse_message(known_report) == LlrpMessage(
        type=61, message_id=99, tags=(TagReport(epc=EPC1.lower(), antenna=3, rssi=-70),)
    )
    assert ro_access_report([tag_report_data(EPC1, antenna=3, rssi=-70)], 99) == known_report

    # ADD_ROSPEC_RESPONSE, LLRPStatus (TLV 287) success with no description.
    known_response = own_header(30, 18, 5) + bytes.fromhex("011f0008") + b"\x00\x00\x00\x00"
    assert response(30, 5) == known_response
    assert parse_message(known_response).status == LlrpStatus(code=0)
    assert parse_message(connection_event(0, 1)).connection_attempt == 0
    assert parse_message(connection_event(2, 1)).connection_attempt == 2


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"", "shorter than the header"),
        (own_header(62, 10, 1)[:9], "shorter than the header"),
        (own_header(62, 10, 1, version=2), "LLRP version 2"),
        (own_header(62, 10, 1, version=0), "LLRP version 0"),
        (b"\x24\x3e" + own_header(62, 10, 1)[2:], "reserved header bits"),
        (own_header(62, 11, 1), "header says 11 bytes, the message has 10"),
        (own_header(62, 10, 1) + b"\x00", "header says 10 bytes, the message has 11"),
        (message(20), "ADD_ROSPEC is not a message a reader sends"),
        (message(999), "message type 999"),
        (message(30), "without an LLRPStatus"),
        (message(61, tlv(240, b"\x81\x00\x01")), "without an EPC"),
        (message(61, tlv(240, b"\x8d" + bytes(12) + b"\x8d" + bytes(12))), "two EPCs"),
        (message(61, tlv(240, b"\x8d" + bytes(5))), "TV parameter 13 truncated"),
        (message(61, tlv(240, b"\xff\x00")), "unknown TV parameter 127"),
        (message(61, tlv(240, tlv(241, b"\x00\x60" + bytes(11)))), "EPCData of 96 bits holds 11 bytes"),
        (message(61, tlv(240, tlv(241, b"\x00\x00"))), "empty EPC"),
        (message(61, tlv(240, tlv(287, b""))), "unexpected parameter 287"),
        (message(61, tlv(240, b"")[:3]), "parameter header truncated"),
        (message(61, struct.pack("!HH", 240, 40) + bytes(8)), "length 40 does not fit"),
        (message(61, struct.pack("!HH", 240, 2)), "length 2 does not fit"),
        (message(61, struct.pack("!HH", 0x0400 | 240, 4)), "reserved bits set in parameter 240"),
        (message(61, struct.pack("!HH", 5, 4)), "TV type 5"),
        (message(63), "exactly one ReaderEventNotificationData"),
        (message(63, tlv(246, tlv(256, b"\x00\x00"))), "does not start with a timestamp"),
        (message(63, tlv(246, tlv(128, bytes(8)) + tlv(256, b"\x00"))), "ConnectionAttemptEvent"),
        (message(30, tlv(287, b"\x00\x00\x00\x09abc")), "description longer"),
        (message(62, tlv(240, b"")), "unexpected parameter 240 in KEEPALIVE"),
    ],
)
def test_malformed_messages_are_protocol_errors_with_context(frame: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_message(frame)
    assert complaint in str(raised.value)
    assert frame[:8].hex() in str(raised.value) or not frame


def test_vendor_extensions_and_other_events_are_skipped() -> None:
    custom = struct.pack("!HHII", 1023, 12, 25882, 56)
    tag = tlv(240, b"\x8d" + bytes.fromhex(EPC1) + custom + b"\x87\x00\x05")
    assert parse_message(message(61, tag + custom)).tags == (TagReport(epc=EPC1.lower()),)
    event = tlv(246, tlv(128, bytes(8)) + tlv(249, bytes(9)) + tlv(257))
    parsed = parse_message(message(63, event, 3))
    assert parsed.connection_closed and parsed.connection_attempt is None
    with_error = tlv(287, b"\x00\x65\x00\x03bad" + tlv(288, b"\x00\x01\x00\x65"))
    assert parse_message(message(100, with_error)).status == LlrpStatus(code=101, description="bad")


epcs = st.binary(min_size=2, max_size=62).map(bytes.hex)
antennas = st.integers(min_value=0, max_value=0xFFFF)
rssis = st.integers(min_value=-128, max_value=127)
reports = st.builds(
    lambda epc, antenna, rssi, first, count, upper, compact: (
        epc,
        antenna,
        rssi,
        first,
        count,
        upper,
        compact,
    ),
    epcs,
    st.none() | antennas,
    st.none() | rssis,
    st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    st.none() | st.integers(min_value=0, max_value=0xFFFF),
    st.booleans(),
    st.booleans(),
)
Report = tuple[str, int | None, int | None, int | None, int | None, bool, bool]


def encode_report(items: list[Report], message_id: int) -> bytes:
    return ro_access_report(
        [
            tag_report_data(
                epc.upper() if upper else epc,
                antenna=antenna,
                rssi=rssi,
                first_seen_us=first,
                seen_count=count,
                rospec_id=1,
                compact=compact,
            )
            for epc, antenna, rssi, first, count, upper, compact in items
        ],
        message_id,
    )


@given(items=st.lists(reports, max_size=5), message_id=st.integers(min_value=0, max_value=2**32 - 1))
def test_round_trip_of_tag_reports(items: list[Report], message_id: int) -> None:
    parsed = parse_message(encode_report(items, message_id))
    assert parsed.type == 61
    assert parsed.message_id == message_id
    assert parsed.tags == tuple(
        TagReport(epc=epc, antenna=antenna, rssi=rssi, first_seen_us=first, seen_count=count)
        for epc, antenna, rssi, first, count, _, _ in items
    )


@given(items=st.lists(reports, min_size=1, max_size=3))
def test_every_truncation_is_a_protocol_error_or_a_message(items: list[Report]) -> None:
    frame = encode_report(items, 1)
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            parse_message(frame[:cut])
        if cut >= 10:
            # The body cut short with the header's length made to fit: framing inside must catch it.
            patched = frame[:2] + struct.pack("!I", cut) + frame[6:cut]
            with suppress(ProtocolError):
                assert isinstance(parse_message(patched), LlrpMessage)


@given(items=st.lists(reports, min_size=1, max_size=3), data=st.data())
def test_bit_flips_give_a_protocol_error_or_a_valid_message(items: list[Report], data: st.DataObject) -> None:
    frame = bytearray(encode_report(items, 1))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    try:
        parsed = parse_message(bytes(frame))
    except ProtocolError:
        return
    assert isinstance(parsed, LlrpMessage)
    for tag in parsed.tags:
        assert tag.epc == tag.epc.lower() and len(tag.epc) % 2 == 0 and tag.epc


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_nothing_but_protocol_errors(frame: bytes) -> None:
    for candidate in (
        frame,
        own_header(61, 10 + len(frame), 1) + frame,
        own_header(63, 10 + len(frame), 1) + frame,
    ):
        try:
            parsed = parse_message(candidate)
        except ProtocolError:
            continue
        assert isinstance(parsed, LlrpMessage)


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(4)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            data[position:position] = bytes([rng.randrange(256)])
        elif action == 2 and data:
            del data[min(position, len(data) - 1)]
        elif data:
            index = min(position, len(data) - 1)
            data[index] ^= 1 << rng.randrange(8)
    return bytes(data)


def random_frame(rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        items: list[Report] = [
            (
                rng.randbytes(rng.randint(2, 20)).hex(),
                rng.randint(1, 4),
                rng.randint(-90, -30),
                None,
                1,
                False,
                True,
            )
            for _ in range(rng.randint(1, 3))
        ]
        return encode_report(items, rng.randrange(2**32))
    if choice == 1:
        return keepalive(rng.randrange(2**32))
    if choice == 2:
        return connection_event(rng.randrange(5), rng.randrange(2**32))
    return response(
        rng.choice([4, 11, 12, 13, 30, 31, 32, 33, 34, 35, 51]), rng.randrange(2**32), rng.randrange(3)
    )


def test_fuzz_decoder_and_splitter() -> None:
    rng = random.Random(5084)
    splitter = MessageSplitter()
    outcomes = {"error": 0, "message": 0}
    for _ in range(20_000):
        if rng.random() < 0.3:
            frame = rng.randbytes(rng.randrange(120))
            if rng.random() < 0.5:
                frame = own_header(rng.choice([61, 62, 63, 30]), 10 + len(frame), 1) + frame
        else:
            frame = mutate(rng, random_frame(rng))
        try:
            parsed = parse_message(frame)
        except ProtocolError:
            outcomes["error"] += 1
        else:
            assert isinstance(parsed, LlrpMessage)
            outcomes["message"] += 1
        for item in splitter.feed(frame):
            if isinstance(item, bytes):
                assert len(item) <= MAX_MESSAGE
                with suppress(ProtocolError):
                    parse_message(item)
    assert outcomes["error"] > 5_000
    assert outcomes["message"] > 500


messages = st.one_of(
    st.lists(reports, max_size=3).map(lambda items: encode_report(items, 1)),
    st.integers(min_value=0, max_value=2**32 - 1).map(keepalive),
)


@given(items=st.lists(messages, max_size=8), data=st.data())
def test_splitter_recovers_every_message_from_any_chunking(items: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(items)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8)))
    splitter = MessageSplitter()
    found: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        for item in splitter.feed(stream[start:end]):
            assert isinstance(item, bytes), item
            found.append(item)
    assert found == items
    assert splitter.buffered == 0


def test_splitter_skips_garbage_and_resumes() -> None:
    splitter = MessageSplitter()
    out = splitter.feed(b"\x00\xff garbage \xe0" + keepalive(3) + b"\x00\x00" + keepalive(4))
    assert [type(item) for item in out] == [ProtocolError, bytes, ProtocolError, bytes]
    assert "12 bytes skipped" in str(out[0])
    assert out[1] == keepalive(3) and out[3] == keepalive(4)
    # A plausible header waits for the rest of its message.
    assert splitter.feed(keepalive(5)[:7]) == []
    assert splitter.feed(keepalive(5)[7:]) == [keepalive(5)]


# The driver on its own


def test_driver_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="silence_timeout"):
        make_driver(1, silence_timeout=0.1, read_timeout=0.2)
    with pytest.raises(ValueError, match="repeat_window"):
        make_driver(1, repeat_window=-1)


@pytest.mark.timeout(30)
def test_connect_failures_are_device_unavailable() -> None:
    driver = make_driver(free_port(), connect_timeout=2.0)
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        driver.connect()
    driver.close()
    driver.close()
    # Something that accepts but never speaks LLRP.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        driver = make_driver(mute.getsockname()[1], connect_timeout=1.0)
        with pytest.raises(DeviceUnavailable, match="connection event"):
            driver.connect()
        driver.close()


@pytest.mark.timeout(30)
def test_a_second_client_is_refused_by_the_reader() -> None:
    with LlrpReaderSimulator(port=0) as simulator:
        first = make_driver(simulator.port)
        first.connect()
        try:
            wait_until("the first client's ROSpec to run", lambda: simulator.inventorying)
            second = make_driver(simulator.port)
            with pytest.raises(DeviceUnavailable, match="client initiated connection already exists"):
                second.connect()
            second.close()
        finally:
            first.close()


# The driver against the simulator over real TCP


@pytest.mark.timeout(60)
def test_one_reading_per_tag_despite_repeats() -> None:
    with LlrpReaderSimulator(port=0) as simulator, running(make_driver(simulator.port)) as sink:
        online_and_inventorying(simulator, sink)
        simulator.present_tag(EPC1, antenna=2, rssi=-61, repeats=5)
        simulator.present_tag(EPC2.lower(), repeats=4)
        simulator.present_tag(EPC3, antenna=4, rssi=-40)
        simulator.present_tag(EPC4, repeats=1)
        sink.wait_for("four readings", lambda: len(sink.values()) >= 4)
        time.sleep(0.5)
        assert sink.values() == [EPC1.lower(), EPC2.lower(), EPC3.lower(), EPC4.lower()]
        assert sink.errors == []
        for reading in sink.readings:
            assert reading.kind is Kind.RFID
            assert reading.source == Source.EPC
            assert reading.source == "epc"
            assert reading.quality is Quality.GOOD
            assert reading.units is None and reading.confidence is None
            assert (reading.lane, reading.device) == ("lane-1", "rfid-1")
            assert reading.ts.tzinfo is not None
        received = simulator.received
        for needed in (SET_READER_CONFIG, ENABLE_ROSPEC, START_ROSPEC):
            assert needed in received


@pytest.mark.timeout(60)
def test_keepalives_keep_a_quiet_reader_online_and_their_absence_does_not() -> None:
    with LlrpReaderSimulator(port=0) as simulator:
        driver = make_driver(simulator.port, silence_timeout=1.8)
        with running(driver) as sink:
            online_and_inventorying(simulator, sink)
            time.sleep(4.0)
            assert sink.states == [DeviceState.ONLINE]
            assert simulator.keepalives_sent >= 4  # asked for one every 0.6 s
            wait_until("the driver to acknowledge keepalives", lambda: simulator.keepalive_acks >= 4)
            assert driver.connects == 1
    with LlrpReaderSimulator(port=0, keepalives=False) as simulator:
        driver = make_driver(simulator.port, silence_timeout=1.0)
        with running(driver) as sink:

            def gone_quiet() -> bool:
                return any(
                    state is DeviceState.OFFLINE and "no message" in text for state, text in sink.statuses
                )

            sink.wait_for("the silent reader to go offline", gone_quiet)


@pytest.mark.timeout(60)
def test_reader_stopped_goes_offline_and_restarted_comes_back() -> None:
    simulator = LlrpReaderSimulator(port=0).start()
    try:
        port = simulator.port
        with running(make_driver(port, silence_timeout=1.5)) as sink:
            online_and_inventorying(simulator, sink)
            simulator.present_tag(EPC1)
            sink.wait_for("the first tag", lambda: sink.values() == [EPC1.lower()])
            simulator.stop()
            simulator.stop()
            sink.wait_for("the driver to go offline", lambda: sink.state is DeviceState.OFFLINE)
            with pytest.raises(RuntimeError, match="not running"):
                simulator.present_tag(EPC2)
            time.sleep(1.0)
            assert sink.state is DeviceState.OFFLINE
            simulator.start()
            assert simulator.port == port
            sink.wait_for("the driver to come back online", lambda: sink.state is DeviceState.ONLINE)
            wait_until("the ROSpec to run again", lambda: simulator.inventorying)
            simulator.present_tag(EPC2)
            sink.wait_for("a tag after the restart", lambda: len(sink.values()) >= 2)
            assert sink.values() == [EPC1.lower(), EPC2.lower()]
            states = sink.states
            assert states[:3] == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    finally:
        simulator.stop()


@pytest.mark.timeout(60)
def test_garbage_is_counted_and_later_tags_still_read() -> None:
    with LlrpReaderSimulator(port=0) as simulator:
        driver = make_driver(simulator.port)
        with running(driver) as sink:
            online_and_inventorying(simulator, sink)
            simulator.present_tag(EPC1)
            sink.wait_for("the first tag", lambda: sink.values() == [EPC1.lower()])
            simulator.send_raw(b"\x00\xff line noise \xe0\xe1")
            simulator.send_raw(own_header(62, 10, 9, version=2))
            simulator.send_raw(message(999, b"abc"))
            simulator.send_raw(message(61, struct.pack("!HH", 240, 40) + b"\x8d" + bytes(11)))
            simulator.send_raw(message(61, tlv(240, b"\x81\x00\x01")))
            simulator.present_tag(EPC2, repeats=2)
            simulator.send_raw(message(61, tlv(240, tlv(241, b"\x00\x60" + bytes(3)))))
            simulator.present_tag(EPC3)
            sink.wait_for("the tags after the garbage", lambda: len(sink.values()) >= 3)
            sink.wait_for("six frame errors", lambda: len(sink.errors) >= 6)
            assert sink.values() == [EPC1.lower(), EPC2.lower(), EPC3.lower()]
            errors = sink.errors
            for fragment in (
                "bytes skipped",
                "LLRP version 2",
                "message type 999",
                "length 40 does not fit",
                "without an EPC",
                "EPCData of 96 bits holds 3 bytes",
            ):
                assert any(fragment in error for error in errors), (fragment, errors)
            assert driver.frame_errors == len(errors)
            assert sink.states == [DeviceState.ONLINE]


def driver_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "drivers.base"
        and record.levelno >= logging.WARNING
        and "rfid-1" in record.getMessage()
    ]


class Gauge:
    """The most the driver held at any look: its queue and its splitter's partial message."""

    def __init__(self, driver: LlrpRfidDriver) -> None:
        self.driver = driver
        self.queued = 0
        self.buffered = 0

    def look(self) -> None:
        self.queued = max(self.queued, self.driver.queued)
        self.buffered = max(self.buffered, self.driver._splitter.buffered)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("garbage", GARBAGE_KINDS)
def test_a_reader_babbling_through_the_handshake_is_offline_and_holds_little(
    garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.base")
    with LlrpReaderSimulator(port=0, garbage=garbage, seed=11) as simulator:
        driver = make_driver(simulator.port, connect_timeout=2.0)
        gauge = Gauge(driver)
        with running(driver) as sink:

            def babbled_at_three_connections() -> bool:
                gauge.look()
                return simulator.connections >= 3 and sink.state is DeviceState.OFFLINE

            wait_until("three connections to a babbling reader", babbled_at_three_connections, timeout=90)
            assert simulator.garbage_sent > 0
            assert gauge.queued <= MAX_QUEUED and gauge.buffered <= MAX_MESSAGE + READ_CHUNK
            assert DeviceState.ONLINE not in sink.states
            assert sink.readings == []
            # The first failure is logged, the reconnects that fail the same way only counted.
            assert len(driver_warnings(caplog)) == 1, driver_warnings(caplog)
            assert driver.failures_while_down >= 2
            if garbage == "framed":
                detail = sink.statuses[-1][1]
                assert "garbage" in detail and f"more than {GARBAGE_LIMIT} bad frames" in detail
                assert driver.garbage_disconnects >= 2

            simulator.garbage = None  # the reader is repaired
            online_and_inventorying(simulator, sink)
            simulator.present_tag(EPC1)
            sink.wait_for("a tag after the repair", lambda: sink.values() == [EPC1.lower()])
            assert any("online again" in record.getMessage() for record in caplog.records)


@pytest.mark.timeout(90)
def test_a_reader_that_starts_babbling_is_cut_off_and_held_offline() -> None:
    with LlrpReaderSimulator(port=0) as simulator:
        driver = make_driver(simulator.port)
        gauge = Gauge(driver)
        with running(driver) as sink:
            online_and_inventorying(simulator, sink)
            simulator.present_tag(EPC1)
            sink.wait_for("the first tag", lambda: sink.values() == [EPC1.lower()])
            simulator.garbage = "framed"

            def cut_off_twice() -> bool:
                gauge.look()
                return driver.garbage_disconnects >= 2

            wait_until("the driver to hang up on the reader twice", cut_off_twice)
            assert gauge.queued <= GARBAGE_LIMIT
            assert sink.states == [DeviceState.ONLINE, DeviceState.OFFLINE]
            # At most the bad frames of one connection before it was cut are handed on.
            assert 1 <= len(sink.errors) <= GARBAGE_LIMIT * driver.garbage_disconnects
            simulator.garbage = None
            sink.wait_for("the reader back online", lambda: sink.state is DeviceState.ONLINE)
            assert sink.states == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]


@pytest.mark.timeout(60)
def test_a_flood_of_new_tags_is_refused_beyond_the_queue_and_counted() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        driver = make_driver(server.getsockname()[1], repeat_window=60.0)
        accepted: list[socket.socket] = []

        def reader() -> None:
            peer, _ = server.accept()
            accepted.append(peer)
            peer.sendall(connection_event(0, 1))
            buffer = b""
            for _ in range(6):  # answer the handshake's six requests with success
                while len(buffer) < 10 or len(buffer) < struct.unpack_from("!I", buffer, 2)[0]:
                    buffer += peer.recv(65536)
                word, length, message_id = struct.unpack_from("!HII", buffer)
                buffer = buffer[length:]
                answer = {3: 13, 41: 51, 21: 31, 20: 30, 24: 34, 22: 32}[word & 0x3FF]
                peer.sendall(response(answer, message_id))
            # One report of more distinct tags than the driver queues, in one read.
            tags = [tag_report_data(f"{number:024X}") for number in range(3 * MAX_QUEUED)]
            peer.sendall(ro_access_report(tags, 99))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            driver.connect()
            thread.join(timeout=WAIT)
            readings: list[object] = []
            deadline = time.monotonic() + WAIT
            while not readings and time.monotonic() < deadline:
                readings = list(driver.step())
            assert len(readings) == MAX_QUEUED and driver.refused == 2 * MAX_QUEUED
            assert driver.queued == 0
        finally:
            driver.close()
            for peer in accepted:
                peer.close()


@pytest.mark.timeout(60)
def test_one_reading_per_truck_within_the_repeat_window() -> None:
    clock = ManualClock()
    with LlrpReaderSimulator(port=0, keepalive_interval=0.2) as simulator:
        driver = make_driver(simulator.port, clock=clock, repeat_window=5.0, silence_timeout=3600.0)
        with running(driver) as sink:
            online_and_inventorying(simulator, sink)

            def present_then_mark(epc: str, marker: str, count: int) -> None:
                simulator.present_tag(epc, repeats=3)
                simulator.present_tag(marker, repeats=1)
                sink.wait_for(f"{count} readings", lambda: len(sink.values()) >= count)

            present_then_mark(EPC1, EPC2, 2)
            clock.advance(4.0)
            present_then_mark(EPC1, EPC3, 3)  # 4 s later: the same truck
            clock.advance(4.0)
            present_then_mark(EPC1, EPC4, 4)  # seen 4 s ago, still standing there
            clock.advance(5.5)
            simulator.present_tag(EPC1)  # gone for 5.5 s: a new arrival
            sink.wait_for("5 readings", lambda: len(sink.values()) >= 5)
            assert sink.values() == [e.lower() for e in (EPC1, EPC2, EPC3, EPC4, EPC1)]
            assert sink.readings[-1].ts == clock.now()


@pytest.mark.timeout(60)
def test_concurrent_presenters_never_interleave_messages() -> None:
    tags = [f"{sender:02X}{number:06X}AABBCCDD" for sender in range(4) for number in range(15)]
    with (
        LlrpReaderSimulator(port=0, keepalive_interval=0.05) as simulator,
        running(make_driver(simulator.port)) as sink,
    ):
        online_and_inventorying(simulator, sink)

        def send(sender: int) -> None:
            for tag in tags[sender * 15 : (sender + 1) * 15]:
                simulator.present_tag(tag, repeats=2)

        senders = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=15)
        sink.wait_for("every tag", lambda: len(sink.values()) >= len(tags))
        assert sorted(sink.values()) == sorted(tag.lower() for tag in tags)
        assert sink.errors == []


# The simulator on its own


def test_simulator_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="keepalive_interval"):
        LlrpReaderSimulator(port=0, keepalive_interval=0)
    simulator = LlrpReaderSimulator(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        simulator.send_raw(b"x")
    with simulator:
        for bad in ("E28", "E2801160600002084C6F1D1", "XYZ12345"):
            with pytest.raises(ValueError, match="EPC"):
                simulator.present_tag(bad)
        with pytest.raises(ValueError, match="antenna"):
            simulator.present_tag(EPC1, antenna=9)
        with pytest.raises(ValueError, match="repeats"):
            simulator.present_tag(EPC1, repeats=0)
        simulator.present_tag(EPC1)  # nobody connected: not read, no error
        assert simulator.reports_sent == 0
    simulator.stop()


@pytest.mark.timeout(30)
def test_simulator_answers_requests_like_a_reader() -> None:
    with (
        LlrpReaderSimulator(port=0) as simulator,
        socket.create_connection(("127.0.0.1", simulator.port), 5) as sock,
    ):
        sock.settimeout(5)
        splitter = MessageSplitter()
        pending: list[LlrpMessage] = []

        def receive() -> LlrpMessage:
            while not pending:
                for item in splitter.feed(sock.recv(4096)):
                    assert isinstance(item, bytes)
                    pending.append(parse_message(item))
            return pending.pop(0)

        assert receive().connection_attempt == 0

        def ask(message_type: int, body: bytes, message_id: int) -> LlrpMessage:
            sock.sendall(message(message_type, body, message_id))
            answer = receive()
            assert answer.message_id == message_id
            return answer

        assert ask(1, b"\x00", 1).type == 11
        assert ask(2, bytes(7), 2).type == 12
        for number, (kind, body) in enumerate(
            [(25, 0), (21, 0), (41, 0), (23, 7), (22, 7), (41, 3)], start=3
        ):
            answer = ask(kind, struct.pack("!I", body), number)
            assert answer.type == kind + 10
            assert answer.status is not None
            assert answer.status.ok == (body == 0), answer
        null_start = tlv(179, b"\x00") + tlv(182, bytes(5))
        spec = tlv(177, struct.pack("!IBB", 7, 0, 0) + tlv(178, null_start))
        assert ask(20, spec, 20).status == LlrpStatus(0)
        assert ask(20, spec, 21).status.code == 101  # type: ignore[union-attr]
        assert ask(24, struct.pack("!I", 7), 22).status == LlrpStatus(0)
        assert not simulator.inventorying  # a null start trigger waits for START_ROSPEC
        assert ask(22, struct.pack("!I", 7), 23).status == LlrpStatus(0)
        assert simulator.inventorying
        assert ask(23, struct.pack("!I", 7), 24).status == LlrpStatus(0)
        assert not simulator.inventorying
        error = ask(40, b"", 25)
        assert error.type == 100 and error.status is not None and error.status.code == 109
        assert ask(14, b"", 26).type == 4
        wait_until("the reader to close the connection", lambda: not simulator.client_connected)


@pytest.mark.timeout(30)
def test_gated_sim_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["rfid-llrp", "--tags", "NOTHEX00"])
    capsys.readouterr()
    port = free_port()
    args = parser.parse_args(
        ["rfid-llrp", "--port", str(port), "--tags", f"{EPC1},{EPC3}", "--interval", "0.2", "--duration", "6"]
    )
    assert parser.parse_args(["rfid-llrp"]).port == 5084
    result: list[int] = []
    command = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    command.start()
    with running(make_driver(port, repeat_window=60.0)) as sink:
        sink.wait_for("both tags", lambda: {EPC1.lower(), EPC3.lower()} <= set(sink.values()))
    command.join(timeout=15)
    assert result == [0]
    assert f"rfid-llrp: listening on 127.0.0.1:{port}" in capsys.readouterr().out
