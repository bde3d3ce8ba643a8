"""A gate camera on the network: ``MjpegCameraSimulator`` serves frames painted by
``simulators.camera_render`` as an IP camera does: ``multipart/x-mixed-replace; boundary=frame``
JPEG parts at ``/video`` and one JPEG at ``/snapshot``, over HTTP on 127.0.0.1.

Tests script what the camera sees with ``show`` and ``play`` (a truck passing = a list of specs) and
spoil a part with ``send_corrupt``. The multipart framing is written here from the format
description, never shared with gated's reader.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

import numpy as np

from simulators.camera_render import FrameSpec, GroundTruth, encode_jpeg, render_empty_lane, render_frame
from simulators.lifecycle import CannotListen, Simulator

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
BOUNDARY = "frame"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    camera: MjpegCameraSimulator


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("camera http: " + format, *args)

    def do_GET(self) -> None:
        camera = self.server.camera
        path = self.path.split("?", 1)[0]
        if path == "/snapshot":
            data = camera.current_jpeg()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if path != "/video":
            self.send_error(404, "try /video or /snapshot")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        seen = -1
        try:
            while True:
                got = camera.wait_frame(seen, timeout=0.2)
                if got is None:
                    if camera.stopping:
                        return
                    continue
                seen, data = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                if camera.part_content_length:
                    head += f"Content-Length: {len(data)}\r\n"
                self.wfile.write(head.encode("ascii") + b"\r\n" + data + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return


class MjpegCameraSimulator(Simulator):
    """An IP camera on 127.0.0.1 serving MJPEG at ``/video`` and JPEG at ``/snapshot``.

    ``show(spec)`` sets what the camera keeps seeing (``None``: the empty lane); ``play(specs)``
    queues one frame per spec (a truck passing), after which the last one stays in view."""

    def __init__(
        self, port: int = 0, fps: float = 5.0, seed: int = 0, *, part_content_length: bool = True
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.port = port
        self.fps = fps
        self.seed = seed
        self.part_content_length = part_content_length
        self.stopping = False
        self.frames_sent = 0
        self.truths: list[GroundTruth] = []
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._current = encode_jpeg(render_empty_lane(self._rng))
        self._latest = self._current
        self._sequence = 0
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The MJPEG stream's address."""
        return f"http://{HOST}:{self.port}/video"

    @property
    def snapshot_url(self) -> str:
        return f"http://{HOST}:{self.port}/snapshot"

    def start(self) -> MjpegCameraSimulator:
        if self._server is not None:
            return self
        self.stopping = False
        try:
            server = _Server((HOST, self.port), _Handler)
        except OSError as error:
            raise CannotListen(f"cannot listen on {HOST}:{self.port}: {error.strerror or error}") from error
        server.camera = self
        self.port = server.server_address[1]
        self._server = server
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._clock, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping = True
        with self._lock:
            self._lock.notify_all()
        server.shutdown()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads = []

    def show(self, spec: FrameSpec | None) -> GroundTruth | None:
        """From the next frame on, the camera sees ``spec`` (``None``: an empty lane)."""
        if spec is None:
            data, truth = encode_jpeg(render_empty_lane(self._rng)), None
        else:
            bgr, truth = render_frame(spec, self._rng)
            data = encode_jpeg(bgr)
        with self._lock:
            self._queue.clear()
            self._current = data
            if truth is not None:
                self.truths.append(truth)
        return truth

    def play(self, specs: Iterable[FrameSpec]) -> list[GroundTruth]:
        """Queue one frame per spec; the last stays in view afterwards."""
        rendered = [render_frame(spec, self._rng) for spec in specs]
        with self._lock:
            for bgr, truth in rendered:
                self._queue.append(encode_jpeg(bgr))
                self.truths.append(truth)
        return [truth for _, truth in rendered]

    def play_jpegs(self, jpegs: Iterable[bytes]) -> None:
        """Queue frames painted and encoded ahead (``play`` paints them now); the last stays."""
        with self._lock:
            self._queue.extend(jpegs)

    def send_corrupt(self, count: int = 1) -> None:
        """The next ``count`` parts carry bytes that are not a decodable JPEG."""
        garbage = bytes(self._rng.integers(0, 256, 3000, dtype=np.uint8))
        with self._lock:
            for index in range(count):
                broken = (
                    self._latest[: len(self._latest) // 3] if index % 2 else b"\xff\xd8\xff\xe0" + garbage
                )
                self._queue.appendleft(b"CORRUPT" + broken)

    def current_jpeg(self) -> bytes:
        with self._lock:
            return self._current

    def wait_frame(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest part after sequence ``seen``, or None after ``timeout``."""
        with self._lock:
            if self._sequence == seen and not self.stopping:
                self._lock.wait(timeout)
            if self._sequence == seen or self.stopping:
                return None
            return self._sequence, self._latest

    def _clock(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self.stopping:
            with self._lock:
                if self._queue:
                    data = self._queue.popleft()
                    if data.startswith(b"CORRUPT"):
                        data = data[len(b"CORRUPT") :]
                    else:
                        self._current = data
                else:
                    data = self._current
                self._latest = data
                self._sequence += 1
                self.frames_sent += 1
                self._lock.notify_all()
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
