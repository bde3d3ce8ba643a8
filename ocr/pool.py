"""OCR in worker processes: a lane's driver hands a frame over and gets a future back, so its thread
never waits on the engine, and a crash in the engine's native code (ONNX Runtime, PyTorch) takes
down a worker, not the daemon.

Each worker loads its engine once (the pool's initializer), warms it up on a painted frame (the
first frame through ONNX Runtime costs about a second more than the next ones), and then reads one
frame per task with ``ocr.reader.read_all`` (every container in the frame): the reading path of
``gated ocr``. A licence plate task runs the same engine and ``ocr.plate.read_plate`` instead, the
path of ``gated ocr --plates``.

The queue is kept here, in the daemon, not in the executor: only as many tasks as there are workers
are handed to it, so the next one is chosen when a worker is free, by visit:

1. the quick look (``read_all(..., quick_only=True)``) of every frame waiting, before any slow step:
   it settles most numbers, and every truck gets its chance before one hard frame takes seconds;
2. then licence plates (informational, one look each; a truck's plate frames one after another,
   until one gives the plate: ``submit_plates``);
3. last, the full read of a frame whose quick look did not settle its number (``settled``), and
   only while no other frame of its visit has settled one: a settled frame makes the rest
   confirmations, which the quick look gives. While a caller still collects a visit's frames
   (``collecting`` until ``collected``), its full reads wait: a frame taken before the truck was in
   view settles nothing, and its full read (seconds) would run before the quick look of the frame
   that shows the number. The full read is ``read_all``'s own path, its quick
   look included (about 70% of a full look more, on frames that then take seconds anyway).

Within each step the oldest visit goes first (``order``, the trigger's time: the truck at the
barrier), then frames in the order they came. ``drop(visit)`` cancels what a visit still has
waiting (its visit was decided: a read now would be thrown away); a caller may also cancel a
future itself, and a cancelled task never reaches a worker.

- Workers are started with ``forkserver`` (``spawn`` where there is none), never by forking the
  daemon: a fork copies the locks its other threads hold at that moment.
- ``workers`` defaults to one per core (``default_workers``), and each worker's engine reads its
  frame on one thread: ONNX Runtime's own threads spin while they wait, so one frame spread over two
  cores took 1.5x the CPU for 1.3x the speed, CPU the other lanes' frames need. ``[ocr] workers``
  in the config overrides it.
- Workers run at a lower CPU priority (``WORKER_NICENESS``): the daemon's own threads (the barrier's
  heartbeat, the drivers, the decisions) come first, OCR takes the CPU they leave.
- Frames travel as numpy arrays. Measured on the 2-core gate PC with 1280x720 frames: handing an
  array to a worker and back costs about 4 ms; JPEG instead costs about 10 ms to encode, 10 ms to
  decode in the worker and 0.3 ms to send. The driver holds decoded frames anyway.
- A worker that dies (killed, out of memory, a segfault in native code) leaves the executor broken
  for good: the futures of the frames it was reading fail with ``BrokenProcessPool``, and the next
  task builds a new executor, counted in ``restarts``; tasks still waiting here go to the new one.
  The caller may submit the failed frames again.
- An engine that cannot be loaded (not installed, weights missing) does not break the pool: every
  task then fails with that ``OcrError``, so the lane sees why and the pool is not rebuilt in a loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import cv2
import numpy as np

from ocr.assemble import Candidate
from ocr.engine import Image, OcrEngine, load_engine
from ocr.errors import OcrError
from ocr.plate import NO_PLATE, PlateFormat, PlateRead, read_plate
from ocr.reader import read_all, read_image, settled

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "rapidocr"

CONTROL: Final = 0
"""Task steps, in the order a free worker takes them: start-up and pings first."""
QUICK: Final = 1
PLATE: Final = 2
FULL: Final = 3
STEP_NAMES: Final = {CONTROL: "control", QUICK: "quick", PLATE: "plate", FULL: "full"}
COLLECT_LIMIT: Final = 30.0
"""Seconds a visit's full reads wait for ``collected`` at most (a caller that never says it)."""
STARTED_KEPT: Final = 1000
"""How many started tasks ``started`` remembers (for logs and tests)."""

T = TypeVar("T")

# Set in each worker by ``_load``: the engine, or why it could not be loaded.
_engine: OcrEngine | None = None
_load_error: OcrError | None = None


WORKER_THREADS: Final = 1
"""Threads each worker's engine reads a frame with (module docstring)."""
WORKER_NICENESS: Final = 5
"""How much lower than the daemon the workers run (``nice``)."""
OWNER_CHECK_SECONDS = 2.0
"""How often a worker looks whether the process that owns its pool is still there."""


def default_workers() -> int:
    """Worker processes for this machine: one per core (module docstring)."""
    return max(1, os.cpu_count() or 1)


def settled_by(future: Future[list[Candidate]]) -> bool:
    """True when ``future`` is a frame already read that settled every number it found."""
    return (
        future.done() and not future.cancelled() and future.exception() is None and settled(future.result())
    )


def _load(name: str, owner: int | None = None) -> None:
    """Worker initializer: load the engine once and run it on one painted frame; and end the worker
    when ``owner`` (the process whose pool it is) is gone."""
    global _engine, _load_error
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    if owner is not None:
        threading.Thread(target=_watch_owner, args=(owner,), name="ocr-owner-watch", daemon=True).start()
    try:
        _engine = load_engine(name, threads=WORKER_THREADS)
        read_image(_engine, _warm_up_frame())
    except OcrError as error:
        _engine, _load_error = None, error


def _watch_owner(owner: int, every: float = OWNER_CHECK_SECONDS) -> None:
    """A worker's parent is the fork server, not the daemon: when the daemon is killed (SIGKILL,
    a crash outside systemd's cgroup) nothing else would end the worker and its loaded engine."""
    while True:
        time.sleep(every)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            continue  # alive (another user's process would say so; ours cannot be one)


def _warm_up_frame() -> Image:
    frame = np.full((720, 1280, 3), 200, dtype=np.uint8)
    cv2.putText(frame, "MSKU 413532 9", (300, 360), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (20, 20, 20), 4)
    return frame


def _loaded() -> OcrEngine:
    if _engine is None:
        raise _load_error or OcrError("the OCR engine was not loaded in this worker")
    return _engine


def _read(image: Image, quick_only: bool) -> list[Candidate]:
    """Worker task: one frame in, every container number in it out (two boxes on one chassis)."""
    return read_all(_loaded(), image, quick_only=quick_only)


def _read_plate(image: Image, formats: Sequence[PlateFormat], min_confidence: float) -> PlateRead:
    """Worker task: one frame of a truck's front in, its licence plate out."""
    # The frame's width lets read_plate leave out text cut off at the edge (a fragment can look
    # like a plate).
    boxes = _loaded().read(image)
    return read_plate(boxes, formats=formats, min_confidence=min_confidence, frame_width=image.shape[1])


def _pid() -> int:
    return os.getpid()


def _ready() -> int:
    """Worker task: the worker's pid once its engine is loaded and warm (its load error if not)."""
    _loaded()
    return os.getpid()


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


@dataclass(eq=False)
class _Task:
    """One call waiting for a worker, and the caller's future it answers."""

    step: int
    order: float
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any]
    visit: str | None
    queued: float = field(default_factory=time.monotonic)
    then: Callable[[Any], None] | None = None
    """Takes the worker's result instead of the future (a quick look that may need a full read)."""
    skip: Callable[[], bool] = lambda: False
    """True when the task is no longer worth a worker: ``skipped`` then answers its future."""
    skipped: Callable[[], None] | None = None
    timed: Callable[[float], None] | None = None
    """Told the seconds a worker spent on the task."""


class OcrPool:
    """``workers`` processes running the engine called ``engine``, fed in the order of the module
    docstring; thread-safe."""

    def __init__(self, engine: str = DEFAULT_ENGINE, workers: int | None = None) -> None:
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.engine = engine
        self.workers = workers
        self.restarts = 0
        """Executors built again after a worker died."""
        self.dropped = 0
        """Tasks cancelled before a worker took them (their visit was decided, or the caller gave up)."""
        self.full_reads_skipped = 0
        """Full reads left out because another frame of the visit had settled its number."""
        self.plates_skipped = 0
        """Plate frames left unread because an earlier frame of the truck gave its plate."""
        self.started: deque[tuple[str | None, str]] = deque(maxlen=STARTED_KEPT)
        """(visit, step name) of the latest tasks handed to a worker, oldest first."""
        self.last_task_seconds: float | None = None
        """Seconds the last task took in a worker (from hand-over to result)."""
        self.tasks_done: dict[str, int] = dict.fromkeys(STEP_NAMES.values(), 0)
        """Tasks a worker finished, by step name (``quick``, ``plate``, ``full``, ``control``)."""
        self.seconds_done: dict[str, float] = dict.fromkeys(STEP_NAMES.values(), 0.0)
        """Seconds workers spent on them (hand-over to result), by step name."""
        self._lock = threading.Condition()
        self._queue: list[tuple[int, float, int, _Task]] = []
        self._count = itertools.count()
        self._in_flight = 0
        self._settled: set[str] = set()  # visits one of whose frames settled its number
        self._visit_futures: dict[str, dict[Future[Any], int]] = {}  # each future and its step
        self._collecting: dict[str, float] = {}  # visits whose frames still come, since when
        self._quick_only: weakref.WeakSet[Future[Any]] = weakref.WeakSet()  # no full read for these
        self._executor: ProcessPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._closed = False

    def start(self) -> Future[int]:
        """Start the workers now rather than on the first frame; the future gives a worker's pid
        once its engine is loaded and warm, or raises why it cannot be loaded (also logged)."""
        started = time.monotonic()
        future: Future[int] = self._enqueue(CONTROL, 0.0, None, _ready)

        def report(done: Future[int]) -> None:
            error = None if done.cancelled() else done.exception()
            if error is not None:
                log.error("OCR engine %s cannot be used: %s", self.engine, error)
            elif not done.cancelled():
                seconds = time.monotonic() - started
                log.info("OCR worker %d ready (%s) in %.1f s", done.result(), self.engine, seconds)

        future.add_done_callback(report)
        return future

    def submit(
        self,
        image: Image,
        *,
        quick_only: bool = False,
        visit: str | None = None,
        order: float | None = None,
        on_seconds: Callable[[float], None] | None = None,
    ) -> Future[list[Candidate]]:
        """Read one BGR frame in a worker: the quick look, then the full read only when that did
        not settle the number and no other frame of ``visit`` has (``quick_only``: the quick look
        alone; see ``ocr.reader.read_all``). ``order`` ranks the visit (its trigger's epoch
        seconds; default now). ``on_seconds`` is told the seconds workers spent on the frame (quick
        look and full read) once it is read. Never blocks on OCR; the future raises ``OcrError``
        when the engine failed, ``BrokenProcessPool`` when the worker died while reading."""
        future: Future[list[Candidate]] = Future()
        rank = time.time() if order is None else order
        spent = [0.0]

        def add(seconds: float) -> None:
            spent[0] += seconds

        if on_seconds is not None:
            future.add_done_callback(lambda done: None if done.cancelled() else on_seconds(spent[0]))

        def quick_done(found: list[Candidate]) -> None:
            if settled(found):
                if visit is not None:
                    with self._lock:
                        self._settled.add(visit)
                _answer(future, found)
            elif quick_only or self._visit_settled(visit) or self._quick_only_after_all(future):
                _answer(future, found)
            else:
                self._enqueue(
                    FULL,
                    rank,
                    visit,
                    _read,
                    image,
                    False,
                    future=future,
                    skip=lambda: self._visit_settled(visit) or self._quick_only_after_all(future),
                    skipped=lambda: self._skip_full(future, found),
                    timed=add,
                )

        self._enqueue(QUICK, rank, visit, _read, image, True, future=future, then=quick_done, timed=add)
        return future

    def submit_plate(
        self,
        image: Image,
        *,
        formats: Sequence[PlateFormat],
        min_confidence: float,
        visit: str | None = None,
        order: float | None = None,
    ) -> Future[PlateRead]:
        """Read the licence plate in one BGR frame in a worker, after every waiting quick look;
        the future fails as ``submit``'s does."""
        rank = time.time() if order is None else order
        return self._enqueue(PLATE, rank, visit, _read_plate, image, tuple(formats), min_confidence)

    def submit_plates(
        self,
        images: Sequence[Image],
        *,
        formats: Sequence[PlateFormat],
        min_confidence: float,
        visit: str | None = None,
        order: float | None = None,
    ) -> list[Future[PlateRead]]:
        """Read the licence plate in each frame of one truck, one frame after another in the order
        given (sharpest first), each after every waiting quick look. Once a frame gives the plate
        (read with ``min_confidence``), the frames after it are answered ``NO_PLATE`` unread
        (``plates_skipped``): one truck has one plate. A frame whose read failed or was cancelled
        hands on to the next, or cancels the rest when the visit was dropped. Never raises: a closed
        pool fails the futures with ``OcrError``."""
        rank = time.time() if order is None else order
        futures: list[Future[PlateRead]] = [Future() for _ in images]
        with self._lock:
            if visit is not None:
                # Registered now, so that ``drop`` cancels the frames not handed on yet.
                for future in futures:
                    self._visit_futures.setdefault(visit, {}).setdefault(future, PLATE)
                    future.add_done_callback(lambda done: self._forget(visit, done))

        def start(index: int) -> None:
            if index == len(images):
                return
            future = futures[index]
            if future.done():  # cancelled before its turn: the visit was dropped
                for rest in futures[index + 1 :]:
                    rest.cancel()
                return
            future.add_done_callback(lambda done: after(index, done))
            try:
                self._enqueue(
                    PLATE,
                    rank,
                    visit,
                    _read_plate,
                    images[index],
                    tuple(formats),
                    min_confidence,
                    future=future,
                )
            except OcrError as error:
                for rest in futures[index:]:
                    _fail(rest, error)

        def after(index: int, done: Future[PlateRead]) -> None:
            if done.cancelled():
                for rest in futures[index + 1 :]:
                    rest.cancel()
            elif done.exception() is None and done.result().plate is not None:
                for rest in futures[index + 1 :]:
                    if not rest.done():
                        with self._lock:
                            self.plates_skipped += 1
                        _answer(rest, NO_PLATE)
            else:
                start(index + 1)

        start(0)
        return futures

    def ping(self) -> Future[int]:
        """The pid of the worker that answers (tests kill it to see it replaced)."""
        return self._enqueue(CONTROL, 0.0, None, _pid)

    def collecting(self, visit: str) -> None:
        """More frames of ``visit`` are coming: its full reads wait for ``collected`` (module
        docstring), at most ``COLLECT_LIMIT`` seconds."""
        with self._lock:
            self._collecting.setdefault(visit, time.monotonic())

    def collected(self, visit: str, *, quick_only: Collection[Future[list[Candidate]]] = ()) -> None:
        """Every frame of ``visit`` has been submitted: its full reads may run, but not those of the
        frames in ``quick_only`` (another frame of their view is sharper: its full read is the one)."""
        with self._lock:
            self._quick_only.update(quick_only)
            if self._collecting.pop(visit, None) is not None:
                self._lock.notify_all()

    def drop(self, visit: str, *, plates: bool = True) -> int:
        """Cancel the tasks of ``visit`` that no worker has finished (its visit was decided: the
        read would be thrown away), its plates too unless ``plates`` is False; returns how many
        futures were cancelled. Safe from any thread."""
        with self._lock:
            if self._collecting.pop(visit, None) is not None:
                self._lock.notify_all()
            futures = self._visit_futures.get(visit, {})
            chosen = [future for future, step in futures.items() if plates or step != PLATE]
        return sum(1 for future in chosen if future.cancel())

    def queue_depth(self, visits: Collection[str] | None = None) -> int:
        """Tasks waiting for a worker (not those being read), of ``visits`` only when given."""
        with self._lock:
            return sum(
                1
                for *_, task in self._queue
                if not task.future.cancelled() and (visits is None or task.visit in visits)
            )

    def waiting(self) -> dict[str | None, float]:
        """Each visit with tasks waiting for a worker, and how long its oldest has waited (s)."""
        now = time.monotonic()
        found: dict[str | None, float] = {}
        with self._lock:
            for *_, task in self._queue:
                if not task.future.cancelled():
                    found[task.visit] = max(found.get(task.visit, 0.0), now - task.queued)
        return found

    def close(self) -> None:
        """Stop the workers; frames not yet started are cancelled. Safe to call twice."""
        with self._lock:
            self._closed = True
            queued, self._queue = self._queue, []
            executor, self._executor = self._executor, None
            dispatcher = self._dispatcher
            self._lock.notify_all()
        for *_, task in queued:
            task.future.cancel()
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # -- the queue ---------------------------------------------------------------------------------
    def _visit_settled(self, visit: str | None) -> bool:
        with self._lock:
            return visit is not None and visit in self._settled

    def _quick_only_after_all(self, future: Future[Any]) -> bool:
        with self._lock:
            return future in self._quick_only

    def _skip_full(self, future: Future[list[Candidate]], found: list[Candidate]) -> None:
        with self._lock:
            self.full_reads_skipped += 1
        _answer(future, found)

    def _enqueue(
        self,
        step: int,
        order: float,
        visit: str | None,
        fn: Callable[..., T],
        *args: Any,
        future: Future[Any] | None = None,
        then: Callable[[Any], None] | None = None,
        skip: Callable[[], bool] = lambda: False,
        skipped: Callable[[], None] | None = None,
        timed: Callable[[float], None] | None = None,
    ) -> Future[T]:
        if future is None:
            future = Future()
        task = _Task(step, order, fn, args, future, visit, then=then, skip=skip, skipped=skipped, timed=timed)
        with self._lock:
            if self._closed:
                raise OcrError("the OCR pool is closed")
            if visit is not None:
                self._visit_futures.setdefault(visit, {}).setdefault(future, step)
                future.add_done_callback(lambda done: self._forget(visit, done))
            heapq.heappush(self._queue, (step, order, next(self._count), task))
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="ocr-pool", daemon=True)
                self._dispatcher.start()
            self._lock.notify_all()
        return future

    def _forget(self, visit: str, future: Future[Any]) -> None:
        with self._lock:
            futures = self._visit_futures.get(visit)
            if futures is not None:
                futures.pop(future, None)
                if not futures:
                    del self._visit_futures[visit]
                    # The visit's last frame is answered: it may not come back, free its mark.
                    self._settled.discard(visit)

    def _dispatch(self) -> None:
        """The pool's thread: hand the first task in line to the executor whenever a worker is free."""
        while True:
            with self._lock:
                task = None
                while not self._closed:
                    if self._in_flight < self.workers:
                        task = self._next_locked()
                        if task is not None:
                            break
                    # Full reads held for a visit still collecting are released by ``collected``
                    # or, at the latest, by time.
                    self._lock.wait(1.0 if self._collecting else None)
                if self._closed or task is None:
                    return
            if task.future.done():
                with self._lock:
                    self.dropped += 1
                continue
            if task.skipped is not None and task.skip():
                task.skipped()
                continue
            self._hand_over(task)

    def _next_locked(self) -> _Task | None:
        """The first task in line that may run now, taken off the queue; None when there is none."""
        now = time.monotonic()
        for visit in [v for v, since in self._collecting.items() if now - since >= COLLECT_LIMIT]:
            del self._collecting[visit]
        held = []
        found = None
        while self._queue:
            entry = heapq.heappop(self._queue)
            task = entry[-1]
            if task.step == FULL and task.visit in self._collecting and not task.future.done():
                held.append(entry)
                continue
            found = task
            break
        for entry in held:
            heapq.heappush(self._queue, entry)
        return found

    def _hand_over(self, task: _Task) -> None:
        with self._lock:
            if self._closed:
                task.future.cancel()
                return
            try:
                inner = self._submit_locked(task)
            except BrokenProcessPool as error:
                _fail(task.future, error)
                return
            self._in_flight += 1
            self.started.append((task.visit, STEP_NAMES[task.step]))
        handed = time.monotonic()
        inner.add_done_callback(lambda done: self._done(task, done, handed))

    def _done(self, task: _Task, inner: Future[Any], handed: float) -> None:
        """A worker answered (or died, or the pool closed): free its place and pass the answer on."""
        seconds = time.monotonic() - handed
        with self._lock:
            self._in_flight -= 1
            self.last_task_seconds = seconds
            name = STEP_NAMES[task.step]
            self.tasks_done[name] += 1
            self.seconds_done[name] += seconds
            self._lock.notify_all()
        if task.timed is not None:
            task.timed(seconds)
        if inner.cancelled():
            task.future.cancel()
            return
        error = inner.exception()
        if error is not None:
            _fail(task.future, error)
        elif task.then is not None and not task.future.done():
            try:
                task.then(inner.result())
            except OcrError as closed:  # the pool closed between the quick look and the full read
                _fail(task.future, closed)
        else:
            _answer(task.future, inner.result())

    def _submit_locked(self, task: _Task) -> Future[Any]:
        for attempt in (1, 2):
            executor = self._executor_locked()
            try:
                return executor.submit(task.fn, *task.args)
            except BrokenProcessPool:
                # A worker died since the last task: build a new executor and try once more.
                self._replace_locked()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _executor_locked(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(),
                initializer=_load,
                initargs=(self.engine, os.getpid()),
            )
        return self._executor

    def _replace_locked(self) -> None:
        broken, self._executor = self._executor, None
        self.restarts += 1
        log.warning("OCR worker died: starting a new one (%d restarts so far)", self.restarts)
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)


def _answer(future: Future[T], result: T) -> None:
    """Set ``future``'s result unless it was cancelled meanwhile (its visit was dropped)."""
    if not future.done() and future.set_running_or_notify_cancel():
        future.set_result(result)


def _fail(future: Future[Any], error: BaseException) -> None:
    if not future.done() and future.set_running_or_notify_cancel():
        future.set_exception(error)
