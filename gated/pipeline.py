"""The pipeline: the one thread that turns what devices report into stored, published facts.

Drivers (each on its own thread) hand readings and status changes to ``Pipeline`` through a
queue. The pipeline thread takes them in batches and, for each batch, in this order:
1. attaches each reading to its lane's visit (``LaneCorrelator``),
2. decides every visit that closed (``policy.decide``, against the hold list),
3. stores readings, visits, decisions, audit records and the outgoing messages in ONE
   transaction (``Store.write``),
4. only then wakes the publisher and reports the decisions (barrier, console, demo output).
If storing fails, nothing is published or actuated; the batch is kept and tried again, and the
lanes stop releasing until storage works again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from drivers.ocr_frames import BACKLOG as OCR_BACKLOG
from gated.clock import Clock, rfc3339
from gated.config import GateConfig
from gated.credentials import CancelledCardList, max_age_for
from gated.errors import ContainerNumberError, GatedError, OverrideRefused, ProtocolError, StorageError
from gated.hold_commands import holds_state_message
from gated.holds import HoldStore
from gated.iso6346 import ContainerNumber
from gated.lane_state import LaneState
from gated.messages import (
    SCAN,
    SCAN_HOLD_TYPES,
    Message,
    Topics,
    alarm_message,
    decision_message,
    device_status_message,
    lane_status_message,
    reading_message,
)
from gated.metrics import Metrics
from gated.model import (
    Decision,
    DeviceState,
    Kind,
    Outcome,
    Quality,
    Reading,
    Reason,
    ScreeningVerdict,
    Source,
    Visit,
    new_id,
)
from gated.policy import (
    CREDENTIAL_MISSING,
    OPERATOR_ENTRY,
    OPERATOR_OVERRIDE,
    RECOMPUTED,
    STORAGE_FAILURE,
    HoldListStatus,
    decide,
)
from gated.preadvice import PreadviceStore
from gated.redact import printable, shown
from gated.store import AuditRecord, Batch, Store

log = logging.getLogger(__name__)

_WORSE = {DeviceState.ONLINE: 0, DeviceState.DEGRADED: 1, DeviceState.OFFLINE: 2}
"""A device going down this scale raises a device_fault alarm."""

NII_AGENCY = "NII"
NII_HOLD_TYPE = "inspection"
"""The hold a suspect scan places: its own agency, so customs' sync of their holds is not upset."""
STORAGE_RETRY_SECONDS = 1.0  # how often a failing database is tried again
# Readings and frame errors waiting for the pipeline thread at most; beyond, they are dropped and
# counted (device status changes and node alarms always get in: they are few and they matter).
MAX_QUEUED_INPUTS = 10_000
# After readings of a lane were dropped, visits opened until this long after are not released.
DROPPED_TAINT_SECONDS = 30.0

DecisionListener = Callable[[Visit, list[Decision]], None]
VisitListener = Callable[[Visit], None]


@dataclass
class PipelineStats:
    readings: int = 0
    decisions: int = 0
    frame_errors: dict[str, int] = field(default_factory=dict)
    storage_failures: int = 0
    dropped_inputs: int = 0  # readings and frame errors refused by the full queue
    standby_readings: int = 0  # readings of lanes another node drives, left to it


@dataclass(frozen=True, slots=True)
class _Status:
    lane: str
    device: str
    state: DeviceState
    detail: str


@dataclass(frozen=True, slots=True)
class _FrameError:
    lane: str
    device: str
    error: str


@dataclass(frozen=True, slots=True)
class _NodeAlarm:
    alarm: str
    text: str
    severity: str


@dataclass(frozen=True, slots=True)
class _Dropped:
    """Readings of this device were dropped (the queue was full): its lane's visits lack evidence."""

    lane: str
    device: str


@dataclass(frozen=True, slots=True, eq=False)
class _Override:
    """A supervisor's decision in place of a stored one (``Pipeline.override``)."""

    decision: str
    outcome: Outcome | None  # None: decide again with ``number`` (an operator's entry)
    actor: str
    reason: str
    future: Future[Decision]
    number: str | None = None


@dataclass(frozen=True, slots=True)
class _Ownership:
    """This node took (``held``) or lost a lane's lease (``gated.leases``)."""

    lane: str
    held: bool
    detail: str


_Event = Reading | _Status | _FrameError | _NodeAlarm | _Dropped | _Override | _Ownership
StorageListener = Callable[[bool, str], None]


class Pipeline:
    """Implements the drivers' ``DriverSink``; owns correlation, decisions and storage."""

    def __init__(
        self,
        config: GateConfig,
        store: Store,
        holds: HoldStore,
        clock: Clock,
        *,
        on_stored: Callable[[], None] = lambda: None,
        batch_limit: int = 1000,
        preadvice: PreadviceStore | None = None,
        credentials: CancelledCardList | None = None,
        metrics: Metrics | None = None,
        standby: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.store = store
        self.holds = holds
        self.clock = clock
        self.topics = Topics(config.site)
        self.on_stored = on_stored
        self.batch_limit = batch_limit
        self.stats = PipelineStats()
        self.listeners: list[DecisionListener] = []
        # Told when a visit opens (the frames cameras start looking); called on the pipeline
        # thread, so a listener only takes note and returns.
        self.visit_listeners: list[VisitListener] = []
        self.scan_listeners: list[Callable[[Reading], None]] = []
        """Told of each suspect NII scan once it is stored (the console's queue)."""
        self._suspects: list[Reading] = []
        self._queue: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._inputs_lock = threading.Lock()
        self._queued_inputs = 0  # readings and frame errors in the queue
        self._dropped_pending: set[tuple[str, str]] = set()  # _Dropped markers not yet handled
        self._pending = Batch()  # stored-but-failed work, retried before anything new
        self._pending_decided: list[tuple[Visit, list[Decision]]] = []
        self.lanes = {
            lane.id: LaneState.for_lane(lane, clock, hold_list_max_age_seconds=config.holds.max_age_seconds)
            for lane in config.lanes
        }
        self.storage_ok = True
        self._retry_at = 0.0
        self.storage_listeners: list[StorageListener] = []
        self.on_fatal: Callable[[str], None] = lambda _detail: None
        self.beat = time.monotonic()  # last turn of the run loop (the watchdog looks at it)
        self.preadvice = preadvice
        self.credentials = credentials
        self.credential_max_age = max_age_for(config.credentials.security_level)
        # Lanes another node drives (leases: gated.leases): their readings are not this node's to
        # take, their status not this node's to say. Empty when the node drives all its lanes.
        self.standby: set[str] = set(standby)

    # -- DriverSink: called from driver threads ----------------------------------------------
    def reading(self, reading: Reading) -> None:
        if self._admit(reading.lane, reading.device):
            self._queue.put(reading)

    def device_status(self, lane: str, device: str, state: DeviceState, detail: str) -> None:
        self._queue.put(_Status(lane, device, state, detail))

    def frame_error(self, lane: str, device: str, error: ProtocolError) -> None:
        if self._admit(lane, device, reading=False):
            self._queue.put(_FrameError(lane, device, str(error)))

    def _admit(self, lane: str, device: str, *, reading: bool = True) -> bool:
        """Room for one more reading or frame error? When not, count it and, for a reading, make
        sure the lane learns that evidence was lost (one marker per device at a time)."""
        with self._inputs_lock:
            if self._queued_inputs < MAX_QUEUED_INPUTS:
                self._queued_inputs += 1
                return True
            self.stats.dropped_inputs += 1
            first = self.stats.dropped_inputs == 1 or self.stats.dropped_inputs % 10_000 == 0
            marker = reading and (lane, device) not in self._dropped_pending
            if marker:
                self._dropped_pending.add((lane, device))
        if first:
            log.error(
                "the pipeline is %d inputs behind: dropping readings (%d so far); no release for their lanes",
                MAX_QUEUED_INPUTS,
                self.stats.dropped_inputs,
            )
        if marker:
            self._queue.put(_Dropped(lane, device))
        return False

    def override(self, decision_id: str, outcome: Outcome, *, actor: str, reason: str) -> Future[Decision]:
        """A supervisor's decision in place of decision ``decision_id`` (from any thread). It goes
        the way of every decision: checked, stored with its audit record in one transaction,
        published, then handed to the listeners (the barrier, the printer, the console). The future
        gives the new decision, or raises ``OverrideRefused`` saying why it was not made."""
        future: Future[Decision] = Future()
        self._queue.put(_Override(decision_id, outcome, actor, reason, future))
        return future

    def enter_number(self, decision_id: str, number: str, *, actor: str, note: str) -> Future[Decision]:
        """An operator typed the number the camera could not read for decision ``decision_id``
        (from any thread). The number becomes a reading of its own (device ``console``; nothing a
        device said is changed) and the visit is decided again by the same policy, holds and all;
        the new decision is stored, audited and published like any other."""
        future: Future[Decision] = Future()
        self._queue.put(_Override(decision_id, None, actor, note, future, number=number))
        return future

    def set_ownership(self, lane: str, held: bool, detail: str) -> None:
        """This node took (``held``) or lost ``lane``'s lease (from any thread)."""
        self._queue.put(_Ownership(lane, held, detail))

    def node_alarm(self, alarm: str, text: str, severity: str = "medium") -> None:
        """An alarm about the node itself, raised on every lane (from any thread)."""
        self._queue.put(_NodeAlarm(alarm, text, severity))

    def recover(self) -> None:
        """Decide the visits a previous run left open (stopped mid-truck): they cannot be
        released, and deciding them now means no visit is ever left without a decision."""
        batch = Batch()
        decided: list[tuple[Visit, list[Decision]]] = []
        for visit in self.store.open_visits():
            if visit.lane not in self.lanes or visit.lane in self.standby:
                continue  # another node's lane: it decides its own visits
            log.warning("visit %s on %s was open when gated stopped: deciding it now", visit.id, visit.lane)
            self._decide(visit.closed(self.clock.now(), "restart"), batch, decided)
        self._commit(batch, decided)

    # -- the pipeline thread -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until ``stop``. An unexpected error is never survived quietly: ``on_fatal`` is told, and
        the daemon closes every lane and exits non-zero so that its supervisor restarts it."""
        try:
            while not stop.is_set():
                self.beat = time.monotonic()
                self.step(wait=0.1)
            self.shutdown()
        except Exception as error:
            log.critical("the pipeline failed: %r", error, exc_info=True)
            self.on_fatal(f"the pipeline failed: {error!r}")

    def step(self, wait: float = 0.0) -> int:
        """Handle what is queued (waiting up to ``wait`` for the first event); returns events handled."""
        events: list[_Event] = []
        try:
            events.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            while len(events) < self.batch_limit:
                events.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        batch = Batch()
        decided: list[tuple[Visit, list[Decision]]] = []
        taken = sum(1 for event in events if isinstance(event, Reading | _FrameError))
        if taken:
            with self._inputs_lock:
                self._queued_inputs -= taken
        for event in events:
            if isinstance(event, Reading):
                self._on_reading(event, batch, decided)
            elif isinstance(event, _Dropped):
                self._on_dropped(event, batch)
            elif isinstance(event, _Status):
                self._on_status(event, batch)
            elif isinstance(event, _FrameError):
                self._on_frame_error(event)
            elif isinstance(event, _Override):
                self._commit(batch, decided)  # what came before it is stored first
                batch, decided = Batch(), []
                self._on_override(event)
            elif isinstance(event, _Ownership):
                self._on_ownership(event, batch, decided)
            else:
                for lane in self.config.lanes:
                    if lane.id in self.standby:
                        continue
                    batch.messages.append(
                        alarm_message(
                            self.topics,
                            lane=lane.id,
                            alarm=event.alarm,
                            text=event.text,
                            ts=self.clock.now(),
                            severity=event.severity,
                        )
                    )
        for lane_state in self.lanes.values():
            for visit in lane_state.correlator.tick():
                self._decide(visit, batch, decided)
        self._commit(batch, decided)
        suspects, self._suspects = self._suspects, []
        for scan in suspects:
            for scan_listener in self.scan_listeners:
                try:
                    scan_listener(scan)
                except Exception:  # a listener's bug must not stop the lane
                    log.exception("scan listener failed")
        return len(events)

    def shutdown(self) -> None:
        """Decide whatever visit is still open (it cannot release) and store it all."""
        self.step()
        batch = Batch()
        decided: list[tuple[Visit, list[Decision]]] = []
        for lane_state in self.lanes.values():
            for visit in lane_state.correlator.close_open("shutdown"):
                self._decide(visit, batch, decided)
        self._commit(batch, decided)

    # -- handlers ------------------------------------------------------------------------------
    def _on_ownership(
        self, event: _Ownership, batch: Batch, decided: list[tuple[Visit, list[Decision]]]
    ) -> None:
        lane = self.lanes.get(event.lane)
        if lane is None:
            return
        if event.held and event.lane in self.standby:
            self.standby.discard(event.lane)
            log.warning("lane %s: this node drives it now (%s)", event.lane, event.detail)
            # The visit the previous holder left open is decided here as interrupted: never a
            # release without fresh evidence (the truck's readings come again to this node).
            for visit in self.store.open_visits():
                if visit.lane == event.lane:
                    self._decide(visit.closed(self.clock.now(), "takeover"), batch, decided)
            now = self.clock.now()
            batch.messages.extend(
                device_status_message(
                    self.topics, event.lane, device, lane.device_kinds[device], state, detail, now
                )
                for device, (state, detail) in lane.device_states.items()
            )
            batch.messages.append(self._lane_status(event.lane))
        elif not event.held and event.lane not in self.standby:
            self.standby.add(event.lane)
            log.warning("lane %s: this node no longer drives it (%s)", event.lane, event.detail)
            for visit in lane.correlator.close_open("lease_lost"):
                self._decide(visit, batch, decided)

    def _on_reading(
        self, reading: Reading, batch: Batch, decided: list[tuple[Visit, list[Decision]]]
    ) -> None:
        lane = self.lanes.get(reading.lane)
        if lane is None:
            log.error(
                "reading for unknown lane %s from %s: dropped", shown(reading.lane), shown(reading.device)
            )
            return
        if reading.lane in self.standby:
            self.stats.standby_readings += 1  # the lane's holder takes it from its own drivers
            return
        if reading.source == Source.SCAN_RESULT:
            self._on_scan(reading, batch)
            return
        attached, closed, opened = lane.correlator.accept(reading)
        for visit in closed:
            self._decide(visit, batch, decided)
        if opened is not None:
            batch.visits.append(opened)
            lane.visit_opened()
            for visit_listener in self.visit_listeners:
                try:
                    visit_listener(opened)
                except Exception:  # a listener's bug must not stop the lane
                    log.exception("visit listener failed")
        if reading.source == Source.TAMPER:
            lane.tamper(reading.device, reading.value is True)
        self.stats.readings += 1
        self.metrics.reading(reading.lane, reading.device, str(reading.kind))
        batch.readings.append(attached)
        batch.messages.append(reading_message(self.topics, attached))
        self._reading_alarms(attached, batch)

    def _on_scan(self, reading: Reading, batch: Batch) -> None:
        """An NII (VACIS) scan's result: it joins the visit that last decided its container (the
        truck was sent to the scanner from the gate), and a ``suspect`` verdict raises an alarm and
        puts the container on an inspection hold, so it cannot leave until someone released it."""
        value = reading.value if isinstance(reading.value, dict) else {}
        container = value.get("container") if isinstance(value.get("container"), str) else None
        attached = reading
        found = self.store.last_visit_of(container) if container else None
        if found is not None and reading.visit is None:
            attached = reading.in_visit(found)
        self.stats.readings += 1
        self.metrics.reading(reading.lane, reading.device, str(reading.kind))
        batch.readings.append(attached)
        batch.messages.append(reading_message(self.topics, attached))
        if value.get("verdict") != "suspect":
            return
        scan = str(value.get("scan_id"))[:128]
        text = f"NII scan {scan} of {container or 'an unknown container'}: suspect"
        if container is not None:
            try:
                self.holds.place(
                    container=container,
                    agency=NII_AGENCY,
                    hold_type=NII_HOLD_TYPE,
                    reference=scan,
                    actor=f"device:{reading.lane}/{reading.device}",
                    reason=text,
                )
            except (GatedError, ValueError) as error:
                log.error(
                    "NII scan %s: could not place the inspection hold on %s: %s",
                    shown(scan),
                    container,
                    error,
                )
                text += f" (inspection hold NOT placed: {error})"
            else:
                text += f": on an {NII_AGENCY} {NII_HOLD_TYPE} hold until released"
        batch.messages.append(
            alarm_message(
                self.topics,
                lane=reading.lane,
                alarm="nii_suspect",
                text=text,
                ts=reading.ts,
                visit=attached.visit,
                container=container,
                device=reading.device,
                detail={"reading": reading.id, "scan_id": scan},
            )
        )
        self._suspects.append(attached)

    def _reading_alarms(self, reading: Reading, batch: Batch) -> None:
        alarm: str | None = None
        text = ""
        if reading.source == Source.SCREENING and reading.value in (
            ScreeningVerdict.GAMMA_ALARM,
            ScreeningVerdict.NEUTRON_ALARM,
        ):
            alarm, text = "radiation_alarm", f"radiation portal monitor: {reading.value}"
        elif reading.source == Source.SCREENING and reading.value == ScreeningVerdict.FAULT:
            alarm, text = "device_fault", "radiation portal monitor reported a fault during the pass"
        elif (
            reading.source == Source.SCREENING_CHECK
            and isinstance(reading.value, dict)
            and reading.value.get("agrees") is False
            and reading.value.get("verdict") != "unchecked"
        ):
            alarm = "screening_disagreement"
            text = (
                f"gated's check ({reading.value.get('verdict')}) and the monitor's "
                f"({reading.value.get('device_verdict')}) disagree"
            )
        elif reading.source == Source.TAMPER and reading.value is True:
            alarm, text = "tamper", f"tamper reported by {reading.device}"
        elif reading.source == Source.FAULT and reading.value:
            alarm, text = "device_fault", f"{reading.device}: {reading.value}"
        if alarm:
            batch.messages.append(
                alarm_message(
                    self.topics,
                    lane=reading.lane,
                    alarm=alarm,
                    text=text,
                    ts=reading.ts,
                    visit=reading.visit,
                    device=reading.device,
                    detail={"reading": reading.id},
                )
            )

    def _on_status(self, event: _Status, batch: Batch) -> None:
        lane = self.lanes.get(event.lane)
        if lane is None or event.device not in lane.device_kinds:
            return
        previous = lane.device_states.get(event.device)
        lane.device_states[event.device] = (event.state, event.detail)
        if event.state is DeviceState.OFFLINE:
            lane.went_offline(event.device)
        if (previous is not None and previous[0] == event.state) or event.lane in self.standby:
            return  # unchanged, or the lane's holder says how its devices are
        now = self.clock.now()
        kind = lane.device_kinds[event.device]
        batch.messages.append(
            device_status_message(self.topics, event.lane, event.device, kind, event.state, event.detail, now)
        )
        batch.messages.append(self._lane_status(event.lane))
        if previous is not None and _WORSE[event.state] > _WORSE[previous[0]]:
            went = "offline" if event.state is DeviceState.OFFLINE else "degraded"
            # A camera whose frames wait for OCR works, but late: its own alarm says so.
            backlog = event.detail.startswith(OCR_BACKLOG)
            batch.messages.append(
                alarm_message(
                    self.topics,
                    lane=event.lane,
                    alarm="ocr_backlog" if backlog else "device_fault",
                    text=f"{event.device} went {went}: {event.detail}",
                    ts=now,
                    device=event.device,
                    severity="medium",
                )
            )

    def open_visit(self, lane: str) -> Visit | None:
        """The lane's open visit, if any (read on the pipeline thread, e.g. by a decision listener)."""
        state = self.lanes.get(lane)
        return state.correlator.visit if state is not None else None

    def lane_ids(self) -> list[str]:
        return [lane.id for lane in self.config.lanes]

    def lane_status(self, lane: str) -> dict[str, Any]:
        """The lane's status as published (state, reason, devices); safe from any thread."""
        return self._lane_status(lane).body

    def device_states(self, lane: str) -> dict[str, tuple[str, DeviceState, str]]:
        """Each device of the lane: its kind, last state and detail; safe from any thread."""
        state = self.lanes[lane]
        return {
            device: (state.device_kinds[device], *state.device_states[device])
            for device in list(state.device_states)
        }

    def _lane_status(self, lane: str) -> Message:
        devices = {device: state for device, (state, _) in self.lanes[lane].device_states.items()}
        offline = sorted(device for device, state in devices.items() if state is not DeviceState.ONLINE)
        backlogs = [
            f"{device} ({detail})"
            for device, (state, detail) in self.lanes[lane].device_states.items()
            if state is DeviceState.DEGRADED and detail.startswith(OCR_BACKLOG)
        ]
        if not self.storage_ok:
            state, reason = "closed", "storage failure: no automatic release"
        elif offline:
            state, reason = "degraded", f"not online: {', '.join(offline)}"
            if backlogs:
                reason += f"; {', '.join(backlogs)}"
        else:
            state, reason = "open", "all devices online"
        return lane_status_message(
            self.topics, lane, state, {d: str(s) for d, s in devices.items()}, reason, self.clock.now()
        )

    def status_snapshot(self) -> list[Message]:
        """Current lane and device status (published after every (re)connect)."""
        now = self.clock.now()
        messages = [
            device_status_message(
                self.topics, lane_id, device, self.lanes[lane_id].device_kinds[device], state, detail, now
            )
            for lane_id in sorted(self.lanes)
            if lane_id not in self.standby
            for device, (state, detail) in sorted(self.lanes[lane_id].device_states.items())
        ]
        messages.extend(
            self._lane_status(lane.id) for lane in self.config.lanes if lane.id not in self.standby
        )
        messages.append(self.holds_state_message())
        return messages

    def _on_frame_error(self, event: _FrameError) -> None:
        key = f"{event.lane}/{event.device}"
        count = self.stats.frame_errors.get(key, 0) + 1
        self.stats.frame_errors[key] = count
        # Log the first few and then every hundredth, so a babbling device cannot flood the log.
        if count <= 5 or count % 100 == 0:
            # A driver's error quotes what the device sent: escaped, so it cannot fake a log line.
            log.warning("%s: malformed frame #%d: %s", key, count, printable(event.error))

    # -- the hold list ------------------------------------------------------------------------
    def hold_list_status(self) -> HoldListStatus:
        state = self.holds.state()
        return HoldListStatus(
            loaded=state.loaded,
            confirmed_at=state.confirmed_at,
            version=state.version,
            out_of_step=state.out_of_step,
        )

    def holds_state_message(self) -> Message:
        return holds_state_message(
            self.topics, self.holds.state(), self.clock.now(), self.config.holds.max_age_seconds
        )

    def _on_dropped(self, event: _Dropped, batch: Batch) -> None:
        with self._inputs_lock:
            self._dropped_pending.discard((event.lane, event.device))
        lane = self.lanes.get(event.lane)
        if lane is None:
            return
        now = self.clock.now()
        if lane.dropped_until is None or lane.dropped_until <= now:
            text = (
                f"readings of {event.device} were dropped (gated is {MAX_QUEUED_INPUTS} inputs behind): "
                f"visits of the next {DROPPED_TAINT_SECONDS:g} s are not released"
            )
            alarm = alarm_message(
                self.topics, lane=event.lane, alarm="input_overflow", text=text, ts=now, device=event.device
            )
            batch.messages.append(alarm)
        # Every visit opened before this goes to a person: any of them may lack the lost evidence.
        lane.dropped_until = now + timedelta(seconds=DROPPED_TAINT_SECONDS)

    # -- deciding and committing ---------------------------------------------------------------
    def _decide(self, visit: Visit, batch: Batch, decided: list[tuple[Visit, list[Decision]]]) -> None:
        lane = self.lanes[visit.lane]
        numbers = {r.value for r in visit.of_source(Source.CONTAINER_NUMBER) if isinstance(r.value, str)}
        unavailable: list[Reason] = []
        now = self.clock.now()
        try:
            expected = self._expected(visit)
            holds = self._holds_for(numbers | (expected or frozenset()))
            status = self.hold_list_status()
            credential = self._credential_reasons(visit, now)
        except (StorageError, SQLAlchemyError) as error:
            # Holds, pre-advice or cards unreadable: decided all the same, and never a release.
            log.error("visit %s: holds, pre-advice or cards could not be read: %s", visit.id, error)
            expected, holds, status = None, {}, HoldListStatus(loaded=False, confirmed_at=None)
            credential = [Reason(STORAGE_FAILURE, "the hold list, pre-advice or card list could not be read")]
            unavailable.append(credential[0])
        offline = lane.offline_during(visit.id)
        if lane.readings_dropped_before(visit.opened_at):
            offline.add("readings dropped")
        decisions = decide(
            visit,
            holds,
            status,
            lane.policy,
            now=now,
            offline_devices=sorted(offline),
            expected_containers=expected,
            tampered_devices=lane.tampered_during(visit.id),
            extra_reasons=credential,
        )
        if not self.storage_ok or unavailable:
            decisions = _without_release(decisions)
        decided.append((visit, decisions))
        self.stats.decisions += len(decisions)

    def _decision_records(self, batch: Batch, visit: Visit, decisions: list[Decision]) -> None:
        """What a decided visit adds to the transaction: the closed visit, its decisions, their
        messages, hold-hit alarms and audit records."""
        now = self.clock.now()
        batch.visits.append(visit)
        for slot, decision in enumerate(decisions):
            batch.decisions.append((decision, slot))
            batch.messages.append(decision_message(self.topics, decision))
            batch.audit.append(
                AuditRecord(
                    actor="gated",
                    action="decision",
                    subject=visit.id,
                    detail={"container": decision.container, "outcome": str(decision.outcome)},
                    ts=now,
                )
            )
            scan_holds = [h for h in decision.holds if h.get("hold_type") in SCAN_HOLD_TYPES]
            if scan_holds and decision.container is not None:
                batch.messages.append(
                    Message(
                        self.topics.scan_request(visit.lane),
                        SCAN,
                        {
                            "id": new_id(),
                            "ts": rfc3339(now),
                            "lane": visit.lane,
                            "visit": visit.id,
                            "container": decision.container,
                            "reason": "selected for a non-intrusive scan by " + _hold_kinds(scan_holds),
                            "holds": [dict(h) for h in scan_holds],
                        },
                    )
                )
            for record in decision.holds:
                batch.messages.append(
                    alarm_message(
                        self.topics,
                        lane=visit.lane,
                        alarm="hold_hit",
                        text=f"held container {decision.container} at the gate",
                        ts=now,
                        visit=visit.id,
                        container=decision.container,
                        detail={"hold": record},
                    )
                )

    def _holds_for(self, numbers: set[str] | frozenset[str]) -> dict[str, list[dict[str, Any]]]:
        """The active holds of every number the truck is known to carry, read or pre-advised. Text
        that is no container number has none to find (and its read can never release)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for number in numbers:
            try:
                found[number] = [hold.to_json() for hold in self.holds.active_holds_for(number)]
            except ContainerNumberError:
                continue
        return found

    def _credential_reasons(self, visit: Visit, now: datetime) -> list[Reason]:
        """Why the driver's credential stops the truck, if it does: each card shown is checked
        against the cancelled list (which must be fresh); a lane that requires one needs one."""
        cards = [r.value for r in visit.of_source(Source.CARD) if isinstance(r.value, dict)]
        reasons: list[Reason] = []
        if not cards and self.lanes[visit.lane].require_credential:
            reasons.append(Reason(CREDENTIAL_MISSING, "no driver credential was shown at the lane"))
        for card in cards:
            if self.credentials is None:
                reasons.append(
                    Reason("CANCELLED_LIST_MISSING", "no cancelled-card list to check the card against")
                )
                continue
            reasons.extend(self.credentials.check(card, now, self.credential_max_age).as_reasons())
        return reasons

    def _expected(self, visit: Visit) -> frozenset[str] | None:
        """What the visit's tag(s) were pre-advised to carry; None without any pre-advice."""
        if self.preadvice is None:
            return None
        expected: set[str] | None = None
        for tag in {r.value for r in visit.of_source(Source.EPC) if isinstance(r.value, str)}:
            found = self.preadvice.expected_for(tag)
            if found is not None:
                expected = (expected or set()) | found
        return frozenset(expected) if expected is not None else None

    def _commit(self, batch: Batch, decided: list[tuple[Visit, list[Decision]]]) -> None:
        if self._pending or self._pending_decided:
            _merge(self._pending, batch)
            batch = self._pending
            decided = self._pending_decided + decided
        if not batch and not decided:
            return
        if not self.storage_ok:
            # Decided before storage failed, but not stored: no release came of it, none will.
            decided = [(visit, _without_release(decisions)) for visit, decisions in decided]
        attempt = Batch(
            readings=list(batch.readings),
            visits=list(batch.visits),
            decisions=list(batch.decisions),
            audit=list(batch.audit),
            messages=list(batch.messages),
        )
        for visit, decisions in decided:
            self._decision_records(attempt, visit, decisions)
        if not self.storage_ok and self.clock.monotonic() < self._retry_at:
            self._pending, self._pending_decided = batch, decided
            return
        try:
            self.store.write(attempt)
        except StorageError as error:
            self.stats.storage_failures += 1
            self._pending, self._pending_decided = batch, decided
            if self.storage_ok:
                log.error(
                    "storage failed, lanes stop releasing until it works again: %s", printable(str(error))
                )
                self.storage_ok = False
                self._tell_storage(False, str(error))
            self._retry_at = self.clock.monotonic() + STORAGE_RETRY_SECONDS
            return
        self._pending, self._pending_decided = Batch(), []
        if not self.storage_ok:
            log.warning("storage works again")
            self.storage_ok = True
            self._tell_storage(True, "storage works again")
            self._pending.messages.extend(
                self._lane_status(lane.id) for lane in self.config.lanes if lane.id not in self.standby
            )
        self.on_stored()
        stored_at = self.clock.now()
        for visit, decisions in decided:
            last = max((r.ts for r in visit.readings), default=None)
            for decision in decisions:
                if last is not None:
                    self.metrics.decision(
                        decision.lane, str(decision.outcome), (stored_at - last).total_seconds()
                    )
                log.info(
                    "decision %s lane=%s visit=%s container=%s outcome=%s",
                    decision.id,
                    decision.lane,
                    decision.visit,
                    decision.container,
                    decision.outcome,
                )
        for visit, decisions in decided:
            for listener in self.listeners:
                try:
                    listener(visit, decisions)
                except Exception:  # a listener's bug must not stop the lane
                    log.exception("decision listener failed")

    def _on_override(self, event: _Override) -> None:
        try:
            made = self._override(event)
        except GatedError as error:
            event.future.set_exception(error)
            return
        except Exception as error:
            log.exception("override of %s failed", event.decision)
            event.future.set_exception(OverrideRefused(f"the override failed: {error!r}"))
            return
        visit, decision = made
        for listener in self.listeners:
            try:
                listener(visit, [decision])
            except Exception:  # a listener's bug must not stop the lane
                log.exception("decision listener failed")
        event.future.set_result(decision)

    def _override(self, event: _Override) -> tuple[Visit, Decision]:
        if event.outcome is None and not event.reason.strip():
            event = replace(event, reason="number entered at the console")
        if not event.reason.strip():
            raise OverrideRefused("an override needs a reason")
        row = self.store.decision_row(event.decision)
        if row is None:
            raise OverrideRefused(f"no decision {event.decision[:40]!r}")
        latest = self.store.latest_decision(row.visit, row.slot)
        if latest is not None and latest.id != row.id:
            raise OverrideRefused(
                f"decision {row.id} was overridden already by {latest.id}: override that one"
            )
        visit = self.store.visit(row.visit)
        if visit is None or row.lane not in self.lanes:
            raise OverrideRefused(f"the visit of decision {row.id} is not on a lane of this node")
        now = self.clock.now()
        if event.outcome is None:
            assert event.number is not None
            return self._entered(event, row, visit, now)
        holds = self._holds_for(frozenset({row.container})) if row.container else {}
        active = holds.get(row.container, []) if row.container else []
        if event.outcome is Outcome.RELEASE:
            status = self.hold_list_status()
            if row.container is None:
                raise OverrideRefused(
                    "no container number: enter the number the camera could not read instead"
                )
            if active:
                raise OverrideRefused(f"{row.container} is on hold: only the agency's release lifts a hold")
            if not status.loaded or status.out_of_step or not self.storage_ok:
                raise OverrideRefused(
                    "the hold list is not loaded and in step (or storage fails): no release"
                )
        original = json.loads(row.body)
        decision = Decision(
            lane=row.lane,
            visit=row.visit,
            container=row.container,
            outcome=event.outcome,
            reasons=(
                Reason(
                    OPERATOR_OVERRIDE,
                    f"{event.actor} overrode {row.outcome} (decision {row.id}): {event.reason.strip()}",
                ),
            ),
            holds=tuple(active),
            inputs=tuple(original.get("inputs", [])),
            decided_at=now,
        )
        audit = AuditRecord(
            actor=event.actor,
            action="override",
            subject=row.visit,
            detail={
                "decision": decision.id,
                "overrides": row.id,
                "from": row.outcome,
                "to": str(event.outcome),
                "container": row.container,
                "reason": event.reason.strip(),
            },
            ts=now,
        )
        try:
            self.store.write(
                Batch(
                    overrides=[(decision, row.slot, row.revision + 1)],
                    messages=[decision_message(self.topics, decision)],
                    audit=[audit],
                )
            )
        except StorageError as error:
            raise OverrideRefused(f"the override could not be stored: {error}") from None
        self.on_stored()
        log.warning(
            "decision %s on %s overridden by %s: %s -> %s (%s)",
            row.id,
            row.lane,
            shown(event.actor),
            row.outcome,
            event.outcome,
            shown(event.reason),
        )
        return visit, decision

    def _entered(self, event: _Override, row: Any, visit: Visit, now: datetime) -> tuple[Visit, Decision]:
        """Decide ``visit`` again with the number an operator entered for ``row``'s box."""
        assert event.number is not None
        try:
            number = str(ContainerNumber.parse(event.number))
        except ContainerNumberError as error:
            raise OverrideRefused(f"not a container number: {error}") from None
        if row.container is not None:
            raise OverrideRefused(f"decision {row.id} has its number ({row.container}): override it instead")
        if row.lane not in self.lanes:
            raise OverrideRefused(f"lane {row.lane} is not on this node")
        entered = Reading(
            row.lane,
            Kind.OCR,
            "console",
            Source.CONTAINER_NUMBER,
            number,
            now,
            Quality.GOOD,
            confidence=1.0,
            visit=visit.id,
        )
        # What the policy cannot see again (devices offline, tamper, a refused credential at the
        # time) is carried over from the first decision; the rest it works out anew.
        original = json.loads(row.body)
        carried = tuple(
            Reason(str(r.get("code")), str(r.get("text")))
            for r in original.get("reasons", [])
            if isinstance(r, dict) and r.get("code") not in RECOMPUTED
        )
        again = replace(visit, readings=(*visit.readings, entered))
        decisions = decide(
            again,
            self._holds_for({number}),
            self.hold_list_status(),
            self.lanes[row.lane].policy,
            now=now,
            expected_containers=self._expected(again),
            extra_reasons=carried,
        )
        decision = next((d for d in decisions if d.container == number), decisions[0])
        decision = replace(
            decision,
            reasons=(
                *decision.reasons,
                Reason(OPERATOR_ENTRY, f"{event.actor} entered {number}: {event.reason.strip()}"),
            ),
        )
        audit = AuditRecord(
            actor=event.actor,
            action="number_entered",
            subject=row.visit,
            detail={
                "decision": decision.id,
                "replaces": row.id,
                "container": number,
                "outcome": str(decision.outcome),
                "note": event.reason.strip(),
                "reading": entered.id,
            },
            ts=now,
        )
        try:
            self.store.write(
                Batch(
                    readings=[entered],
                    overrides=[(decision, row.slot, row.revision + 1)],
                    messages=[reading_message(self.topics, entered), decision_message(self.topics, decision)],
                    audit=[audit],
                )
            )
        except StorageError as error:
            raise OverrideRefused(f"the entry could not be stored: {error}") from None
        self.on_stored()
        log.warning(
            "decision %s on %s: %s entered %s, decided again: %s",
            row.id,
            row.lane,
            shown(event.actor),
            number,
            decision.outcome,
        )
        return again, decision

    def _tell_storage(self, ok: bool, detail: str) -> None:
        for listener in self.storage_listeners:
            try:
                listener(ok, detail)
            except Exception:  # a listener's bug must not stop the lane
                log.exception("storage listener failed")


def _hold_kinds(holds: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({f"{h.get('agency')} {h.get('hold_type')}" for h in holds}))


def _without_release(decisions: list[Decision]) -> list[Decision]:
    """The decisions with every RELEASE turned into MANUAL_REVIEW: storage has failed."""
    return [
        replace(
            decision,
            outcome=Outcome.MANUAL_REVIEW,
            reasons=(Reason(STORAGE_FAILURE, "decisions could not be stored: no automatic release"),),
        )
        if decision.outcome is Outcome.RELEASE
        else decision
        for decision in decisions
    ]


def _merge(into: Batch, other: Batch) -> None:
    into.readings.extend(other.readings)
    into.visits.extend(other.visits)
    into.decisions.extend(other.decisions)
    into.audit.extend(other.audit)
    into.messages.extend(other.messages)
