"""The one driver interface, for polled (pull) and event (push) devices alike.

A driver runs in its own thread: ``connect()``, then ``step()`` again and again, each call
returning the readings of at most one poll period. The loop here owns what every driver needs the
same way: reconnecting with backoff, device status, counting bad frames without dying, and
logging each change of status once (the first failure, not its repeats; then the recovery).

Status from how the steps go (``_Health``): a burst of bad frames is only counted; failures that
go on for ``DEGRADED_AFTER`` seconds make the device degraded; nothing but failures for
``offline_after`` seconds makes it offline, connected or not (a device that answers every poll
with an error is not online); ``CLEAR_AFTER`` seconds without a failure make it online again. A
connection that ends within ``CLEAR_AFTER`` seconds keeps the backoff growing, and the next one is
online only once a step on it succeeds: a device that fails at once does not flap.

Everything a driver queues from its device is bounded (``BoundedQueue``), and so is what it hands
the sink: at most ``FORWARDED_ERRORS`` frame errors per spell of trouble, the rest only counted.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, Protocol, Self, TypeVar

from gated.clock import Clock, SystemClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import DeviceState, Kind, Reading
from gated.redact import printable
from gated.settings import DriverContext

log = logging.getLogger(__name__)

OFFLINE_AFTER = 5.0
"""Default seconds of nothing but failed steps after which a connected device counts as offline."""
DEGRADED_AFTER = 1.0
"""Seconds over which failures must keep coming for the device to count as degraded."""
CLEAR_AFTER = 2.0
"""Seconds without a failure that end a spell of trouble."""
FORWARDED_ERRORS = 100
"""Frame errors handed to the sink per spell of trouble; the rest are only counted."""

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """First in, first out, holding at most ``limit`` items: what comes while it is full is
    refused and counted in ``refused``, never queued. Thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        self.limit = limit
        self.refused = 0
        self._items: deque[T] = deque()
        self._lock = threading.Lock()

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the queue is full."""
        with self._lock:
            if len(self._items) >= self.limit:
                self.refused += 1
                return False
            self._items.append(item)
            return True

    def put_back(self, item: T) -> None:
        """Return the item just taken to the front (it was taken, so there is room for it)."""
        with self._lock:
            self._items.appendleft(item)

    def first(self) -> T:
        """The oldest item, left in place; IndexError when empty."""
        with self._lock:
            return self._items[0]

    def take(self) -> T:
        """Remove and return the oldest item; IndexError when empty."""
        with self._lock:
            return self._items.popleft()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


class DriverSink(Protocol):
    """Where a driver hands what it learns. The daemon's pipeline implements it."""

    def reading(self, reading: Reading) -> None: ...

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None: ...

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None: ...


class _Health:
    """How the steps of one connection went, judged into a status (module docstring).

    Times are real monotonic seconds: drivers under test run on a manual clock that stands still."""

    def __init__(self, offline_after: float) -> None:
        self.offline_after = offline_after
        self.spell_since: float | None = None  # first failure of the spell of trouble
        self.last_failure = 0.0
        self.streak_since: float | None = None  # first failure with no success after it
        self.first_error = ""
        self.forwarded = 0  # frame errors handed to the sink in this spell

    def failed(self, error: str, now: float) -> None:
        if self.spell_since is None or now - self.last_failure >= CLEAR_AFTER:
            self.spell_since, self.first_error, self.forwarded = now, error, 0
        if self.streak_since is None:
            self.streak_since = now
        self.last_failure = now

    def succeeded(self) -> None:
        self.streak_since = None

    def verdict(self, now: float) -> tuple[DeviceState, str] | None:
        """OFFLINE or DEGRADED and why, or None when the steps say nothing against the device."""
        if self.spell_since is None or now - self.last_failure >= CLEAR_AFTER:
            return None
        if self.streak_since is not None and now - self.streak_since >= self.offline_after:
            failing = now - self.streak_since
            return DeviceState.OFFLINE, f"nothing but errors for {failing:.0f} s, first: {self.first_error}"
        if self.last_failure - self.spell_since >= DEGRADED_AFTER:
            failing = now - self.spell_since
            return DeviceState.DEGRADED, f"errors for {failing:.0f} s, first: {self.first_error}"
        return None


class Driver(ABC):
    """Base of every driver. Subclasses implement the three protocol steps only."""

    kind: Kind

    @classmethod
    def from_settings(cls, lane: str, settings: Any, context: DriverContext) -> Self:
        """The driver for one configured device (its settings model). A driver that needs more of
        the context than the clock overrides this."""
        return cls(lane, settings, clock=context.clock)

    def __init__(
        self,
        lane: str,
        device: str,
        *,
        clock: Clock | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        offline_after: float = OFFLINE_AFTER,
    ) -> None:
        if offline_after <= 0:
            raise ValueError(f"offline_after {offline_after} must be positive")
        self.lane = lane
        self.device = device
        self.clock: Clock = clock or SystemClock()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.offline_after = offline_after
        self.frame_errors = 0
        self.frame_errors_not_forwarded = 0
        self.failures_while_down = 0
        """Failures (frame errors, lost connections, failed connects) while not online, unlogged."""
        self.connects = 0

    @abstractmethod
    def connect(self) -> None:
        """Open the transport. Raises ``DeviceUnavailable`` when the device cannot be reached."""

    @abstractmethod
    def step(self) -> Sequence[Reading]:
        """Wait at most about one poll period; return the readings it produced.

        Raises ``ProtocolError`` for one bad frame (the loop counts it and carries on) and
        ``DeviceUnavailable`` when the transport is gone (the loop reconnects)."""

    @abstractmethod
    def close(self) -> None:
        """Close the transport; safe to call twice and after a failed connect."""

    def degraded(self) -> str | None:
        """Why the connected device works with less than all of its parts (a camera with one of its
        views down), or None when it works in full. Asked after every step."""
        return None

    def proven(self) -> bool:
        """Whether the device has shown on this connection that it is there; it is not called
        online before. Most devices prove it by accepting the connection."""
        return True

    def run(self, sink: DriverSink, stop: threading.Event) -> None:
        """The driver's thread: connect, step, reconnect with backoff, until ``stop`` is set."""
        where = f"{self.lane}/{self.device}"
        backoff = self.backoff_initial
        state: DeviceState | None = None
        # Whether the device may be called online before it proved itself on this connection: not
        # after a connection that failed soon, or a device that fails at once would flap.
        trusted = True

        def set_state(new: DeviceState, detail: str) -> None:
            nonlocal state
            if new == state:
                return
            if new is DeviceState.ONLINE:
                if state is not None:
                    log.info("%s: online again (%d failures meanwhile)", where, self.failures_while_down)
                self.failures_while_down = 0
            elif state in (None, DeviceState.ONLINE):
                log.warning("%s: %s: %s", where, new, printable(detail))  # the detail quotes the device
            else:
                log.info("%s: now %s: %s", where, new, printable(detail))
            state = new
            sink.device_status(self.lane, self.device, new, detail)

        def failure() -> None:
            if state is not DeviceState.ONLINE:
                self.failures_while_down += 1

        def judge(health: _Health) -> None:
            verdict = health.verdict(time.monotonic())
            if verdict is None:
                if not trusted or not self.proven():
                    return
                reason = self.degraded()
                verdict = (
                    (DeviceState.ONLINE, "connected") if reason is None else (DeviceState.DEGRADED, reason)
                )
            set_state(*verdict)

        while not stop.is_set():
            try:
                self.connect()
                self.connects += 1
            except DeviceUnavailable as error:
                failure()
                set_state(DeviceState.OFFLINE, str(error))
                stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            health = _Health(self.offline_after)
            judge(health)
            connected_at = time.monotonic()
            worked = False
            try:
                while not stop.is_set():
                    try:
                        readings = self.step()
                    except ProtocolError as error:
                        self.frame_errors += 1
                        failure()
                        health.failed(str(error), time.monotonic())
                        if health.forwarded < FORWARDED_ERRORS:
                            health.forwarded += 1
                            sink.frame_error(self.lane, self.device, error)
                        else:
                            self.frame_errors_not_forwarded += 1
                        judge(health)
                        continue
                    health.succeeded()
                    worked = trusted = True
                    for reading in readings:
                        sink.reading(reading)
                    judge(health)
            except DeviceUnavailable as error:
                failure()
                set_state(DeviceState.OFFLINE, str(error))
            except Exception as error:  # a driver bug must not end the thread silently
                log.exception("%s: driver failed: %s", where, error)
                set_state(DeviceState.OFFLINE, str(error))
            finally:
                self.close()
            trusted = worked and time.monotonic() - connected_at >= CLEAR_AFTER
            if trusted:
                backoff = self.backoff_initial
            stop.wait(backoff)
            if not trusted:
                backoff = min(backoff * 2, self.backoff_max)
        self.close()
