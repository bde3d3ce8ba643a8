"""`gated-sim lane`: a scenario file with trucks and faults plays through the real daemon; every
fault shows in device status and alarms, and the daemon keeps deciding."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from gated.config import load_config
from gated.daemon import Daemon
from simulators.scenario import ScenarioError, daemon_config, load_scenario, play, start_lane
from tests.conftest import Mosquitto
from tests.customs import confirm_hold_list

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "scenarios" / "lane-with-faults.toml"
PREFIX = "gated/v1/sim/lane-1"


def test_the_example_scenario_loads() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.lane == "lane-1" and len(scenario.steps) >= 10


def test_a_broken_scenario_names_the_key(tmp_path: Path) -> None:
    broken = tmp_path / "s.toml"
    broken.write_text('pace = -1\n[[steps]]\nfault = "melt"\ndevice = "rpm"\n', encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(broken)
    assert "pace" in str(caught.value) and "steps.0" in str(caught.value)


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_lane_with_faults_runs_through_the_daemon(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any
) -> None:
    scenario = load_scenario(EXAMPLE).model_copy(update={"pace": 0.4, "gap_seconds": 1.5})
    devices = start_lane()
    config = tmp_path / "gate.toml"
    config.write_text(
        daemon_config(
            devices,
            lane="lane-1",
            mqtt_port=mosquitto.port,
            profile=ROOT / "config" / "profiles" / "rpm-modbus.toml",
            database=str(tmp_path / "gated.db"),
        ),
        encoding="utf-8",
    )
    customs = subscriber_factory(mosquitto.port)
    daemon = Daemon(load_config(config))
    confirm_hold_list(daemon.holds, tmp_path)
    lines: list[str] = []
    try:
        daemon.start()
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/status" and m.payload["state"] == "open", what="open lane"
        )
        passed = play(scenario, devices, threading.Event(), report=lines.append)
        customs.wait_for(
            lambda m: (
                m.topic == f"{PREFIX}/decision"
                and m.payload["container"] == "MSKU4135329"
                and m.payload["seq"] > 40
            ),
            what="the last truck's decision",
        )
        messages = customs.snapshot()
        assert daemon._pipeline_thread is not None and daemon._pipeline_thread.is_alive()
        # Each fault shows: garbage counted, the RPM offline then back, the tamper alarmed.
        assert daemon.pipeline.stats.frame_errors.get("lane-1/rfid-1", 0) >= 1
        rpm_states = [m.payload["state"] for m in messages if m.topic == f"{PREFIX}/device/rpm-1/status"]
        assert "offline" in rpm_states and rpm_states[-1] == "online"
        alarms = {m.payload["alarm"] for m in messages if m.topic == f"{PREFIX}/alarm"}
        assert {"tamper", "device_fault", "radiation_alarm"} <= alarms
        outcomes = [
            (m.payload["container"], m.payload["outcome"])
            for m in messages
            if m.topic == f"{PREFIX}/decision"
        ]
        assert ("MSKU4135329", "RELEASE") in outcomes
        assert ("ABCU1234560", "SECONDARY_INSPECTION") in outcomes
        assert (None, "MANUAL_REVIEW") in outcomes
        assert passed >= 2  # the clean truck and the two 20 ft boxes
        # The truck that came while the cabinet was open is not released on that monitor's word.
        after = [m.payload for m in messages if m.topic == f"{PREFIX}/decision"][-1]
        assert after["outcome"] == "MANUAL_REVIEW"
        assert "DEVICE_TAMPER" in {reason["code"] for reason in after["reasons"]}
        assert any("stayed closed" in line for line in lines)
    finally:
        daemon.stop()
        devices.stop()
