"""Frame sources: where gated gets the pictures it reads container numbers from.

``open_source`` takes what an integrator writes in the config and returns a ``FrameSource``:

- ``http://`` / ``https://``: an IP camera's MJPEG stream (``multipart/x-mixed-replace``), read here
  with ``http.client`` so it works whatever FFMPEG build OpenCV came with. Parts are delimited by the
  boundary from the Content-Type; a part's length comes from its Content-Length header or, without
  one, from the next boundary. A background thread keeps only the newest frames, so a slow reader
  never falls behind the lane.
- ``rtsp://`` / ``rtsps://``: OpenCV's ``VideoCapture`` (FFMPEG), read by a background thread too.
- a video file: ``VideoCapture``, every frame in order; ``read`` returns None at the end.
- a folder of images (camera FTP drop): files in name order, new files picked up as they arrive,
  hidden and ``.part``/``.tmp`` files left alone.

``read(timeout)`` returns a ``Frame`` or None when nothing arrived in time (an MJPEG frame still
as its JPEG, decoded when its ``image`` is first asked for). A source that cannot be
reached, or that went away, raises ``DeviceUnavailable`` (then and on every later read: open a new
source to retry). A part or file that is not a decodable image is a ``ProtocolError``: counted in
``protocol_errors`` (the newest kept in ``last_error``), logged once, and skipped; the stream goes on.
An MJPEG part that is whole (its end-of-image marker there) but does not decode raises its
``ProtocolError`` from ``Frame.image`` instead, when it is first looked at.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import queue
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from gated.errors import ConfigError, DeviceUnavailable, GatedError, ProtocolError
from gated.redact import printable, redact, redact_url, shown

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PART_BYTES = 16 * 1024 * 1024
_MAX_HEADER_LINE = 8192
_READ_CHUNK = 65536
_QUEUE_FRAMES = 4


class Frame:
    """One picture: BGR pixels (height x width x 3, uint8), when it was taken or received (epoch
    seconds), which source it came from, and its number in that source (0, 1, ...).

    A frame from a JPEG stream keeps its JPEG and decodes it the first time ``image`` is asked for:
    a lane's cameras send frames all day, and only those round a truck's trigger are ever looked
    at. ``image`` then raises ``ProtocolError`` when the JPEG does not decode. Frames compare by
    identity."""

    __slots__ = ("_image", "_jpeg", "index", "source", "ts")

    def __init__(
        self,
        image: NDArray[np.uint8] | None,
        ts: float,
        source: str,
        index: int,
        *,
        jpeg: bytes | None = None,
    ) -> None:
        if image is None and jpeg is None:
            raise ValueError("a frame needs its image or its JPEG")
        self._image = image
        self._jpeg = jpeg
        self.ts = ts
        self.source = source
        self.index = index

    @property
    def image(self) -> NDArray[np.uint8]:
        if self._image is None:
            assert self._jpeg is not None
            self._image = decode_jpeg(self._jpeg)
            self._jpeg = None
        return self._image

    @property
    def decoded(self) -> bool:
        return self._image is not None

    def __repr__(self) -> str:
        return f"Frame(source={self.source!r}, index={self.index}, ts={self.ts:.3f})"


def whole_jpeg(data: bytes) -> bytes:
    """``data`` without trailing line ends, once it looks like a whole image (not empty; a JPEG
    with its end-of-image marker): the checks that cost nothing before a frame is kept undecoded;
    ``ProtocolError`` otherwise."""
    body = data.rstrip(b"\r\n")
    if body[:2] == b"\xff\xd8" and body[-2:] != b"\xff\xd9":
        raise ProtocolError(f"JPEG of {len(data)} bytes is cut short (no end-of-image marker)")
    if not body:
        raise ProtocolError("empty image")
    return body


def decode_jpeg(data: bytes) -> NDArray[np.uint8]:
    """Decode one JPEG (or other image) into BGR; ``ProtocolError`` when it is not a whole image."""
    body = whole_jpeg(data)
    image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise ProtocolError(f"{len(data)} bytes are not a decodable image")
    return np.asarray(image, dtype=np.uint8)


class FrameSource(ABC):
    """A camera or a recording, read one frame at a time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.protocol_errors = 0
        self.last_error: ProtocolError | None = None
        self._index = 0
        self._closed = False

    @abstractmethod
    def read(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None when none arrived within ``timeout`` seconds."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _frame(self, image: NDArray[np.uint8] | bytes, ts: float | None = None) -> Frame:
        when = time.time() if ts is None else ts
        if isinstance(image, bytes):
            frame = Frame(None, when, self.source, self._index, jpeg=image)
        else:
            frame = Frame(image, when, self.source, self._index)
        self._index += 1
        return frame

    def _count(self, error: ProtocolError) -> None:
        self.protocol_errors += 1
        self.last_error = error
        if self.protocol_errors == 1 or self.protocol_errors % 100 == 0:
            log.warning(
                "%s: %s (%d bad frames so far)",
                redact_url(self.source),
                shown(str(error)),
                self.protocol_errors,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceUnavailable(f"{self.source}: source is closed")


class _ThreadedSource(FrameSource):
    """A live source read by a background thread that keeps only the newest few frames."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._queue: queue.Queue[Frame | DeviceUnavailable] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._failure: DeviceUnavailable | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"frames {redact_url(source)}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    @abstractmethod
    def _images(self) -> Iterator[NDArray[np.uint8] | bytes]:
        """Images (decoded, or JPEGs decoded when first looked at) until the stream ends; raises
        DeviceUnavailable, counts ProtocolErrors."""

    def _release(self) -> None:
        """Unblock and free what ``_images`` reads from."""

    def _run(self) -> None:
        try:
            for image in self._images():
                if self._stop.is_set():
                    return
                self._put(self._frame(image))
            if not self._stop.is_set():
                self._put(DeviceUnavailable(f"{self.source}: the stream ended"))
        except DeviceUnavailable as error:
            if not self._stop.is_set():
                self._put(error)
        except (OSError, GatedError, ValueError) as error:
            if not self._stop.is_set():
                self._put(DeviceUnavailable(f"{self.source}: {error}"))

    def _put(self, item: Frame | DeviceUnavailable) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def read(self, timeout: float = 5.0) -> Frame | None:
        self._check_open()
        if self._failure is not None:
            raise self._failure
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if isinstance(item, DeviceUnavailable):
            self._failure = item
            raise item
        return item

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self._stop.set()
        self._release()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)


class MjpegHttpSource(_ThreadedSource):
    """An HTTP ``multipart/x-mixed-replace`` JPEG stream (user:password@ in the URL: Basic auth)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, stall_timeout: float = 10.0) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError([f"camera url {redact_url(url)!r}: need http://host[:port]/path"])
        self._buffer = bytearray()
        self._stall_timeout = stall_timeout
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        try:
            port = parts.port
        except ValueError as error:
            raise ConfigError([f"camera url {redact_url(url)!r}: {redact(str(error))}"]) from None
        self._connection = connection_class(parts.hostname, port, timeout=connect_timeout)
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg", "User-Agent": "gated"}
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode("ascii")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.source = redact_url(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        try:
            self._connection.request("GET", path, headers=headers)
            self._response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            self._connection.close()
            raise DeviceUnavailable(f"{self.source}: cannot connect: {error}") from error
        if self._response.status != 200:
            self._connection.close()
            raise DeviceUnavailable(
                f"{self.source}: HTTP {self._response.status} {printable(self._response.reason)}"
            )
        self._delimiter = b"--" + _boundary(self.source, self._response.getheader("Content-Type", ""))
        if self._connection.sock is not None:
            self._connection.sock.settimeout(stall_timeout)
        self._start()

    def _release(self) -> None:
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()

    def _fill(self) -> None:
        try:
            chunk = self._response.read1(_READ_CHUNK)
        except TimeoutError as error:
            raise DeviceUnavailable(f"{self.source}: no data for {self._stall_timeout:g} s") from error
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise DeviceUnavailable(f"{self.source}: stream broke: {error}") from error
        if not chunk:
            raise DeviceUnavailable(f"{self.source}: the camera closed the stream")
        self._buffer += chunk

    def _readline(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > _MAX_HEADER_LINE:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            self._fill()

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _read_until_delimiter(self) -> bytes:
        marker = b"\n" + self._delimiter
        searched = 0
        while True:
            found = self._buffer.find(marker, searched)
            if found >= 0:
                data = bytes(self._buffer[:found])
                del self._buffer[: found + 1]
                return data
            if len(self._buffer) > MAX_PART_BYTES:
                raise ProtocolError(f"no boundary within {MAX_PART_BYTES} bytes")
            searched = max(0, len(self._buffer) - len(marker))
            self._fill()

    def _part(self) -> bytes:
        """The body of the next part (whatever it holds)."""
        while True:
            line = self._readline().strip()
            if line == self._delimiter + b"--":
                raise DeviceUnavailable(f"{self.source}: the camera ended the stream")
            if line == self._delimiter:
                break
        length: int | None = None
        for _ in range(64):
            header = self._readline().strip()
            if not header:
                break
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError as error:
                    raise ProtocolError(f"bad Content-Length {value.strip()!r}") from error
                if not 0 < length <= MAX_PART_BYTES:
                    raise ProtocolError(f"Content-Length {length} out of range")
        else:
            raise ProtocolError("part has too many header lines")
        if length is not None:
            return self._read_exact(length)
        return self._read_until_delimiter()

    def _images(self) -> Iterator[NDArray[np.uint8] | bytes]:
        while not self._stop.is_set():
            try:
                yield whole_jpeg(self._part())
            except ProtocolError as error:
                self._count(error)


def _boundary(source: str, content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        raise DeviceUnavailable(f"{source}: not an MJPEG stream (Content-Type {content_type!r})")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            boundary = value.strip().strip('"')
            return boundary[2:].encode("latin-1") if boundary.startswith("--") else boundary.encode("latin-1")
    raise DeviceUnavailable(f"{source}: MJPEG stream without a boundary")


class RtspSource(_ThreadedSource):
    """An RTSP camera through OpenCV's FFMPEG backend."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.source = redact_url(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        self._capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            raise DeviceUnavailable(f"{self.source}: cannot open the RTSP stream")
        self._lock = threading.Lock()
        self._start()

    def _images(self) -> Iterator[NDArray[np.uint8]]:
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                ok, image = self._capture.read()
            if ok and image is not None:
                failures = 0
                yield np.asarray(image, dtype=np.uint8)
                continue
            failures += 1
            if failures >= 25:
                raise DeviceUnavailable(f"{self.source}: no frames from the RTSP stream")
            time.sleep(0.04)

    def _release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3.0)
        with self._lock:
            self._capture.release()


class VideoFileSource(FrameSource):
    """Every frame of a recorded video, in order; ``ts`` is the file's time plus the frame's offset."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise DeviceUnavailable(f"{path}: cannot open the video")
        self._start_ts = path.stat().st_mtime

    def read(self, timeout: float = 5.0) -> Frame | None:
        self._check_open()
        offset_ms = float(self._capture.get(cv2.CAP_PROP_POS_MSEC))
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        return self._frame(np.asarray(image, dtype=np.uint8), self._start_ts + offset_ms / 1000.0)

    def close(self) -> None:
        if not self._closed:
            super().close()
            self._capture.release()


class ImageFolderSource(FrameSource):
    """Images dropped into a folder, in name order, each once; ``ts`` is the file's modification time.

    A file that does not decode is retried while it is younger than ``settle_s`` (still being
    written), then counted as a ProtocolError and skipped."""

    def __init__(self, folder: Path, *, poll_s: float = 0.1, settle_s: float = 1.0) -> None:
        super().__init__(str(folder))
        if not folder.is_dir():
            raise DeviceUnavailable(f"{folder}: no such folder")
        self._folder = folder
        self._seen: set[str] = set()
        self._poll_s = poll_s
        self._settle_s = settle_s

    def _candidates(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self._folder))
        except OSError as error:
            raise DeviceUnavailable(f"{self._folder}: {error}") from error
        return [
            self._folder / name
            for name in names
            if name not in self._seen
            and not name.startswith(".")
            and Path(name).suffix.lower() in IMAGE_SUFFIXES
        ]

    def read(self, timeout: float = 5.0) -> Frame | None:
        self._check_open()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            for path in self._candidates():
                try:
                    data = path.read_bytes()
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                except OSError as error:
                    raise DeviceUnavailable(f"{shown(str(path))}: {error}") from error
                try:
                    image = decode_jpeg(data)
                except ProtocolError as error:
                    if time.time() - mtime < self._settle_s:
                        continue
                    self._seen.add(path.name)
                    self._count(ProtocolError(f"{shown(path.name)}: {error}"))
                    continue
                self._seen.add(path.name)
                return self._frame(image, mtime)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(self._poll_s, max(0.0, deadline - time.monotonic())))


def open_source(url_or_path: str | Path) -> FrameSource:
    """A frame source for an http(s):// MJPEG stream, an rtsp(s):// stream, a video file or an
    image folder (a plain path or file://)."""
    text = str(url_or_path)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return MjpegHttpSource(text)
    if scheme in ("rtsp", "rtsps"):
        return RtspSource(text)
    if scheme == "file":
        text = unquote(urlsplit(text).path)
    elif scheme:
        raise ConfigError([f"frame source {text!r}: use http(s)://, rtsp(s)://, a video file or a folder"])
    path = Path(text)
    if path.is_dir():
        return ImageFolderSource(path)
    if path.is_file():
        return VideoFileSource(path)
    raise DeviceUnavailable(f"{path}: no such file or folder")


def sharpness(image: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def select_frames(
    frames: Iterable[Frame], trigger_ts: float, window_s: float, max_frames: int
) -> list[Frame]:
    """The sharpest frames taken within ``window_s`` seconds of a visit trigger, at most
    ``max_frames``, shared fairly between views: each view's sharpest first, then each view's
    second sharpest, and so on (views in order of their best frame)."""
    if max_frames <= 0 or window_s < 0:
        return []
    by_view: dict[str, list[tuple[float, Frame]]] = defaultdict(list)
    for frame in frames:
        if abs(frame.ts - trigger_ts) <= window_s:
            by_view[frame.source].append((sharpness(frame.image), frame))
    ranked = [sorted(group, key=lambda item: (-item[0], item[1].index)) for group in by_view.values()]
    ranked.sort(key=lambda group: (-group[0][0], group[0][1].source))
    chosen: list[Frame] = []
    depth = 0
    while len(chosen) < max_frames and any(depth < len(group) for group in ranked):
        for group in ranked:
            if depth < len(group) and len(chosen) < max_frames:
                chosen.append(group[depth][1])
        depth += 1
    return chosen
