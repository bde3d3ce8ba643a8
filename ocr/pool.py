"""OCR in worker processes: a lane's driver hands a frame over and gets a future back, so its thread
never waits on the engine, and a crash in the engine's native code (ONNX Runtime, PyTorch) takes
down a worker, not the daemon.

Each worker loads its engine once (the pool's initializer), warms it up on a painted frame (the
first frame through ONNX Runtime costs about a second more than the next ones), and then reads one
frame per task with ``ocr.reader.read_all`` (every container in the frame): the reading path of
``gated ocr``. A licence plate task
runs the same engine and ``ocr.plate.read_plate`` instead, the path of ``gated ocr --plates``.

- Workers are started with ``forkserver`` (``spawn`` where there is none), never by forking the
  daemon: a fork copies the locks its other threads hold at that moment.
- Frames travel as numpy arrays. Measured on the 2-core gate PC with 1280x720 frames: handing an
  array to a worker and back costs about 4 ms; JPEG instead costs about 10 ms to encode, 10 ms to
  decode in the worker and 0.3 ms to send. The driver holds decoded frames anyway.
- A worker that dies (killed, out of memory, a segfault in native code) leaves the executor broken
  for good: the futures in flight fail with ``BrokenProcessPool``, and the next ``submit`` builds a
  new executor and counts it in ``restarts``. The caller may submit those frames again.
- An engine that cannot be loaded (not installed, weights missing) does not break the pool: every
  task then fails with that ``OcrError``, so the lane sees why and the pool is not rebuilt in a loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import cv2
import numpy as np

from ocr.assemble import Candidate
from ocr.engine import Image, OcrEngine, load_engine
from ocr.errors import OcrError
from ocr.plate import PlateFormat, PlateRead, read_plate
from ocr.reader import read_all, read_image, settled

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "rapidocr"

T = TypeVar("T")

# Set in each worker by ``_load``: the engine, or why it could not be loaded.
_engine: OcrEngine | None = None
_load_error: OcrError | None = None


def settled_by(future: Future[list[Candidate]]) -> bool:
    """True when ``future`` is a frame already read that settled every number it found."""
    return (
        future.done() and not future.cancelled() and future.exception() is None and settled(future.result())
    )


def _load(name: str) -> None:
    """Worker initializer: load the engine once and run it on one painted frame."""
    global _engine, _load_error
    try:
        _engine = load_engine(name)
        read_image(_engine, _warm_up_frame())
    except OcrError as error:
        _engine, _load_error = None, error


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


class OcrPool:
    """``workers`` processes running the engine called ``engine``; thread-safe."""

    def __init__(self, engine: str = DEFAULT_ENGINE, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.engine = engine
        self.workers = workers
        self.restarts = 0
        """Executors built again after a worker died."""
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def start(self) -> Future[int]:
        """Start the workers now rather than on the first frame; the future gives a worker's pid
        once its engine is loaded and warm, or raises why it cannot be loaded (also logged)."""
        started = time.monotonic()
        future = self._submit(_ready)

        def report(done: Future[int]) -> None:
            error = None if done.cancelled() else done.exception()
            if error is not None:
                log.error("OCR engine %s cannot be used: %s", self.engine, error)
            elif not done.cancelled():
                seconds = time.monotonic() - started
                log.info("OCR worker %d ready (%s) in %.1f s", done.result(), self.engine, seconds)

        future.add_done_callback(report)
        return future

    def submit(self, image: Image, *, quick_only: bool = False) -> Future[list[Candidate]]:
        """Read one BGR frame in a worker (``quick_only``: see ``ocr.reader.read_all``). Never
        blocks on OCR; the future raises ``OcrError`` when the engine failed, ``BrokenProcessPool``
        when the worker died while reading."""
        return self._submit(_read, image, quick_only)

    def submit_plate(
        self, image: Image, *, formats: Sequence[PlateFormat], min_confidence: float
    ) -> Future[PlateRead]:
        """Read the licence plate in one BGR frame in a worker; the future fails as ``submit``'s does."""
        return self._submit(_read_plate, image, tuple(formats), min_confidence)

    def ping(self) -> Future[int]:
        """The pid of the worker that answers (tests kill it to see it replaced)."""
        return self._submit(_pid)

    def close(self) -> None:
        """Stop the workers; frames not yet started are cancelled. Safe to call twice."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with self._lock:
            if self._closed:
                raise OcrError("the OCR pool is closed")
            for attempt in (1, 2):
                executor = self._executor_locked()
                try:
                    return executor.submit(fn, *args)
                except BrokenProcessPool:
                    # A worker died since the last submit: build a new executor and try once more.
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
                initargs=(self.engine,),
            )
        return self._executor

    def _replace_locked(self) -> None:
        broken, self._executor = self._executor, None
        self.restarts += 1
        log.warning("OCR worker died: starting a new one (%d restarts so far)", self.restarts)
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
