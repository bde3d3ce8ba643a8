"""A visit whose OCR is under way when the next truck arrives waits for its read, on real parts: the
real pipeline (real SQLite, real hold list), BarrierControl driving the barrier PLC simulator over
real Modbus TCP. The frames camera's readings are handed in as the driver makes them (bound to
their visit); time in the pipeline is a manual clock.

The older truck is decided with its number (RELEASE, HOLD), not sent to a clerk for a read that
was only late; after ``ocr_wait_seconds`` it is decided as before; and its late decision never
opens the barrier for the truck now at it."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.ocr_frames import BACKLOG
from gated.barrier_control import BarrierControl
from gated.clock import ManualClock
from gated.config import BarrierModbusDevice, validate
from gated.db import open_engine
from gated.devices import build_barrier
from gated.evidence import EvidenceStore
from gated.holds import HoldStore
from gated.iso6346 import check_digit
from gated.model import Decision, DeviceState, Evidence, Kind, Outcome, Quality, Reading, Source, Visit
from gated.pipeline import Pipeline
from gated.policy import VISIT_INCOMPLETE
from gated.settings import DriverContext
from gated.store import Store
from ocr.pool import OcrPool
from simulators.barrier_plc import CLOSED, OPENING, BarrierPlcSimulator
from tests.test_barrier import stays, wait_until

pytestmark = pytest.mark.timeout(60)

LANE = "lane-1"
CLEAN_BOX = f"MSKU{300001:06d}{check_digit('MSKU300001')}"
HELD_BOX = f"MSKU{300002:06d}{check_digit('MSKU300002')}"
SETTLE = 0.5
OCR_WAIT = 10.0
CROP = Evidence("evidence://sha256/" + "c" * 64, "image/jpeg", "c" * 64, 1234)


@dataclass
class Gate:
    sim: BarrierPlcSimulator
    clock: ManualClock
    pipeline: Pipeline
    store: Store
    decided: list[tuple[Visit, list[Decision]]]
    lock: threading.Lock

    def portal(self, source: Source, value: Any) -> None:
        self.pipeline.reading(Reading(LANE, Kind.RPM, "rpm-1", source, value, self.clock.now()))
        self.pipeline.step()

    def truck_passes(self) -> Visit:
        """A truck through the portal; the camera's read of it is still under way."""
        self.portal(Source.OCCUPANCY, True)
        visit = self.pipeline.open_visit(LANE)
        assert visit is not None
        self.portal(Source.SCREENING, "clear")
        self.portal(Source.OCCUPANCY, False)
        return visit

    def read(self, visit: Visit, box: str) -> None:
        """The frames camera's read of ``visit``, as the driver reports it."""
        now = self.clock.now()
        number = Reading(
            LANE,
            Kind.OCR,
            "cam-1",
            Source.CONTAINER_NUMBER,
            box,
            now,
            Quality.GOOD,
            confidence=0.97,
            visit=visit.id,
            evidence=(CROP,),
        )
        self.pipeline.reading(number)
        self.pipeline.reading(Reading(LANE, Kind.OCR, "cam-1", Source.PASSAGE_END, 1, now, visit=visit.id))
        self.pipeline.step()

    def settle(self) -> None:
        self.clock.advance(SETTLE + 0.1)
        self.pipeline.step()

    def decisions_of(self, visit: Visit) -> list[Decision]:
        with self.lock:
            return [d for v, decisions in self.decided if v.id == visit.id for d in decisions]

    def messages(self, topic_end: str) -> list[dict[str, Any]]:
        return [
            json.loads(row.payload) for row in self.store.pending(0, 10_000) if row.topic.endswith(topic_end)
        ]


def config_dict(tmp_path: Path, plc_port: int, ocr_wait: float) -> dict[str, Any]:
    return {
        "site": "wait",
        "holds": {"max_age_seconds": 3600},
        "storage": {"database": str(tmp_path / "g.db")},
        "lanes": [
            {
                "id": LANE,
                "require": ["ocr", "rpm"],
                "settle_seconds": SETTLE,
                "ocr_wait_seconds": ocr_wait,
                "devices": [
                    {"id": "cam-1", "driver": "ocr-frames", "views": [str(tmp_path / "frames")]},
                    {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "x.toml"},
                    {"id": "barrier-1", "driver": "barrier-modbus", "host": "127.0.0.1", "port": plc_port},
                ],
            }
        ],
    }


@contextmanager
def gate(tmp_path: Path, caplog: pytest.LogCaptureFixture, ocr_wait: float = OCR_WAIT) -> Iterator[Gate]:
    caplog.set_level(logging.INFO, logger="gated.barrier_control")
    clock = ManualClock()
    with BarrierPlcSimulator() as sim:
        config = validate(config_dict(tmp_path, sim.port, ocr_wait))
        [device] = [d for d in config.lanes[0].devices if isinstance(d, BarrierModbusDevice)]
        engine = open_engine(tmp_path / "g.db")
        holds = HoldStore(engine, clock)
        hold_list = tmp_path / "holds.csv"
        hold_list.write_text(
            f"container,agency,hold_type,code\n{HELD_BOX},CBP,customs,1H\n", encoding="utf-8"
        )
        holds.import_holds(hold_list)
        store = Store(engine, site="wait", node="n", clock=clock)
        pipeline = Pipeline(config, store, holds, clock)
        decided: list[tuple[Visit, list[Decision]]] = []
        lock = threading.Lock()

        def record(visit: Visit, decisions: list[Decision]) -> None:
            with lock:
                decided.append((visit, decisions))

        pipeline.listeners.append(record)
        context = DriverContext(clock, EvidenceStore(tmp_path / "ev"), OcrPool)
        control = BarrierControl(
            pipeline,
            {
                LANE: (
                    build_barrier(LANE, device, context),
                    device.lease_seconds,
                    device.release_window_seconds,
                )
            },
            clock,
            alive=lambda: True,
        )
        for name in ("cam-1", "rpm-1"):
            pipeline.device_status(LANE, name, DeviceState.ONLINE, "connected")
        control.start()
        try:
            barrier = control.lanes[LANE].barrier
            wait_until("barrier online", lambda: barrier.state is not None and barrier.state.online)
            pipeline.step()
            yield Gate(sim, clock, pipeline, store, decided, lock)
        finally:
            control.stop()
            engine.dispose()


def openings_since(sim: BarrierPlcSimulator, since: float) -> int:
    return sum(1 for moment, state in sim.history if moment > since and state == OPENING)


@pytest.mark.parametrize(("box", "outcome"), [(CLEAN_BOX, Outcome.RELEASE), (HELD_BOX, Outcome.HOLD)])
def test_the_older_truck_is_decided_with_its_late_read_and_opens_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, box: str, outcome: Outcome
) -> None:
    with gate(tmp_path, caplog) as g:
        since = time.monotonic()
        first = g.truck_passes()
        g.clock.advance(4.0)
        g.portal(Source.OCCUPANCY, True)  # the next truck, while the first one's frames are read
        second = g.pipeline.open_visit(LANE)
        assert second is not None and second.id != first.id
        g.clock.advance(6.0)
        g.pipeline.step()
        assert g.decisions_of(first) == []  # waiting for its read, not sent to a clerk
        g.read(first, box)
        g.settle()
        [decision] = g.decisions_of(first)
        assert decision.container == box and decision.outcome is outcome, decision.reasons
        assert VISIT_INCOMPLETE not in {reason.code for reason in decision.reasons}
        # The next truck is at the barrier: the first truck's decision opens nothing for it.
        assert stays(lambda: g.sim.permit() == 0 and g.sim.state() == CLOSED, 1.0)
        assert openings_since(g.sim, since) == 0
        if outcome is Outcome.RELEASE:
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("does not open the barrier" in w and second.id in w for w in warnings), warnings
        # The next truck's own visit got nothing of the first one's read.
        current = g.pipeline.open_visit(LANE)
        assert current is not None and current.id == second.id
        assert not current.of_source(Source.CONTAINER_NUMBER)


def test_without_its_read_the_older_truck_is_decided_after_the_wait_as_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gate(tmp_path, caplog) as g:
        first = g.truck_passes()
        g.portal(Source.OCCUPANCY, True)
        second = g.pipeline.open_visit(LANE)
        assert second is not None
        g.clock.advance(OCR_WAIT - 0.5)
        g.pipeline.step()
        assert g.decisions_of(first) == []
        g.clock.advance(1.0)
        g.pipeline.step()
        [decision] = g.decisions_of(first)
        assert decision.outcome is Outcome.MANUAL_REVIEW
        assert "superseded" in " ".join(reason.text for reason in decision.reasons)
        # Its read, when it comes at last, joins neither it nor the next truck.
        g.read(first, CLEAN_BOX)
        current = g.pipeline.open_visit(LANE)
        assert current is not None and current.id == second.id
        assert not current.of_source(Source.CONTAINER_NUMBER) and len(g.decisions_of(first)) == 1


def test_ocr_wait_zero_decides_the_older_truck_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gate(tmp_path, caplog, ocr_wait=0.0) as g:
        first = g.truck_passes()
        g.portal(Source.OCCUPANCY, True)
        [decision] = g.decisions_of(first)
        assert decision.outcome is Outcome.MANUAL_REVIEW


def test_a_device_offline_during_the_older_truck_still_counts_when_it_is_decided(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gate(tmp_path, caplog) as g:
        first = g.truck_passes()
        g.pipeline.device_status(LANE, "rpm-1", DeviceState.OFFLINE, "no answer")
        g.pipeline.device_status(LANE, "rpm-1", DeviceState.ONLINE, "connected")
        g.pipeline.step()
        g.portal(Source.OCCUPANCY, True)  # a new visit starts with every device online
        g.read(first, CLEAN_BOX)
        g.settle()
        [decision] = g.decisions_of(first)
        assert decision.outcome is Outcome.MANUAL_REVIEW
        assert any("rpm-1" in reason.text for reason in decision.reasons), decision.reasons


def test_an_ocr_backlog_degrades_the_camera_and_lane_with_an_alarm_until_it_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gate(tmp_path, caplog) as g:
        detail = (
            f"{BACKLOG}: frames of 4 visit(s) waiting for OCR, the oldest for 9 s (more than 8 s or 3 visits)"
        )
        g.pipeline.device_status(LANE, "cam-1", DeviceState.DEGRADED, detail)
        g.pipeline.step()
        [alarm] = [a for a in g.messages("/alarm") if a["device"] == "cam-1"]
        assert alarm["alarm"] == "ocr_backlog" and detail in alarm["text"]
        assert g.messages("/device/cam-1/status")[-1]["state"] == "degraded"
        lane = g.messages(f"{LANE}/status")[-1]
        assert lane["state"] == "degraded" and detail in lane["reason"], lane
        g.pipeline.device_status(LANE, "cam-1", DeviceState.ONLINE, "connected")
        g.pipeline.step()
        assert g.messages("/device/cam-1/status")[-1]["state"] == "online"
        assert g.messages(f"{LANE}/status")[-1]["state"] == "open"
        assert len([a for a in g.messages("/alarm") if a["alarm"] == "ocr_backlog"]) == 1
