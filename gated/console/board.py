"""What the console shows live: each lane's status, devices, the visit filling up and its last
decision, and the exception queue (the decisions a person has to look at).

The board listens to the pipeline (visits opened, decisions stored) and reads the rest from it
when asked; ``version`` goes up on every change, so the page's event stream sends a new snapshot
only when there is one. Visits are immutable, so reading the open one from another thread is safe.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Any, Protocol

from gated.clock import rfc3339
from gated.model import Decision, DeviceState, Outcome, Reading, Source, Visit

QUEUE_KEPT = 200
"""Exception decisions kept for the queue (older ones are in the database: container search)."""
ATTENTION = frozenset({Outcome.MANUAL_REVIEW, Outcome.SECONDARY_INSPECTION, Outcome.HOLD})


class LaneSource(Protocol):
    """The parts of the pipeline the board reads."""

    def lane_ids(self) -> list[str]: ...

    def lane_status(self, lane: str) -> dict[str, Any]: ...

    def device_states(self, lane: str) -> dict[str, tuple[str, DeviceState, str]]: ...

    def open_visit(self, lane: str) -> Visit | None: ...


class BarrierLike(Protocol):
    """A barrier PLC's state as its driver reads it (``drivers.barrier_modbus.BarrierState``)."""

    @property
    def state(self) -> str: ...
    @property
    def permit(self) -> bool: ...
    @property
    def online(self) -> bool: ...
    @property
    def vehicles_passed(self) -> int: ...
    @property
    def last_cause(self) -> str: ...


class LaneBoard:
    def __init__(self, source: LaneSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._last: dict[str, dict[str, Any]] = {}
        self._queue: deque[dict[str, Any]] = deque(maxlen=QUEUE_KEPT)
        self._barriers: dict[str, dict[str, Any]] = {}
        self.version = 0

    # -- pipeline listeners ----------------------------------------------------------------------
    def visit_opened(self, _visit: Visit) -> None:
        self._changed()

    def decided(self, visit: Visit, decisions: list[Decision]) -> None:
        with self._lock:
            for decision in decisions:
                shown = {**_decision(decision), **_evidence_of(visit, decision)}
                self._last[visit.lane] = shown
                # A later decision on the same box (an override) settles the earlier one's entry.
                for old in [
                    q
                    for q in self._queue
                    if q["visit"] == decision.visit and q["container"] == decision.container
                ]:
                    self._queue.remove(old)
                if decision.outcome in ATTENTION:
                    self._queue.appendleft(shown)
            self.version += 1

    def scanned(self, scan: Reading) -> None:
        """A suspect NII scan (stored already): on the queue with its image."""
        value = scan.value if isinstance(scan.value, dict) else {}
        item = {
            "id": scan.id,
            "lane": scan.lane,
            "visit": scan.visit,
            "container": value.get("container"),
            "outcome": "NII_SUSPECT",
            "reasons": [{"code": "NII_SUSPECT", "text": f"NII scan {value.get('scan_id')}: suspect"}],
            "decided_at": rfc3339(scan.ts),
            "evidence": [{"sha256": e.sha256, "media_type": e.media_type} for e in scan.evidence],
        }
        with self._lock:
            self._queue.appendleft(item)
            self.version += 1

    def barrier(self, lane: str, state: BarrierLike) -> None:
        """What the lane's barrier PLC shows (its driver reports every poll; changes count)."""
        shown = {
            "state": state.state,
            "permit": state.permit,
            "online": state.online,
            "vehicles_passed": state.vehicles_passed,
            "last_cause": state.last_cause,
        }
        with self._lock:
            if self._barriers.get(lane) != shown:
                self._barriers[lane] = shown
                self.version += 1

    def resolve(self, decision_id: str) -> None:
        """An operator closed the exception of ``decision_id`` (a resolution code): off the queue."""
        with self._lock:
            for item in [q for q in self._queue if q["id"] == decision_id]:
                self._queue.remove(item)
            self.version += 1

    def _changed(self) -> None:
        with self._lock:
            self.version += 1

    # -- what the page gets ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        lanes = []
        with self._lock:
            last = dict(self._last)
            queue = list(self._queue)
            barriers = dict(self._barriers)
        standby: set[str] = getattr(self.source, "standby", set())
        for lane in self.source.lane_ids():
            status = self.source.lane_status(lane)
            visit = self.source.open_visit(lane)
            # A lane another node drives (leases): its tile says so, not this node's idle view of it.
            elsewhere = lane in standby
            lanes.append(
                {
                    "id": lane,
                    "state": "standby" if elsewhere else status.get("state"),
                    "reason": "driven by another node (this one takes over if it fails)"
                    if elsewhere
                    else status.get("reason"),
                    "devices": [
                        {"id": device, "kind": kind, "state": str(state), "detail": detail}
                        for device, (kind, state, detail) in self.source.device_states(lane).items()
                    ],
                    "visit": None if visit is None else _visit(visit),
                    "last_decision": last.get(lane),
                    "barrier": barriers.get(lane),
                }
            )
        return {"lanes": lanes, "queue": queue}


def _visit(visit: Visit) -> dict[str, Any]:
    return {
        "id": visit.id,
        "opened_at": rfc3339(visit.opened_at),
        "trigger": visit.trigger,
        "readings": [
            {
                "source": str(reading.source),
                "device": reading.device,
                "value": reading.value if isinstance(reading.value, str | int | float | bool) else None,
                "quality": str(reading.quality),
                "ts": rfc3339(reading.ts),
            }
            for reading in visit.readings[-30:]
        ],
    }


def _evidence_of(visit: Visit, decision: Decision) -> dict[str, Any]:
    """What a person looks at beside a decision: the crops of every view that read the box (or
    tried to), the plate's, and the portal monitor's count profile of the pass."""
    crops = [
        {"sha256": e.sha256, "media_type": e.media_type, "source": str(r.source), "device": r.device}
        for r in visit.readings
        if r.source in (Source.CONTAINER_NUMBER, Source.LICENCE_PLATE)
        and (
            decision.container is None
            or r.value in (None, decision.container)
            or r.source == Source.LICENCE_PLATE
        )
        for e in r.evidence
    ]
    found: dict[str, Any] = {"evidence": crops[:12]}
    profiles = visit.of_source(Source.RPM_PROFILE)
    backgrounds = visit.of_source(Source.GAMMA_BACKGROUND_CPS)
    if profiles and isinstance(profiles[-1].value, dict):
        profile = profiles[-1].value
        background = backgrounds[-1].value if backgrounds else None
        found["rpm_profile"] = {
            "gamma": [v for v in profile.get("gamma", []) if isinstance(v, int | float)][:2000],
            "interval_s": profile.get("interval_s"),
            "n_sigma": profile.get("n_sigma"),
            "background_cps": background if isinstance(background, int | float) else None,
        }
    return found


def _decision(decision: Decision) -> dict[str, Any]:
    body = decision.body()
    decided_at = body.get("decided_at")
    return {
        "id": decision.id,
        "lane": decision.lane,
        "visit": decision.visit,
        "container": decision.container,
        "outcome": str(decision.outcome),
        "reasons": body.get("reasons", []),
        "decided_at": decided_at if isinstance(decided_at, str) else rfc3339(datetime.now().astimezone()),
    }
