"""Readings that arrive faster than the pipeline takes them: the queue is bounded, what it
refuses is counted, and a lane that lost readings releases nothing until the loss is behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gated.pipeline
from gated.clock import ManualClock
from gated.config import validate
from gated.db import open_engine
from gated.errors import ProtocolError
from gated.holds import HoldStore
from gated.model import Decision, DeviceState, Kind, Reading, Source
from gated.pipeline import Pipeline
from gated.store import Store
from tests.customs import confirm_hold_list

BOX = "MSKU4135329"
ROOM = 20


@pytest.fixture
def lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Pipeline, ManualClock, Store, list[Decision]]:
    monkeypatch.setattr(gated.pipeline, "MAX_QUEUED_INPUTS", ROOM)
    config = validate(
        {
            "site": "flood",
            "holds": {"max_age_seconds": 3600},
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["ocr", "rpm"],
                    "settle_seconds": 0.5,
                    "devices": [
                        {"id": "ocr-1", "driver": "ocr-camera", "host": "127.0.0.1", "port": 9},
                        {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "x.toml"},
                    ],
                }
            ],
        }
    )
    clock = ManualClock()
    engine = open_engine(tmp_path / "g.db")
    holds = HoldStore(engine, clock)
    confirm_hold_list(holds, tmp_path)
    store = Store(engine, site="flood", node="n", clock=clock)
    pipeline = Pipeline(config, store, holds, clock)
    decided: list[Decision] = []
    pipeline.listeners.append(lambda _visit, decisions: decided.extend(decisions))
    for device in ("ocr-1", "rpm-1"):
        pipeline.device_status("lane-1", device, DeviceState.ONLINE, "connected")
    pipeline.step()
    return pipeline, clock, store, decided


def truck(pipeline: Pipeline, clock: ManualClock) -> None:
    now = clock.now()
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, BOX, now, confidence=0.97))
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now))
    pipeline.reading(Reading("lane-1", Kind.RPM, "rpm-1", Source.SCREENING, "clear", now))


def drain(pipeline: Pipeline, clock: ManualClock) -> None:
    while pipeline.step():
        pass
    clock.advance(1.0)
    pipeline.step()


def test_a_flood_is_refused_counted_and_never_releases(
    lane: tuple[Pipeline, ManualClock, Store, list[Decision]],
) -> None:
    pipeline, clock, store, decided = lane
    truck(pipeline, clock)
    drain(pipeline, clock)
    assert [str(d.outcome) for d in decided] == ["RELEASE"]  # the lane works

    for index in range(ROOM + 500):  # a babbling device fills the queue
        pipeline.frame_error("lane-1", "ocr-1", ProtocolError(f"garbage {index}"))
    truck(pipeline, clock)  # this truck's readings find no room
    assert pipeline.stats.dropped_inputs == 503
    assert pipeline._queue.qsize() == ROOM + 2  # the inputs, and one marker per device that lost readings
    drain(pipeline, clock)
    truck(pipeline, clock)  # the same truck read again, within the window: not released
    drain(pipeline, clock)
    assert str(decided[-1].outcome) == "MANUAL_REVIEW"
    assert any("readings dropped" in reason.text for reason in decided[-1].reasons), decided[-1].reasons
    alarms = [
        json.loads(row.payload)
        for row in store.pending(0, 10_000)
        if row.topic == "gated/v1/flood/lane-1/alarm"
    ]
    assert [a["device"] for a in alarms if a["alarm"] == "input_overflow"] in (["ocr-1"], ["rpm-1"])

    clock.advance(gated.pipeline.DROPPED_TAINT_SECONDS)
    truck(pipeline, clock)
    drain(pipeline, clock)
    assert str(decided[-1].outcome) == "RELEASE"  # the loss is behind the lane
