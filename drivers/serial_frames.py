"""What every serial reader driver shares: open the port (``serial_for_url``: a device, a pty or
``socket://``), read what has arrived, split it into frames, parse each, report a read once while
it keeps being seen, and keep bad frames in their place in the order of the stream. What waits
between steps is bounded (``MAX_QUEUED``), and so is what the repeat filter remembers
(``RepeatFilter.limit``); what does not fit is refused and counted.

A driver names its framing (``new_splitter``), its parser (``parse``), what counts as the same read
again (``repeat_key``) and the reading it makes of a read (``reading``)."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import serial
from pydantic import Field

from drivers.base import BoundedQueue, Driver
from gated.clock import Clock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import Reading
from gated.settings import DeviceSettings

READ_CHUNK = 4096
"""Most bytes one step reads from the port."""
MAX_QUEUED = 1024
"""Most readings and bad frames held between steps; more are refused and counted."""
REPEAT_MEMORY = 4096
"""Most reads a repeat filter remembers at once."""

Read = TypeVar("Read")


class Splitter(Protocol):
    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        """The complete frames in ``data`` and what came before (or a ProtocolError in place of a
        malformed one); an incomplete frame is kept for the next call."""
        ...


class RepeatFilter:
    """Lets a read through once, then holds it back while it is seen again within ``window`` s.

    It remembers at most ``limit`` reads: a device sending ever new ones makes it forget the one
    seen longest ago (counted in ``forgotten``), which is then reported again if it comes back."""

    def __init__(self, window: float, limit: int = REPEAT_MEMORY) -> None:
        self.window = window
        self.limit = limit
        self.forgotten = 0
        self._last_seen: dict[Hashable, float] = {}  # in the order last seen, oldest first

    def admit(self, key: Hashable, now: float) -> bool:
        while self._last_seen:
            oldest = next(iter(self._last_seen))
            if now - self._last_seen[oldest] < self.window:
                break
            del self._last_seen[oldest]
        fresh = self._last_seen.pop(key, None) is None
        if len(self._last_seen) >= self.limit:
            del self._last_seen[next(iter(self._last_seen))]
            self.forgotten += 1
        self._last_seen[key] = now
        return fresh


class SerialReaderSettings(DeviceSettings):
    """What every serial reader is configured with; each reader's model adds its ``driver`` name."""

    url: str = Field(description="A tty path, or socket://host:port for a serial device server.")
    baudrate: int = Field(9600, gt=0)
    repeat_window_seconds: float = Field(5.0, gt=0)


class SerialFrameDriver(Driver, Generic[Read]):
    """A reader on a serial line that sends frames (reads and heartbeats) on its own."""

    clear_queue_on_connect = False
    """True where reads queued before a reconnect are stale by the time they would be reported."""

    def __init__(
        self,
        lane: str,
        settings: SerialReaderSettings,
        *,
        read_timeout: float = 0.2,
        silence_timeout: float = 3.0,
        clock: Clock | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        if read_timeout <= 0:
            raise ValueError(f"read_timeout {read_timeout} must be positive")
        if silence_timeout <= read_timeout:
            raise ValueError(f"silence_timeout {silence_timeout} must be longer than read_timeout")
        self.url = settings.url
        self.baudrate = settings.baudrate
        self.read_timeout = read_timeout
        self.silence_timeout = silence_timeout
        self._repeats = RepeatFilter(settings.repeat_window_seconds)
        self._port: serial.Serial | None = None
        self._splitter = self.new_splitter()
        self._queue: BoundedQueue[Reading | ProtocolError] = BoundedQueue(MAX_QUEUED)
        self._failure: DeviceUnavailable | None = None
        self._last_data = 0.0
        self._heard = False  # a good frame on this connection

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
        self._heard = False

    def proven(self) -> bool:
        # An open port proves nothing: a pty's number is reused and a wrong device answers nothing.
        return self._heard

    def step(self) -> Sequence[Reading]:
        """Readings queued from earlier reads first; a bad frame is raised in its place in order."""
        if not self._queue:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            self._fill()
        readings: list[Reading] = []
        while self._queue:
            item = self._queue.first()
            if isinstance(item, ProtocolError):
                if readings:
                    break
                self._queue.take()
                raise item
            readings.append(item)
            self._queue.take()
        return readings

    @property
    def refused(self) -> int:
        """Readings and bad frames refused because the queue was full."""
        return self._queue.refused

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
                self._queue.put(item)
                continue
            try:
                read = self.parse(item)
            except ProtocolError as error:
                self._queue.put(error)
                continue
            self._heard = True
            if read is not None and self._repeats.admit(self.repeat_key(read), now):
                self._queue.put(self.reading(read))

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
