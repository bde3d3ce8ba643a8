"""What a device's state means for the lane's decisions: a degraded device (a camera with one of its
views down) still decides, each reading on its own quality; an offline one sends the visit to a
clerk. Either going down raises a device_fault alarm."""

from __future__ import annotations

from gated.model import DeviceState, ScreeningVerdict
from tests.test_payload_schemas import (
    CLEAN,
    LANE,
    PREFIX,
    Gate,
    gate,
    payload_of,
    place_command,
    sync_command,
)

__all__ = ["gate"]  # the fixture, used by name


def _decisions(gate: Gate) -> list[dict[str, object]]:
    return [payload_of(row) for row in gate.published() if row.topic == f"{PREFIX}/{LANE}/decision"]


def _alarms(gate: Gate) -> list[str]:
    return [str(payload_of(row)["text"]) for row in gate.published() if row.topic == f"{PREFIX}/{LANE}/alarm"]


def test_a_degraded_device_still_decides_and_an_offline_one_sends_to_review(gate: Gate) -> None:
    for device in ("rfid-1", "rpm-1", "ocr-1"):
        gate.pipeline.device_status(LANE, device, DeviceState.ONLINE, "connected")
    gate.pipeline.step()
    gate.command(place_command("cmd-1"))
    gate.command(sync_command("cmd-2", 1))  # customs confirms the list: one CBP hold

    gate.pipeline.device_status(LANE, "ocr-1", DeviceState.DEGRADED, "1 of 3 views down: view side-left")
    gate.pipeline.step()
    gate.truck("e2801100000000000000a001", CLEAN, ScreeningVerdict.CLEAR)
    assert [d["outcome"] for d in _decisions(gate)] == ["RELEASE"]
    lane_states = [
        payload_of(row)["state"] for row in gate.published() if row.topic == f"{PREFIX}/{LANE}/status"
    ]
    assert lane_states[-1] == "degraded"
    assert _alarms(gate) == ["ocr-1 went degraded: 1 of 3 views down: view side-left"]

    gate.pipeline.device_status(LANE, "ocr-1", DeviceState.OFFLINE, "every view down")
    gate.pipeline.step()
    gate.truck("e2801100000000000000a002", CLEAN, ScreeningVerdict.CLEAR)
    last = _decisions(gate)[-1]
    assert last["outcome"] == "MANUAL_REVIEW"
    assert "DEVICE_OFFLINE" in [reason["code"] for reason in last["reasons"]]  # type: ignore[attr-defined]
    assert _alarms(gate)[-1] == "ocr-1 went offline: every view down"
