"""What a device sends cannot grow the daemon without bound, and a device that only fails is not
online: the bounded queue, the repeat filter's memory, a serial reader's queue over a real socket,
the samples of an endless radiation pass, and the driver loop's status and hand-over to its sink.

The LLRP reader, the Modbus monitor and the barrier PLC are tested the same way against their
simulators in their own test files."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from drivers.base import FORWARDED_ERRORS, BoundedQueue, Driver
from drivers.ocr_frames import MAX_PENDING_READS, FramesCameraDriver, OcrFramesDevice, Trigger
from drivers.rfid_serial import RfidSerialDevice, SerialRfidDriver
from drivers.rpm_rapiscan import MAX_PASS_SAMPLES, OccupancyTracker, parse_record
from drivers.serial_frames import MAX_QUEUED, READ_CHUNK, RepeatFilter
from gated.clock import ManualClock
from gated.errors import ProtocolError
from gated.evidence import EvidenceStore
from gated.model import DeviceState, Kind, Quality, Reading, Source
from ocr.pool import OcrPool
from tests.sinks import RecordingSink, driver_running, wait_until

WAIT = 20.0


def test_a_full_queue_refuses_and_counts_and_keeps_its_order() -> None:
    queue: BoundedQueue[int] = BoundedQueue(3)
    assert [queue.put(n) for n in range(5)] == [True, True, True, False, False]
    assert len(queue) == 3 and queue.refused == 2
    assert queue.take() == 0
    queue.put_back(0)
    assert queue.first() == 0 and [queue.take() for _ in range(3)] == [0, 1, 2]
    assert not queue and queue.put(9) and queue.refused == 2
    with pytest.raises(ValueError, match="at least 1"):
        BoundedQueue(0)


def test_the_repeat_filter_forgets_the_oldest_read_once_full() -> None:
    window = RepeatFilter(60.0, limit=100)
    assert all(window.admit(f"tag-{n}", float(n) / 1000) for n in range(10_000))
    assert len(window._last_seen) == 100 and window.forgotten == 9_900
    assert not window.admit("tag-9999", 11.0)  # the newest is still remembered
    assert window.admit("tag-0", 11.0)  # the oldest was forgotten: reported again
    assert window.admit("tag-5", 100.0)  # stale ones leave as time passes
    assert len(window._last_seen) == 1


@pytest.mark.timeout(60)
def test_a_serial_reader_babbling_over_tcp_fills_the_queue_only_to_its_bound() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        driver = SerialRfidDriver("lane-1", RfidSerialDevice(id="rfid-1", driver="rfid-serial", url=url))
        driver.connect()
        peer, _ = server.accept()
        try:
            peer.sendall(b"$" * READ_CHUNK)  # every '$' starts a frame: one bad frame per byte
            errors = 0
            deadline = time.monotonic() + WAIT
            while driver.refused == 0 and time.monotonic() < deadline:
                try:
                    driver.step()
                except ProtocolError:
                    errors += 1
            assert driver.refused > 0, "the driver never read the burst"
            assert errors + len(driver._queue) <= MAX_QUEUED
            assert len(driver._queue) + errors + driver.refused == READ_CHUNK - 1  # the last '$' waits
        finally:
            peer.close()
            driver.close()


def test_an_endless_pass_keeps_its_first_samples_and_goes_unchecked() -> None:
    tracker = OccupancyTracker("lane-1", "rpm-1", ManualClock())
    tracker.feed(parse_record(b"GB,000100,000100,000100,000100"))
    tracker.feed(parse_record(b"NB,000001,000001,000001,000001"))
    extra = 25
    for _ in range(MAX_PASS_SAMPLES + extra):
        tracker.feed(parse_record(b"GS,000090,000090,000090,000090"))
    tracker.feed(parse_record(b"GA,000900,000900,000900,000900"))  # the monitor's alarm still counts
    readings = tracker.feed(parse_record(b"GX,000010,001000,000000,000000"))
    by_source = {reading.source: reading for reading in readings}
    assert tracker.samples_refused == extra + 1
    assert len(by_source["rpm_profile"].value["gamma"]) == MAX_PASS_SAMPLES
    assert by_source[Source.SCREENING].value == "gamma_alarm"
    check = by_source["screening_check"]
    assert check.quality is Quality.BAD and check.value["verdict"] == "unchecked"
    assert f"longer than {MAX_PASS_SAMPLES} samples" in check.value["detail"]


def test_a_camera_takes_only_so_many_visits_to_read_at_once(tmp_path: Path) -> None:
    pool = OcrPool("rapidocr")  # never started: nothing is read here
    settings = OcrFramesDevice(id="ocr-1", driver="ocr-frames", views=[str(tmp_path)])
    camera = FramesCameraDriver("lane-1", settings, pool=pool, evidence=EvidenceStore(tmp_path / "evidence"))
    for number in range(MAX_PENDING_READS + 5):
        camera.trigger(Trigger(f"visit-{number}", time.time()))
    assert camera.triggers_refused == 5
    pool.close()


class FailingDevice(Driver):
    """A device whose every step is a bad frame until ``repaired`` is set (our own seam)."""

    kind = Kind.RFID

    def __init__(self) -> None:
        super().__init__("lane-1", "dev-1", backoff_initial=0.05, offline_after=1.5)
        self.repaired = threading.Event()

    def connect(self) -> None:
        pass

    def step(self) -> Sequence[Reading]:
        time.sleep(0.002)  # one poll
        if self.repaired.is_set():
            return []
        raise ProtocolError("bad frame")

    def close(self) -> None:
        pass


@pytest.mark.timeout(60)
def test_a_device_that_only_fails_goes_offline_and_its_errors_reach_the_sink_only_up_to_a_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.base")
    driver = FailingDevice()
    sink = RecordingSink("lane-1", "dev-1", timeout=WAIT)
    with driver_running(driver, sink):
        sink.wait_for("offline", lambda: sink.state is DeviceState.OFFLINE)
        wait_until("more errors than are handed on", lambda: driver.frame_errors > 2 * FORWARDED_ERRORS)
        assert sink.states == [DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.OFFLINE]
        assert len(sink.errors) == FORWARDED_ERRORS
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "degraded" in warnings[0] and "bad frame" in warnings[0]
        driver.repaired.set()
        sink.wait_for("online again", lambda: sink.state is DeviceState.ONLINE)
    assert driver.frame_errors == len(sink.errors) + driver.frame_errors_not_forwarded
    assert any("online again" in r.getMessage() for r in caplog.records)
