"""The barrier side of a decision: a permit to open, granted as a lease, only for a truck whose
every container was RELEASEd and whose decisions are stored.

The PLC closes by itself when the heartbeat stops, so the daemon dying, hanging or losing the
network leaves the barrier closed. ``healthy`` stops the heartbeat as soon as the pipeline thread
is gone or storage has failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drivers.barrier_modbus import BarrierState, ModbusBarrier
from gated.clock import Clock
from gated.model import Decision, DeviceState, Kind, Quality, Reading, Visit
from gated.pipeline import Pipeline
from gated.policy import may_open

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
