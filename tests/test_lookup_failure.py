"""Lookups that fail and lanes that change hands, on the real pipeline and SQLite.

Holds or pre-advice that cannot be read (the database failing under the lookup) never crash the
pipeline and never release: the truck is decided with STORAGE_FAILURE, and the next truck, with
the database answering again, is released. Real pipeline and SQLite; the failing part is a pre-advice
store whose database lies in a folder that is not there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def test_a_visit_the_previous_holder_left_open_is_decided_by_the_new_one_never_released(lane: Gate) -> None:
    from gated.holds import HoldStore
    from gated.model import Kind, Source
    from gated.pipeline import Pipeline
    from gated.store import Store

    # The holder's truck is half way through the lane when the holder dies: its visit is open.
    lane.reading(Kind.RFID, "rfid-1", Source.EPC, "e2801100000000000000a009")
    lane.reading(Kind.RPM, "rpm-1", Source.OCCUPANCY, True)
    lane.pipeline.step()
    assert lane.pipeline.open_visit("lane-1") is not None
    standby_store = Store(lane.store.engine, site=lane.config.site, node="gate-2", clock=lane.clock)
    standby = Pipeline(
        lane.config, standby_store, HoldStore(lane.store.engine, lane.clock), lane.clock, standby=["lane-1"]
    )
    standby.recover()  # a standby leaves another node's lane alone
    standby.reading(_ocr(lane, CLEAN))  # the lane's camera, heard by the standby too
    standby.step()
    assert standby.stats.standby_readings == 1 and outcomes(lane) == {}
    standby.set_ownership("lane-1", True, "lease taken, fencing token 2")
    standby.step()
    found = outcomes(lane)
    [(outcome, reasons)] = found.values()
    assert outcome != "RELEASE" and "VISIT_INCOMPLETE" in reasons, found


def _ocr(gate: Gate, number: str) -> Any:
    from gated.model import Kind, Reading, Source

    return Reading(
        "lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, number, gate.clock.now(), confidence=0.97
    )


def test_a_node_that_no_longer_drives_the_lane_prints_no_gate_pass(lane: Gate) -> None:
    """A pass decided before a pause reaches the printer only if the node still holds the lane."""
    import time

    from drivers.printer_escpos import EscposPrinter, PrinterEscposDevice
    from gated.barrier_control import PassPrinter
    from simulators.printer_escpos import EscposPrinterSimulator

    held = {"lane-1": True}
    with EscposPrinterSimulator() as simulator:
        settings = PrinterEscposDevice(
            id="printer-1", driver="printer-escpos", host="127.0.0.1", port=simulator.port
        )
        printer = PassPrinter(
            lane.pipeline, EscposPrinter("lane-1", settings), lane.clock, {}, lane_ok=lambda name: held[name]
        )
        printer.start()
        try:
            lane.truck("e2801100000000000000a010", CLEAN, ScreeningVerdict.CLEAR)
            deadline = time.monotonic() + 30
            while len(simulator.jobs) < 1:
                assert time.monotonic() < deadline, "the pass was not printed"
                time.sleep(0.05)
            held["lane-1"] = False  # the lane went to another node
            lane.truck("e2801100000000000000a011", OTHER, ScreeningVerdict.CLEAR)
            time.sleep(1.0)
            assert len(simulator.jobs) == 1
        finally:
            printer.stop()
