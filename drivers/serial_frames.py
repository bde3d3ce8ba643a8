"""What every serial reader driver shares: open the port (``serial_for_url``: a device, a pty or
``socket://``), read what has arrived, split it into frames, parse each, report a read once while
it keeps being seen, and keep bad frames in their place in the order of the stream.

A driver names its framing (``new_splitter``), its parser (``parse``), what counts as the same read
again (``repeat_key``) and the reading it makes of a read (``reading``)."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import serial

from drivers.base import Driver
from gated.clock import Clock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import Reading

READ_CHUNK = 4096
"""Most bytes one step reads from the port."""

Read = TypeVar("Read")


class Splitter(Protocol):
    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        """The complete frames in ``data`` and what came before (or a ProtocolError in place of a
        malformed one); an incomplete frame is kept for the next call."""
        ...


class RepeatFilter:
    """Lets a read through once, then holds it back while it is seen again within ``window`` s."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._last_seen: dict[Hashable, float] = {}

    def admit(self, key: Hashable, now: float) -> bool:
        stale = [seen_key for seen_key, seen in self._last_seen.items() if now - seen >= self.window]
        for seen_key in stale:
            del self._last_seen[seen_key]
        fresh = key not in self._last_seen
        self._last_seen[key] = now
        return fresh


class SerialFrameDriver(Driver, Generic[Read]):
    """A reader on a serial line that sends frames (reads and heartbeats) on its own."""

    clear_queue_on_connect = False
    """True where reads queued before a reconnect are stale by the time they would be reported."""

    def __init__(
        self,
        lane: str,
        device: str,
        *,
        url: str,
        baudrate: int = 9600,
        read_timeout: float = 0.2,
        repeat_window: float = 5.0,
        silence_timeout: float = 3.0,
        clock: Clock | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__(lane, device, clock=clock, **kwargs)
        if read_timeout <= 0:
            raise ValueError(f"read_timeout {read_timeout} must be positive")
        if repeat_window < 0:
            raise ValueError(f"repeat_window {repeat_window} must not be negative")
        if silence_timeout <= read_timeout:
            raise ValueError(f"silence_timeout {silence_timeout} must be longer than read_timeout")
        self.url = url
        self.baudrate = baudrate
        self.read_timeout = read_timeout
        self.silence_timeout = silence_timeout
        self._repeats = RepeatFilter(repeat_window)
        self._port: serial.Serial | None = None
        self._splitter = self.new_splitter()
        self._queue: deque[Reading | ProtocolError] = deque()
        self._failure: DeviceUnavailable | None = None
        self._last_data = 0.0

    @abstractmethod
    def new_splitter(self) -> Splitter:
        """A fresh frame splitter (a new connection starts with no partial frame)."""

    @abstractmethod
    def parse(self, frame: bytes) -> Read | None:
        """The read in one frame, None for a heartbeat; ProtocolError when malformed."""

    @abstractmethod
    def repeat_key(self, read: Read) -> Hashable:
        """What makes two reads the same read seen again."""

    @abstractmethod
    def reading(self, read: Read) -> Reading:
        """The reading reported for a read."""

    def connect(self) -> None:
        self.close()
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.read_timeout)
        except (serial.SerialException, OSError, ValueError) as error:
            raise DeviceUnavailable(f"cannot open {self.url}: {error}") from error
        self._splitter = self.new_splitter()
        if self.clear_queue_on_connect:
            self._queue.clear()
        self._failure = None
        self._last_data = self.clock.monotonic()

    def step(self) -> Sequence[Reading]:
        """Readings queued from earlier reads first; a bad frame is raised in its place in order."""
        if not self._queue:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            self._fill()
        readings: list[Reading] = []
        while self._queue:
            item = self._queue[0]
            if isinstance(item, ProtocolError):
                if readings:
                    break
                self._queue.popleft()
                raise item
            readings.append(item)
            self._queue.popleft()
        return readings

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _fill(self) -> None:
        data = self._read()
        now = self.clock.monotonic()
        if not data:
            if now - self._last_data > self.silence_timeout:
                raise DeviceUnavailable(
                    f"no data from {self.url} for {self.silence_timeout:g} s (not even heartbeats)"
                )
            return
        self._last_data = now
        for item in self._splitter.feed(data):
            if isinstance(item, ProtocolError):
                self._queue.append(item)
                continue
            try:
                read = self.parse(item)
            except ProtocolError as error:
                self._queue.append(error)
                continue
            if read is not None and self._repeats.admit(self.repeat_key(read), now):
                self._queue.append(self.reading(read))

    def _read(self) -> bytes:
        port = self._port
        if port is None:
            raise DeviceUnavailable(f"{self.url} is not open")
        data = bytearray()
        try:
            data += port.read(1)
            while data and len(data) < READ_CHUNK:
                waiting = port.in_waiting
                if not waiting:
                    break
                data += port.read(min(waiting, READ_CHUNK - len(data)))
        except (serial.SerialException, OSError) as error:
            lost = DeviceUnavailable(f"read from {self.url} failed: {error}")
            if not data:
                raise lost from error
            self._failure = lost
        return bytes(data)
