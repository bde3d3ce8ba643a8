"""The barrier side of a decision: a permit to open, granted as a lease, only for a truck whose
every container was RELEASEd and whose decisions are stored.

The PLC closes by itself when the heartbeat stops, so the daemon dying, hanging or losing the
network leaves the barrier closed. ``healthy`` stops the heartbeat as soon as the pipeline thread
is gone or storage has failed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from drivers.barrier_modbus import BarrierState, ModbusBarrier
from drivers.printer_escpos import EscposPrinter, GatePass, instructions_for, render_pass
from gated.clock import Clock
from gated.errors import GatedError
from gated.model import Decision, DeviceState, Kind, Outcome, Quality, Reading, Source, Visit
from gated.pipeline import Pipeline
from gated.policy import may_open, most_severe

log = logging.getLogger(__name__)


def permit_token(visit_id: str) -> int:
    """A 16-bit token the PLC latches for the visit a permit was granted to."""
    return int(visit_id[:4], 16) if len(visit_id) >= 4 else 0


class GateControl:
    def __init__(
        self,
        pipeline: Pipeline,
        barriers: dict[str, tuple[ModbusBarrier, float]],
        clock: Clock,
        alive: Callable[[], bool],
    ) -> None:
        self.pipeline = pipeline
        self.barriers = barriers  # lane -> (barrier, lease seconds)
        self.clock = clock
        self.alive = alive
        for lane, (barrier, _) in barriers.items():
            barrier.healthy = self.healthy
            barrier.on_state = self._reporter(lane, barrier.device)
        pipeline.listeners.append(self.on_decisions)
        pipeline.storage_listeners.append(self.on_storage)

    def healthy(self) -> bool:
        return self.alive() and self.pipeline.storage_ok

    def start(self) -> None:
        for barrier, _ in self.barriers.values():
            barrier.start()

    def stop(self) -> None:
        for barrier, _ in self.barriers.values():
            barrier.stop()

    def on_decisions(self, visit: Visit, decisions: list[Decision]) -> None:
        """Called after the decisions are stored: only then may the barrier open."""
        entry = self.barriers.get(visit.lane)
        if entry is None:
            return
        barrier, lease = entry
        if may_open(decisions) and self.pipeline.storage_ok:
            log.info("lane %s: permit to open for visit %s (lease %.0f s)", visit.lane, visit.id, lease)
            barrier.grant(permit_token(visit.id), lease)
        else:
            barrier.revoke(f"visit {visit.id}: {', '.join(sorted({str(d.outcome) for d in decisions}))}")

    def on_storage(self, ok: bool, _detail: str) -> None:
        if not ok:
            for barrier, _ in self.barriers.values():
                barrier.revoke("storage failure")

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
                        "barrier_state",
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
    ) -> None:
        self.pipeline = pipeline
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
            try:
                self.printer.print_pass(item)
                self._status(True, "printed")
            except GatedError as error:
                log.error("lane %s: gate pass not printed: %s", self.lane, error)
                self._status(False, str(error))
