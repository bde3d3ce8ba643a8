"""Visit correlation: which readings belong to which truck, per lane.

A visit opens on the first reading that says a truck is there (an RFID tag, the RPM's occupancy,
or a camera read), gathers the lane's readings, and closes either when every required device has
reported and a short settle time has passed (late readings still join), or on a timeout. Time
comes from an injected clock, so tests drive it deterministically.

A reading that already names its visit (a frames camera reads the truck whose visit triggered it,
and its read comes seconds later) joins that visit only: if the visit has closed meanwhile, the
reading joins no other, so a slow read can never lend its number to the next truck.

A frames camera's read takes seconds, and the next truck may arrive meanwhile. A visit such a
camera is reading (opened by one of ``LaneRules.named_triggers``, its ``named_readers`` not all
done) is not closed as superseded when the next truck arrives: it waits, at most
``LaneRules.ocr_wait`` seconds, beside the next truck's visit. Only readings that name it join it;
once every camera's read is in (and ``settle`` has passed) it closes as it would have (complete,
or superseded when a device's report never came), and after ``ocr_wait`` it closes superseded
without the read. The lane's open visit stays the newest truck's, so a late decision of the older
one never opens the barrier for the truck now at it (``gated.barrier_control``).

A licence plate only describes a truck: it joins the open visit (the one it names) but never opens,
completes or ends one, so a plate camera can neither start a decision nor hurry one.
"""

from __future__ import annotations

from dataclasses import dataclass

from gated.clock import Clock
from gated.model import Reading, Source, Visit, new_id

# The reading that tells each required kind has reported on this truck.
COMPLETES = {
    "rfid": Source.EPC,
    "ocr": Source.PASSAGE_END,
    "rpm": Source.SCREENING,
    "credential": Source.CARD,
}
# Readings that belong to a truck (others, like background counts between trucks, do not).
VISIT_SOURCES = frozenset(
    {
        Source.EPC,
        Source.CONTAINER_NUMBER,
        Source.PASSAGE_END,
        Source.LICENCE_PLATE,
        Source.OCCUPANCY,
        Source.GAMMA_CPS,
        Source.GAMMA_BACKGROUND_CPS,
        Source.NEUTRON_CPS,
        Source.NEUTRON_BACKGROUND_CPS,
        Source.SCREENING,
        Source.SIZE_TYPE,
        Source.CARD,  # the driver's credential, shown at the lane
        Source.RPM_PROFILE,  # the counts of the pass, for the console to plot
        Source.SCREENING_CHECK,  # gated's own radiation check of the pass
        Source.SPEED_KMH,
    }
)
# Readings that belong to a truck but do not tell that one is there: they join the open visit only.
JOIN_ONLY_SOURCES = frozenset({Source.LICENCE_PLATE})


MAX_WAITING = 16
"""Most superseded visits a lane keeps waiting for their reads (a frames camera reads at most as
many visits at once: ``drivers.ocr_frames.MAX_PENDING_READS``)."""


@dataclass(frozen=True, slots=True)
class LaneRules:
    lane: str
    require: frozenset[str]
    visit_timeout: float
    settle: float
    ocr_wait: float = 0.0
    """How long a superseded visit waits for its named readers' reads (0: it does not)."""
    named_readers: frozenset[str] = frozenset()
    """Devices whose reads name their visit and end with a ``passage_end`` (frames cameras)."""
    named_triggers: frozenset[str] = frozenset()
    """How a visit must have opened (``Visit.trigger``) for the named readers to read it."""


@dataclass(slots=True)
class _Waiting:
    """A superseded visit waiting for its named readers' reads."""

    visit: Visit
    until: float
    """Monotonic time by which it is closed, read or not."""
    read_since: float | None = None
    """Monotonic time every named reader's read was in."""


class LaneCorrelator:
    """The open visit of one lane. Not thread-safe: the pipeline thread owns it."""

    def __init__(self, rules: LaneRules, clock: Clock) -> None:
        self.rules = rules
        self.clock = clock
        self.visit: Visit | None = None
        self.waiting: dict[str, _Waiting] = {}
        """Superseded visits waiting for their OCR (module docstring), oldest first."""
        self._opened_monotonic = 0.0
        self._complete_since: float | None = None

    def accept(self, reading: Reading) -> tuple[Reading, list[Visit], Visit | None]:
        """Attach ``reading`` to the lane's visit.

        Returns the reading (with its visit id, or unchanged when it belongs to no truck), the
        visits this reading closed (a new truck ends the previous one), and the visit it opened."""
        if reading.source not in VISIT_SOURCES:
            return reading, [], None
        if reading.visit is not None and reading.visit in self.waiting:
            return self._join_waiting(reading), [], None
        if reading.visit is not None and (self.visit is None or self.visit.id != reading.visit):
            return reading, [], None  # its visit was decided without it (too late)
        if reading.source in JOIN_ONLY_SOURCES and self.visit is None:
            return reading, [], None
        closed: list[Visit] = []
        opened: Visit | None = None
        if self.visit is not None and self._starts_new_truck(reading):
            if self._being_read(self.visit):
                closed.extend(self._wait_for_read())
            else:
                closed.append(self._close("superseded"))
        if self.visit is None:
            if reading.source == Source.OCCUPANCY and reading.value is False:
                return reading, closed, None  # the end of a pass nobody saw start
            opened = self._open(reading)
        assert self.visit is not None
        attached = reading.in_visit(self.visit.id)
        self.visit = self.visit.with_reading(attached)
        if self._complete_since is None and self._is_complete(self.visit):
            self._complete_since = self.clock.monotonic()
        return attached, closed, opened

    def _starts_new_truck(self, reading: Reading) -> bool:
        assert self.visit is not None
        if reading.visit is not None:
            return False  # it names this visit: the same truck, read late
        if reading.source == Source.EPC:
            tags = {r.value for r in self.visit.of_source(Source.EPC)}
            return bool(tags) and reading.value not in tags
        if reading.source == Source.OCCUPANCY and reading.value is True:
            # A second occupancy after this visit's pass ended is the next truck.
            return any(r.value is False for r in self.visit.of_source(Source.OCCUPANCY))
        if reading.source == Source.CONTAINER_NUMBER:
            return bool(self.visit.of_source(Source.PASSAGE_END))
        return False

    def _being_read(self, visit: Visit) -> bool:
        """Is a named reader still reading ``visit``?"""
        if self.rules.ocr_wait <= 0 or visit.trigger not in self.rules.named_triggers:
            return False
        return bool(self._unread_by(visit))

    def _unread_by(self, visit: Visit) -> set[str]:
        done = {r.device for r in visit.of_source(Source.PASSAGE_END)}
        return set(self.rules.named_readers) - done

    def _wait_for_read(self) -> list[Visit]:
        """Set the open visit aside to wait for its read; the lane has no open visit then. Returns
        the oldest waiting visit, closed superseded, when more than ``MAX_WAITING`` would wait."""
        assert self.visit is not None
        oldest: list[Visit] = []
        if len(self.waiting) >= MAX_WAITING:
            # A burst of trucks (or of forged tags) must not pile up visits: no camera reads them all.
            stale = self.waiting.pop(next(iter(self.waiting)))
            oldest.append(stale.visit.closed(self.clock.now(), "superseded"))
        until = self.clock.monotonic() + self.rules.ocr_wait
        self.waiting[self.visit.id] = _Waiting(self.visit, until)
        self.visit = None
        self._complete_since = None
        return oldest

    def _join_waiting(self, reading: Reading) -> Reading:
        waiting = self.waiting[reading.visit or ""]
        attached = reading.in_visit(waiting.visit.id)
        waiting.visit = waiting.visit.with_reading(attached)
        if waiting.read_since is None and not self._unread_by(waiting.visit):
            waiting.read_since = self.clock.monotonic()
        return attached

    def _is_complete(self, visit: Visit) -> bool:
        return all(visit.of_source(COMPLETES[kind]) for kind in self.rules.require)

    def _open(self, reading: Reading) -> Visit:
        self.visit = Visit(
            id=new_id(),
            lane=self.rules.lane,
            opened_at=reading.ts,
            trigger=f"{reading.kind}:{reading.source}",
        )
        self._opened_monotonic = self.clock.monotonic()
        self._complete_since = None
        return self.visit

    def _close(self, cause: str) -> Visit:
        assert self.visit is not None
        closed = self.visit.closed(self.clock.now(), cause)
        self.visit = None
        self._complete_since = None
        return closed

    def tick(self) -> list[Visit]:
        """Close the visit if it is complete and settled, or has timed out; close each waiting
        visit whose read is in and settled, or whose wait is over."""
        now = self.clock.monotonic()
        closed: list[Visit] = []
        for visit_id, waiting in list(self.waiting.items()):
            read = waiting.read_since is not None and now - waiting.read_since >= self.rules.settle
            if read or now >= waiting.until:
                del self.waiting[visit_id]
                complete = read and self._is_complete(waiting.visit)
                closed.append(
                    waiting.visit.closed(self.clock.now(), "complete" if complete else "superseded")
                )
        return closed + self._tick_open(now)

    def _tick_open(self, now: float) -> list[Visit]:
        if self.visit is None:
            return []
        if self._complete_since is not None and now - self._complete_since >= self.rules.settle:
            return [self._close("complete")]
        if now - self._opened_monotonic >= self.rules.visit_timeout:
            return [self._close("timeout")]
        return []

    def close_open(self, cause: str) -> list[Visit]:
        """Close whatever is open or waiting (at shutdown): it is decided, and so never released
        blindly."""
        now = self.clock.now()
        closed = [waiting.visit.closed(now, cause) for waiting in self.waiting.values()]
        self.waiting.clear()
        return closed + ([self._close(cause)] if self.visit is not None else [])
