"""An active and a standby node for the same lane: real `gated run` processes, one real PostgreSQL,
one real mosquitto, the lane's real simulators (portal monitor and barrier PLC over Modbus TCP,
smart camera over TCP) reached by both. The active node is SIGKILLed mid-stream and the standby
decides the next truck within seconds; a node paused (SIGSTOP) past its lease and resumed can no
longer open the barrier, whose PLC takes the new holder's fencing token only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.barrier_plc import OPEN
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.customs import keys_toml
from tests.gate import ROOT, gated, number, start_daemon
from tests.postgres import PostgresServer, postgres_server

pytest.importorskip("psycopg")

PREFIX = "gated/v1/e2e"
LEASE = 3.0
HELD = number("TGHU100002")
TRUCKS = [number(f"MSKU41{index:04d}") for index in range(1, 6)]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def node_config(folder: Path, broker: Mosquitto, devices: LaneDevices, database: str, node: str) -> Path:
    assert devices.barrier is not None
    folder.mkdir(exist_ok=True)
    config = folder / f"{node}.toml"
    config.write_text(
        f"""
site = "e2e"
node = "{node}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive = 5
[storage]
database = "{database}"
evidence = "{folder / node / "evidence"}"
[holds]
max_age_seconds = 3600
{keys_toml()}[cluster]
lease_seconds = {LEASE}
[[lanes]]
id = "lane-1"
require = ["ocr", "rpm"]
settle_seconds = 0.5
visit_timeout_seconds = 20
[[lanes.devices]]
id = "rpm-1"
driver = "rpm-modbus"
host = "127.0.0.1"
port = {devices.rpm.port}
profile = "{ROOT / "config" / "profiles" / "rpm-modbus.toml"}"
[[lanes.devices]]
id = "ocr-1"
driver = "ocr-camera"
host = "127.0.0.1"
port = {devices.camera.port}
[[lanes.devices]]
id = "barrier-1"
driver = "barrier-modbus"
host = "127.0.0.1"
port = {devices.barrier.port}
lease_seconds = 30
""",
        encoding="utf-8",
    )
    return config


def status_by(node: str, state: str = "open") -> Any:
    return lambda m: (
        m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == state and m.payload["node"] == node
    )


def decision_of(container: str) -> Any:
    return lambda m: m.topic == f"{PREFIX}/lane-1/decision" and m.payload["container"] == container


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_standby_takes_over_a_killed_node_and_a_paused_one_cannot_open_the_barrier(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    lane_devices: LaneDevices,
    server: PostgresServer,
) -> None:
    barrier = lane_devices.barrier
    assert barrier is not None
    database = server.new_database()
    configs = {
        node: node_config(tmp_path, mosquitto, lane_devices, database, node) for node in ("gate-1", "gate-2")
    }
    holds = tmp_path / "holds.csv"
    holds.write_text(f"container,agency,hold_type\n{HELD},CBP,customs\n", encoding="utf-8")
    gated(
        "holds", "import", str(holds), "--reason", "CBP's list of today", "--config", str(configs["gate-1"])
    )
    customs = subscriber_factory(mosquitto.port)
    lane = ScriptedLane(lane_devices, pace=0.5)
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    try:
        daemons["gate-1"] = start_daemon(configs["gate-1"], tmp_path / "gate-1.log")
        customs.wait_for(status_by("gate-1"), 60)
        daemons["gate-2"] = start_daemon(configs["gate-2"], tmp_path / "gate-2.log")
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/node/gate-2/status" and m.payload["state"] == "online", 60
        )
        assert lane.drive(Truck("first", None, (ContainerSighting(TRUCKS[0]),)))
        [first] = customs.wait_for(decision_of(TRUCKS[0]), 60)
        assert (first.payload["node"], first.payload["outcome"]) == ("gate-1", "RELEASE")
        assert barrier.fence() == 1
        # The active node dies mid-stream: the standby has the lane within a few seconds.
        killed_at = time.monotonic()
        daemons["gate-1"].send_signal(signal.SIGKILL)
        daemons["gate-1"].wait(30)
        customs.wait_for(status_by("gate-2"), 30)
        taken_over = time.monotonic() - killed_at
        assert lane.drive(Truck("second", None, (ContainerSighting(TRUCKS[1]),)))
        [second] = customs.wait_for(decision_of(TRUCKS[1]), 60)
        decided_after = time.monotonic() - killed_at
        assert (second.payload["node"], second.payload["outcome"]) == ("gate-2", "RELEASE")
        assert barrier.fence() == 2 and taken_over < 3 * LEASE, taken_over
        print(f"takeover {taken_over:.1f} s, next truck decided {decided_after:.1f} s after the kill")
        # gate-1 comes back as the standby; gate-2 is paused past its lease and gate-1 takes over.
        daemons["gate-1"] = start_daemon(configs["gate-1"], tmp_path / "gate-1.log")
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "online", 60
        )
        before = len([m for m in customs.snapshot() if status_by("gate-1")(m)])
        os.kill(daemons["gate-2"].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while len([m for m in customs.snapshot() if status_by("gate-1")(m)]) == before:
            assert time.monotonic() < deadline, "gate-1 did not take the lane over"
            time.sleep(0.1)
        while barrier.fence() < 3:  # its first fenced heartbeat follows the lease by a beat
            assert time.monotonic() < deadline, "gate-1 never wrote to the barrier"
            time.sleep(0.05)
        held_at = barrier.fence()
        assert lane.drive(Truck("held", None, (ContainerSighting(HELD),)), pass_through=False) is False
        [held] = customs.wait_for(decision_of(HELD), 60)
        assert (held.payload["node"], held.payload["outcome"]) == ("gate-1", "HOLD")
        # gate-2 resumes believing for a moment that the lane is its own: the PLC refuses it.
        opened_before = len([s for _, s in barrier.history if s == OPEN])
        os.kill(daemons["gate-2"].pid, signal.SIGCONT)
        time.sleep(2 * LEASE)
        assert barrier.fence() == held_at
        assert len([s for _, s in barrier.history if s == OPEN]) == opened_before
        log = (tmp_path / "gate-2.log").read_text(errors="replace")
        assert "no longer drives" in log, log[-3000:]
        assert daemons["gate-2"].poll() is None and daemons["gate-1"].poll() is None
    finally:
        for daemon in daemons.values():
            if daemon.poll() is None:
                os.kill(daemon.pid, signal.SIGCONT)
                daemon.terminate()
        for daemon in daemons.values():
            daemon.wait(30)
