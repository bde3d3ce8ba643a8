"""Nothing lost: the broker, the network and the daemon itself fail under load, and every reading
and decision still reaches a durable subscriber; nothing ever decided is lost or decided twice."""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gated.config import GateConfig, validate
from gated.daemon import Daemon
from gated.model import Kind, Reading, Source
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto, Subscriber
from tests.gate import number, start_daemon, write_config
from tests.netproxy import SilentCutProxy
from tests.system import free_port

pytestmark = [pytest.mark.e2e]


def daemon_config(tmp_path: Path, mqtt_port: int, *, keepalive: int = 10) -> GateConfig:
    """A one-lane daemon whose only device is absent: readings are fed straight into the pipeline."""
    return validate(
        {
            "site": "durable",
            "node": "gate-1",
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "keepalive": keepalive, "replay_seconds": 10},
            "storage": {"database": str(tmp_path / "gated.db")},
            "holds": {"max_age_seconds": 3600},
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["rfid"],
                    "settle_seconds": 0.0,
                    "devices": [
                        {"id": "rfid-1", "driver": "rfid-serial", "url": f"socket://127.0.0.1:{free_port()}"}
                    ],
                }
            ],
        }
    )


def feed(daemon: Daemon, count: int, seconds: float, stop: threading.Event | None = None) -> None:
    """``count`` readings over about ``seconds``, as drivers would hand them over; every tenth is a
    new truck's tag, so visits open and close and decisions are made along the way."""
    started = time.monotonic()
    for index in range(count):
        if stop is not None and stop.is_set():
            return
        now = datetime.now(UTC)
        if index % 10 == 0:
            reading = Reading("lane-1", Kind.RFID, "rfid-1", Source.EPC, f"e280{index:020x}", now)
        else:
            reading = Reading(
                "lane-1", Kind.RPM, "rpm-1", "gamma_background_cps", 250.0 + index % 7, now, units="cps"
            )
        daemon.pipeline.reading(reading)
        lag = started + seconds * (index + 1) / count - time.monotonic()
        if lag > 0:
            time.sleep(lag)


def stored_ids(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        readings = {row[0] for row in conn.execute("SELECT id FROM readings")}
        decisions = {row[0] for row in conn.execute("SELECT id FROM decisions")}
    return readings | decisions


def received_ids(subscriber: Subscriber) -> set[str]:
    return {
        m.payload["id"]
        for m in subscriber.snapshot()
        if "/reading/" in m.topic or m.topic.endswith("/decision")
    }


def wait_until(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Mosquitto(folder, persistent=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.timeout(240)
def test_broker_killed_mid_run_loses_nothing(
    tmp_path: Path, persistent_broker: Mosquitto, subscriber_factory: Any
) -> None:
    customs = subscriber_factory(persistent_broker.port, client_id="customs-durable", durable=True)
    subscribed = time.time()
    snapshot = persistent_broker.workdir / "mosquitto.db"
    # A snapshot written after the subscription holds the durable session (the broker saves every second).
    wait_until(lambda: snapshot.exists() and snapshot.stat().st_mtime > subscribed, 10, "a broker snapshot")
    daemon = Daemon(daemon_config(tmp_path, persistent_broker.port))
    daemon.start()
    try:
        assert daemon.publisher.wait_connected(10)
        feeder = threading.Thread(target=feed, args=(daemon, 6000, 6.0))
        feeder.start()
        time.sleep(2.5)
        persistent_broker.kill()  # SIGKILL, mid-run
        time.sleep(1.5)
        persistent_broker.start()
        feeder.join(60)
        back = time.monotonic()
        wait_until(lambda: daemon.publisher.store.outbox_depth() == 0, 60, "the outbox to drain")
        drained = time.monotonic() - back
        expected = stored_ids(tmp_path / "gated.db")
        assert len(expected) >= 6000
        wait_until(lambda: expected <= received_ids(customs), 60, "every id at the durable subscriber")
        assert drained <= 15.0, f"outbox took {drained:.1f} s to drain after the broker came back"
        assert daemon.publisher.stats.disconnects >= 1
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_silent_network_cut_is_detected_and_heals(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any
) -> None:
    keepalive = 5
    proxy = SilentCutProxy(mosquitto.port).start()
    customs = subscriber_factory(mosquitto.port)  # directly on the broker, not through the cut
    daemon = Daemon(daemon_config(tmp_path, proxy.port, keepalive=keepalive))
    daemon.start()
    stop_feeding = threading.Event()
    try:
        assert daemon.publisher.wait_connected(10)
        feeder = threading.Thread(target=feed, args=(daemon, 3000, 20.0, stop_feeding))
        feeder.start()
        time.sleep(2.0)
        cut_at = time.monotonic()
        proxy.cut()
        detected = wait_until(lambda: not daemon.publisher.connected, 1.5 * keepalive + 5 + 5, "detection")
        assert detected <= 1.5 * keepalive + 5, f"silent link noticed after {detected:.1f} s"
        time.sleep(2.0)
        proxy.heal()
        feeder.join(60)
        wait_until(lambda: daemon.publisher.store.outbox_depth() == 0, 60, "the outbox to drain")
        expected = stored_ids(tmp_path / "gated.db")
        wait_until(lambda: expected <= received_ids(customs), 60, "every id after the cut healed")
        print(f"silent cut detected after {detected:.1f} s (keepalive {keepalive} s); cut at {cut_at:.0f}")
    finally:
        stop_feeding.set()
        daemon.stop()
        proxy.stop()


DECISION_LINE = re.compile(r"decision (\w+) lane=(\S+) visit=(\w+) container=(\S+) outcome=(\w+)")


@pytest.mark.timeout(300)
def test_daemon_killed_at_random_points(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    hold_list = tmp_path / "holds.csv"
    hold_list.write_text("container,agency,hold_type\n", encoding="utf-8")
    subprocess.run(
        [
            *(sys.executable, "-m", "gated", "holds", "import", str(hold_list), "--allow-empty"),
            *("--reason", "no holds today", "--config", str(config)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    customs = subscriber_factory(mosquitto.port)
    lane = ScriptedLane(lane_devices, pace=0.3)
    stop = threading.Event()
    chooser = random.Random(6346)

    def trucks() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            code = number(f"MSKU{index:06d}")
            lane.drive(Truck(f"truck {index}", f"e2801160600009{index:010d}", (ContainerSighting(code),)))
            stop.wait(0.5)

    traffic = threading.Thread(target=trucks, daemon=True)
    traffic.start()
    reported: dict[str, tuple[str, str]] = {}
    try:
        for round_number in range(10):
            log = tmp_path / f"daemon-{round_number}.log"
            daemon = start_daemon(config, log)
            time.sleep(chooser.uniform(1.5, 4.0))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            for match in DECISION_LINE.finditer(log.read_text(errors="replace")):
                reported[match.group(1)] = (match.group(3), match.group(5))
        stop.set()
        traffic.join(30)
        final = start_daemon(config, tmp_path / "daemon-final.log")
        try:
            database = tmp_path / "gated.db"
            assert reported, "no decision was reported in ten rounds"
            with sqlite3.connect(database) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                stored = {
                    row[0]: (row[1], row[2])
                    for row in conn.execute("SELECT id, visit, outcome FROM decisions")
                }
                duplicates = conn.execute(
                    "SELECT visit, slot, COUNT(*) FROM decisions GROUP BY visit, slot HAVING COUNT(*) > 1"
                ).fetchall()
            assert duplicates == []
            missing = set(reported) - set(stored)
            assert not missing, f"{len(missing)} reported decisions are not in the database"
            assert all(stored[key] == value for key, value in reported.items())
            wait_until(
                lambda: (
                    set(reported)
                    <= {m.payload["id"] for m in customs.snapshot() if m.topic.endswith("/decision")}
                ),
                60,
                "every reported decision to be published",
            )
            outcomes: dict[tuple[str, str | None], set[str]] = {}
            for message in customs.snapshot():
                if message.topic.endswith("/decision"):
                    key = (message.payload["visit"], message.payload["container"])
                    outcomes.setdefault(key, set()).add(message.payload["id"])
            assert all(len(ids) == 1 for ids in outcomes.values()), "a visit got two different decisions"
        finally:
            final.send_signal(signal.SIGTERM)
            final.wait(30)
    finally:
        stop.set()
    print(f"{len(reported)} decisions reported across 10 kills; all stored and published")
