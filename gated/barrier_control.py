"""The barrier side of a decision: a permit to open, granted as a lease, only for a truck whose
every container was RELEASEd and whose decisions are stored.

A permit belongs to one truck. It is withdrawn the moment another visit opens on the lane, and a
RELEASE opens the barrier only while it is still about the lane's newest truck and that truck was
seen moments ago (``release_window_seconds``): a truck that did not drive through, or a decision
that came late, must not leave an open barrier for whoever comes next. Leases are seconds long.

The PLC closes by itself when the heartbeat stops, so the daemon dying, hanging or losing the
network leaves the barrier closed. ``healthy`` stops the heartbeat as soon as the pipeline thread
is gone or storage has failed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from drivers.barrier_modbus import BarrierState, ModbusBarrier
from drivers.printer_escpos import EscposPrinter, GatePass, instructions_for, render_pass
from gated.clock import Clock
from gated.errors import GatedError
from gated.model import Decision, DeviceState, Kind, Outcome, Quality, Reading, Source, Visit
from gated.pipeline import Pipeline
from gated.policy import may_open, most_severe

log = logging.getLogger(__name__)

DEFAULT_RELEASE_WINDOW_SECONDS = 5.0  # BarrierModbusDevice.release_window_seconds' default

LaneBarrierSpec = tuple[ModbusBarrier, float] | tuple[ModbusBarrier, float, float]
"""(barrier, lease seconds) or (barrier, lease seconds, release window seconds)."""


def permit_token(visit_id: str) -> int:
    """A 16-bit token the PLC latches for the visit a permit was granted to."""
    return int(visit_id[:4], 16) if len(visit_id) >= 4 else 0


@dataclass(frozen=True, slots=True)
class LaneBarrier:
    """A lane's barrier and how its permits are granted."""

    barrier: ModbusBarrier
    lease_seconds: float
    release_window_seconds: float = DEFAULT_RELEASE_WINDOW_SECONDS


def _lane_barrier(spec: LaneBarrierSpec) -> LaneBarrier:
    if len(spec) == 2:
        return LaneBarrier(spec[0], spec[1])
    return LaneBarrier(spec[0], spec[1], spec[2])


class BarrierControl:
    def __init__(
        self,
        pipeline: Pipeline,
        barriers: Mapping[str, LaneBarrierSpec],
        clock: Clock,
        alive: Callable[[], bool],
        lane_ok: Callable[[str], bool] = lambda _lane: True,
    ) -> None:
        self.pipeline = pipeline
        self.lanes = {lane: _lane_barrier(spec) for lane, spec in barriers.items()}
        self.clock = clock
        self.alive = alive
        # lane -> id of the newest visit opened there, so a late RELEASE of an older one is known.
        self._newest: dict[str, str] = {}
        self.lane_ok = lane_ok
        for lane, entry in self.lanes.items():
            # A heartbeat only from the node that drives the lane now (its lease: gated.ownership).
            entry.barrier.healthy = partial(self._lane_healthy, lane)
            entry.barrier.on_state = self._reporter(lane, entry.barrier.device)
        pipeline.listeners.append(self.on_decisions)
        pipeline.storage_listeners.append(self.on_storage)
        pipeline.visit_listeners.append(self.on_visit_opened)

    def healthy(self) -> bool:
        return self.alive() and self.pipeline.storage_ok

    def _lane_healthy(self, lane: str) -> bool:
        return self.healthy() and self.lane_ok(lane)

    def start(self) -> None:
        for entry in self.lanes.values():
            entry.barrier.start()

    def stop(self) -> None:
        for entry in self.lanes.values():
            entry.barrier.stop()

    def on_visit_opened(self, visit: Visit) -> None:
        """Another truck is at the lane: the previous truck's permit, used or not, ends now.

        The correlator opens a visit on a tag, a camera read or the portal's occupancy, so a truck
        that carries no tag still withdraws the permit as it enters the portal."""
        self._newest[visit.lane] = visit.id
        entry = self.lanes.get(visit.lane)
        if entry is not None:
            entry.barrier.revoke(f"visit {visit.id} opened: a permit belongs to one truck")

    def on_decisions(self, visit: Visit, decisions: list[Decision]) -> None:
        """Called after the decisions are stored: only then may the barrier open."""
        entry = self.lanes.get(visit.lane)
        if entry is None:
            return
        if not may_open(decisions):
            outcomes = ", ".join(sorted({str(d.outcome) for d in decisions}))
            entry.barrier.revoke(f"visit {visit.id}: {outcomes}")
            return
        refusal = self._refusal(visit, entry)
        if refusal is not None:
            log.warning(
                "lane %s: RELEASE of visit %s does not open the barrier: %s", visit.lane, visit.id, refusal
            )
            entry.barrier.revoke(f"visit {visit.id}: RELEASE refused: {refusal}")
            return
        log.info(
            "lane %s: permit to open for visit %s (lease %.0f s)", visit.lane, visit.id, entry.lease_seconds
        )
        entry.barrier.grant(permit_token(visit.id), entry.lease_seconds)

    def _refusal(self, visit: Visit, entry: LaneBarrier) -> str | None:
        """Why a RELEASE must not open the barrier now, or None when it may."""
        if not self.pipeline.storage_ok:
            return "storage is failing"
        current = self.pipeline.open_visit(visit.lane)
        if current is not None and current.id != visit.id:
            return f"visit {current.id} is open on the lane: the permit would be the next truck's"
        newest = self._newest.get(visit.lane)
        if newest is not None and newest != visit.id:
            return f"visit {newest} opened on the lane after it"
        if not visit.readings:
            return "the visit has no readings"
        age = (self.clock.now() - max(reading.ts for reading in visit.readings)).total_seconds()
        if age > entry.release_window_seconds:
            return (
                f"its newest reading is {age:.1f} s old (window {entry.release_window_seconds:g} s): "
                "the truck may have gone"
            )
        return None

    def on_storage(self, ok: bool, _detail: str) -> None:
        if not ok:
            for entry in self.lanes.values():
                entry.barrier.revoke("storage failure")

    def _reporter(self, lane: str, device: str) -> Callable[[BarrierState], None]:
        last_online: list[bool] = []

        def report(state: BarrierState) -> None:
            if not last_online or last_online[-1] != state.online:
                last_online[:] = [state.online]
                self.pipeline.device_status(
                    lane,
                    device,
                    DeviceState.ONLINE if state.online else DeviceState.OFFLINE,
                    "connected" if state.online else "PLC not answering",
                )
            if state.online:
                self.pipeline.reading(
                    Reading(
                        lane,
                        Kind.BARRIER,
                        device,
                        Source.BARRIER_STATE,
                        {
                            "state": state.state,
                            "permit": state.permit,
                            "token": state.token,
                            "vehicles_passed": state.vehicles_passed,
                            "last_cause": state.last_cause,
                        },
                        self.clock.now(),
                        Quality.BAD if state.state == "fault" else Quality.GOOD,
                    )
                )

        return report


class PassPrinter:
    """Prints a gate pass for every decided truck on the lane's ESC/POS printer.

    Printing is network I/O that may hang for seconds, so it runs on its own thread: the
    pipeline hands over the pass and goes on deciding. A printer that fails is reported offline
    and the pass is logged; the decision stands whether or not paper came out."""

    PROBE_SECONDS = 30.0

    def __init__(
        self,
        pipeline: Pipeline,
        printer: EscposPrinter,
        clock: Clock,
        places: dict[Outcome, str],
        lane_ok: Callable[[str], bool] = lambda _lane: True,
    ) -> None:
        self.pipeline = pipeline
        self.lane_ok = lane_ok
        self.printer = printer
        self.clock = clock
        self.places = places
        self.lane = printer.lane
        self._queue: queue.Queue[GatePass | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name=f"printer-{self.lane}", daemon=True)
        self._online: bool | None = None
        pipeline.listeners.append(self.on_decisions)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(10)

    def on_decisions(self, visit: Visit, decisions: list[Decision]) -> None:
        if visit.lane != self.lane or not decisions:
            return
        tags = [r.value for r in visit.of_source(Source.EPC) if isinstance(r.value, str)]
        reasons = [reason for decision in decisions for reason in decision.reasons]
        gate_pass = render_pass(
            decisions,
            lane=self.lane,
            truck=tags[0] if tags else None,
            printed_at=self.clock.now(),
            instructions=instructions_for(most_severe(decisions), reasons, self.places),
        )
        try:
            self._queue.put_nowait(gate_pass)
        except queue.Full:
            log.error("lane %s: printer queue full, gate pass for visit %s not printed", self.lane, visit.id)

    def _status(self, online: bool, detail: str) -> None:
        if online != self._online:
            self._online = online
            state = DeviceState.ONLINE if online else DeviceState.OFFLINE
            self.pipeline.device_status(self.lane, self.printer.device, state, detail)

    def _run(self) -> None:
        self._status(self.printer.check(), "probed")
        while True:
            try:
                item = self._queue.get(timeout=self.PROBE_SECONDS)
            except queue.Empty:
                self._status(self.printer.check(), "probed")
                continue
            if item is None:
                return
            if not self.lane_ok(self.lane):
                # The lane went to another node meanwhile (this one was paused): it prints, not us.
                log.warning("lane %s: gate pass not printed: this node no longer drives the lane", self.lane)
                continue
            try:
                self.printer.print_pass(item)
                self._status(True, "printed")
            except GatedError as error:
                log.error("lane %s: gate pass not printed: %s", self.lane, error)
                self._status(False, str(error))
