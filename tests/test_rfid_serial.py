"""The serial RFID reader: the frame decoder, and the driver against its simulator over real ptys,
a socat pty pair and TCP."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.rfid_serial import (
    MAX_LINE,
    FrameSplitter,
    RfidSerialDevice,
    SerialRfidDriver,
    TagRead,
    parse_frame,
)
from drivers.serial_frames import RepeatFilter
from gated.clock import ManualClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import DeviceState, Kind, Quality, Source
from simulators.rfid_serial import SerialRfidSimulator, heartbeat_frame, register_cli, tag_frame
from tests.sinks import RecordingSink, driver_running, wait_until
from tests.system import free_port, require_tool

EPC1 = "E2801160600002084C6F1D12"
EPC2 = "E28011606000020A3B19C4F7"
EPC3 = "3034257BF7194E4000001A85"
EPC4 = "AD0112345678"

# Worked out by hand: XOR of the bytes between '$' and '*'.
KNOWN_TAG = b"$TAG,E2801160600002084C6F1D12,1,-55*66\r\n"
KNOWN_HEARTBEAT = b"$HBT*5E\r\n"

WAIT = 15.0


def encode(body: str, *, lower_checksum: bool = False) -> bytes:
    """The test's own encoder, independent of the simulator's."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    digits = f"{value:02x}" if lower_checksum else f"{value:02X}"
    return f"${body}*{digits}\r\n".encode("ascii")


def make_driver(url: str, **options: Any) -> SerialRfidDriver:
    """A driver on ``url``; ``repeat_window`` goes into its settings, the rest to the driver."""
    settings: dict[str, Any] = {"id": "rfid-1", "driver": "rfid-serial", "url": url}
    if "repeat_window" in options:
        settings["repeat_window_seconds"] = options.pop("repeat_window")
    options = {"backoff_initial": 0.1, "backoff_max": 0.5, **options}
    return SerialRfidDriver("lane-1", RfidSerialDevice.model_validate(settings), **options)


@contextmanager
def running(driver: SerialRfidDriver) -> Iterator[RecordingSink]:
    """The driver's own loop in a thread, stopped and joined at the end."""
    sink = RecordingSink("lane-1", "rfid-1", timeout=WAIT)
    with driver_running(driver, sink):
        yield sink


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[bytes]]]:
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
        yield a, b, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def exercise(simulator: SerialRfidSimulator, sink: RecordingSink) -> None:
    """Tags with repeats and garbage between them: one reading per tag, an error per bad frame."""
    sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
    simulator.present_tag(EPC1, antenna=2, rssi=-61, repeats=5)
    simulator.send_raw(b"\x00\xff\x13 line noise\r\n")
    simulator.send_raw(b"half a frame $TAG,E28")
    simulator.present_tag(EPC2.lower(), repeats=4)
    simulator.send_raw(b"$TAG,E2801160600002084C6F1D12,1,-55*00\r\n")
    simulator.present_tag(EPC3, antenna=8, rssi=-40)
    simulator.present_tag(EPC4, repeats=1)
    sink.wait_for("four readings", lambda: len(sink.values()) >= 4)
    assert sink.values() == [EPC1.lower(), EPC2.lower(), EPC3.lower(), EPC4.lower()]
    errors = sink.errors
    for fragment in ("control or non-ASCII", "does not start with '$'", "no '*'", "checksum 00"):
        assert any(fragment in error for error in errors), (fragment, errors)
    assert sink.states[0] is DeviceState.ONLINE
    for reading in sink.readings:
        assert reading.kind is Kind.RFID
        assert reading.source == Source.EPC
        assert reading.source == "epc"
        assert reading.quality is Quality.GOOD
        assert reading.units is None
        assert (reading.lane, reading.device) == ("lane-1", "rfid-1")
        assert reading.ts.tzinfo is not None


# The frame decoder


def test_known_frames_from_the_protocol_description() -> None:
    assert tag_frame(EPC1, 1, -55) == KNOWN_TAG == encode(f"TAG,{EPC1},1,-55")
    assert heartbeat_frame() == KNOWN_HEARTBEAT == encode("HBT")
    assert parse_frame(KNOWN_TAG) == TagRead(epc=EPC1.lower(), antenna=1, rssi=-55)
    assert parse_frame(KNOWN_HEARTBEAT) is None


def test_terminators_and_case() -> None:
    body = "TAG,ad0112345678,8,-128"
    expected = TagRead(epc="ad0112345678", antenna=8, rssi=-128)
    for frame in (encode(body), encode(body).rstrip(b"\n"), encode(body)[:-2], encode(body)[:-2] + b"\n"):
        assert parse_frame(frame) == expected
    assert parse_frame(encode(body, lower_checksum=True)) == expected
    assert parse_frame(encode("TAG,AD0112345678,1,0")) == TagRead(epc="ad0112345678", antenna=1, rssi=0)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"", "empty line"),
        (b"\r\n", "empty line"),
        (KNOWN_TAG.replace(b"*66", b"*67"), "checksum 67 does not match 66"),
        (KNOWN_TAG.replace(b"*66", b"*6"), "two hex digits"),
        (KNOWN_TAG.replace(b"*66", b"*6G"), "two hex digits"),
        (KNOWN_TAG.replace(b"*66", b""), "no '*'"),
        (KNOWN_TAG[1:], "does not start with '$'"),
        (encode(f"TAG,{EPC1}A,1,-55"), "hex digits (8-62, even)"),
        (encode("TAG,ABCDEF,1,-55"), "hex digits (8-62, even)"),
        (encode("TAG," + "AB" * 32 + ",1,-55"), "hex digits (8-62, even)"),
        (encode("TAG,ABCDEFGX,1,-55"), "EPC is not hex"),
        (encode(f"TAG,{EPC1},0,-55"), "antenna"),
        (encode(f"TAG,{EPC1},9,-55"), "antenna"),
        (encode(f"TAG,{EPC1},12,-55"), "antenna"),
        (encode(f"TAG,{EPC1},1,-129"), "RSSI"),
        (encode(f"TAG,{EPC1},1,-5.5"), "RSSI"),
        (encode(f"TAG,{EPC1},1,"), "RSSI"),
        (encode(f"TAG,{EPC1},1,-55,7"), "TAG needs 3 fields, got 4"),
        (encode(f"TAG,{EPC1},1"), "TAG needs 3 fields, got 2"),
        (encode("HBT,1"), "unknown sentence"),
        (encode("GPGGA,1,2"), "unknown sentence"),
        (KNOWN_TAG.replace(b"TAG", b"T\xc4G"), "non-ASCII"),
        (KNOWN_TAG.replace(b",1,", b",\t1,"), "control"),
        (b"$" + b"A" * 300 + b"*00\r\n", "longer than 256 bytes"),
    ],
)
def test_malformed_frames_are_protocol_errors_with_context(line: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_frame(line)
    message = str(raised.value)
    assert complaint in message
    assert repr(line[:10])[:-1] in message  # the offending bytes, as Python shows them


def test_an_error_shows_only_the_start_of_a_long_line() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_frame(b"x" * 5000)
    assert len(str(raised.value)) < 200
    assert "5000 bytes" in str(raised.value)


epcs = st.binary(min_size=4, max_size=31).map(bytes.hex)
antennas = st.integers(min_value=1, max_value=8)
rssis = st.integers(min_value=-128, max_value=127)


@given(epc=epcs, antenna=antennas, rssi=rssis, upper=st.booleans(), lower_checksum=st.booleans())
def test_round_trip(epc: str, antenna: int, rssi: int, upper: bool, lower_checksum: bool) -> None:
    shown = epc.upper() if upper else epc
    frame = encode(f"TAG,{shown},{antenna},{rssi}", lower_checksum=lower_checksum)
    assert parse_frame(frame) == TagRead(epc=epc, antenna=antenna, rssi=rssi)
    assert parse_frame(tag_frame(epc, antenna, rssi)) == TagRead(epc=epc, antenna=antenna, rssi=rssi)


@given(epc=epcs, antenna=antennas, rssi=rssis)
def test_every_truncation_is_a_protocol_error(epc: str, antenna: int, rssi: int) -> None:
    frame = tag_frame(epc, antenna, rssi)
    whole = parse_frame(frame)
    for cut in range(len(frame)):
        try:
            result = parse_frame(frame[:cut])
        except ProtocolError:
            continue
        # Only the terminator may go missing.
        assert cut >= len(frame) - 2, frame[:cut]
        assert result == whole


@given(epc=epcs, antenna=antennas, rssi=rssis, data=st.data())
def test_a_single_bit_flip_never_yields_a_different_read(
    epc: str, antenna: int, rssi: int, data: st.DataObject
) -> None:
    frame = bytearray(tag_frame(epc, antenna, rssi))
    position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    try:
        result = parse_frame(bytes(frame))
    except ProtocolError:
        return
    # Only the case bit of a checksum letter can flip without changing the value.
    assert result == TagRead(epc=epc, antenna=antenna, rssi=rssi)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_nothing_but_protocol_errors(line: bytes) -> None:
    try:
        result = parse_frame(line)
    except ProtocolError:
        return
    assert result is None or isinstance(result, TagRead)


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(3)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            alphabet = b"$*,\r\n0123456789ABCDEF-" + bytes([rng.randrange(256)])
            data[position:position] = bytes([rng.choice(alphabet)])
        elif data:
            del data[min(position, len(data) - 1)]
    return bytes(data)


def test_fuzz_decoder_and_splitter() -> None:
    rng = random.Random(6346)
    splitter = FrameSplitter()
    outcomes = {"error": 0, "read": 0, "heartbeat": 0}
    for _ in range(20_000):
        if rng.random() < 0.5:
            line = rng.randbytes(rng.randrange(300))
        else:
            epc = rng.randbytes(rng.randint(4, 31)).hex()
            base = tag_frame(epc, rng.randint(1, 8), rng.randint(-128, 127))
            line = mutate(rng, base if rng.random() < 0.8 else KNOWN_HEARTBEAT)
        try:
            result = parse_frame(line)
        except ProtocolError:
            outcomes["error"] += 1
        else:
            outcomes["heartbeat" if result is None else "read"] += 1
        for item in splitter.feed(line):
            if isinstance(item, bytes):
                with suppress(ProtocolError):
                    parse_frame(item)
        assert splitter.buffered <= MAX_LINE
    # The mutations must exercise both sides (a checksum-case flip or a mutated terminator still reads).
    assert outcomes["error"] > 10_000
    assert outcomes["read"] + outcomes["heartbeat"] > 0


# Splitting a stream into frames

junk_bytes = st.binary(max_size=300).map(lambda data: data.replace(b"$", b"").replace(b"\n", b""))
stream_items = st.lists(
    st.one_of(
        st.tuples(st.just("tag"), epcs),
        st.tuples(st.just("junk"), junk_bytes, st.booleans()),
    ),
    max_size=12,
)


@given(items=stream_items, data=st.data())
def test_splitter_recovers_every_frame_around_junk(
    items: list[tuple[str, str] | tuple[str, bytes, bool]], data: st.DataObject
) -> None:
    stream = b""
    expected: list[str] = []
    for item in items:
        if item[0] == "tag":
            assert isinstance(item[1], str)
            stream += tag_frame(item[1])
            expected.append(item[1])
        else:
            assert isinstance(item[1], bytes)
            stream += item[1] + (b"\r\n" if item[2] else b"")
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8)))
    splitter = FrameSplitter()
    found: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        for line in splitter.feed(stream[start:end]):
            if isinstance(line, bytes):
                try:
                    read = parse_frame(line)
                except ProtocolError:
                    continue
                if read is not None:
                    found.append(read.epc)
        assert splitter.buffered <= MAX_LINE
    assert found == expected


def test_splitter_drops_an_overlong_line_and_resumes() -> None:
    splitter = FrameSplitter()
    out = splitter.feed(b"$TAG," + b"A" * 600)
    assert len(out) == 1
    assert isinstance(out[0], ProtocolError)
    assert "longer than 256 bytes" in str(out[0])
    assert splitter.feed(b"B" * 600) == []
    assert splitter.feed(b"CCC\r\n" + KNOWN_TAG) == [KNOWN_TAG]
    assert splitter.feed(b"tail " + KNOWN_HEARTBEAT) == [b"tail ", KNOWN_HEARTBEAT]
    assert splitter.feed(b"\r\n\r\n") == []


def test_repeat_filter_reports_a_standing_tag_once() -> None:
    window = RepeatFilter(5.0)
    assert window.admit("aa", 0.0)
    assert not window.admit("aa", 1.0)
    assert window.admit("bb", 1.0)
    assert not window.admit("aa", 4.5)
    assert not window.admit("aa", 9.0)  # still in the field: seen 4.5 s ago
    assert window.admit("aa", 14.5)  # gone for 5.5 s, a new arrival
    assert window.admit("bb", 14.5)


# The driver on its own


def test_connect_failures_are_device_unavailable(tmp_path: Path) -> None:
    for url in (str(tmp_path / "no-such-tty"), f"socket://127.0.0.1:{free_port()}", "nonsense://x"):
        driver = make_driver(url)
        with pytest.raises(DeviceUnavailable, match="cannot open"):
            driver.connect()
        driver.close()
        driver.close()


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
def test_good_frames_next_to_a_bad_one_are_kept_in_order() -> None:
    with SerialRfidSimulator(heartbeat_interval=None) as simulator:
        driver = make_driver(simulator.device_path)
        driver.connect()
        try:
            chunk = tag_frame(EPC1) + b"garbage\r\n" + tag_frame(EPC2) + b"$HBT*00\r\n" + tag_frame(EPC3)
            simulator.send_raw(chunk)
            events: list[str] = []
            deadline = time.monotonic() + WAIT
            while events.count("error") < 2 or len(events) < 5:
                assert time.monotonic() < deadline, events
                try:
                    events.extend(str(reading.value) for reading in driver.step())
                except ProtocolError:
                    events.append("error")
            assert events == [EPC1.lower(), "error", EPC2.lower(), "error", EPC3.lower()]
        finally:
            driver.close()


# The driver against the simulator, over real transports


@pytest.mark.timeout(30)
def test_over_the_simulators_own_pty() -> None:
    with SerialRfidSimulator() as simulator, running(make_driver(simulator.device_path)) as sink:
        exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_over_a_socat_pty_pair(socat_pair: tuple[Path, Path, subprocess.Popen[bytes]]) -> None:
    a, b, _ = socat_pair
    with SerialRfidSimulator(path=str(a)) as simulator, running(make_driver(str(b))) as sink:
        exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_over_tcp_like_a_serial_device_server() -> None:
    with SerialRfidSimulator(tcp_port=0) as simulator:
        driver = make_driver(f"socket://127.0.0.1:{simulator.tcp_port}")
        with running(driver) as sink:
            wait_until("the simulator to accept the driver", lambda: simulator.client_count == 1)
            exercise(simulator, sink)


@pytest.mark.timeout(30)
def test_socat_killed_mid_run_takes_the_reader_offline(
    socat_pair: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    a, b, process = socat_pair
    with SerialRfidSimulator(path=str(a)) as simulator:
        with running(make_driver(str(b))) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            simulator.present_tag(EPC1)
            sink.wait_for("the first tag", lambda: sink.values() == [EPC1.lower()])
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            # A killed socat leaves its links behind, naming a pty number the next pty opened on
            # the machine (another test's) is given: the reader must not reconnect to a stranger.
            b.unlink()
            sink.wait_for("the driver to go offline", lambda: sink.state is DeviceState.OFFLINE)
            simulator.present_tag(EPC2)  # into a dead port: dropped, no exception
            time.sleep(0.5)
            assert sink.state is DeviceState.OFFLINE
            assert sink.values() == [EPC1.lower()]
        assert sink.states[:2] == [DeviceState.ONLINE, DeviceState.OFFLINE]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_simulator_stopped_takes_the_reader_offline(transport: str) -> None:
    simulator = SerialRfidSimulator(tcp_port=0) if transport == "tcp" else SerialRfidSimulator()
    with simulator:
        url = f"socket://127.0.0.1:{simulator.tcp_port}" if transport == "tcp" else simulator.device_path
        with running(make_driver(url)) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            if transport == "tcp":
                wait_until("the simulator to accept the driver", lambda: simulator.client_count == 1)
            simulator.present_tag(EPC1)
            sink.wait_for("the tag", lambda: sink.values() == [EPC1.lower()])
            simulator.stop()
            simulator.stop()
            sink.wait_for("the driver to go offline", lambda: sink.state is DeviceState.OFFLINE)
            time.sleep(1.0)
            assert sink.state is DeviceState.OFFLINE
    with pytest.raises(RuntimeError, match="not running"):
        simulator.present_tag(EPC1)


@pytest.mark.timeout(30)
def test_heartbeats_keep_a_quiet_reader_online_and_their_absence_does_not() -> None:
    with SerialRfidSimulator(heartbeat_interval=0.5) as simulator:
        driver = make_driver(simulator.device_path, silence_timeout=2.0)
        with running(driver) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
            time.sleep(3.5)
            assert sink.states == [DeviceState.ONLINE]
    with SerialRfidSimulator(heartbeat_interval=None) as simulator:
        driver = make_driver(simulator.device_path, silence_timeout=1.0)
        with running(driver) as sink:

            def gone_quiet() -> bool:
                return any(
                    state is DeviceState.OFFLINE and "no data" in text for state, text in sink.statuses
                )

            sink.wait_for("the silent reader to go offline", gone_quiet)


@pytest.mark.timeout(30)
def test_a_port_that_opens_but_speaks_no_frame_is_never_online() -> None:
    # A pty whose number another device now has opens fine: only a good frame proves the reader.
    master, slave = os.openpty()
    saying = [b"login: \x00\xff garbage\r\n"]
    stop = threading.Event()

    def speak() -> None:
        while not stop.wait(0.2):
            with suppress(OSError):
                os.write(master, saying[0])

    speaker = threading.Thread(target=speak, daemon=True)
    speaker.start()
    try:
        with running(make_driver(os.ttyname(slave), silence_timeout=1.0)) as sink:
            sink.wait_for("garbage to be refused", lambda: len(sink.errors) >= 3)
            assert DeviceState.ONLINE not in sink.states
            saying[0] = heartbeat_frame()
            sink.wait_for("a heartbeat to prove the reader", lambda: sink.state is DeviceState.ONLINE)
    finally:
        stop.set()
        speaker.join()
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(30)
def test_one_reading_per_truck_within_the_repeat_window() -> None:
    clock = ManualClock()
    with SerialRfidSimulator() as simulator:
        driver = make_driver(simulator.device_path, clock=clock, repeat_window=5.0, silence_timeout=3600.0)
        with running(driver) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)

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


@pytest.mark.timeout(30)
def test_concurrent_senders_never_interleave_frames() -> None:
    tags = [f"{sender:02X}{number:06X}AABBCCDD" for sender in range(4) for number in range(15)]
    with SerialRfidSimulator(heartbeat_interval=0.05) as simulator:
        driver = make_driver(simulator.device_path)
        with running(driver) as sink:
            sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)

            def send(sender: int) -> None:
                for tag in tags[sender * 15 : (sender + 1) * 15]:
                    simulator.present_tag(tag, repeats=2)

            senders = [threading.Thread(target=send, args=(n,)) for n in range(4)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(timeout=10)
            sink.wait_for("every tag", lambda: len(sink.values()) >= len(tags))
            assert sorted(sink.values()) == sorted(tag.lower() for tag in tags)
            assert sink.errors == []


# The simulator on its own


def test_simulator_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="path or tcp_port"):
        SerialRfidSimulator(path="/dev/null", tcp_port=0)
    simulator = SerialRfidSimulator()
    with pytest.raises(RuntimeError, match="not running"):
        simulator.send_raw(b"x")
    with simulator:
        for bad in ("E28", "E2801160600002084C6F1D1", "XYZ12345"):
            with pytest.raises(ValueError, match="EPC"):
                simulator.present_tag(bad)
        with pytest.raises(ValueError, match="antenna"):
            simulator.present_tag(EPC1, antenna=9)
        with pytest.raises(RuntimeError):
            _ = simulator.tcp_port
    simulator.stop()


@pytest.mark.timeout(30)
def test_gated_sim_command_on_a_pty_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["rfid-serial", "--tags", "NOTHEX00"])
    capsys.readouterr()
    link = tmp_path / "rfid"
    command_line = ["rfid-serial", "--pty-link", str(link), "--tags", f"{EPC1},{EPC3}"]
    args = parser.parse_args([*command_line, "--interval", "0.2", "--duration", "5"])
    result: list[int] = []
    command = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    command.start()
    wait_until("the pty link", lambda: link.is_symlink(), timeout=10)
    with running(make_driver(str(link), repeat_window=60.0)) as sink:
        sink.wait_for("both tags", lambda: {EPC1.lower(), EPC3.lower()} <= set(sink.values()))
    command.join(timeout=15)
    assert result == [0]
    assert not os.path.lexists(link)
    assert "rfid-serial: pty /dev/pts/" in capsys.readouterr().out
