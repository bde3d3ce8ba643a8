"""A permit belongs to one truck: the real pipeline (real SQLite, real hold list) decides, and
BarrierControl drives the barrier PLC simulator over real Modbus TCP.

A released truck that does not drive through must not leave its permit to the next truck; a
RELEASE that comes after its truck has gone, or while another truck is at the lane, opens nothing;
and a normal RELEASE still opens, for a lease of seconds. Time in the pipeline and in the lease is
a manual clock; what the PLC holds is read from the simulator itself."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from gated.barrier_control import BarrierControl, permit_token
from gated.clock import ManualClock
from gated.config import BarrierModbusDevice, ConfigError, validate
from gated.db import open_engine
from gated.devices import build_barrier
from gated.evidence import EvidenceStore
from gated.holds import HoldStore
from gated.iso6346 import check_digit
from gated.model import Decision, DeviceState, Kind, Outcome, Reading, Source, Visit
from gated.pipeline import Pipeline
from gated.settings import DriverContext
from gated.store import Store
from ocr.pool import OcrPool
from simulators.barrier_plc import CAUSE_PERMIT_WITHDRAWN, CLOSED, OPEN, OPENING, BarrierPlcSimulator
from tests.test_barrier import stays, wait_until

LANE = "lane-1"
CLEAN_BOX = f"MSKU{200001:06d}{check_digit('MSKU200001')}"
HELD_BOX = f"MSKU{200002:06d}{check_digit('MSKU200002')}"
SETTLE = 0.5  # the lane's settle time: a complete visit is decided this long after its last reading


def config_dict(tmp_path: Path, plc_port: int, **barrier: object) -> dict[str, object]:
    return {
        "site": "permit",
        "holds": {"max_age_seconds": 3600},
        "storage": {"database": str(tmp_path / "g.db")},
        "lanes": [
            {
                "id": LANE,
                "require": ["ocr", "rpm"],
                "settle_seconds": SETTLE,
                "devices": [
                    {"id": "ocr-1", "driver": "ocr-camera", "host": "127.0.0.1", "port": 9},
                    {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "x.toml"},
                    {
                        "id": "barrier-1",
                        "driver": "barrier-modbus",
                        "host": "127.0.0.1",
                        "port": plc_port,
                        **barrier,
                    },
                ],
            }
        ],
    }


@dataclass
class Gate:
    sim: BarrierPlcSimulator
    clock: ManualClock
    pipeline: Pipeline
    barriers: BarrierControl
    device: BarrierModbusDevice
    decided: list[tuple[Visit, list[Decision]]]
    decided_lock: threading.Lock

    def openings_since(self, since: float) -> int:
        return sum(1 for moment, state in self.sim.history if moment > since and state == OPENING)

    def outcomes(self) -> list[list[Outcome]]:
        with self.decided_lock:
            return [[d.outcome for d in decisions] for _, decisions in self.decided]

    def last_visit(self) -> Visit:
        with self.decided_lock:
            return self.decided[-1][0]

    def reading(self, source: Source, value: str | int | bool, *, age: float = 0.0) -> None:
        """One reading of the lane's camera or portal, stamped ``age`` seconds ago."""
        camera = source in (Source.CONTAINER_NUMBER, Source.PASSAGE_END)
        kind, device = (Kind.OCR, "ocr-1") if camera else (Kind.RPM, "rpm-1")
        confidence = 0.97 if source == Source.CONTAINER_NUMBER else None
        stamped = self.clock.now() - timedelta(seconds=age)
        self.pipeline.reading(Reading(LANE, kind, device, source, value, stamped, confidence=confidence))

    def truck(self, box: str, *, backlog: float = 0.0) -> None:
        """A truck's readings; ``backlog`` seconds pass before the pipeline takes them (load)."""
        self.reading(Source.CONTAINER_NUMBER, box)
        self.reading(Source.PASSAGE_END, 1)
        self.reading(Source.SCREENING, "clear")
        self.clock.advance(backlog)
        self.pipeline.step()

    def decide(self) -> None:
        """Let the open visit settle and be decided."""
        self.clock.advance(SETTLE + 0.5)
        self.pipeline.step()


@contextmanager
def gate(tmp_path: Path, caplog: pytest.LogCaptureFixture, **barrier: object) -> Iterator[Gate]:
    caplog.set_level(logging.INFO, logger="gated.barrier_control")
    clock = ManualClock()
    with BarrierPlcSimulator() as sim:
        config = validate(config_dict(tmp_path, sim.port, **barrier))
        [device] = [d for d in config.lanes[0].devices if isinstance(d, BarrierModbusDevice)]
        engine = open_engine(tmp_path / "g.db")
        holds = HoldStore(engine, clock)
        hold_list = tmp_path / "holds.csv"  # the operator's import: the list is loaded and fresh
        hold_list.write_text(
            f"container,agency,hold_type,code\n{HELD_BOX},CBP,customs,1H\n", encoding="utf-8"
        )
        holds.import_holds(hold_list)
        pipeline = Pipeline(config, Store(engine, site="permit", node="n", clock=clock), holds, clock)
        decided: list[tuple[Visit, list[Decision]]] = []
        decided_lock = threading.Lock()

        def record(visit: Visit, decisions: list[Decision]) -> None:
            with decided_lock:
                decided.append((visit, decisions))

        pipeline.listeners.append(record)
        # As the daemon builds it, with the lane's settings from the validated config.
        control = BarrierControl(
            pipeline,
            {
                LANE: (
                    build_barrier(
                        LANE, device, DriverContext(clock, EvidenceStore(tmp_path / "ev"), OcrPool)
                    ),
                    device.lease_seconds,
                    device.release_window_seconds,
                )
            },
            clock,
            alive=lambda: True,
        )
        for name in ("ocr-1", "rpm-1"):
            pipeline.device_status(LANE, name, DeviceState.ONLINE, "connected")
        control.start()
        try:
            barrier = control.lanes[LANE].barrier
            wait_until("barrier online", lambda: barrier.state is not None and barrier.state.online)
            wait_until("heartbeats", lambda: len(sim.heartbeats) >= 2)
            pipeline.step()  # the barrier's online status, before any truck
            yield Gate(sim, clock, pipeline, control, device, decided, decided_lock)
        finally:
            control.stop()
            engine.dispose()


def released(g: Gate) -> Visit:
    """Truck A, clean, decided RELEASE; its permit is on the PLC and the barrier is open."""
    g.truck(CLEAN_BOX)
    g.decide()
    assert g.outcomes() == [[Outcome.RELEASE]]
    visit = g.last_visit()
    wait_until("open", lambda: g.sim.state() == OPEN)
    assert g.sim.permit() == 1 and g.sim.token() == permit_token(visit.id)
    return visit


# -- (a) the next truck withdraws an unused permit -------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("source", "value"),
    [(Source.OCCUPANCY, True), (Source.CONTAINER_NUMBER, HELD_BOX)],
    ids=["portal-occupancy", "camera-read"],
)
def test_the_next_truck_withdraws_an_unused_permit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, source: Source, value: str | bool
) -> None:
    with gate(tmp_path, caplog) as g:
        released(g)  # truck A is released but does not drive through
        g.clock.advance(3.0)
        since = time.monotonic()
        g.reading(source, value)  # truck B's first sign at the lane
        g.pipeline.step()
        wait_until("permit withdrawn", lambda: g.sim.permit() == 0, timeout=5.0)
        assert g.outcomes() == [[Outcome.RELEASE]]  # B is not decided yet
        wait_until("closed", lambda: g.sim.state() == CLOSED)
        assert g.sim.last_cause() == CAUSE_PERMIT_WITHDRAWN

        g.truck(HELD_BOX)
        g.decide()
        assert g.outcomes() == [[Outcome.RELEASE], [Outcome.HOLD]]
        assert stays(lambda: g.sim.permit() == 0 and g.sim.state() == CLOSED, 0.5)

        g.sim.simulate_vehicle_passed()  # B drives at the barrier anyway
        assert stays(lambda: g.sim.permit() == 0 and g.sim.state() == CLOSED, 0.5)
        assert g.sim.vehicles_passed() == 1
        assert g.sim.last_cause() == CAUSE_PERMIT_WITHDRAWN  # not "vehicle passed" on a permit
        assert g.openings_since(since) == 0


# -- (b) a RELEASE after the truck has gone ---------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backlog", [4.5, 83.0], ids=["just-past-the-window", "84-s-late"])
def test_a_release_decided_after_the_truck_left_grants_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backlog: float
) -> None:
    with gate(tmp_path, caplog) as g:
        since = time.monotonic()
        g.truck(CLEAN_BOX, backlog=backlog)  # the pipeline takes the readings only now
        g.decide()  # newest reading: backlog + 1 s old, past the 5 s window
        assert g.outcomes() == [[Outcome.RELEASE]]
        assert stays(lambda: g.sim.permit() == 0 and g.sim.state() == CLOSED, 1.0)
        assert g.openings_since(since) == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("does not open the barrier" in w and "s old" in w for w in warnings), warnings


# -- (c) a RELEASE while another truck is at the lane -----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("next_truck_decided", [False, True], ids=["next-truck-open", "next-truck-decided"])
def test_a_release_while_another_visit_is_newer_grants_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, next_truck_decided: bool
) -> None:
    """A's RELEASE reaches the gate late (as under load): B's visit opened meanwhile."""
    with gate(tmp_path, caplog) as g:
        late: list[tuple[Visit, list[Decision]]] = []
        g.pipeline.listeners.remove(g.barriers.on_decisions)
        g.pipeline.listeners.append(lambda visit, decisions: late.append((visit, decisions)))
        since = time.monotonic()
        g.truck(CLEAN_BOX)
        g.decide()
        g.reading(Source.OCCUPANCY, True)  # truck B at the portal
        g.pipeline.step()
        truck_b = g.pipeline.open_visit(LANE)
        assert truck_b is not None
        expected = [[Outcome.RELEASE]]
        if next_truck_decided:
            g.truck(HELD_BOX)
            g.decide()
            expected.append([Outcome.HOLD])
        assert [[d.outcome for d in decisions] for _, decisions in late] == expected
        g.barriers.on_decisions(*late[0])  # A's RELEASE, its readings well inside the window
        assert stays(lambda: g.sim.permit() == 0 and g.sim.state() == CLOSED, 1.0)
        assert g.openings_since(since) == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("does not open the barrier" in w and truck_b.id in w for w in warnings), warnings


# -- (d) a normal RELEASE still opens, for seconds --------------------------------------------------


@pytest.mark.timeout(60)
def test_a_release_opens_for_a_lease_of_ten_seconds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with gate(tmp_path, caplog) as g:
        assert (g.device.lease_seconds, g.device.release_window_seconds) == (10.0, 5.0)
        visit = released(g)
        assert g.sim.token() == permit_token(visit.id)
        g.clock.advance(9.5)
        assert stays(lambda: g.sim.permit() == 1 and g.sim.state() == OPEN, 0.5)
        g.clock.advance(1.0)  # the lease ends 10 s after the grant
        wait_until("lease ended", lambda: g.sim.permit() == 0, timeout=5.0)
        wait_until("closed", lambda: g.sim.state() == CLOSED)
        assert g.sim.last_cause() == CAUSE_PERMIT_WITHDRAWN


def test_lease_and_release_window_limits_name_the_key(tmp_path: Path) -> None:
    validate(config_dict(tmp_path, 502, lease_seconds=30, release_window_seconds=60))
    for key, value in (("lease_seconds", 31), ("release_window_seconds", 0), ("release_window_seconds", 61)):
        with pytest.raises(ConfigError, match=key):
            validate(config_dict(tmp_path, 502, **{key: value}))
