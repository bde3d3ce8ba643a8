"""The shared PostgreSQL stopped mid-run under a real daemon (`gated run` with a local replica),
real mosquitto and the lane's simulators: the lane goes on deciding from the local hold replica
(a clean truck released, a held one held), fails closed once the replica is older than the hold
list's maximum age, keeps its records locally, and every record reaches PostgreSQL when it is back,
with the node's seq gap-free and no id twice."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from gated.holds.store import holdlist_state
from gated.store import decisions
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.gate import gated, number, start_daemon, write_config
from tests.postgres import PostgresServer, postgres_server

pytest.importorskip("psycopg")

PREFIX = "gated/v1/e2e"
MAX_AGE = 40
HELD = number("TGHU100002")
CLEAN = [number(f"MSKU52{index:04d}") for index in range(1, 5)]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def confirmed_at(url: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(holdlist_state.c.confirmed_at)).scalar()
    finally:
        engine.dispose()


def replica_confirmed(path: Path) -> Any:
    return confirmed_at(f"sqlite:///{path}")


def shared_confirmed(url: str) -> Any:
    return confirmed_at(url)


def decision_of(container: str) -> Any:
    return lambda m: m.topic == f"{PREFIX}/lane-1/decision" and m.payload["container"] == container


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_lane_decides_from_the_replica_while_postgresql_is_down_and_catches_up(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    lane_devices: LaneDevices,
    server: PostgresServer,
) -> None:
    database = server.new_database()
    config = write_config(tmp_path, mosquitto, lane_devices, database=database, max_age_seconds=MAX_AGE)
    text = config.read_text(encoding="utf-8").replace(
        f'database = "{database}"', f'database = "{database}"\nlocal_replica = "{tmp_path / "replica.db"}"'
    )
    config.write_text(text, encoding="utf-8")
    holds = tmp_path / "holds.csv"
    holds.write_text(f"container,agency,hold_type\n{HELD},CBP,customs\n", encoding="utf-8")
    gated("holds", "import", str(holds), "--reason", "CBP's list of today", "--config", str(config))
    customs = subscriber_factory(mosquitto.port)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    lane = ScriptedLane(lane_devices, pace=0.5)

    def outcome(container: str) -> str:
        return str(customs.wait_for(decision_of(container), 60)[-1].payload["outcome"])

    try:
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open", 60)
        lane.drive(Truck("before", "e28011606000020000000101", (ContainerSighting(CLEAN[0]),)))
        assert outcome(CLEAN[0]) == "RELEASE"
        # Confirmed again just before the outage: the replica's age counts from here.
        gated("holds", "import", str(holds), "--reason", "CBP's list, confirmed", "--config", str(config))
        confirmed = time.monotonic()
        deadline = confirmed + 15
        while replica_confirmed(tmp_path / "replica.db") != shared_confirmed(database):  # within 5 s
            assert time.monotonic() < deadline, "the replica did not copy the confirmed list"
            time.sleep(0.2)
        server.stop()  # PostgreSQL goes away mid-run
        lane.drive(Truck("during", "e28011606000020000000102", (ContainerSighting(CLEAN[1]),)))
        assert outcome(CLEAN[1]) == "RELEASE"  # decided from the replica, kept locally
        lane.drive(Truck("held", "e28011606000020000000103", (ContainerSighting(HELD),)))
        assert outcome(HELD) == "HOLD"
        alarms = [m.payload for m in customs.snapshot() if m.topic == f"{PREFIX}/lane-1/alarm"]
        assert "shared_store_down" in {alarm["alarm"] for alarm in alarms}
        assert time.monotonic() - confirmed < MAX_AGE, "too slow to test before the list ages out"
        # The replica is as old as the list it copied: past the maximum age, no release.
        time.sleep(max(0.0, MAX_AGE + 1 - (time.monotonic() - confirmed)))
        lane.drive(Truck("stale", "e28011606000020000000104", (ContainerSighting(CLEAN[2]),)))
        stale = customs.wait_for(decision_of(CLEAN[2]), 60)[-1].payload
        assert stale["outcome"] != "RELEASE"
        assert "HOLD_LIST_STALE" in {reason["code"] for reason in stale["reasons"]}, stale
        server.start()  # back: what was kept locally is copied over by itself
        deadline = time.monotonic() + 60
        log = tmp_path / "daemon.log"
        while "the shared database is back" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and daemon.poll() is None, log.read_text(errors="replace")[
                -3000:
            ]
            time.sleep(0.2)
        # A confirmed list again, and the lane releases from the shared database.
        gated("holds", "import", str(holds), "--reason", "CBP's list, again", "--config", str(config))
        lane.drive(Truck("after", "e28011606000020000000105", (ContainerSighting(CLEAN[3]),)))
        assert outcome(CLEAN[3]) == "RELEASE"
    finally:
        daemon.terminate()
        daemon.wait(30)
    engine = create_engine(database)
    with engine.connect() as conn:
        stored = {
            row.container: row.outcome
            for row in conn.execute(select(decisions.c.container, decisions.c.outcome))
        }
    engine.dispose()
    assert {container: stored.get(container) for container in [*CLEAN, HELD]} == {
        CLEAN[0]: "RELEASE",
        CLEAN[1]: "RELEASE",
        HELD: "HOLD",
        CLEAN[2]: stale["outcome"],
        CLEAN[3]: "RELEASE",
    }
    mine = [
        m.payload for m in customs.snapshot() if m.payload.get("node") == "gate-1" and m.payload.get("seq")
    ]
    seqs = sorted({payload["seq"] for payload in mine})
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    ids = Counter(json.dumps([payload["id"], payload["seq"]]) for payload in mine)
    assert [key for key, count in ids.items() if count > 1] == []
    assert len({payload["id"] for payload in mine}) == len(seqs)  # one id per seq: nothing twice
