"""Driver credentials: the card reader's frame decoder, the driver against its simulator over a socat
pty pair and TCP, the cancelled-card list on a real SQLite file (and the refusal of an import that
would let cancelled cards through, by the API and the command line), and the credential check."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from drivers.credential_serial import (
    MAX_FRAME,
    CardRead,
    CredentialSerialDevice,
    FrameSplitter,
    SerialCredentialDriver,
    parse_frame,
)
from drivers.serial_frames import RepeatFilter
from gated import credentials
from gated.clock import ManualClock, rfc3339
from gated.credentials import (
    CANCELLED_LIST_MISSING,
    CANCELLED_LIST_STALE,
    CARD_CANCELLED,
    CARD_EXPIRED,
    CARD_NOT_AUTHENTICATED,
    CARD_READ_INVALID,
    CancelledCardList,
    CancelledListError,
    CancelledListState,
    CredentialCheck,
    cancelled_cards,
    cancelled_list_state,
    check_card,
    max_age_for,
)
from gated.db import metadata, open_engine
from gated.errors import DeviceUnavailable, ProtocolError, StorageError
from gated.model import DeviceState, Kind, Quality
from simulators.credential_serial import SerialCredentialSimulator, card_frame, heartbeat_frame, register_cli
from tests.sinks import RecordingSink, driver_running, wait_until
from tests.system import free_port, require_tool

CARD1 = "4F2A19C0D3E7B85A"
CARD2 = "D1A2B3C4E5F60718A1B2C3D4E5F60718"
CARD3 = "0123456789ABCDEF0123"
CARD4 = "ABCDEF01"
EXPIRES = date(2027, 1, 31)

# Worked out by hand: XOR of the payload bytes.
KNOWN_CARD = b"\x02CARD,4F2A19C0D3E7B85A,20270131,OK\x03\x49"
KNOWN_HEARTBEAT = b"\x02HB\x03\x0a"

WAIT = 15.0
NOW = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)


def encode(payload: str | bytes) -> bytes:
    """The test's own encoder, independent of the simulator's."""
    raw = payload.encode("ascii") if isinstance(payload, str) else payload
    value = 0
    for byte in raw:
        value ^= byte
    return b"\x02" + raw + b"\x03" + bytes([value])


def card(card_id: str = CARD1, expires: str = "20270131", auth: str = "OK") -> bytes:
    return encode(f"CARD,{card_id},{expires},{auth}")


def cards_read(sink: RecordingSink) -> list[tuple[str, bool]]:
    """The card id and authentication result of every card read, in order."""
    return [(value["card_id"], value["authenticated"]) for value in sink.values() if isinstance(value, dict)]


def make_driver(url: str, **options: Any) -> SerialCredentialDriver:
    """A driver on ``url``; ``repeat_window`` goes into its settings, the rest to the driver."""
    settings: dict[str, Any] = {"id": "card-1", "driver": "credential-serial", "url": url}
    if "repeat_window" in options:
        settings["repeat_window_seconds"] = options.pop("repeat_window")
    options = {"backoff_initial": 0.1, "backoff_max": 0.5, **options}
    return SerialCredentialDriver("lane-1", CredentialSerialDevice.model_validate(settings), **options)


@contextmanager
def running(driver: SerialCredentialDriver) -> Iterator[RecordingSink]:
    """The driver's own loop in a thread, stopped and joined at the end."""
    sink = RecordingSink("lane-1", "card-1", timeout=WAIT)
    with driver_running(driver, sink):
        yield sink


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    socat = require_tool("socat")
    a, b = tmp_path / "A", tmp_path / "B"
    with (tmp_path / "socat.log").open("wb") as log:
        process = subprocess.Popen(
            [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=log,
            stderr=log,
        )
    try:
        wait_until("socat's pty links", lambda: a.exists() and b.exists(), timeout=10)
        yield a, b
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def exercise(simulator: SerialCredentialSimulator, sink: RecordingSink) -> None:
    """Cards with repeats and garbage between them: one reading per card, an error per bad frame."""
    sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
    simulator.present_card(CARD1, EXPIRES, repeats=4)
    simulator.send_raw(b"\x00\xff line noise \x03\r\n")
    simulator.send_raw(b"\x02CARD,D1A2")  # cut short by the next frame
    simulator.present_card(CARD2.lower(), date(2026, 12, 1), authenticated=False, repeats=3)
    simulator.send_raw(card(CARD3)[:-1] + b"\x00")  # wrong LRC
    simulator.present_card(CARD3, EXPIRES)
    simulator.present_card(CARD4, EXPIRES)
    sink.wait_for("four readings", lambda: len(cards_read(sink)) >= 4)
    assert cards_read(sink) == [
        (CARD1.lower(), True),
        (CARD2.lower(), False),
        (CARD3.lower(), True),
        (CARD4.lower(), True),
    ]
    errors = sink.errors
    for fragment in ("does not start with STX", "no ETX", "LRC 0x00 does not match"):
        assert any(fragment in error for error in errors), (fragment, errors)
    assert sink.states[0] is DeviceState.ONLINE
    readings = sink.readings
    assert readings[0].value == {"card_id": CARD1.lower(), "expires": "2027-01-31", "authenticated": True}
    assert readings[1].value == {"card_id": CARD2.lower(), "expires": "2026-12-01", "authenticated": False}
    assert [reading.quality for reading in readings] == [
        Quality.GOOD,
        Quality.BAD,
        Quality.GOOD,
        Quality.GOOD,
    ]
    for reading in readings:
        assert reading.kind is Kind.CREDENTIAL
        assert reading.source == "card"
        assert (reading.lane, reading.device) == ("lane-1", "card-1")
        assert reading.ts.tzinfo is not None


# The frame decoder


def test_known_frames_from_the_protocol_description() -> None:
    assert card_frame(CARD1, EXPIRES) == KNOWN_CARD == card()
    assert heartbeat_frame() == KNOWN_HEARTBEAT == encode("HB")
    assert parse_frame(KNOWN_CARD) == CardRead(card_id=CARD1.lower(), expires=EXPIRES, authenticated=True)
    assert parse_frame(KNOWN_HEARTBEAT) is None
    failed = parse_frame(card(CARD4.lower(), "20280229", "FAIL"))
    assert failed == CardRead(card_id=CARD4.lower(), expires=date(2028, 2, 29), authenticated=False)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"", "empty frame"),
        (b"CARD,4F2A19C0D3E7B85A,20270131,OK\x03\x49", "does not start with STX"),
        (b"noise \x02", "does not start with STX"),
        (KNOWN_CARD[:-2], "no ETX"),
        (KNOWN_CARD[:-1], "no ETX"),
        (b"\x02", "no ETX"),
        (KNOWN_CARD[:-1] + b"\x48", "LRC 0x48 does not match 0x49"),
        (encode(""), "empty payload"),
        (encode(b"CARD,4F2A19C0D3E7B85A,20270131,O\x01"), "control or non-ASCII"),
        (encode(b"CARD,4F2A19C0D3E7B85A,2027\xc3\xa91,OK"), "control or non-ASCII"),
        (encode("HB,1"), "unknown message"),
        (encode("TAG,1,2"), "unknown message"),
        (encode("card,4F2A19C0D3E7B85A,20270131,OK"), "unknown message"),
        (card(expires="20270131,OK,X"), "CARD needs 3 fields, got 5"),
        (encode("CARD,4F2A19C0D3E7B85A,20270131"), "CARD needs 3 fields, got 2"),
        (card("4F2A19C0D3E7B85G"), "card id is not hex"),
        (card(""), "card id is not hex"),
        (card("ABCDEF0"), "card id has 7 hex digits"),
        (card("A" * 33), "card id has 33 hex digits"),
        (card(expires="2027013"), "expiry is not YYYYMMDD"),
        (card(expires="2027-1-31"), "expiry is not YYYYMMDD"),
        (card(expires="20270230"), "expiry is not a calendar date"),
        (card(expires="20271301"), "expiry is not a calendar date"),
        (card(expires="00000101"), "expiry is not a calendar date"),
        (card(auth="ok"), "auth is not OK or FAIL"),
        (card(auth=""), "auth is not OK or FAIL"),
        (card(auth="FAILED"), "auth is not OK or FAIL"),
        (b"\x02" + b"A" * 100 + b"\x03\x00", f"longer than {MAX_FRAME} bytes"),
    ],
)
def test_malformed_frames_are_protocol_errors_with_context(frame: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_frame(frame)
    message = str(raised.value)
    assert complaint in message
    assert repr(frame[:10])[:-1] in message  # the offending bytes, as Python shows them


def test_an_error_shows_only_the_start_of_a_long_frame() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_frame(b"\x02" + b"x" * 5000)
    assert len(str(raised.value)) < 200
    assert "5001 bytes" in str(raised.value)


card_ids = st.text(alphabet="0123456789abcdef", min_size=8, max_size=32)
expiries = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))


@given(card_id=card_ids, expires=expiries, authenticated=st.booleans(), upper=st.booleans())
def test_round_trip(card_id: str, expires: date, authenticated: bool, upper: bool) -> None:
    shown = card_id.upper() if upper else card_id
    expected = CardRead(card_id=card_id, expires=expires, authenticated=authenticated)
    wire = card(
        shown, f"{expires.year:04d}{expires.month:02d}{expires.day:02d}", "OK" if authenticated else "FAIL"
    )
    assert parse_frame(wire) == expected
    assert parse_frame(card_frame(card_id, expires, authenticated)) == expected
    assert expected.value()["expires"] == expires.isoformat()


@given(card_id=card_ids, expires=expiries, authenticated=st.booleans())
def test_every_truncation_is_a_protocol_error(card_id: str, expires: date, authenticated: bool) -> None:
    frame = card_frame(card_id, expires, authenticated)
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            parse_frame(frame[:cut])
        with pytest.raises(ProtocolError):
            parse_frame(frame[cut + 1 :])


@given(card_id=card_ids, expires=expiries, authenticated=st.booleans(), data=st.data())
def test_a_single_bit_flip_is_always_caught(
    card_id: str, expires: date, authenticated: bool, data: st.DataObject
) -> None:
    frame = bytearray(card_frame(card_id, expires, authenticated))
    position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(ProtocolError):
        parse_frame(bytes(frame))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_protocol_errors(frame: bytes) -> None:
    try:
        result = parse_frame(frame)
    except ProtocolError:
        return
    assert result is None or isinstance(result, CardRead)


@given(st.binary(max_size=60))
def test_arbitrary_payloads_raise_nothing_but_protocol_errors(payload: bytes) -> None:
    try:
        result = parse_frame(encode(payload))
    except ProtocolError:
        return
    assert result is None or isinstance(result, CardRead)


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(3)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            alphabet = b"\x02\x03,0123456789ABCDEFOKFAIL" + bytes([rng.randrange(256)])
            data[position:position] = bytes([rng.choice(alphabet)])
        elif data:
            del data[min(position, len(data) - 1)]
    return bytes(data)


def test_fuzz_decoder_and_splitter() -> None:
    rng = random.Random(6346)
    splitter = FrameSplitter()
    outcomes = {"error": 0, "read": 0, "heartbeat": 0}
    for _ in range(20_000):
        if rng.random() < 0.4:
            frame = rng.randbytes(rng.randrange(120))
        else:
            card_id = rng.randbytes(rng.randint(4, 16)).hex()
            expires = date(2026, 1, 1) + timedelta(days=rng.randrange(4000))
            base = card_frame(card_id, expires, rng.random() < 0.5)
            frame = (
                base if rng.random() < 0.05 else mutate(rng, base if rng.random() < 0.8 else KNOWN_HEARTBEAT)
            )
        try:
            result = parse_frame(frame)
        except ProtocolError:
            outcomes["error"] += 1
        else:
            outcomes["heartbeat" if result is None else "read"] += 1
        for item in splitter.feed(frame):
            if isinstance(item, bytes):
                with suppress(ProtocolError):
                    parse_frame(item)
            else:
                assert isinstance(item, ProtocolError)
        assert splitter.buffered <= MAX_FRAME
    assert outcomes["error"] > 10_000
    assert outcomes["read"] > 0


# Splitting a stream into frames

junk_bytes = st.binary(max_size=200).map(lambda data: data.replace(b"\x02", b""))
stream_items = st.lists(
    st.one_of(
        st.tuples(st.just("card"), card_ids),
        st.tuples(st.just("heartbeat"), st.just("")),
        st.tuples(st.just("junk"), junk_bytes),
        st.tuples(st.just("junk"), junk_bytes.map(lambda data: b"\x02" + b"A" * MAX_FRAME + data)),
    ),
    max_size=12,
)


@given(items=stream_items, data=st.data())
def test_splitter_recovers_every_frame_around_junk(items: list[tuple[str, Any]], data: st.DataObject) -> None:
    stream = b""
    expected: list[str] = []
    for kind, value in items:
        if kind == "card":
            stream += card_frame(value, EXPIRES)
            expected.append(value)
        elif kind == "heartbeat":
            stream += heartbeat_frame()
        else:
            stream += value
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8)))
    splitter = FrameSplitter()
    found: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        for item in splitter.feed(stream[start:end]):
            if isinstance(item, bytes):
                try:
                    read = parse_frame(item)
                except ProtocolError:
                    continue
                if read is not None:
                    found.append(read.card_id)
        assert splitter.buffered <= MAX_FRAME
    assert found == expected


def test_splitter_cases() -> None:
    splitter = FrameSplitter()
    # An LRC byte that is STX or ETX is still the LRC.
    for payload in ("HB", "CARD,ABCDEF01,20270131,OK"):
        frame = encode(payload)
        assert splitter.feed(frame) == [frame]
    lrc_is_stx = next(f for f in (card(f"{n:09X}") for n in range(10_000)) if f[-1] == 2)
    assert splitter.feed(lrc_is_stx + KNOWN_HEARTBEAT) == [lrc_is_stx, KNOWN_HEARTBEAT]
    # Byte by byte.
    out: list[bytes | ProtocolError] = []
    for byte in b"xx" + KNOWN_CARD + KNOWN_HEARTBEAT:
        out += splitter.feed(bytes([byte]))
    assert out == [b"xx", KNOWN_CARD, KNOWN_HEARTBEAT]
    assert splitter.buffered == 0
    assert splitter.feed(b"\x02CA") == []
    assert splitter.buffered == 3
    # A frame cut short by the next STX comes out on its own.
    assert splitter.feed(KNOWN_CARD) == [b"\x02CA", KNOWN_CARD]
    # Overlong junk and overlong frames: one error each, then resume at the next STX.
    out = splitter.feed(b"J" * 500)
    assert len(out) == 1 and isinstance(out[0], ProtocolError) and "outside a frame" in str(out[0])
    assert splitter.feed(b"K" * 500) == []
    assert splitter.feed(b"\x03" + KNOWN_CARD) == [KNOWN_CARD]
    out = splitter.feed(b"\x02" + b"A" * 500)
    assert len(out) == 1 and isinstance(out[0], ProtocolError) and "longer than" in str(out[0])
    assert splitter.feed(b"B\x03\x00" + KNOWN_HEARTBEAT) == [KNOWN_HEARTBEAT]
    # An overlong frame and a good one in the same chunk: the good one is kept.
    out = splitter.feed(b"\x02" + b"A" * 70 + b"\x03\x41" + KNOWN_CARD)
    assert [type(item) for item in out] == [ProtocolError, bytes] and out[1] == KNOWN_CARD
    assert splitter.buffered == 0


def test_repeat_filter_reports_a_card_left_on_the_reader_once() -> None:
    good = CardRead(CARD1.lower(), EXPIRES, True)
    failed = CardRead(CARD1.lower(), EXPIRES, False)
    window = RepeatFilter(5.0)
    assert window.admit(failed, 0.0)
    assert window.admit(good, 0.5)  # a good read after a failed one is news
    assert not window.admit(good, 1.0)
    assert not window.admit(good, 5.5)
    assert window.admit(good, 11.0)


# The driver on its own


def test_connect_failures_are_device_unavailable(tmp_path: Path) -> None:
    for url in (str(tmp_path / "no-such-tty"), f"socket://127.0.0.1:{free_port()}", "nonsense://x"):
        driver = make_driver(url)
        with pytest.raises(DeviceUnavailable, match="cannot open"):
            driver.connect()
        driver.close()
        driver.close()


def test_driver_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        make_driver("loop://", read_timeout=0)
    with pytest.raises(ValueError, match="silence_timeout"):
        make_driver("loop://", read_timeout=1.0, silence_timeout=0.5)
    with pytest.raises(ValueError, match="repeat_window"):
        make_driver("loop://", repeat_window=-1)


def test_silence_makes_the_reader_unavailable() -> None:
    clock = ManualClock()
    driver = make_driver("loop://", clock=clock, read_timeout=0.05)
    driver.connect()
    try:
        assert driver.step() == []
        clock.advance(2.9)
        assert driver.step() == []
        clock.advance(0.2)
        with pytest.raises(DeviceUnavailable, match="no data"):
            driver.step()
    finally:
        driver.close()


@pytest.mark.timeout(30)
def test_good_frames_next_to_bad_ones_are_kept_in_order() -> None:
    with SerialCredentialSimulator(heartbeat_interval=None) as simulator:
        driver = make_driver(simulator.device_path)
        driver.connect()
        try:
            chunk = card(CARD1) + b"garbage" + card(CARD2) + b"\x02HB\x03\x00" + card(CARD3)
            simulator.send_raw(chunk)
            events: list[str] = []
            deadline = time.monotonic() + WAIT
            while events.count("error") < 2 or len(events) < 5:
                assert time.monotonic() < deadline, events
                try:
                    events.extend(str(r.value["card_id"]) for r in driver.step() if isinstance(r.value, dict))
                except ProtocolError:
                    events.append("error")
            assert events == [CARD1.lower(), "error", CARD2.lower(), "error", CARD3.lower()]
        finally:
            driver.close()


# The driver against the simulator, over real transports


@pytest.mark.timeout(30)
def test_over_a_socat_pty_pair(socat_pair: tuple[Path, Path]) -> None:
    a, b = socat_pair
    with SerialCredentialSimulator(path=str(a)) as simulator, running(make_driver(str(b))) as sink:
        exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_over_tcp_like_a_serial_device_server() -> None:
    with SerialCredentialSimulator(tcp_port=0) as simulator:
        driver = make_driver(f"socket://127.0.0.1:{simulator.tcp_port}")
        with running(driver) as sink:
            # Online only once the port is open: pyserial empties a socket's input as it opens it.
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            wait_until("the simulator to accept the driver", lambda: simulator.client_count == 1)
            exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_over_the_simulators_own_pty() -> None:
    with SerialCredentialSimulator() as simulator, running(make_driver(simulator.device_path)) as sink:
        exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_one_reading_per_repeat_window() -> None:
    clock = ManualClock()
    with SerialCredentialSimulator() as simulator:
        driver = make_driver(simulator.device_path, clock=clock, repeat_window=5.0, silence_timeout=3600.0)
        with running(driver) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)

            def present_then_mark(marker: str, count: int) -> None:
                simulator.present_card(CARD1, EXPIRES, repeats=3)
                simulator.present_card(marker, EXPIRES)
                sink.wait_for(f"{count} readings", lambda: len(cards_read(sink)) >= count)

            present_then_mark(CARD2, 2)
            clock.advance(4.0)
            present_then_mark(CARD3, 3)  # 4 s later: the card is still on the reader
            clock.advance(5.5)
            simulator.present_card(CARD1, EXPIRES)  # 5.5 s since it was last seen: a new read
            sink.wait_for("4 readings", lambda: len(cards_read(sink)) >= 4)
            assert [card_id for card_id, _ in cards_read(sink)] == [
                c.lower() for c in (CARD1, CARD2, CARD3, CARD1)
            ]
            assert sink.readings[-1].ts == clock.now()


@pytest.mark.timeout(30)
def test_silence_takes_the_reader_offline_and_heartbeats_keep_it_online() -> None:
    with SerialCredentialSimulator(heartbeat_interval=0.3) as simulator:
        driver = make_driver(simulator.device_path, silence_timeout=1.5)
        with running(driver) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            time.sleep(2.5)
            assert sink.states == [DeviceState.ONLINE]
    with SerialCredentialSimulator(heartbeat_interval=None) as simulator:
        driver = make_driver(simulator.device_path, silence_timeout=1.0)
        with running(driver) as sink:

            def gone_quiet() -> bool:
                return any(
                    state is DeviceState.OFFLINE and "no data" in text for state, text in sink.statuses
                )

            sink.wait_for("the silent reader to go offline", gone_quiet)
            assert DeviceState.ONLINE not in sink.states  # an open port that says nothing is not a reader


@pytest.mark.timeout(30)
def test_simulator_stopped_takes_the_reader_offline() -> None:
    with SerialCredentialSimulator(tcp_port=0) as simulator:
        driver = make_driver(f"socket://127.0.0.1:{simulator.tcp_port}")
        with running(driver) as sink:
            # Online only once the port is open: pyserial empties a socket's input as it opens it.
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            wait_until("the simulator to accept the driver", lambda: simulator.client_count == 1)
            simulator.present_card(CARD1, EXPIRES)
            sink.wait_for("the card", lambda: len(cards_read(sink)) == 1)
            simulator.stop()
            simulator.stop()
            sink.wait_for("the driver to go offline", lambda: sink.state is DeviceState.OFFLINE)
    with pytest.raises(RuntimeError, match="not running"):
        simulator.present_card(CARD1, EXPIRES)


def test_simulator_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="path or tcp_port"):
        SerialCredentialSimulator(path="/dev/null", tcp_port=0)
    simulator = SerialCredentialSimulator()
    with pytest.raises(RuntimeError, match="not running"):
        simulator.send_raw(b"x")
    with simulator:
        simulator.start()
        for bad in ("ABCDEF0", "A" * 33, "XYZ12345", ""):
            with pytest.raises(ValueError, match="card id"):
                simulator.present_card(bad, EXPIRES)
        with pytest.raises(ValueError, match="repeats"):
            simulator.present_card(CARD1, EXPIRES, repeats=0)
        with pytest.raises(RuntimeError):
            _ = simulator.tcp_port
    simulator.stop()


@pytest.mark.timeout(30)
def test_gated_sim_command_on_a_pty_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    for bad in ("NOTHEX00", f"{CARD1}:2027-02-30", f"{CARD1}:2027-01-31:maybe"):
        with pytest.raises(SystemExit):
            parser.parse_args(["credential-serial", "--cards", bad])
    capsys.readouterr()
    link = tmp_path / "card"
    cards = f"{CARD1}:2027-01-31,{CARD3}:2026-12-01:fail"
    args = parser.parse_args(
        [
            "credential-serial",
            "--pty-link",
            str(link),
            "--cards",
            cards,
            "--interval",
            "0.2",
            "--duration",
            "5",
        ]
    )
    result: list[int] = []
    command = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    command.start()
    wait_until("the pty link", lambda: link.is_symlink(), timeout=10)
    with running(make_driver(str(link), repeat_window=60.0)) as sink:
        sink.wait_for(
            "both cards", lambda: {(CARD1.lower(), True), (CARD3.lower(), False)} <= set(cards_read(sink))
        )
    command.join(timeout=15)
    assert result == [0]
    assert not os.path.lexists(link)
    assert "credential-serial: pty /dev/pts/" in capsys.readouterr().out


# The cancelled-card list, on a real SQLite file


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = open_engine(tmp_path / "g.db")
    metadata.create_all(db)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def read_of(card_id: str = CARD1, expires: str = "2027-01-31", authenticated: bool = True) -> dict[str, Any]:
    return {"card_id": card_id.lower(), "expires": expires, "authenticated": authenticated}


FRESH_LIST = (
    f'# list-date: 2026-05-03T00:00:00Z\ncard_id,reason\n{CARD2},lost\n{CARD3.lower()},"revoked, by TSA"\n'
)


def test_import_and_state(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, clock)
    assert cards.state() is None
    state = cards.import_file(write(tmp_path / "list.csv", FRESH_LIST))
    assert state.list_date == datetime(2026, 5, 3, tzinfo=UTC)
    assert state.imported_at == NOW
    assert state.count == 2
    assert cards.state() == state
    assert cards.cancelled_ids() == sorted([CARD2.lower(), CARD3.lower()])
    assert cards.is_cancelled(CARD3) and not cards.is_cancelled(CARD1)
    with engine.connect() as conn:
        rows = {row.card_id: row.reason for row in conn.execute(cancelled_cards.select())}
    assert rows == {CARD2.lower(): "lost", CARD3.lower(): "revoked, by TSA"}
    assert state.to_json()["list_date"] == "2026-05-03T00:00:00.000Z"


def test_plain_id_per_line_with_the_date_as_an_argument(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    cards = CancelledCardList(engine, clock)
    path = write(tmp_path / "ids.txt", f"\n{CARD1}\n# a comment\n{CARD4}\n")
    with pytest.raises(CancelledListError, match="no list date"):
        cards.import_file(path)
    state = cards.import_file(path, list_date=datetime(2026, 5, 2, 20, tzinfo=UTC))
    assert (state.count, state.list_date) == (2, datetime(2026, 5, 2, 20, tzinfo=UTC))
    assert cards.cancelled_ids() == sorted([CARD1.lower(), CARD4.lower()])
    assert (
        cards.import_file(
            write(tmp_path / "same.txt", f"# list-date: 2026-05-02T20:00:00Z\n{CARD1}\n"),
            list_date=datetime(2026, 5, 2, 20, tzinfo=UTC),
        ).count
        == 1
    )
    with pytest.raises(CancelledListError, match="differs"):
        cards.import_file(tmp_path / "same.txt", list_date=datetime(2026, 5, 3, tzinfo=UTC))
    with pytest.raises(CancelledListError, match="time zone"):
        cards.import_file(path, list_date=datetime(2026, 5, 3))


def test_import_replaces_the_whole_list(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, clock)
    cards.import_file(write(tmp_path / "a.csv", FRESH_LIST))
    clock.advance(3600)
    state = cards.import_file(write(tmp_path / "b.csv", f"# list-date: 2026-05-03T11:00:00Z\n{CARD1}\n"))
    assert cards.cancelled_ids() == [CARD1.lower()]
    assert (state.count, state.list_date, state.imported_at) == (
        1,
        datetime(2026, 5, 3, 11, tzinfo=UTC),
        clock.now(),
    )
    with engine.connect() as conn:
        assert len(conn.execute(cancelled_list_state.select()).all()) == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (f"# list-date: 2026-05-03T00:00:00Z\n{CARD1}\nnot-a-card\n", ":3: card id 'not-a-card'"),
        (f"# list-date: 2026-05-03T00:00:00Z\n{CARD1}\nABC\n", ":3: card id 'ABC'"),
        (
            f"# list-date: 2026-05-03T00:00:00Z\n{CARD1},lost,extra\n",
            ":2: expected card_id[,reason], got 3 fields",
        ),
        (
            f"# list-date: 2026-05-03T00:00:00Z\n{CARD1}\n{CARD1.lower()}\n",
            ":3: card 4f2a19c0d3e7b85a is listed twice",
        ),
        (f"# list-date: 2026-05-03\n{CARD1}\n", ":1: list-date '2026-05-03' is not RFC 3339"),
        (f"# list-date: yesterday\n{CARD1}\n", ":1: list-date 'yesterday'"),
        (
            f"# list-date: 2026-05-03T00:00:00Z\n# list-date: 2026-05-03T00:00:00Z\n{CARD1}\n",
            ":2: second list-date",
        ),
        (f"# list-date: 2026-05-03T00:00:00Z\ncard_id,name\n{CARD1}\n", ":2: the header must be"),
        (f'# list-date: 2026-05-03T00:00:00Z\n{CARD1},"unclosed\n', ":2: malformed CSV"),
    ],
)
def test_a_bad_line_rejects_the_whole_file(
    engine: Engine, clock: ManualClock, tmp_path: Path, content: str, problem: str
) -> None:
    cards = CancelledCardList(engine, clock)
    before = cards.import_file(write(tmp_path / "good.csv", FRESH_LIST))
    bad = write(tmp_path / "bad.csv", content)
    with pytest.raises(CancelledListError) as raised:
        cards.import_file(bad)
    assert f"{bad}{problem}" in str(raised.value)
    assert "nothing imported" in str(raised.value)
    assert cards.state() == before
    assert cards.cancelled_ids() == sorted([CARD2.lower(), CARD3.lower()])


def test_unreadable_and_future_files_are_refused(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, clock)
    with pytest.raises(CancelledListError, match="cannot read"):
        cards.import_file(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes(b"# list-date: 2026-05-03T00:00:00Z\n\xe9\n")
    with pytest.raises(CancelledListError, match="not UTF-8"):
        cards.import_file(tmp_path / "latin1.csv")
    with pytest.raises(CancelledListError, match="in the future"):
        cards.import_file(write(tmp_path / "f.csv", f"# list-date: 2026-05-04T00:00:00Z\n{CARD1}\n"))
    assert cards.state() is None


def test_a_database_failure_mid_import_keeps_the_old_list(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    cards = CancelledCardList(engine, clock)
    before = cards.import_file(write(tmp_path / "good.csv", FRESH_LIST))
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_card BEFORE INSERT ON cancelled_cards WHEN NEW.card_id = 'abcdef01'"
                " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
            )
        )
    content = f"# list-date: 2026-05-03T06:00:00Z\n{CARD1}\n{CARD4}\n"
    with pytest.raises(StorageError, match="disk trouble"):
        cards.import_file(write(tmp_path / "new.csv", content))
    assert cards.state() == before
    assert cards.cancelled_ids() == sorted([CARD2.lower(), CARD3.lower()])


# Refusing an import that would let cancelled cards through


def listing(path: Path, count: int, list_date: datetime) -> Path:
    """A list file of ``count`` made-up cards dated ``list_date``."""
    ids = "".join(f"{n:016x}\n" for n in range(1, count + 1))
    return write(path, f"# list-date: {rfc3339(list_date)}\n{ids}")


HOURS_AGO_12 = NOW - timedelta(hours=12)

# name, the current list's size (None: no list yet), the new list's size and age, the override, the complaint.
REFUSALS = [
    ("empty", 20, 0, timedelta(hours=1), "allow_empty", "it has no cards"),
    ("empty-first", None, 0, timedelta(hours=1), "allow_empty", "it has no cards"),
    ("shrink", 20, 9, timedelta(hours=1), "allow_shrink", "9 cards, fewer than half the current list's 20"),
    ("older", 20, 20, timedelta(hours=13), "allow_old", "older than the current list's"),
    ("stale", None, 20, timedelta(days=7, seconds=1), "allow_old", "7.0 days old, more than the 7.0 days"),
    ("older-and-stale", 20, 20, timedelta(days=8), "allow_old", "older than the current list's"),
]


@pytest.mark.parametrize(
    ("current", "count", "age", "flag", "complaint"),
    [case[1:] for case in REFUSALS],
    ids=[c[0] for c in REFUSALS],
)
def test_a_risky_list_is_refused_unless_allowed(
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
    current: int | None,
    count: int,
    age: timedelta,
    flag: str,
    complaint: str,
) -> None:
    cards = CancelledCardList(engine, clock)
    if current is not None:
        cards.import_file(listing(tmp_path / "current.csv", current, HOURS_AGO_12))
    before, ids_before = cards.state(), cards.cancelled_ids()
    new = listing(tmp_path / "new.csv", count, NOW - age)
    with pytest.raises(CancelledListError) as raised:
        cards.import_file(new)
    message = str(raised.value)
    assert message.startswith(f"{new}: refused, nothing imported: ")
    assert complaint in message
    assert f"--{flag.replace('_', '-')} imports it anyway" in message
    assert "\n" not in message
    assert (cards.state(), cards.cancelled_ids()) == (before, ids_before)
    # The other overrides do not stand in for this one.
    with pytest.raises(CancelledListError, match=flag.replace("_", "-")):
        cards.import_file(
            new,
            allow_empty=flag != "allow_empty",
            allow_shrink=flag != "allow_shrink",
            allow_old=flag != "allow_old",
        )
    assert (cards.state(), cards.cancelled_ids()) == (before, ids_before)
    state = cards.import_file(
        new,
        allow_empty=flag == "allow_empty",
        allow_shrink=flag == "allow_shrink",
        allow_old=flag == "allow_old",
    )
    assert (state.count, state.list_date) == (count, NOW - age)
    assert cards.state() == state
    assert len(cards.cancelled_ids()) == count


def test_lists_at_the_limits_are_imported(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, clock)
    week_ago = NOW - timedelta(days=7)

    def imported(name: str, count: int, list_date: datetime) -> CancelledListState:
        state = cards.import_file(listing(tmp_path / name, count, list_date))
        assert (state.count, state.list_date) == (count, list_date)
        return state

    imported("a.csv", 9, week_ago)  # exactly the 7 days a list may be old
    imported("b.csv", 1, week_ago)  # same date; 9 cards are too few to judge a shrink by
    imported("c.csv", 20, NOW - timedelta(days=6))
    imported("d.csv", 10, NOW - timedelta(days=6))  # exactly half
    with pytest.raises(CancelledListError, match="4 cards, fewer than half the current list's 10"):
        cards.import_file(listing(tmp_path / "e.csv", 4, NOW))
    last = cards.state()
    assert last is not None and last.count == 10


def test_every_problem_and_its_flag_are_named_at_once(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    cards = CancelledCardList(engine, clock)
    before = cards.import_file(listing(tmp_path / "current.csv", 20, HOURS_AGO_12))
    old_and_short = listing(tmp_path / "new.csv", 1, NOW - timedelta(days=8))
    with pytest.raises(CancelledListError) as raised:
        cards.import_file(old_and_short)
    assert "--allow-shrink" in str(raised.value) and "--allow-old" in str(raised.value)
    with pytest.raises(CancelledListError) as raised:
        cards.import_file(old_and_short, allow_shrink=True)
    assert "--allow-shrink" not in str(raised.value) and "--allow-old" in str(raised.value)
    assert cards.state() == before
    assert cards.import_file(old_and_short, allow_shrink=True, allow_old=True).count == 1
    # Allowing an empty list allows replacing a long one with it: no second flag for the same intent.
    empty = cards.import_file(listing(tmp_path / "empty.csv", 0, NOW), allow_empty=True)
    assert (empty.count, cards.cancelled_ids()) == (0, [])
    # No override lets a list dated in the future in.
    with pytest.raises(CancelledListError, match="in the future"):
        cards.import_file(
            listing(tmp_path / "future.csv", 20, NOW + timedelta(days=1)),
            allow_empty=True,
            allow_shrink=True,
            allow_old=True,
        )
    assert cards.state() == empty


def test_an_import_that_raced_another_changes_nothing(
    engine: Engine, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = CancelledCardList(engine, clock)
    before = cards.import_file(listing(tmp_path / "current.csv", 20, HOURS_AGO_12))
    # What the import read is no longer the list: another import committed in between (PostgreSQL).
    seen = replace(before, list_date=before.list_date - timedelta(days=1), count=40)
    monkeypatch.setattr(credentials, "_read_state", lambda _conn: seen)
    with pytest.raises(CancelledListError, match="the list changed during the import"):
        cards.import_file(listing(tmp_path / "new.csv", 20, NOW))
    monkeypatch.undo()
    assert cards.state() == before
    assert len(cards.cancelled_ids()) == 20


def gated_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # WARNING: opening a database logs alembic's INFO lines on stderr, which would hide the one error line.
    return subprocess.run(
        [sys.executable, "-m", "gated", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def list_state(db: Path) -> tuple[CancelledListState | None, list[str]]:
    engine = open_engine(db)
    try:
        cards = CancelledCardList(engine)
        return cards.state(), list(cards.cancelled_ids())
    finally:
        engine.dispose()


# name, the current list's size (None: no list yet), the new list's size and age, the flag, the complaint.
CLI_REFUSALS = [
    ("empty", 20, 0, timedelta(hours=1), "--allow-empty", "it has no cards"),
    ("shrink", 20, 9, timedelta(hours=1), "--allow-shrink", "9 cards, fewer than half the current list's 20"),
    ("older", 20, 20, timedelta(hours=13), "--allow-old", "older than the current list's"),
    ("stale", None, 20, timedelta(days=8), "--allow-old", "8.0 days old, more than the 7.0 days allowed"),
]


@pytest.mark.parametrize(
    ("current", "count", "age", "option", "complaint"),
    [case[1:] for case in CLI_REFUSALS],
    ids=[case[0] for case in CLI_REFUSALS],
)
def test_the_import_command_refuses_a_risky_list_unless_allowed(
    tmp_path: Path, current: int | None, count: int, age: timedelta, option: str, complaint: str
) -> None:
    db = tmp_path / "g.db"
    now = datetime.now(UTC).replace(microsecond=0)  # a list file's date has milliseconds at most
    was = "no list before"
    if current is not None:
        current_date = now - timedelta(hours=12)
        current_file = listing(tmp_path / "current.csv", current, current_date)
        first = gated_cli("credentials", "import", "--db", str(db), str(current_file))
        assert first.returncode == 0, first.stderr
        assert first.stdout == (
            f"{current_file}: {current} cancelled cards, list of {current_date.isoformat()} (no list before)\n"
        )
        was = f"was {current}"
    before = list_state(db)
    assert len(before[1]) == (current or 0)

    new_date = now - age
    new = listing(tmp_path / "new.csv", count, new_date)
    refused = gated_cli("credentials", "import", "--db", str(db), str(new))
    assert refused.returncode == 1
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"gated: {new}: refused, nothing imported: ")
    assert complaint in line and f"{option} imports it anyway" in line
    assert list_state(db) == before

    allowed = gated_cli("credentials", "import", "--db", str(db), str(new), option)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == f"{new}: {count} cancelled cards, list of {new_date.isoformat()} ({was})\n"
    state, ids = list_state(db)
    assert state is not None and (state.count, state.list_date, len(ids)) == (count, new_date, count)


def test_database_errors_are_storage_errors(tmp_path: Path, clock: ManualClock) -> None:
    db = open_engine(tmp_path / "g.db")
    cards = CancelledCardList(db, clock)
    with db.begin() as conn:
        conn.execute(text("DROP TABLE cancelled_list_state"))
    with pytest.raises(StorageError, match="cancelled-card list"):
        cards.state()
    with pytest.raises(StorageError):
        cards.check(read_of(), NOW, max_age_for("normal"))
    db.dispose()


# Checking a card


def test_check_against_the_list(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, clock)
    normal, raised = max_age_for("normal"), max_age_for("raised")
    assert (normal, raised) == (timedelta(days=7), timedelta(days=1))

    # No list at all: nothing passes.
    missing = cards.check(read_of(), NOW, normal)
    assert not missing.ok and missing.codes == [CANCELLED_LIST_MISSING]

    cards.import_file(write(tmp_path / "list.csv", FRESH_LIST))  # dated 12 h before NOW
    ok = cards.check(read_of(), NOW, normal)
    assert ok == CredentialCheck(ok=True, reasons=[])
    assert cards.check(read_of(), NOW, raised).ok
    assert cards.check(read_of(CARD1.upper()), NOW, raised).ok

    refused = cards.check(read_of(CARD2), NOW, normal)
    assert not refused.ok and refused.codes == [CARD_CANCELLED]
    assert cards.check(read_of(CARD3.upper()), NOW, normal).codes == [CARD_CANCELLED]
    assert cards.check(read_of(expires="2026-05-02"), NOW, normal).codes == [CARD_EXPIRED]
    assert cards.check(read_of(expires="2026-05-03"), NOW, normal).ok  # valid through its expiry day
    assert cards.check(read_of(authenticated=False), NOW, normal).codes == [CARD_NOT_AUTHENTICATED]
    everything = cards.check(read_of(CARD2, "2020-01-01", False), NOW, normal)
    assert everything.codes == [CARD_NOT_AUTHENTICATED, CARD_EXPIRED, CARD_CANCELLED]
    assert [reason.code for reason in everything.as_reasons()] == everything.codes

    # The list is 12 h old at NOW. At raised level it may be 1 day old, at normal level 7 days.
    day_later = NOW + timedelta(hours=12, seconds=1)
    assert cards.check(read_of(), NOW + timedelta(hours=12), raised).ok
    stale = cards.check(read_of(), day_later, raised)
    assert stale.codes == [CANCELLED_LIST_STALE]
    assert "2026-05-03T00:00:00.000Z" in stale.reasons[0][1]
    assert cards.check(read_of(), day_later, normal).ok
    week_later = NOW + timedelta(days=6, hours=12, seconds=1)
    assert cards.check(read_of(), NOW + timedelta(days=6, hours=12), normal).ok
    assert cards.check(read_of(), week_later, normal).codes == [CANCELLED_LIST_STALE]

    # A malformed read is refused, never looked up as something else.
    assert cards.check({"card_id": "zz"}, NOW, normal).codes == [
        CARD_READ_INVALID,
        CARD_NOT_AUTHENTICATED,
        CARD_READ_INVALID,
    ]


def test_the_drivers_reading_value_is_what_the_check_takes(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    cards = CancelledCardList(engine, clock)
    cards.import_file(write(tmp_path / "list.csv", FRESH_LIST))
    good = parse_frame(card(CARD1.upper()))
    assert good is not None
    assert cards.check(good.value(), NOW, max_age_for("raised")).ok
    listed = parse_frame(card(CARD2.upper()))
    assert listed is not None
    assert cards.check(listed.value(), NOW, max_age_for("raised")).codes == [CARD_CANCELLED]


def test_security_levels() -> None:
    assert max_age_for("normal") == timedelta(days=7)
    assert max_age_for("raised") == timedelta(days=1)
    with pytest.raises(ValueError, match="security level"):
        max_age_for("high")  # type: ignore[arg-type]


def test_a_check_is_ok_exactly_without_reasons() -> None:
    with pytest.raises(ValueError):
        CredentialCheck(ok=True, reasons=[(CARD_EXPIRED, "x")])
    with pytest.raises(ValueError):
        CredentialCheck(ok=False, reasons=[])


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@given(
    card_id=st.one_of(card_ids, st.text(max_size=40), st.none(), st.integers()),
    expires=st.one_of(
        st.dates(min_value=date(2019, 1, 1), max_value=date(2031, 1, 1)).map(date.isoformat),
        st.text(max_size=12),
        st.none(),
    ),
    authenticated=st.one_of(st.booleans(), st.none(), st.just("true"), st.just(1)),
    cancelled=st.booleans(),
    list_date=st.one_of(st.none(), moments),
    now=moments,
    level=st.sampled_from(["normal", "raised"]),
)
def test_ok_implies_every_condition(
    card_id: object,
    expires: str | None,
    authenticated: object,
    cancelled: bool,
    list_date: datetime | None,
    now: datetime,
    level: str,
) -> None:
    max_age = max_age_for(level)  # type: ignore[arg-type]
    read = {"card_id": card_id, "expires": expires, "authenticated": authenticated}
    result = check_card(read, cancelled=cancelled, list_date=list_date, now=now, max_age=max_age)
    assert result.ok == (not result.reasons)
    codes = set(result.codes)
    if result.ok:
        assert authenticated is True
        assert expires is not None and date.fromisoformat(expires) >= now.date()
        assert not cancelled
        assert list_date is not None and now - list_date <= max_age
        assert isinstance(card_id, str)
    else:
        assert codes
    # Each condition, when it fails, is named.
    if cancelled:
        assert CARD_CANCELLED in codes
    if authenticated is not True:
        assert CARD_NOT_AUTHENTICATED in codes
    if list_date is None:
        assert CANCELLED_LIST_MISSING in codes
    elif now - list_date > max_age:
        assert CANCELLED_LIST_STALE in codes
    with suppress(ValueError, TypeError):
        if date.fromisoformat(expires) < now.date():  # type: ignore[arg-type]
            assert CARD_EXPIRED in codes
