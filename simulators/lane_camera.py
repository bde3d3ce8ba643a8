"""The frames cameras of a scripted lane: an MJPEG camera (``camera_frames.MjpegCameraSimulator``) that
shows the truck at the gate, with its container number painted on the doors (or, aimed at the
truck's front, its licence plate), and the empty lane between trucks. gated reads the number and
the plate itself (``drivers.ocr_frames``).

Painting one 1280x720 frame takes 0.15-0.3 s on the 2-core gate PC, too slow to start when the truck
pulls up: ``prepare`` paints every truck's frames ahead on a background thread, and ``arrive`` then
only hands over JPEG bytes (painting them on the spot only for a truck nobody prepared).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from simulators import plate_frames
from simulators.camera_frames import (
    FrameSpec,
    MjpegCameraSimulator,
    encode_jpeg,
    render_empty_lane,
    render_frame,
)
from simulators.lifecycle import Simulator
from simulators.plate_frames import PlateSpec

log = logging.getLogger(__name__)

TruckFrames = tuple[FrameSpec, ...] | tuple[PlateSpec, ...]
"""What the camera sees while one truck pulls up: one spec per frame, the last one stays in view
(container doors for a container view, the truck's front for a plate view)."""


class LaneCamera(Simulator):
    """An MJPEG camera over HTTP on 127.0.0.1 that films the trucks of a scripted lane."""

    def __init__(self, port: int = 0, fps: float = 5.0, seed: int = 0) -> None:
        self.camera = MjpegCameraSimulator(port=port, fps=fps, seed=seed)
        self.seed = seed
        self._rendered: dict[TruckFrames, list[bytes]] = {}
        self._todo: list[TruckFrames] = []
        self._lock = threading.Condition()
        self._stopping = False
        self._painter: threading.Thread | None = None
        self._empty = encode_jpeg(render_empty_lane(np.random.default_rng(seed)))

    @property
    def port(self) -> int:
        return self.camera.port

    @property
    def url(self) -> str:
        """The MJPEG stream's address (what an ``ocr-frames`` device's ``views`` lists)."""
        return self.camera.url

    def start(self) -> None:
        self.camera.start()
        with self._lock:
            self._stopping = False
            if self._painter is None:
                self._painter = threading.Thread(target=self._paint, name="lane camera painter", daemon=True)
                self._painter.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            painter, self._painter = self._painter, None
            self._lock.notify_all()
        if painter is not None:
            painter.join(timeout=5.0)
        self.camera.stop()

    def prepare(self, trucks: Iterable[TruckFrames]) -> None:
        """Paint these trucks' frames in the background, in this order."""
        with self._lock:
            for frames in trucks:
                if frames and frames not in self._rendered and frames not in self._todo:
                    self._todo.append(frames)
            self._lock.notify_all()

    def arrive(self, frames: TruckFrames) -> None:
        """A truck pulls up: its frames play, and the last one stays in view until ``depart``."""
        if not frames:
            return
        self.camera.play_jpegs(self._jpegs(frames))

    def depart(self) -> None:
        """The truck has gone: the camera sees the empty lane again."""
        self.camera.play_jpegs([self._empty])

    def send_corrupt(self, count: int = 1) -> None:
        """The next ``count`` parts of the stream do not decode."""
        self.camera.send_corrupt(count)

    def _jpegs(self, frames: TruckFrames) -> list[bytes]:
        with self._lock:
            # A truck being painted right now: wait for it rather than paint it twice.
            while frames not in self._rendered and frames in self._todo and self._painter is not None:
                self._lock.wait(0.1)
            jpegs = self._rendered.get(frames)
            if jpegs is not None:
                return jpegs
        jpegs = _render(frames, self.seed)
        with self._lock:
            self._rendered[frames] = jpegs
        return jpegs

    def _paint(self) -> None:
        while True:
            with self._lock:
                while not self._todo and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                frames = self._todo[0]
            jpegs = []
            for jpeg in _painted(frames, self.seed):  # a frame at a time: stop() waits for one only
                if self._stopping:
                    return
                jpegs.append(jpeg)
            with self._lock:
                self._rendered[frames] = jpegs
                self._todo.remove(frames)
                self._lock.notify_all()


def _render(frames: Sequence[FrameSpec | PlateSpec], seed: int) -> list[bytes]:
    return list(_painted(frames, seed))


def _painted(frames: Sequence[FrameSpec | PlateSpec], seed: int) -> Iterator[bytes]:
    # The same truck paints the same pixels every time, whatever was painted before it.
    rng = np.random.default_rng([seed, *(spec.texture_seed for spec in frames)])
    for spec in frames:
        yield encode_jpeg(
            render_frame(spec, rng)[0]
            if isinstance(spec, FrameSpec)
            else plate_frames.render_frame(spec, rng)[0]
        )
