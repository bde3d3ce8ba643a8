"""A DriverSink that records what a driver hands it, and waiting with a deadline.

A driver test runs the driver's own loop in a thread, hands it a ``RecordingSink`` and waits on the
sink for the readings, states and frame errors it expects. Waiting never hangs on a missed wake-up:
the condition is looked at again whenever the sink is handed something and every ``POLL`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from drivers.base import Driver, DriverSink
from gated.errors import ProtocolError
from gated.model import DeviceState, Reading, ReadingValue

WAIT = 20.0  # generous: the machine may be busy
POLL = 0.02  # a condition on something besides the sink is looked at this often


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


@contextmanager
def driver_running(driver: Driver, sink: DriverSink, *, join_timeout: float = 15.0) -> Iterator[None]:
    """``driver``'s own loop in a thread handing ``sink`` what it gets, stopped and joined at the end."""
    stop = threading.Event()
    thread = threading.Thread(target=driver.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=join_timeout)
        assert not thread.is_alive(), "the driver thread did not stop"


class RecordingSink:
    """A thread-safe DriverSink that remembers everything it is handed, in order.

    Given ``lane`` and ``device``, it also asserts that every status and frame error names them.
    ``timeout`` is how long ``wait_for`` waits unless told otherwise.
    """

    def __init__(self, lane: str | None = None, device: str | None = None, *, timeout: float = WAIT) -> None:
        self.expected = (lane, device)
        self.timeout = timeout
        self._changed = threading.Condition()
        self._handed = 0  # how many calls the sink has had: a waiter sleeps until this moves
        self._readings: list[Reading] = []
        self._statuses: list[tuple[DeviceState, str]] = []
        self._errors: list[ProtocolError] = []

    # -- the DriverSink side (called from the driver's thread) --

    def reading(self, reading: Reading) -> None:
        with self._changed:
            self._readings.append(reading)
            self._handed_one()

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None:
        self._check_names(lane, device)
        with self._changed:
            self._statuses.append((state, detail))
            self._handed_one()

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None:
        self._check_names(lane, device)
        with self._changed:
            self._errors.append(error)
            self._handed_one()

    def _check_names(self, lane: str, device: str) -> None:
        expected_lane, expected_device = self.expected
        if expected_lane is not None:
            assert lane == expected_lane, (lane, expected_lane)
        if expected_device is not None:
            assert device == expected_device, (device, expected_device)

    def _handed_one(self) -> None:
        self._handed += 1
        self._changed.notify_all()

    # -- the test side: copies, so a test never sees a list change under it --

    @property
    def readings(self) -> list[Reading]:
        with self._changed:
            return list(self._readings)

    def of(self, source: str) -> list[Reading]:
        """The readings from ``source``, in order."""
        return [reading for reading in self.readings if reading.source == source]

    def values(self, source: str | None = None) -> list[ReadingValue]:
        """The values of the readings (from ``source`` only, if given), in order."""
        readings = self.readings if source is None else self.of(source)
        return [reading.value for reading in readings]

    @property
    def statuses(self) -> list[tuple[DeviceState, str]]:
        """Every state reported, with its detail text."""
        with self._changed:
            return list(self._statuses)

    @property
    def states(self) -> list[DeviceState]:
        return [state for state, _ in self.statuses]

    @property
    def state(self) -> DeviceState | None:
        """The state reported last, or None before the first."""
        states = self.states
        return states[-1] if states else None

    @property
    def errors(self) -> list[str]:
        """The message of every frame error."""
        with self._changed:
            return [str(error) for error in self._errors]

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``condition()`` holds; fail the test, saying what the sink has, after ``timeout``.

        The condition is called without the sink's lock held, so it may read the sink, the simulator
        or the driver.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                handed = self._handed
            if condition():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; {self._summary()}")
            with self._changed:
                if self._handed == handed:  # nothing new since the check: sleep until something is
                    self._changed.wait(min(remaining, POLL))

    def _summary(self) -> str:
        seen = [(reading.source, reading.value) for reading in self.readings][-30:]
        return f"statuses {self.statuses}, errors {self.errors}, last readings {seen}"
