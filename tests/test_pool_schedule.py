"""The OCR pool's queue on real parts: RapidOCR in a real worker process, frames painted by the
camera simulator's renderer. The queue is the pool's own: a task reaches a worker only when one is
free, so the order is chosen then (oldest visit first, quick looks before full reads) and a
dropped visit's frames never reach a worker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait

import numpy as np
import pytest

from ocr.assemble import Candidate
from ocr.errors import OcrError
from ocr.pool import WORKER_NICENESS, OcrPool, default_workers
from simulators.camera_frames import FrameSpec, render_empty_lane, render_frame

pytest.importorskip("rapidocr")
pytestmark = pytest.mark.timeout(120)

VALID = "MSKU4135329"
OTHER = "CSQU3054383"


@pytest.fixture(scope="module")
def pool() -> Iterator[OcrPool]:
    ocr = OcrPool("rapidocr", workers=1)
    ocr.start().result(timeout=60)
    yield ocr
    ocr.close()


def painted(number: str) -> np.ndarray:
    spec = FrameSpec(container_numbers=(number,), char_height_px=46.0, view_angle_deg=5.0, texture_seed=3)
    image, _ = render_frame(spec, np.random.default_rng(1))
    return image


def empty() -> np.ndarray:
    """A lane without a truck: the quick look settles nothing, so a full read follows."""
    return render_empty_lane(np.random.default_rng(2))


BUSY, READABLE, OTHER_READABLE, EMPTY = painted(VALID), painted(VALID), painted(OTHER), empty()


def since(pool: OcrPool, mark: int) -> list[tuple[str | None, str]]:
    return list(pool.started)[mark:]


def busy(pool: OcrPool) -> tuple[int, Future[list[Candidate]]]:
    """Keep the one worker reading a frame while the test queues more behind it (frames painted
    beforehand: queueing one takes microseconds, reading one a large part of a second)."""
    mark = len(pool.started)
    return mark, pool.submit(BUSY, visit="busy", order=0.0)


def test_the_oldest_visit_first_and_every_quick_look_before_a_full_read(pool: OcrPool) -> None:
    mark, first = busy(pool)
    newer = pool.submit(OTHER_READABLE, visit="newer", order=200.0)
    older = pool.submit(EMPTY, visit="older", order=100.0)
    wait([first, newer, older], timeout=90)
    assert [candidate.number for candidate in newer.result()] == [OTHER]
    assert older.result() == []
    # Submitted last but triggered first: the older truck's frame is looked at first; its full
    # read (the quick look settled nothing) waits until every quick look is done.
    assert since(pool, mark) == [
        ("busy", "quick"),
        ("older", "quick"),
        ("newer", "quick"),
        ("older", "full"),
    ]
    assert pool.queue_depth() == 0


def test_a_dropped_visit_never_reaches_a_worker(pool: OcrPool) -> None:
    mark, first = busy(pool)
    gone = [pool.submit(READABLE, visit="gone", order=50.0) for _ in range(2)]
    kept = pool.submit(OTHER_READABLE, visit="kept", order=60.0)
    assert {"gone", "kept"} <= pool.waiting().keys()
    dropped = pool.dropped
    assert pool.drop("gone") == 2
    wait([first, kept], timeout=90)
    assert all(future.cancelled() for future in gone)
    assert [candidate.number for candidate in kept.result()] == [OTHER]
    assert since(pool, mark) == [("busy", "quick"), ("kept", "quick")]
    assert pool.dropped == dropped + 2


def test_a_settled_frame_spares_its_visit_the_full_reads(pool: OcrPool) -> None:
    mark, first = busy(pool)
    read = pool.submit(READABLE, visit="truck", order=10.0)
    unread = pool.submit(EMPTY, visit="truck", order=10.0)
    wait([first, read, unread], timeout=90)
    assert [candidate.number for candidate in read.result()] == [VALID]
    # The empty frame had its quick look only: another frame of the truck settled the number.
    assert unread.result() == []
    assert since(pool, mark) == [("busy", "quick"), ("truck", "quick"), ("truck", "quick")]


def test_full_reads_wait_while_the_visit_is_still_collecting_frames(pool: OcrPool) -> None:
    # An early frame of the lane before the truck came settles nothing; its full read (seconds)
    # must not run before the quick look of the frame that shows the number, submitted later.
    pool.collecting("truck")
    mark, first = busy(pool)
    early = pool.submit(EMPTY, visit="truck", order=10.0)
    first.result(timeout=90)
    wait_until_started(pool, mark, 2)
    other = pool.submit(OTHER_READABLE, visit="other", order=20.0)
    other.result(timeout=90)
    assert not early.done()  # its full read waits, the later visit's quick look did not
    later = pool.submit(READABLE, visit="truck", order=10.0)
    pool.collected("truck")
    wait([early, later], timeout=90)
    assert early.result() == []
    assert [candidate.number for candidate in later.result()] == [VALID]
    assert since(pool, mark) == [
        ("busy", "quick"),
        ("truck", "quick"),
        ("other", "quick"),
        ("truck", "quick"),
    ]


def test_a_visit_never_collected_gets_its_full_reads_after_the_limit(
    pool: OcrPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ocr.pool.COLLECT_LIMIT", 1.0)
    pool.collecting("forgotten")
    mark = len(pool.started)
    future = pool.submit(EMPTY, visit="forgotten", order=5.0)
    assert future.result(timeout=90) == []
    assert since(pool, mark) == [("forgotten", "quick"), ("forgotten", "full")]


def wait_until_started(pool: OcrPool, mark: int, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(since(pool, mark)) < count:
        assert time.monotonic() < deadline, since(pool, mark)
        time.sleep(0.01)


def test_quick_only_never_gets_a_full_read(pool: OcrPool) -> None:
    mark = len(pool.started)
    future = pool.submit(EMPTY, quick_only=True)
    assert future.result(timeout=60) == []
    assert [step for _, step in since(pool, mark)] == ["quick"]


def test_an_engine_that_cannot_load_fails_every_task_and_close_cancels_the_rest() -> None:
    broken = OcrPool("no-such-engine", workers=1)
    try:
        with pytest.raises(OcrError, match="unknown OCR engine"):
            broken.start().result(timeout=60)
        futures = [broken.submit(EMPTY, visit=f"v{index}") for index in range(3)]
        with pytest.raises(OcrError):
            futures[0].result(timeout=60)
    finally:
        broken.close()
    assert all(future.done() for future in futures)
    for future in futures[1:]:
        # Each failed as the first did, or was cancelled by close before a worker took it.
        assert future.cancelled() or isinstance(future.exception(timeout=0), OcrError)
    assert broken.restarts == 0
    with pytest.raises(OcrError, match="closed"):
        broken.submit(EMPTY)


def test_workers_run_below_the_daemon(pool: OcrPool) -> None:
    # The barrier's heartbeat and the decisions come before OCR.
    worker = pool.ping().result(timeout=60)
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, worker) == expected


def test_the_default_worker_count_follows_the_machine() -> None:
    assert default_workers() >= 1
    assert OcrPool("rapidocr").workers == default_workers()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return True


def test_a_killed_owner_leaves_no_ocr_worker_behind() -> None:
    """gated killed outright (SIGKILL, outside systemd's cgroup): its OCR workers, each holding a
    loaded engine, end by themselves instead of running on as orphans of the fork server."""
    import multiprocessing.forkserver
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import time, multiprocessing.forkserver as fs\n"
        "from ocr.pool import OcrPool\n"
        "pool = OcrPool('rapidocr', workers=1)\n"
        "print(pool.start().result(timeout=120), fs._forkserver._forkserver_pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    assert multiprocessing.forkserver  # the pool's workers come from a fork server on Linux
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        worker, server = (int(pid) for pid in owner.stdout.readline().split())
        assert not _gone(worker)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 20
        while not (_gone(worker) and _gone(server)):
            assert time.monotonic() < deadline, "the OCR worker (or its fork server) outlived its owner"
            time.sleep(0.2)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def painted_plate(text: str) -> np.ndarray:
    from simulators.plate_frames import PlateSpec
    from simulators.plate_frames import render_frame as render_plate

    image, _ = render_plate(PlateSpec(text=text), np.random.default_rng(4))
    return image


def test_a_trucks_plate_frames_are_read_in_turn_until_one_gives_the_plate(pool: OcrPool) -> None:
    from ocr.plate import DEFAULT_FORMATS, DEFAULT_MIN_CONFIDENCE, NO_PLATE

    plate = painted_plate("ABC 1234")
    mark, first = busy(pool)
    skipped = pool.plates_skipped
    # Nothing on the first frame: the second is read; it gives the plate, so the third is not.
    futures = pool.submit_plates(
        [EMPTY, plate, plate],
        formats=DEFAULT_FORMATS,
        min_confidence=DEFAULT_MIN_CONFIDENCE,
        visit="t",
        order=1.0,
    )
    wait([first, *futures], timeout=90)
    reads = [future.result() for future in futures]
    assert reads[0].plate is None and reads[1].plate == "ABC1234"
    assert reads[2] is NO_PLATE and pool.plates_skipped == skipped + 1
    assert since(pool, mark) == [("busy", "quick"), ("t", "plate"), ("t", "plate")]


def test_dropping_a_visit_cancels_its_plate_frames_not_read_yet(pool: OcrPool) -> None:
    from ocr.plate import DEFAULT_FORMATS, DEFAULT_MIN_CONFIDENCE

    mark, first = busy(pool)
    futures = pool.submit_plates(
        [EMPTY, EMPTY],
        formats=DEFAULT_FORMATS,
        min_confidence=DEFAULT_MIN_CONFIDENCE,
        visit="gone",
        order=1.0,
    )
    assert pool.drop("gone") == 2
    # Not waited on: futures.wait never counts a future cancelled by its owner as done.
    wait([first], timeout=90)
    assert all(future.cancelled() for future in futures)
    assert since(pool, mark) == [("busy", "quick")]
