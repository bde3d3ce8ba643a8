"""The one driver interface, for polled (pull) and event (push) devices alike.

A driver runs in its own thread: ``connect()``, then ``step()`` again and again, each call
returning the readings of at most one poll period. The loop here owns what every driver needs the
same way: reconnecting with backoff, device status, counting and logging bad frames without
dying, and logging the first error of a streak, staying quiet while it persists, and logging the
recovery.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from gated.clock import Clock, SystemClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import DeviceState, Kind, Reading

log = logging.getLogger(__name__)


class DriverSink(Protocol):
    """Where a driver hands what it learns. The daemon's pipeline implements it."""

    def reading(self, reading: Reading) -> None: ...

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None: ...

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None: ...


class Driver(ABC):
    """Base of every driver. Subclasses implement the three protocol steps only."""

    kind: Kind

    def __init__(
        self,
        lane: str,
        device: str,
        *,
        clock: Clock | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.lane = lane
        self.device = device
        self.clock: Clock = clock or SystemClock()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.frame_errors = 0
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

    def run(self, sink: DriverSink, stop: threading.Event) -> None:
        """The driver's thread: connect, step, reconnect with backoff, until ``stop`` is set."""
        backoff = self.backoff_initial
        state: DeviceState | None = None
        failing_since_logged = False

        def set_state(new: DeviceState, detail: str) -> None:
            nonlocal state
            if new != state:
                state = new
                sink.device_status(self.lane, self.device, new, detail)

        def connected() -> None:
            reason = self.degraded()
            if reason is None:
                set_state(DeviceState.ONLINE, "connected")
            else:
                set_state(DeviceState.DEGRADED, reason)

        while not stop.is_set():
            try:
                self.connect()
                self.connects += 1
            except DeviceUnavailable as error:
                if not failing_since_logged:
                    log.warning("%s/%s: cannot connect: %s", self.lane, self.device, error)
                    failing_since_logged = True
                set_state(DeviceState.OFFLINE, str(error))
                stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if failing_since_logged:
                log.info("%s/%s: connected again", self.lane, self.device)
                failing_since_logged = False
            backoff = self.backoff_initial
            connected()
            try:
                while not stop.is_set():
                    try:
                        readings = self.step()
                    except ProtocolError as error:
                        self.frame_errors += 1
                        sink.frame_error(self.lane, self.device, error)
                        continue
                    for reading in readings:
                        sink.reading(reading)
                    connected()
            except DeviceUnavailable as error:
                log.warning("%s/%s: connection lost: %s", self.lane, self.device, error)
                failing_since_logged = True
                set_state(DeviceState.OFFLINE, str(error))
            except Exception as error:  # a driver bug must not end the thread silently
                log.exception("%s/%s: driver failed: %s", self.lane, self.device, error)
                set_state(DeviceState.OFFLINE, str(error))
            finally:
                self.close()
            stop.wait(backoff)
        self.close()
