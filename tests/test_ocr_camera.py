"""The smart OCR camera: driver against simulator over real TCP, and the decoder under fuzzing."""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ocr_camera import (
    MAX_LINE,
    CameraMessage,
    ContainerRead,
    Heartbeat,
    OcrCameraDevice,
    PassageEnd,
    SmartCameraDriver,
    parse_message,
    readings_from,
)
from gated.clock import ManualClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.iso6346 import check_digit, is_valid, normalise
from gated.model import DeviceState, Kind, Quality, Reading, Source
from simulators.ocr_camera import SmartCameraSimulator, register_cli
from tests.sinks import driver_running
from tests.system import free_port

LANE = "lane-1"
DEVICE = "ocr-1"
HEARTBEAT = 0.2
SILENCE = 1.5
WAIT = 15.0
TS = "2026-03-01T10:15:30.250Z"


class RecordingSink:
    """A DriverSink that records everything and lets a test wait for a condition."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.readings: list[Reading] = []
        self.states: list[tuple[DeviceState, str, float]] = []
        self.errors: list[ProtocolError] = []

    def reading(self, reading: Reading) -> None:
        assert (reading.lane, reading.device) == (LANE, DEVICE)
        with self._changed:
            self.readings.append(reading)
            self._changed.notify_all()

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None:
        assert (lane, device) == (LANE, DEVICE)
        with self._changed:
            self.states.append((state, detail, time.monotonic()))
            self._changed.notify_all()

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None:
        assert (lane, device) == (LANE, DEVICE)
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out after {timeout} s waiting for {what}")
                self._changed.wait(remaining)

    def of(self, source: str) -> list[Reading]:
        with self._changed:
            return [reading for reading in self.readings if reading.source == source]

    def count_state(self, state: DeviceState) -> int:
        with self._changed:
            return sum(1 for seen, _detail, _at in self.states if seen == state)

    def last_state(self) -> DeviceState | None:
        with self._changed:
            return self.states[-1][0] if self.states else None

    def wait_readings(self, source: str, count: int) -> list[Reading]:
        self.wait_for(f"{count} {source} readings", lambda: len(self.of(source)) >= count)
        return self.of(source)


def make_driver(port: int, *, clock: ManualClock | None = None, **settings: Any) -> SmartCameraDriver:
    """A driver for the camera on ``port``; ``settings`` as in the config (validated like it)."""
    settings.setdefault("silence_timeout_seconds", SILENCE)
    device = OcrCameraDevice(id=DEVICE, driver="ocr-camera", host="127.0.0.1", port=port, **settings)
    return SmartCameraDriver(LANE, device, clock=clock, backoff_initial=0.05, backoff_max=0.5)


@contextmanager
def running(driver: SmartCameraDriver) -> Iterator[RecordingSink]:
    sink = RecordingSink()
    with driver_running(driver, sink):
        yield sink


@pytest.fixture
def camera() -> Iterator[SmartCameraSimulator]:
    with SmartCameraSimulator("cam-1", heartbeat_interval=HEARTBEAT) as simulator:
        yield simulator


@pytest.fixture
def lane(camera: SmartCameraSimulator) -> Iterator[tuple[SmartCameraSimulator, RecordingSink]]:
    """The simulator and the sink of a driver that is connected to it."""
    with running(make_driver(camera.port)) as sink:
        sink.wait_for("online", lambda: sink.last_state() == DeviceState.ONLINE)
        yield camera, sink


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def read_line(code: str, confidence: float = 0.97, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "event": "read",
        "camera": "cam-1",
        "ts": TS,
        "passage": "p-1",
        "slot": 1,
        "view": "rear",
        "code": code,
        "confidence": confidence,
        "size_type": None,
    }
    fields.update(overrides)
    return line(**fields)


# Driver against simulator, over TCP.


@pytest.mark.timeout(60)
def test_valid_read_gives_a_good_container_number(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    camera.read("CSQU3054383", 0.97)
    camera.passage_end(1)
    [reading] = sink.wait_readings(Source.CONTAINER_NUMBER, 1)
    sink.wait_readings(Source.PASSAGE_END, 1)
    assert reading.kind == Kind.OCR
    assert reading.value == "CSQU3054383"
    assert reading.quality == Quality.GOOD
    assert reading.confidence == pytest.approx(0.97)
    assert reading.ts.tzinfo is not None
    assert abs(reading.ts - datetime.now(UTC)) < timedelta(minutes=1)
    assert sink.of("size_type") == []


@pytest.mark.timeout(60)
def test_read_with_separators_and_lower_case_is_normalised(
    lane: tuple[SmartCameraSimulator, RecordingSink],
) -> None:
    camera, sink = lane
    camera.read("bicu 123456-5", 0.95)
    [reading] = sink.wait_readings(Source.CONTAINER_NUMBER, 1)
    assert (reading.value, reading.quality) == ("BICU1234565", Quality.GOOD)


@pytest.mark.timeout(60)
def test_wrong_check_digit_is_uncertain_and_reported_as_printed(
    lane: tuple[SmartCameraSimulator, RecordingSink],
) -> None:
    camera, sink = lane
    camera.read("MSKU4135328", 0.99)
    [reading] = sink.wait_readings(Source.CONTAINER_NUMBER, 1)
    assert reading.value == "MSKU4135328"
    assert reading.quality == Quality.UNCERTAIN
    assert reading.confidence == pytest.approx(0.99)


@pytest.mark.timeout(60)
def test_low_confidence_is_uncertain(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    camera.read("CSQU3054383", 0.5)
    camera.read("CSQU3054383", 0.9)
    low, at_threshold = sink.wait_readings(Source.CONTAINER_NUMBER, 2)
    assert (low.value, low.quality, low.confidence) == ("CSQU3054383", Quality.UNCERTAIN, 0.5)
    assert (at_threshold.value, at_threshold.quality) == ("CSQU3054383", Quality.GOOD)


@pytest.mark.timeout(60)
def test_empty_or_garbage_code_is_bad_with_no_value(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    codes = ["", "#?!", "MSKU413532O", "CSQU305438", "CSQX3054383", "CSQU30543833", "ÇSQU3054383"]
    for code in codes:
        camera.read(code, 0.99)
    readings = sink.wait_readings(Source.CONTAINER_NUMBER, len(codes))
    assert [(reading.value, reading.quality) for reading in readings] == [(None, Quality.BAD)] * len(codes)
    assert all(reading.confidence == pytest.approx(0.99) for reading in readings)


@pytest.mark.timeout(60)
def test_passage_end_gives_the_container_count(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    camera.read("CSQU3054383", slot=1)
    camera.read("BICU1234565", slot=2, view="side")
    camera.passage_end(2)
    camera.passage_end(0)
    ends = sink.wait_readings(Source.PASSAGE_END, 2)
    assert [(end.kind, end.value, end.quality) for end in ends] == [
        (Kind.OCR, 2, Quality.GOOD),
        (Kind.OCR, 0, Quality.GOOD),
    ]
    assert [reading.value for reading in sink.of(Source.CONTAINER_NUMBER)] == ["CSQU3054383", "BICU1234565"]


@pytest.mark.timeout(60)
def test_size_type_gives_its_own_reading(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    camera.read("CSQU3054383", 0.97, size_type="45G1")
    camera.read("BICU1234565", 0.5, size_type="L5G1")
    camera.read("BICU1234565", 0.97, size_type="45g1")
    camera.read("BICU1234565", 0.97, size_type="XXXX")
    camera.passage_end(1)
    sink.wait_readings(Source.PASSAGE_END, 1)
    size_types = sink.of("size_type")
    assert [(reading.value, reading.quality) for reading in size_types] == [
        ("45G1", Quality.GOOD),
        ("L5G1", Quality.UNCERTAIN),
    ]
    assert all(reading.kind == Kind.OCR for reading in size_types)
    assert len(sink.of(Source.CONTAINER_NUMBER)) == 4


@pytest.mark.timeout(60)
def test_garbage_lines_between_good_ones_lose_nothing(
    lane: tuple[SmartCameraSimulator, RecordingSink],
) -> None:
    camera, sink = lane
    camera.send_raw(
        read_line("CSQU3054383")
        + b"not json\n"
        + read_line("BICU1234565")
        + b'{"event": "read"}\n'
        + b"\xff\xfe\n"
        + read_line("ABCU1234560", confidence=1.5)
        + read_line("MSKU4135329")
        + line(event="passage_end", camera="cam-1", ts=TS, passage="p-1", containers=3)
    )
    ends = sink.wait_readings(Source.PASSAGE_END, 1)
    assert ends[0].value == 3
    assert [reading.value for reading in sink.of(Source.CONTAINER_NUMBER)] == [
        "CSQU3054383",
        "BICU1234565",
        "MSKU4135329",
    ]
    sink.wait_for("4 frame errors", lambda: len(sink.errors) >= 4)
    assert len(sink.errors) == 4
    assert sink.count_state(DeviceState.OFFLINE) == 0


@pytest.mark.timeout(60)
def test_lines_split_across_writes_and_overlong_lines(
    lane: tuple[SmartCameraSimulator, RecordingSink],
) -> None:
    camera, sink = lane
    camera.pause_heartbeats(True)
    first = read_line("CSQU3054383")
    camera.send_raw(first[:20])
    time.sleep(0.1)
    camera.send_raw(first[20:] + b"x" * 40_000)
    time.sleep(0.1)
    camera.send_raw(b"y" * 40_000)
    time.sleep(0.1)
    camera.send_raw(b"z" * 100 + b"\n" + read_line("BICU1234565"))
    camera.send_raw(read_line("ABCU1234560", view="x" * (MAX_LINE + 10)) + read_line("MSKU4135329"))
    camera.pause_heartbeats(False)
    readings = sink.wait_readings(Source.CONTAINER_NUMBER, 3)
    assert [reading.value for reading in readings] == ["CSQU3054383", "BICU1234565", "MSKU4135329"]
    sink.wait_for("2 frame errors", lambda: len(sink.errors) >= 2)
    assert len(sink.errors) == 2
    assert all("longer than" in str(error) for error in sink.errors)


@pytest.mark.timeout(90)
def test_simulator_stop_is_offline_and_restart_reconnects(camera: SmartCameraSimulator) -> None:
    port = camera.port
    with running(make_driver(port)) as sink:
        sink.wait_for("online", lambda: sink.last_state() == DeviceState.ONLINE)
        camera.stop()
        sink.wait_for("offline", lambda: sink.last_state() == DeviceState.OFFLINE)
        with SmartCameraSimulator("cam-1", port, heartbeat_interval=HEARTBEAT) as again:
            sink.wait_for("online again", lambda: sink.count_state(DeviceState.ONLINE) >= 2)
            again.read("CSQU3054383")
            [reading] = sink.wait_readings(Source.CONTAINER_NUMBER, 1)
            assert reading.value == "CSQU3054383"
            assert [state for state, _detail, _at in sink.states] == [
                DeviceState.ONLINE,
                DeviceState.OFFLINE,
                DeviceState.ONLINE,
            ]


@pytest.mark.timeout(90)
def test_camera_absent_at_start_then_appearing() -> None:
    port = free_port()
    with running(make_driver(port)) as sink:
        sink.wait_for("offline", lambda: sink.last_state() == DeviceState.OFFLINE)
        with SmartCameraSimulator("cam-1", port, heartbeat_interval=HEARTBEAT) as camera:
            sink.wait_for("online", lambda: sink.last_state() == DeviceState.ONLINE)
            camera.passage_end(0)
            sink.wait_readings(Source.PASSAGE_END, 1)


@pytest.mark.timeout(90)
def test_silent_camera_goes_offline_and_recovers(lane: tuple[SmartCameraSimulator, RecordingSink]) -> None:
    camera, sink = lane
    paused_at = time.monotonic()
    camera.pause_heartbeats(True)
    sink.wait_for("offline", lambda: sink.last_state() == DeviceState.OFFLINE, timeout=SILENCE + 10)
    offline_at = sink.states[-1][2]
    assert SILENCE - HEARTBEAT - 0.2 <= offline_at - paused_at <= SILENCE + 3.0
    assert "silent" in sink.states[-1][1]
    time.sleep(SILENCE + 0.5)
    assert sink.last_state() == DeviceState.OFFLINE, "a silent camera must not flap back online"
    camera.pause_heartbeats(False)
    sink.wait_for("online again", lambda: sink.last_state() == DeviceState.ONLINE)
    camera.read("CSQU3054383")
    sink.wait_readings(Source.CONTAINER_NUMBER, 1)


@pytest.mark.timeout(60)
def test_silence_is_measured_on_the_injected_clock(camera: SmartCameraSimulator) -> None:
    clock = ManualClock()
    driver = make_driver(camera.port, clock=clock)
    driver.connect()
    try:
        camera.pause_heartbeats(True)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert list(driver.step()) == []
        clock.advance(SILENCE + 0.1)
        with pytest.raises(DeviceUnavailable, match="silent"):
            for _ in range(200):
                driver.step()
        driver.close()
        camera.pause_heartbeats(False)
        driver.connect()
        camera.read("CSQU3054383")
        readings: list[Reading] = []
        deadline = time.monotonic() + WAIT
        while not readings and time.monotonic() < deadline:
            readings.extend(driver.step())
        assert [reading.ts for reading in readings] == [clock.now()]
    finally:
        driver.close()
        driver.close()


@pytest.mark.timeout(60)
def test_bad_line_in_one_chunk_is_reported_between_the_good_ones(camera: SmartCameraSimulator) -> None:
    driver = make_driver(camera.port)
    driver.connect()
    try:
        camera.send_raw(read_line("CSQU3054383") + b"[1, 2]\n" + read_line("BICU1234565"))
        outcomes: list[str] = []
        deadline = time.monotonic() + WAIT
        while len(outcomes) < 3 and time.monotonic() < deadline:
            try:
                outcomes.extend(str(reading.value) for reading in driver.step())
            except ProtocolError as error:
                assert "not a JSON object" in str(error)
                outcomes.append("error")
        assert outcomes == ["CSQU3054383", "error", "BICU1234565"]
    finally:
        driver.close()


def test_driver_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        make_driver(1234, min_confidence=1.5)
    with pytest.raises(ValueError, match="silence_timeout"):
        make_driver(1234, silence_timeout_seconds=0)
    with pytest.raises(ValueError, match="port"):
        make_driver(0)


# The simulator on its own, checked with plain sockets.


class LineReader:
    """A plain-socket client of the simulator, decoding its lines with nothing from the driver."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def messages(self, count: int, *, skip_heartbeats: bool = True) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        while len(received) < count:
            if b"\n" not in self.buffer:
                data = self.sock.recv(65536)
                assert data, "simulator closed the connection"
                self.buffer += data
                continue
            raw, self.buffer = self.buffer.split(b"\n", 1)
            message = json.loads(raw.decode("utf-8"))
            if not (skip_heartbeats and message["event"] == "heartbeat"):
                received.append(message)
        return received


@pytest.mark.timeout(60)
def test_simulator_broadcasts_to_every_client_and_tracks_passages() -> None:
    with SmartCameraSimulator("cam-7", heartbeat_interval=HEARTBEAT) as camera:
        with LineReader(camera.port) as first, LineReader(camera.port) as second:
            greeting = first.messages(1, skip_heartbeats=False)[0]
            assert (greeting["event"], greeting["camera"]) == ("heartbeat", "cam-7")
            deadline = time.monotonic() + WAIT
            while camera.clients < 2:
                assert time.monotonic() < deadline, "second client never registered"
                time.sleep(0.01)
            camera.read("CSQU3054383", size_type="22G1")
            camera.read("BICU1234565", 0.5, slot=2, view="top")
            camera.passage_end(2)
            camera.read("ABCU1234560")
            camera.passage_end(1, passage="given-id")
            from_first, from_second = first.messages(5), second.messages(5)
        assert from_first == from_second
        one, two, end, three, end_two = from_first
        assert (one["event"], one["camera"]) == ("read", "cam-7")
        assert (one["code"], one["confidence"], one["size_type"], one["slot"], one["view"]) == (
            "CSQU3054383",
            0.97,
            "22G1",
            1,
            "rear",
        )
        assert (two["code"], two["confidence"], two["slot"], two["view"], two["size_type"]) == (
            "BICU1234565",
            0.5,
            2,
            "top",
            None,
        )
        assert one["passage"] == two["passage"] == end["passage"]
        assert (end["event"], end["containers"]) == ("passage_end", 2)
        assert three["passage"] != one["passage"]
        assert (end_two["passage"], end_two["containers"]) == ("given-id", 1)
        assert datetime.fromisoformat(one["ts"]).tzinfo is not None


@pytest.mark.timeout(60)
def test_simulator_heartbeats_and_pauses() -> None:
    with SmartCameraSimulator(heartbeat_interval=HEARTBEAT) as camera, LineReader(camera.port) as client:
        started = time.monotonic()
        beats = client.messages(4, skip_heartbeats=False)
        assert [beat["event"] for beat in beats] == ["heartbeat"] * 4
        assert time.monotonic() - started >= 2 * HEARTBEAT
        camera.pause_heartbeats(True)
        client.sock.settimeout(3 * HEARTBEAT)
        with pytest.raises(TimeoutError):
            client.messages(1, skip_heartbeats=False)
        camera.pause_heartbeats(False)
        client.sock.settimeout(WAIT)
        assert client.messages(1, skip_heartbeats=False)[0]["event"] == "heartbeat"


@pytest.mark.timeout(60)
def test_simulator_start_and_stop_are_idempotent_and_restart_on_the_same_port() -> None:
    camera = SmartCameraSimulator(heartbeat_interval=HEARTBEAT)
    camera.stop()
    camera.start()
    camera.start()
    port = camera.port
    assert port > 0 and camera.running
    camera.stop()
    camera.stop()
    assert not camera.running
    with pytest.raises(OSError):
        LineReader(port)
    camera.start()
    try:
        assert camera.port == port
        with LineReader(port) as client:
            assert client.messages(1, skip_heartbeats=False)[0]["event"] == "heartbeat"
    finally:
        camera.stop()


def test_simulator_refuses_impossible_scripts() -> None:
    camera = SmartCameraSimulator()
    with pytest.raises(ValueError, match="confidence"):
        camera.read("CSQU3054383", 1.2)
    with pytest.raises(ValueError, match="view"):
        camera.read("CSQU3054383", view="under")
    with pytest.raises(ValueError, match="containers"):
        camera.passage_end(5)


@pytest.mark.timeout(90)
def test_gated_sim_ocr_camera_command() -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="device", required=True))
    port = free_port()
    command_line = f"ocr-camera --port {port} --codes CSQU3054383,MSKU4135328 --interval 0.2 --duration 6"
    args = parser.parse_args(command_line.split())
    assert args.codes == ["CSQU3054383", "MSKU4135328"]
    with pytest.raises(SystemExit):
        parser.parse_args(["ocr-camera", "--interval", "-1"])
    exit_codes: list[int] = []
    command = threading.Thread(target=lambda: exit_codes.append(args.func(args)), daemon=True)
    with running(make_driver(port)) as sink:
        command.start()
        numbers = sink.wait_readings(Source.CONTAINER_NUMBER, 2)
        sink.wait_readings(Source.PASSAGE_END, 2)
        assert {(reading.value, reading.quality) for reading in numbers[:2]} == {
            ("CSQU3054383", Quality.GOOD),
            ("MSKU4135328", Quality.UNCERTAIN),
        }
        assert {reading.value for reading in sink.of("size_type")} == {"42G1"}
        command.join(timeout=WAIT)
        assert exit_codes == [0]
        sink.wait_for("offline after the command ended", lambda: sink.last_state() == DeviceState.OFFLINE)
    short = parser.parse_args(["ocr-camera", "--port", str(free_port()), "--duration", "0.3"])
    assert short.func(short) == 0


# The decoder: properties and fuzzing.

_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=_offsets)
_text = st.text(min_size=1, max_size=40)
_confidences = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0, 1]))


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@st.composite
def messages(draw: st.DrawFn) -> tuple[dict[str, Any], CameraMessage]:
    """A valid message as JSON fields, and the value it must decode to."""
    event = draw(st.sampled_from(["heartbeat", "read", "passage_end"]))
    camera = draw(_text)
    moment = draw(_times)
    fields: dict[str, Any] = {"event": event, "camera": camera, "ts": _rfc3339(moment)}
    expected: CameraMessage
    if event == "heartbeat":
        expected = Heartbeat(camera, moment)
    elif event == "read":
        passage = draw(_text)
        slot = draw(st.integers(1, 4))
        view = draw(st.sampled_from(["rear", "side", "top", "front"]))
        code = draw(st.one_of(st.text(max_size=20), _numbers))
        confidence = draw(_confidences)
        size_type = draw(st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["22G1", "L5G1", "45R1"])))
        fields.update(
            passage=passage, slot=slot, view=view, code=code, confidence=confidence, size_type=size_type
        )
        expected = ContainerRead(camera, moment, passage, slot, view, code, float(confidence), size_type)
    else:
        passage = draw(_text)
        containers = draw(st.integers(0, 4))
        fields.update(passage=passage, containers=containers)
        expected = PassageEnd(camera, moment, passage, containers)
    extra = draw(st.dictionaries(st.text(max_size=8).filter(lambda key: key not in fields), st.integers()))
    fields.update(extra)
    keys = draw(st.permutations(list(fields)))
    return {key: fields[key] for key in keys}, expected


def _with_check_digit(owner: str, serial: str, correct: bool) -> str:
    digit = check_digit(owner + serial)
    return f"{owner}{serial}{digit if correct else (digit + 1) % 10}"


_numbers = st.builds(
    _with_check_digit,
    st.from_regex(r"[A-Z]{3}[UJZ]", fullmatch=True),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.booleans(),
)


def _encode(fields: dict[str, Any], ensure_ascii: bool) -> bytes:
    return json.dumps(fields, ensure_ascii=ensure_ascii).encode("utf-8") + b"\n"


def _decode_or_reject(data: bytes) -> CameraMessage | None:
    """Decode ``data``; a ProtocolError is an accepted answer, any other exception fails the test.
    A decoded message must also convert into readings without error."""
    try:
        message = parse_message(data)
    except ProtocolError:
        return None
    readings_from(message, lane=LANE, device=DEVICE, ts=datetime.now(UTC), min_confidence=0.9)
    return message


_PROPERTY = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(120)
@_PROPERTY
@given(messages(), st.booleans())
def test_valid_messages_round_trip(sample: tuple[dict[str, Any], CameraMessage], ensure_ascii: bool) -> None:
    fields, expected = sample
    encoded = _encode(fields, ensure_ascii)
    assert parse_message(encoded) == expected
    assert parse_message(encoded[:-1]) == expected


@pytest.mark.timeout(120)
@_PROPERTY
@given(messages(), st.floats(min_value=0.0, max_value=1.0))
def test_readings_follow_the_quality_rules(
    sample: tuple[dict[str, Any], CameraMessage], min_confidence: float
) -> None:
    _fields, message = sample
    readings = readings_from(
        message, lane=LANE, device=DEVICE, ts=datetime.now(UTC), min_confidence=min_confidence
    )
    if isinstance(message, Heartbeat):
        assert readings == []
    elif isinstance(message, PassageEnd):
        assert [(reading.source, reading.value) for reading in readings] == [
            (Source.PASSAGE_END, message.containers)
        ]
    else:
        number = readings[0]
        assert number.source == Source.CONTAINER_NUMBER
        assert number.confidence == message.confidence
        if number.value is None:
            assert number.quality == Quality.BAD
        else:
            assert number.value == normalise(message.code), "characters must never be changed"
            good = is_valid(number.value) and message.confidence >= min_confidence
            assert number.quality == (Quality.GOOD if good else Quality.UNCERTAIN)
        assert [reading.source for reading in readings[1:]] in ([], ["size_type"])
        if readings[1:]:
            assert readings[1].value == message.size_type


@pytest.mark.timeout(120)
@_PROPERTY
@given(st.data())
def test_truncated_messages_are_protocol_errors(data: st.DataObject) -> None:
    fields, _expected = data.draw(messages())
    body = _encode(fields, data.draw(st.booleans()))[:-1]
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    with pytest.raises(ProtocolError):
        parse_message(body[:cut])


@pytest.mark.timeout(120)
@_PROPERTY
@given(st.data())
def test_bit_flips_decode_or_raise_protocol_error_only(data: st.DataObject) -> None:
    fields, _expected = data.draw(messages())
    encoded = bytearray(_encode(fields, data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        encoded[bit // 8] ^= 1 << (bit % 8)
    _decode_or_reject(bytes(encoded))


@pytest.mark.timeout(120)
@_PROPERTY
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_decode_or_raise_protocol_error_only(data: bytes) -> None:
    _decode_or_reject(data)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "data",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * MAX_LINE,
        b'{"event": "read", "camera": "cam-1", "ts": "' + TS.encode() + b'", "code": ' + b"[" * 20_000,
        b'{"event": "heartbeat", "camera": ' + b"{" * 500_000,
        b"1" * 5000,
        b'{"event": "heartbeat", "camera": "cam-1", "ts": "' + TS.encode() + b'", "x": ' + b"9" * 5000 + b"}",
    ],
    ids=["arrays", "objects", "unclosed", "inside-message", "overlong", "huge-int", "huge-int-field"],
)
def test_deeply_nested_and_huge_json_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_message(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"camera": "cam-1"}', "'event'"),
        (b'{"event": "reboot", "camera": "cam-1", "ts": "' + TS.encode() + b'"}', "unknown event"),
        (b'{"event": "heartbeat", "ts": "' + TS.encode() + b'"}', "missing field 'camera'"),
        (b'{"event": "heartbeat", "camera": "", "ts": "' + TS.encode() + b'"}', "'camera' is empty"),
        (b'{"event": "heartbeat", "camera": "c", "ts": "2026-03-01 10:15:30"}', "RFC 3339"),
        (b'{"event": "heartbeat", "camera": "c", "ts": "2026-02-30T10:15:30Z"}', "not a valid time"),
        (b'{"event": "heartbeat", "camera": "c", "camera": "d", "ts": "' + TS.encode() + b'"}', "duplicate"),
        (read_line("CSQU3054383", confidence=True), "must be a number"),
        (read_line("CSQU3054383", confidence=-0.1), "outside 0..1"),
        (read_line("CSQU3054383").replace(b"0.97", b"NaN"), "NaN"),
        (read_line("CSQU3054383").replace(b"0.97", b"Infinity"), "Infinity"),
        (read_line("CSQU3054383").replace(b"0.97", b"1e400"), "outside 0..1"),
        (read_line("CSQU3054383", slot=0), "'slot'"),
        (read_line("CSQU3054383", slot=True), "'slot' must be an integer"),
        (read_line("CSQU3054383", slot=1.0), "'slot' must be an integer"),
        (read_line("CSQU3054383", view="under"), "'view'"),
        (read_line("CSQU3054383", size_type=22), "'size_type'"),
        (read_line("CSQU3054383").replace(b'"code": "CSQU3054383"', b'"code": null'), "'code' must be"),
        (line(event="passage_end", camera="c", ts=TS, passage="p", containers=5), "'containers'"),
        (line(event="passage_end", camera="c", ts=TS, passage="p", containers=False), "'containers'"),
        (b'{"event": "heartbeat", "camera": "\xc3\x28", "ts": "x"}', "invalid UTF-8"),
        (b"x" * (MAX_LINE + 1), "longer than"),
    ],
)
def test_malformed_frames_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(problem)):
        parse_message(data)


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    padding = MAX_LINE - len(line(event="heartbeat", camera="c", ts=TS, pad=""))
    data = line(event="heartbeat", camera="c", ts=TS, pad="p" * (padding + 1))
    assert len(data) == MAX_LINE + 1
    assert isinstance(parse_message(data), Heartbeat)
    with pytest.raises(ProtocolError, match="longer than"):
        parse_message(data[:-1] + b" \n")


_FUZZ_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    5,
    10**30,
    0.5,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    "rear",
    "CSQU3054383",
    "22G1",
    TS,
    "2026-13-40T99:99:99Z",
    [],
    [1, [2, [3]]],
    {},
    {"event": "read"},
]


def _fuzz_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One random input: a valid line mutated in one of several ways, or plain noise."""
    base = bytearray(rng.choice(seeds))
    how = rng.randrange(8)
    if how == 0:
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(base) * 8)
            base[position // 8] ^= 1 << (position % 8)
    elif how == 1:
        start = rng.randrange(len(base))
        del base[start : start + rng.randint(1, 20)]
    elif how == 2:
        start = rng.randrange(len(base) + 1)
        base[start:start] = rng.randbytes(rng.randint(1, 20))
    elif how == 3:
        base = base[: rng.randrange(len(base) + 1)]
    elif how == 4:
        fields = json.loads(base)
        fields[rng.choice([*fields, "extra"])] = rng.choice(_FUZZ_VALUES)
        base = bytearray(json.dumps(fields).encode())
    elif how == 5:
        fields = json.loads(base)
        del fields[rng.choice(list(fields))]
        base = bytearray(json.dumps(fields).encode())
    elif how == 6:
        other = rng.choice(seeds)
        cut = rng.randrange(len(base) + 1)
        base = base[:cut] + other[rng.randrange(len(other) + 1) :]
    else:
        base = bytearray(rng.randbytes(rng.randint(0, 200)))
    return bytes(base)


@pytest.mark.timeout(300)
def test_seeded_fuzz_gives_only_messages_or_protocol_errors() -> None:
    rng = random.Random(6346)
    seeds = [
        read_line("CSQU3054383", size_type="22G1"),
        read_line("MSKU4135328", confidence=0.4, view="side", slot=2),
        read_line("", confidence=0),
        line(event="passage_end", camera="cam-1", ts=TS, passage="p-1", containers=2),
        line(event="heartbeat", camera="cam-1", ts=TS),
    ]
    decoded = rejected = 0
    for _ in range(20_000):
        if _decode_or_reject(_fuzz_input(rng, seeds)) is None:
            rejected += 1
        else:
            decoded += 1
    assert decoded > 200 and rejected > 10_000, (decoded, rejected)
