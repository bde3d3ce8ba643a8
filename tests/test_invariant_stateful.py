"""A hypothesis state machine drives the real pipeline, hold list and SQLite store through trucks,
hold placements and releases, an ageing hold list, storage failures and restarts, and checks the
one invariant that matters: a permit to open is only ever granted for containers with no active
hold, on a fresh hold list, after a clear radiation screening."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gated.clock import ManualClock
from gated.config import validate
from gated.db import open_engine
from gated.errors import StorageError
from gated.holds import HoldStore
from gated.iso6346 import check_digit
from gated.model import Decision, DeviceState, Kind, Quality, Reading, Source, Visit
from gated.pipeline import Pipeline
from gated.policy import may_open
from gated.store import Batch, OutboxRow, Store
from tests.conftest import examples
from tests.customs import confirm_hold_list

BOXES = [f"MSKU{n:06d}{check_digit(f'MSKU{n:06d}')}" for n in range(100001, 100005)]
MAX_AGE = 600


class FlakyStore(Store):
    """The real store, with a switch that makes every write fail as a full disk would."""

    failing = False

    def write(self, batch: Batch) -> list[OutboxRow]:
        if self.failing:
            raise StorageError("database or disk is full")
        return super().write(batch)


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="gated-stateful-"))
        self.clock = ManualClock()
        self.config = validate(
            {
                "site": "prop",
                "holds": {"max_age_seconds": MAX_AGE},
                "storage": {"database": str(self.folder / "g.db")},
                "lanes": [
                    {
                        "id": "lane-1",
                        "require": ["ocr", "rpm"],
                        "settle_seconds": 0.5,
                        "visit_timeout_seconds": 30,
                        "devices": [
                            {"id": "ocr-1", "driver": "ocr-camera", "host": "127.0.0.1", "port": 9},
                            {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "x.toml"},
                        ],
                    }
                ],
            }
        )
        self.engine = open_engine(self.folder / "g.db")
        self.holds = HoldStore(self.engine, self.clock)
        self.failing = False
        self.permits: list[tuple[Visit, list[Decision]]] = []
        self.violations: list[str] = []
        self.trucks = 0
        self.pipeline = self._new_pipeline()

    def _new_pipeline(self) -> Pipeline:
        store = FlakyStore(self.engine, site="prop", node="gate-1", clock=self.clock)
        store.failing = self.failing
        pipeline = Pipeline(self.config, store, self.holds, self.clock)
        for device in ("ocr-1", "rpm-1"):
            pipeline.device_status("lane-1", device, DeviceState.ONLINE, "connected")
        pipeline.step()
        pipeline.listeners.append(self._barrier)
        pipeline.recover()
        return pipeline

    def _barrier(self, visit: Visit, decisions: list[Decision]) -> None:
        """The gate's rule, checked at the moment the permit would be granted. (The pipeline
        shields itself from listener errors, so violations are collected, then asserted.)"""
        if not (may_open(decisions) and self.pipeline.storage_ok):
            return
        self.permits.append((visit, decisions))
        state = self.holds.state()
        if not state.loaded or state.confirmed_at is None:
            self.violations.append("permit on a hold list never loaded")
        elif (self.clock.now() - state.confirmed_at).total_seconds() > MAX_AGE:
            self.violations.append("permit on a stale hold list")
        verdicts = [r.value for r in visit.of_source(Source.SCREENING)]
        if not verdicts or any(v != "clear" for v in verdicts):
            self.violations.append(f"permit after screening {verdicts}")
        for decision in decisions:
            if decision.container is None or self.holds.active_holds_for(decision.container):
                self.violations.append(f"permit for held or unread container {decision.container}")

    @invariant()
    def permits_only_for_clean_screened_unheld_containers(self) -> None:
        assert self.violations == []

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- the world ---------------------------------------------------------------------------
    @rule(box=st.sampled_from(BOXES))
    def place_hold(self, box: str) -> None:
        self.holds.place(container=box, agency="CBP", hold_type="customs", code="1H")

    @rule(box=st.sampled_from(BOXES))
    def release_holds(self, box: str) -> None:
        if self.holds.list_holds(container=box):
            self.holds.release(container=box, agency="CBP", code="1I")

    @rule()
    def refresh_hold_list(self) -> None:
        confirm_hold_list(self.holds, self.folder)

    @rule(seconds=st.sampled_from([1.0, 30.0, 400.0, 700.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.pipeline.step()

    @rule(failing=st.booleans())
    def storage(self, failing: bool) -> None:
        self.failing = failing
        assert isinstance(self.pipeline.store, FlakyStore)
        self.pipeline.store.failing = failing
        self.clock.advance(1.0)  # past the retry pause
        self.pipeline.step()

    @rule()
    def restart(self) -> None:
        self.pipeline = self._new_pipeline()

    @rule(
        box=st.sampled_from([*BOXES, "MSKU1000010", None]),
        verdict=st.sampled_from(["clear", "clear", "gamma_alarm", "fault", None]),
        quality=st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN]),
    )
    def truck(self, box: str | None, verdict: str | None, quality: Quality) -> None:
        self.trucks += 1
        now = self.clock.now()
        feed = self.pipeline.reading
        feed(Reading("lane-1", Kind.RPM, "rpm-1", Source.OCCUPANCY, True, now))
        if box is not None:
            feed(
                Reading(
                    "lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, box, now, quality, confidence=0.95
                )
            )
        feed(Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now))
        if verdict is not None:
            feed(Reading("lane-1", Kind.RPM, "rpm-1", Source.OCCUPANCY, False, now))
            feed(Reading("lane-1", Kind.RPM, "rpm-1", Source.SCREENING, verdict, now))
        self.pipeline.step()
        self.clock.advance(1.0)  # settled
        self.pipeline.step()

    @precondition(lambda self: not self.failing)
    @invariant()
    def nothing_waits_while_storage_works(self) -> None:
        self.pipeline.step()
        assert not self.pipeline._pending_decided


GateMachine.TestCase.settings = settings(
    max_examples=examples(40),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestGateInvariant = pytest.mark.timeout(900)(GateMachine.TestCase)
