"""One gate lane end to end on real parts: the daemon as its own process, real mosquitto, the
device simulators on a real pty and real TCP ports, and a subscriber that sees what a customs
system would see."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.lane import BARRIER_OPEN, ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto, Received
from tests.gate import gated, number, start_daemon, write_config
from tests.sinks import wait_until

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "gated/v1/e2e"
ENVELOPE = {"schema", "id", "site", "node", "seq", "ts"}
READING_FIELDS = ENVELOPE | {
    "lane",
    "kind",
    "device",
    "source",
    "value",
    "value_type",
    "units",
    "quality",
    "confidence",
    "visit",
    "evidence",
}
DECISION_FIELDS = ENVELOPE | {
    "lane",
    "visit",
    "container",
    "outcome",
    "reasons",
    "holds",
    "inputs",
    "decided_at",
}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


CLEAN = number("MSKU413532")
HELD = number("TGHU100002")
ON_HELD_BL = number("CSQU100003")
HOT = number("HLXU100004")
HELD_BL = "MAEU240512345"


def decisions_by_container(messages: list[Received]) -> dict[str | None, list[str]]:
    found: dict[str | None, list[str]] = {}
    for message in messages:
        if message.topic == f"{PREFIX}/lane-1/decision":
            found.setdefault(message.payload["container"], []).append(message.payload["outcome"])
    return found


def test_one_lane_end_to_end(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    # Customs' hold list and the manifest, through the command line as an operator would.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"container,bill_of_lading\n{ON_HELD_BL},{HELD_BL}\n", encoding="utf-8")
    gated("holds", "import", str(manifest), "--reason", "the line's manifest", "--config", str(config))
    hold_list = tmp_path / "holds.csv"
    hold_list.write_text(
        f"container,bill_of_lading,agency,hold_type,code\n{HELD},,CBP,vacis,1H\n,{HELD_BL},CBP,customs,\n",
        encoding="utf-8",
    )
    gated("holds", "import", str(hold_list), "--reason", "CBP's list of today", "--config", str(config))

    customs = subscriber_factory(mosquitto.port)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "online",
            what="node birth",
        )
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open",
            what="lane open (all devices online)",
        )
        lane = ScriptedLane(lane_devices, pace=0.5)
        trucks = [
            Truck("clean", "e28011606000020000000001", (ContainerSighting(CLEAN),)),
            Truck("held by number", "e28011606000020000000002", (ContainerSighting(HELD),)),
            Truck("held by B/L", "e28011606000020000000003", (ContainerSighting(ON_HELD_BL),)),
            Truck("radiation", "e28011606000020000000004", (ContainerSighting(HOT),), radiation="gamma"),
            Truck("unreadable", "e28011606000020000000005", (ContainerSighting("#?7 X", confidence=0.2),)),
        ]
        opened = {}

        def decided() -> int:
            return sum(map(len, decisions_by_container(customs.snapshot()).values()))

        for truck in trucks:
            before = decided()
            opened[truck.label] = lane.drive(truck)
            # Its visit is decided before the next tag comes: a new truck, not one superseding it.
            wait_until(f"the decision on the {truck.label} truck", lambda n=before: decided() > n, timeout=30)
        # The barrier opened for the clean truck only, and closed behind it.
        assert opened == {
            "clean": True,
            "held by number": False,
            "held by B/L": False,
            "radiation": False,
            "unreadable": False,
        }, opened
        assert lane_devices.barrier is not None
        assert [state for _, state in lane_devices.barrier.history].count(BARRIER_OPEN) == 1
        assert lane_devices.barrier.state() == 0
        customs.wait_for(
            lambda m: m.topic.endswith("/decision") and m.payload["container"] is None,
            what="the unreadable truck's decision",
        )
        time.sleep(0.5)
        messages = customs.snapshot()
        decided = decisions_by_container(messages)
        assert decided.get(CLEAN) == ["RELEASE"], decided
        assert decided.get(HELD) == ["HOLD"], decided
        assert decided.get(ON_HELD_BL) == ["HOLD"], decided
        assert decided.get(HOT) == ["SECONDARY_INSPECTION"], decided
        assert decided.get(None) == ["MANUAL_REVIEW"], decided
        assert "RELEASE" not in decided[HELD] + decided[ON_HELD_BL]

        # A gate pass for every truck, with what the driver must do and a QR code for the visit.
        assert lane_devices.printer is not None
        jobs = lane_devices.printer.wait_for_jobs(5, timeout=20)
        texts = [job.text for job in jobs]
        assert CLEAN in texts[0] and "proceed to exit" in texts[0]
        assert HELD in texts[1] and "park in the holding area" in texts[1]
        assert "proceed to secondary inspection, bay 3" in texts[3]
        assert "an operator will call you" in texts[4]
        decision_visits = {m.payload["visit"] for m in messages if m.topic.endswith("/decision")}
        printed_visits = {qr.split("v=")[1].split("&")[0] for job in jobs for qr in job.qr_codes}
        assert printed_visits == decision_visits

        # The box held for a VACIS exam is sent to the scanner: a scan request names it.
        requests = [m.payload for m in messages if m.topic == f"{PREFIX}/lane-1/scan/request"]
        assert [r["container"] for r in requests] == [HELD]
        assert requests[0]["holds"][0]["hold_type"] == "vacis"

        # The alarms an officer needs: two hold hits and the radiation alarm.
        alarms = [m.payload for m in messages if m.topic == f"{PREFIX}/lane-1/alarm"]
        assert {a["container"] for a in alarms if a["alarm"] == "hold_hit"} == {HELD, ON_HELD_BL}
        assert any(a["alarm"] == "radiation_alarm" for a in alarms)

        # Every payload carries the CONTRACT fields; seq rises by exactly one per message.
        for message in messages:
            assert set(message.payload) >= ENVELOPE, message
            assert message.payload["site"] == "e2e" and message.payload["node"] == "gate-1"
        for message in messages:
            if "/reading/" in message.topic:
                assert set(message.payload) >= READING_FIELDS
                _, _lane, _, kind, device = message.topic.removeprefix(PREFIX).split("/")
                assert (message.payload["kind"], message.payload["device"]) == (kind, device)
            if message.topic.endswith("/decision"):
                assert set(message.payload) >= DECISION_FIELDS
                reading_ids = {m.payload["id"] for m in messages if "/reading/" in m.topic}
                assert set(message.payload["inputs"]) <= reading_ids
                assert message.payload["inputs"]
        seqs = sorted(m.payload["seq"] for m in messages)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a duplicate in seq"
        assert len({m.payload["id"] for m in messages}) == len(messages)

        # A late subscriber sees the retained node, lane and device status.
        late = subscriber_factory(mosquitto.port)
        retained = late.wait_for(
            lambda m: m.retain and m.topic == f"{PREFIX}/lane-1/status", what="lane status"
        )
        assert retained[0].payload["state"] == "open"
        late.wait_for(lambda m: m.retain and m.topic == f"{PREFIX}/lane-1/device/rpm-1/status", what="device")
        late.wait_for(
            lambda m: (
                m.retain and m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "online"
            ),
            what="retained birth",
        )

        # The daemon is killed: its Will marks the node offline, retained.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        will = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "offline",
            timeout=20,
            what="the Will",
        )
        assert will[0].payload["seq"] is None
        after = subscriber_factory(mosquitto.port)
        after.wait_for(
            lambda m: (
                m.retain and m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "offline"
            ),
            what="retained offline status",
        )
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        print(log.read_text(errors="replace")[-5000:])

    # Everything decided is in the database and `gated query` finds it.
    report = gated("query", HELD, "--json", "--config", str(config))
    assert '"outcome": "HOLD"' in report.stdout


def test_gated_run_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site = "x"\nlanes = []\nextra = 1\n', encoding="utf-8")
    result = gated("run", "--config", str(bad), check=False)
    assert result.returncode == 78
    assert "extra: unknown key" in result.stderr


def test_killing_the_daemon_leaves_the_barrier_closed(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    empty = tmp_path / "holds.csv"
    empty.write_text("container,agency,hold_type\n", encoding="utf-8")
    gated(
        "holds", "import", str(empty), "--allow-empty", "--reason", "no holds today", "--config", str(config)
    )
    customs = subscriber_factory(mosquitto.port)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    barrier = lane_devices.barrier
    assert barrier is not None
    try:
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open")
        lane = ScriptedLane(lane_devices, pace=0.5)
        # A released truck that stays at the open barrier (it has not driven through yet).
        truck = Truck("clean", "e28011606000020000000011", (ContainerSighting(CLEAN),))
        assert lane.drive(truck, pass_through=False)
        assert barrier.state() == BARRIER_OPEN
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        killed = time.monotonic()
        while barrier.state() != 0 and time.monotonic() - killed < 10:
            time.sleep(0.05)
        assert barrier.state() == 0, "the barrier stayed open after the daemon died"
        closed_after = barrier.history[-1][0] - barrier.last_heartbeat()
        assert closed_after <= 2.0, f"closed {closed_after:.2f} s after the last heartbeat"
        assert barrier.last_cause() == 2  # the PLC's watchdog, not gated, closed it
        # A restarted daemon does not reopen for the old visit.
        daemon = start_daemon(config, tmp_path / "daemon-2.log")
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/node/gate-1/status" and m.payload.get("boot") == 2)
        time.sleep(2.0)
        assert barrier.state() == 0 and barrier.permit() == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
