"""The frames camera driver on real parts: the MJPEG camera simulator over HTTP, the real driver and
RapidOCR in a real worker process. Nothing is mocked but the sink the daemon's pipeline would be.
Licence plates likewise: rendered truck fronts served over HTTP by a second camera."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.ocr_frames import (
    BACKLOG,
    BACKLOG_VISITS,
    FramesCameraDriver,
    OcrFramesDevice,
    Trigger,
    crop_bounds,
    plate_reading_for,
    readings_for,
)
from gated.errors import ProtocolError
from gated.evidence import EvidenceStore
from gated.metrics import Metrics
from gated.model import DeviceState, Evidence, Quality, Reading, Source, Visit
from ocr.assemble import ContainerRead
from ocr.plate import PlateRead
from ocr.pool import OcrPool
from ocr.textbox import TextBox
from simulators.camera_frames import FrameSpec, MjpegCameraSimulator, encode_jpeg, render_empty_lane
from simulators.plate_frames import PlateSpec, PlateTruth, render_frame
from tests.sinks import driver_running

pytest.importorskip("rapidocr")
pytestmark = pytest.mark.timeout(90)

VALID = "MSKU4135329"
CHECK_DIGIT_WRONG = "CSQU3054384"  # CSQU3054383 is the valid one


class Sink:
    """What the pipeline would get from the driver, and whether each reading's evidence was already
    in the store when the reading arrived."""

    def __init__(self, evidence: EvidenceStore) -> None:
        self.evidence = evidence
        self.readings: list[Reading] = []
        self.evidence_stored_first: list[bool] = []
        self.states: list[DeviceState] = []
        self.details: list[str] = []
        self.errors: list[ProtocolError] = []
        self._changed = threading.Condition()

    def reading(self, reading: Reading) -> None:
        stored = all(self.evidence.contains(item.sha256) for item in reading.evidence)
        with self._changed:
            self.readings.append(reading)
            self.evidence_stored_first.append(stored)
            self._changed.notify_all()

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None:
        with self._changed:
            self.states.append(state)
            self.details.append(detail)
            self._changed.notify_all()

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None:
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, timeout), "timed out"

    def numbers_of(self, visit: str) -> list[Reading]:
        return [r for r in self.readings if r.visit == visit and r.source == Source.CONTAINER_NUMBER]

    def plates_of(self, visit: str) -> list[Reading]:
        return [r for r in self.readings if r.visit == visit and r.source == Source.LICENCE_PLATE]


@pytest.fixture(scope="module")
def pool() -> Iterator[OcrPool]:
    ocr = OcrPool("rapidocr", workers=1)
    ocr.start().result(timeout=60)
    yield ocr
    ocr.close()


@pytest.fixture
def camera() -> Iterator[MjpegCameraSimulator]:
    with MjpegCameraSimulator(fps=10, seed=7) as simulator:
        yield simulator


@contextmanager
def running(driver: FramesCameraDriver, sink: Sink) -> Iterator[None]:
    with driver_running(driver, sink):
        sink.wait(lambda: DeviceState.ONLINE in sink.states)
        yield


def make_driver(
    camera: MjpegCameraSimulator, pool: OcrPool, evidence: EvidenceStore, *more_views: str
) -> FramesCameraDriver:
    settings = frames_settings(views=[camera.url, *more_views], frames_per_view=2)
    return FramesCameraDriver("lane-1", settings, pool=pool, evidence=evidence, backoff_max=0.5)


def frames_settings(**values: Any) -> OcrFramesDevice:
    """A camera's settings with short trigger windows and a quick frame rate, for tests."""
    return OcrFramesDevice.model_validate(
        {
            "id": "ocr-1",
            "driver": "ocr-frames",
            "pre_trigger_seconds": 0.5,
            "post_trigger_seconds": 0.5,
            "sample_fps": 10.0,
            "silence_timeout_seconds": 2.0,
            **values,
        }
    )


def poll(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a state of the driver that no sink event announces."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def truck(number: str) -> FrameSpec:
    return FrameSpec(container_numbers=(number,), char_height_px=46.0, view_angle_deg=5.0, texture_seed=3)


def read_visit(
    driver: FramesCameraDriver, sink: Sink, camera: MjpegCameraSimulator, number: str, visit: str
) -> list[Reading]:
    """Show the truck, trigger the visit as its tag is read, and return the visit's readings."""
    camera.show(truck(number))
    time.sleep(0.15)  # the camera's next frame shows it
    driver.trigger(Trigger(visit, time.time()))
    sink.wait(lambda: any(r.visit == visit and r.source == Source.PASSAGE_END for r in sink.readings))
    return [r for r in sink.readings if r.visit == visit]


def test_reads_the_painted_number_with_its_crop_stored_first(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    with running(driver, sink):
        started = time.time()
        readings = read_visit(driver, sink, camera, VALID, "visit-1")
        elapsed = time.time() - started
    [number] = [r for r in readings if r.source == Source.CONTAINER_NUMBER]
    assert number.value == VALID and number.quality is Quality.GOOD
    assert number.confidence is not None and number.confidence >= 0.8
    assert [r.value for r in readings if r.source == "size_type"] == ["22G1"]
    assert [r.value for r in readings if r.source == Source.PASSAGE_END] == [1]
    [crop] = number.evidence
    assert crop.media_type == "image/jpeg" and crop.uri == f"evidence://sha256/{crop.sha256}"
    data = evidence.path_for(crop.sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == crop.sha256 and len(data) == crop.bytes
    assert data[:2] == b"\xff\xd8" and 0 < crop.bytes < 150_000  # a crop, not the whole frame
    assert all(sink.evidence_stored_first)
    assert driver.frames_read == 2 and driver.last_read_seconds is not None
    print(f"trigger to reading: {driver.last_read_seconds:.2f} s ({elapsed:.2f} s with rendering)")


def test_frames_from_before_the_trigger_are_read_while_the_window_is_still_open(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    driver.post_trigger = 4.0
    with running(driver, sink):
        camera.show(truck(VALID))
        time.sleep(0.6)  # frames of the truck from before the trigger
        triggered = time.time()
        driver.trigger(Trigger("visit-early", triggered))
        poll(lambda: driver.frames_read_early == 1)
        [read] = driver._reads
        poll(lambda: read.futures[0].done())
        early_done = time.time()
        [candidate] = read.futures[0].result()
        sink.wait(lambda: bool(sink.numbers_of("visit-early")), timeout=30)
    # The early frame was read before the window closed; the second frame came after it.
    assert early_done < triggered + driver.post_trigger and candidate.number == VALID
    assert len(read.frames) == 2 and read.frames[1].ts > read.frames[0].ts
    assert read.frames[0].ts <= triggered
    assert [r.value for r in sink.numbers_of("visit-early")] == [VALID]


def test_two_boxes_on_one_chassis_give_two_numbers_each_with_its_crop(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    pair = FrameSpec(
        container_numbers=(VALID, "CSQU3054383"),
        size_type="22G1",
        view="side",
        char_height_px=40.0,
        view_angle_deg=3.0,
        texture_seed=5,
    )
    with running(driver, sink):
        camera.show(pair)
        time.sleep(0.15)
        driver.trigger(Trigger("visit-pair", time.time()))
        sink.wait(
            lambda: any(r.visit == "visit-pair" and r.source == Source.PASSAGE_END for r in sink.readings)
        )
    numbers = sink.numbers_of("visit-pair")
    assert sorted(str(r.value) for r in numbers) == sorted([VALID, "CSQU3054383"])
    assert all(r.quality is Quality.GOOD for r in numbers)
    assert [r.value for r in sink.readings if r.source == Source.PASSAGE_END] == [2]
    crops = {r.evidence[0].sha256 for r in numbers}
    assert len(crops) == 2 and all(sink.evidence_stored_first)


def test_only_a_tag_or_occupancy_triggers_and_a_visit_without_frames_is_unread(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    now = time.time()
    with running(driver, sink):
        at = datetime.fromtimestamp(now - 60, UTC)
        driver.visit_opened(Visit("by-ocr", "lane-1", at, "ocr:container_number"))
        driver.visit_opened(Visit("other-lane", "lane-2", at, "rfid:epc"))
        driver.visit_opened(Visit("by-tag", "lane-1", at, "rfid:epc"))
        sink.wait(lambda: bool(sink.numbers_of("by-tag")))
        time.sleep(0.3)
    assert {r.visit for r in sink.readings} == {"by-tag"}
    [number] = sink.numbers_of("by-tag")
    # A minute ago the camera had no frames kept: nothing read, nothing stored, nobody released.
    assert number.value is None and number.quality is Quality.BAD and number.evidence == ()


def test_a_wrong_check_digit_is_never_a_good_read(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    with running(driver, sink):
        readings = read_visit(driver, sink, camera, CHECK_DIGIT_WRONG, "visit-bad-digit")
    [number] = [r for r in readings if r.source == Source.CONTAINER_NUMBER]
    assert number.quality is not Quality.GOOD
    assert number.value in (None, CHECK_DIGIT_WRONG)  # reported as painted, never "corrected"
    assert all(r.quality is not Quality.GOOD for r in readings if r.source == "size_type")
    assert number.evidence and all(sink.evidence_stored_first)


def test_garbage_parts_are_counted_and_a_dropped_stream_comes_back(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    with running(driver, sink):
        camera.send_corrupt(3)
        sink.wait(lambda: len(sink.errors) >= 3, timeout=10)
        time.sleep(0.3)
        assert len(sink.errors) == 3 and driver.frame_errors == 3
        assert sink.states == [DeviceState.ONLINE]

        camera.stop()  # the camera goes away: the device is offline
        sink.wait(lambda: sink.states[-1] is DeviceState.OFFLINE, timeout=10)
        camera.start()  # and comes back on the same address
        sink.wait(lambda: sink.states[-1] is DeviceState.ONLINE, timeout=10)
        readings = read_visit(driver, sink, camera, VALID, "after-reconnect")
    [number] = [r for r in readings if r.source == Source.CONTAINER_NUMBER]
    assert number.value == VALID and number.quality is Quality.GOOD
    assert sink.states == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]


def test_a_view_that_is_down_degrades_the_device_and_the_other_views_still_read(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    with MjpegCameraSimulator(fps=10, seed=8) as side:
        driver = make_driver(camera, pool, evidence, side.url)
        with running(driver, sink):
            side.stop()  # the side camera goes away: the doors' camera still reads
            sink.wait(lambda: sink.states[-1] is DeviceState.DEGRADED, timeout=10)
            assert "1 of 2 views down" in str(driver.degraded())
            readings = read_visit(driver, sink, camera, VALID, "side-down")
            side.start()  # back on the same address: opened again on its own
            sink.wait(lambda: sink.states[-1] is DeviceState.ONLINE, timeout=10)
            side.stop()
            camera.stop()  # no view left: offline
            sink.wait(lambda: sink.states[-1] is DeviceState.OFFLINE, timeout=10)
    [number] = [r for r in readings if r.source == Source.CONTAINER_NUMBER]
    assert number.value == VALID and number.quality is Quality.GOOD
    assert sink.states[:3] == [DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.ONLINE]


def test_a_killed_ocr_worker_is_replaced_and_the_visit_still_read(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    restarts = pool.restarts
    with running(driver, sink):
        camera.show(truck(VALID))
        time.sleep(0.7)
        worker = pool.ping().result(timeout=30)
        # Due at once: the driver hands the frames over within a step, and the worker dies reading.
        driver.trigger(Trigger("killed", time.time() - 0.5))
        time.sleep(0.3)
        os.kill(worker, signal.SIGKILL)
        sink.wait(lambda: bool(sink.numbers_of("killed")), timeout=60)
    [killed] = sink.numbers_of("killed")
    # The frames the dead worker held were read again by its replacement.
    assert killed.value == VALID and killed.quality is Quality.GOOD and driver.ocr_failures == 0
    assert pool.restarts == restarts + 1
    assert pool.ping().result(timeout=30) != worker


def keep_busy(pool: OcrPool, count: int) -> list[Future[Any]]:
    """Frames of an older visit that the pool reads first: empty lanes, each a quick look and a full
    read (about a second or more), so what the driver hands over meanwhile waits in the queue."""
    frames = [render_empty_lane(np.random.default_rng(index)) for index in range(count)]
    return [pool.submit(frame, visit=f"older-{index}", order=0.0) for index, frame in enumerate(frames)]


def test_a_decided_visits_frames_never_reach_a_worker(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    driver.post_trigger = 1.0
    with running(driver, sink):
        camera.show(truck(VALID))
        time.sleep(0.6)  # frames of the truck from before the trigger
        mark = len(pool.started)
        blockers = keep_busy(pool, 2)
        opened = Visit("decided-early", "lane-1", datetime.now(UTC), "rfid:epc")
        driver.visit_opened(opened)
        poll(lambda: driver.frames_read_early == 1)
        driver.visit_decided(opened, [])  # timed out or superseded and given up: decided unread
        poll(lambda: driver.visits_dropped == 1)
        wait(blockers, timeout=60)
        # The window closed meanwhile: nothing more of it was chosen or handed over.
        poll(lambda: not pool.waiting())
        assert not driver._reads and not driver._waiting
    assert [visit for visit, _ in list(pool.started)[mark:] if visit == opened.id] == []
    assert sink.numbers_of(opened.id) == [] and driver.ocr_failures == 0


def test_an_unreadable_truck_gets_one_full_read_per_view_after_every_quick_look(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    with MjpegCameraSimulator(fps=10, seed=8) as second:
        driver = make_driver(camera, pool, evidence, second.url)
        with running(driver, sink):
            camera.show(None)  # nothing to read in either view: every quick look settles nothing
            second.show(None)
            time.sleep(0.6)
            mark = len(pool.started)
            driver.trigger(Trigger("mud", time.time()))
            sink.wait(lambda: bool(sink.numbers_of("mud")), timeout=60)
    steps = [step for visit, step in list(pool.started)[mark:] if visit == "mud"]
    # Two frames of each view: four quick looks, then a full read of each view's sharpest frame.
    assert steps == ["quick"] * 4 + ["full"] * 2
    [number] = sink.numbers_of("mud")
    assert number.quality is Quality.BAD


def test_an_ocr_backlog_degrades_the_camera_until_it_drains(
    camera: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = make_driver(camera, pool, evidence)
    metrics = Metrics()
    driver.metrics = metrics
    with running(driver, sink):
        camera.show(truck(VALID))
        time.sleep(0.6)
        blockers = keep_busy(pool, 3)
        visits = [f"queued-{index}" for index in range(BACKLOG_VISITS + 1)]
        for visit in visits:  # more trucks than the bound, all waiting behind the older frames
            driver.trigger(Trigger(visit, time.time() - driver.post_trigger))
        sink.wait(lambda: DeviceState.DEGRADED in sink.states, timeout=30)
        detail = sink.details[sink.states.index(DeviceState.DEGRADED)]
        assert detail.startswith(f"{BACKLOG}: frames of {len(visits)} visit(s) waiting for OCR"), detail
        wait(blockers, timeout=60)
        sink.wait(lambda: all(sink.numbers_of(visit) for visit in visits), timeout=60)
        sink.wait(lambda: sink.states[-1] is DeviceState.ONLINE)
    # Online, behind, caught up (a busy machine may fall behind again on the way: always for OCR).
    assert (
        sink.states[:2] == [DeviceState.ONLINE, DeviceState.DEGRADED]
        and sink.states[-1] is DeviceState.ONLINE
    )
    assert all(
        d.startswith(BACKLOG)
        for d, state in zip(sink.details, sink.states, strict=True)
        if state is DeviceState.DEGRADED
    )
    assert all(r.value == VALID for visit in visits for r in sink.numbers_of(visit))
    labels = {"lane": "lane-1", "device": "ocr-1"}
    assert (metrics.registry.get_sample_value("gated_ocr_frame_seconds_count", labels) or 0) >= len(visits)
    assert metrics.registry.get_sample_value("gated_ocr_queue_depth", labels) == 0


CROP = Evidence("evidence://sha256/" + "a" * 64, "image/jpeg", "a" * 64, 1234)


@pytest.mark.parametrize(
    ("read", "evidence", "value", "quality"),
    [
        (ContainerRead(VALID, VALID, True, 0.95, "22G1"), (CROP,), VALID, Quality.GOOD),
        (ContainerRead(None, VALID, True, 0.6, "22G1"), (CROP,), VALID, Quality.UNCERTAIN),
        (
            ContainerRead(None, CHECK_DIGIT_WRONG, False, 0.99, None),
            (CROP,),
            CHECK_DIGIT_WRONG,
            Quality.UNCERTAIN,
        ),
        (ContainerRead(None, None, False, 0.0, None), (CROP,), None, Quality.BAD),
        # A number whose crop could not be stored is not one to release a truck on.
        (ContainerRead(VALID, VALID, True, 0.95, "22G1"), (), VALID, Quality.UNCERTAIN),
    ],
)
def test_readings_of_one_read(
    read: ContainerRead, evidence: tuple[Evidence, ...], value: str | None, quality: Quality
) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    readings = readings_for(read, lane="lane-1", device="ocr-1", visit="v", ts=ts, evidence=evidence)
    number, *rest = readings
    assert (number.source, number.value, number.quality) == (Source.CONTAINER_NUMBER, value, quality)
    assert number.evidence == evidence and number.confidence == read.confidence
    assert {r.visit for r in readings} == {"v"}
    assert rest[-1].source == Source.PASSAGE_END and rest[-1].value == 1
    sizes = [r for r in rest if r.source == "size_type"]
    assert [r.value for r in sizes] == ([read.size_type] if read.size_type and value else [])
    assert all(r.quality is not Quality.GOOD for r in sizes if quality is not Quality.GOOD)


def test_crop_is_the_number_with_a_margin_inside_the_frame() -> None:
    boxes = [
        TextBox.from_bbox("MSKU", 0.9, 100, 50, 200, 90),
        TextBox.from_bbox("4135329", 0.9, 210, 52, 400, 92),
    ]
    assert crop_bounds(1280, 720, boxes) == (87, 37, 413, 105)
    edge = [TextBox.from_bbox("MSKU4135329", 0.9, 1200, 700, 1300, 730)]
    assert crop_bounds(1280, 720, edge) == (1188, 688, 1280, 720)


# --- licence plates from a camera aimed at the truck's front ---------------------------------------

PLATE = PlateSpec(style="eu-dash", text="KX-482-TB", char_height_px=32.0, pitch_deg=5.0, texture_seed=3)


@pytest.fixture
def front() -> Iterator[MjpegCameraSimulator]:
    with MjpegCameraSimulator(fps=10, seed=11) as simulator:
        yield simulator


def show_front(camera: MjpegCameraSimulator, spec: PlateSpec) -> PlateTruth:
    """From its next frame on, the front camera sees ``spec``'s truck (rendered here, served as JPEG)."""
    bgr, truth = render_frame(spec, np.random.default_rng(1))
    camera.play_jpegs([encode_jpeg(bgr)])
    return truth


def plate_driver(
    camera: MjpegCameraSimulator,
    front: MjpegCameraSimulator,
    pool: OcrPool,
    evidence: EvidenceStore,
    frames_per_view: int,
) -> FramesCameraDriver:
    settings = frames_settings(views=[camera.url], plate_views=[front.url], frames_per_view=frames_per_view)
    return FramesCameraDriver("lane-1", settings, pool=pool, evidence=evidence, backoff_max=0.5)


def read_plate_visit(driver: FramesCameraDriver, sink: Sink, visit: str) -> Reading:
    time.sleep(0.3)  # both cameras' next frames show the truck
    driver.trigger(Trigger(visit, time.time()))
    sink.wait(lambda: bool(sink.plates_of(visit)) and bool(sink.numbers_of(visit)))
    [plate] = sink.plates_of(visit)
    return plate


def test_a_plate_view_reads_the_plate_with_its_crop_stored_first(
    camera: MjpegCameraSimulator, front: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = plate_driver(camera, front, pool, evidence, frames_per_view=2)
    with running(driver, sink):
        camera.show(truck(VALID))
        truth = show_front(front, PLATE)
        plate = read_plate_visit(driver, sink, "visit-plate")
    assert truth.plate == "KX482TB"
    assert plate.value == truth.plate and plate.quality is Quality.GOOD
    assert plate.confidence is not None and plate.confidence >= 0.9
    [crop] = plate.evidence
    data = evidence.path_for(crop.sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == crop.sha256 and len(data) == crop.bytes
    assert data[:2] == b"\xff\xd8" and 0 < crop.bytes < 60_000  # the plate, not the whole frame
    assert all(sink.evidence_stored_first)
    # The container number is read as without a plate view, and reported first.
    [number] = sink.numbers_of("visit-plate")
    assert number.value == VALID and number.quality is Quality.GOOD and number.evidence != plate.evidence
    sources = [r.source for r in sink.readings if r.visit == "visit-plate"]
    assert sources.index(Source.PASSAGE_END) < sources.index(Source.LICENCE_PLATE)
    assert driver.frames_read == 2 and driver.plate_frames_read == 2 and driver.ocr_failures == 0


def test_a_plate_too_blurred_to_read_is_never_a_good_read(
    camera: MjpegCameraSimulator, front: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = plate_driver(camera, front, pool, evidence, frames_per_view=1)
    with running(driver, sink):
        show_front(front, replace(PLATE, blur=8.0))
        plate = read_plate_visit(driver, sink, "visit-blurred")
    assert plate.quality is not Quality.GOOD
    # Whatever was seen is kept for a clerk: the frame is stored before the reading names it.
    [frame] = plate.evidence
    assert evidence.contains(frame.sha256) and all(sink.evidence_stored_first)


def test_a_plate_camera_that_is_down_neither_stops_the_numbers_nor_takes_the_device_offline(
    camera: MjpegCameraSimulator, front: MjpegCameraSimulator, pool: OcrPool, tmp_path: Path
) -> None:
    evidence = EvidenceStore(tmp_path / "evidence")
    sink = Sink(evidence)
    driver = plate_driver(camera, front, pool, evidence, frames_per_view=1)
    front.stop()
    with running(driver, sink):
        camera.show(truck(VALID))
        down = read_plate_visit(driver, sink, "plate-down")
        [number] = sink.numbers_of("plate-down")
        front.start()  # the same address: the view is opened again on its own
        show_front(front, PLATE)
        time.sleep(1.5)
        back = read_plate_visit(driver, sink, "plate-back")
    assert number.value == VALID and number.quality is Quality.GOOD
    assert (down.value, down.quality, down.evidence) == (None, Quality.BAD, ())
    assert back.value == "KX482TB" and back.quality is Quality.GOOD
    assert sink.states == [DeviceState.ONLINE]


PLATE_CROP = Evidence("evidence://sha256/" + "b" * 64, "image/jpeg", "b" * 64, 2345)


@pytest.mark.parametrize(
    ("read", "evidence", "value", "quality"),
    [
        (
            PlateRead("KX482TB", "KX-482-TB", 0.97, "eu-dash", "KX482TB"),
            (PLATE_CROP,),
            "KX482TB",
            Quality.GOOD,
        ),
        # Below the threshold, or with no crop to check it by: the plate as read, for a clerk.
        (
            PlateRead(None, "KX-482-TB", 0.7, "eu-dash", "KX482TB"),
            (PLATE_CROP,),
            "KX482TB",
            Quality.UNCERTAIN,
        ),
        (PlateRead("KX482TB", "KX-482-TB", 0.97, "eu-dash", "KX482TB"), (), "KX482TB", Quality.UNCERTAIN),
        # Plate-shaped text that fits no format (a letter the format never issues): kept as read.
        (PlateRead(None, "TI-612-SN", 0.0, None, None), (PLATE_CROP,), "TI612SN", Quality.UNCERTAIN),
        (PlateRead(None, None, 0.0, None, None), (PLATE_CROP,), None, Quality.BAD),
    ],
)
def test_plate_reading_of_one_read(
    read: PlateRead, evidence: tuple[Evidence, ...], value: str | None, quality: Quality
) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    reading = plate_reading_for(read, lane="lane-1", device="ocr-1", visit="v", ts=ts, evidence=evidence)
    assert (reading.source, reading.value, reading.quality) == (Source.LICENCE_PLATE, value, quality)
    assert reading.visit == "v" and reading.evidence == evidence and reading.confidence == read.confidence
