"""Holds or pre-advice that cannot be read (the database failing under the lookup) never crash the
pipeline and never release: the truck is decided with STORAGE_FAILURE, and the next truck, with
the database answering again, is released. Real pipeline and SQLite; the failing part is a pre-advice
store whose database lies in a folder that is not there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from gated.model import DeviceState, ScreeningVerdict
from gated.preadvice import PreadviceStore
from gated.store import decisions
from tests.test_payload_schemas import CLEAN, OTHER, Gate, place_command, sync_command
from tests.test_payload_schemas import gate as gate


@pytest.fixture
def lane(gate: Gate) -> Iterator[Gate]:
    for device in ("rfid-1", "rpm-1", "ocr-1"):
        gate.pipeline.device_status("lane-1", device, DeviceState.ONLINE, "connected")
    gate.pipeline.step()
    gate.command(place_command("cmd-1"))
    gate.command(sync_command("cmd-s", 1))
    yield gate


def outcomes(done: Gate) -> dict[str, tuple[str, list[str]]]:
    with done.store.engine.connect() as conn:
        rows = conn.execute(decisions.select()).mappings().all()
    return {
        row["container"]: (row["outcome"], [r["code"] for r in json.loads(row["body"])["reasons"]])
        for row in rows
    }


def test_unreadable_preadvice_holds_the_truck_and_the_lane_goes_on(lane: Gate, tmp_path: Path) -> None:
    # A database under a folder that is not there: every connection fails.
    lane.pipeline.preadvice = PreadviceStore(create_engine(f"sqlite:///{tmp_path / 'gone' / 'gated.db'}"))
    lane.truck("e2801100000000000000a001", CLEAN, ScreeningVerdict.CLEAR)
    lane.pipeline.preadvice = None
    lane.truck("e2801100000000000000a002", OTHER, ScreeningVerdict.CLEAR)
    found = outcomes(lane)
    assert found[CLEAN][0] != "RELEASE" and "STORAGE_FAILURE" in found[CLEAN][1]
    assert found[OTHER] == ("RELEASE", ["CLEAR"])
