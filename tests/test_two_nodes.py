"""Two gate nodes, each a real `gated run` process with its own lane of simulators, on one real
PostgreSQL and one real mosquitto: both decide trucks at once, a hold placed through one node is
enforced at the other's lane, and each node's messages carry its own gap-free seq with no id
sent twice."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.customs import KEY_ID, write_private_key
from tests.gate import gated, lane_devices_fixture, number, start_daemon, write_config
from tests.postgres import PostgresServer, postgres_server

pytest.importorskip("psycopg")

PREFIX = "gated/v1/e2e"
HELD = number("TGHU100002")
LATE_HOLD = number("CSQU305438")
SIGNED_HOLD = number("MAEU123456")
CLEAN = (number("MSKU413532"), number("MSCU100001"))


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


@pytest.fixture
def second_lane() -> Iterator[LaneDevices]:
    yield from lane_devices_fixture()


def node_config(folder: Path, broker: Mosquitto, devices: LaneDevices, database: str, node: int) -> Path:
    folder.mkdir()
    config = write_config(folder, broker, devices, database=database)
    text = config.read_text(encoding="utf-8")
    text = text.replace('node = "gate-1"', f'node = "gate-{node}"').replace(
        'id = "lane-1"', f'id = "lane-{node}"'
    )
    config.write_text(text, encoding="utf-8")
    return config


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_two_nodes_share_one_postgresql_and_each_keeps_its_own_seq(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    lane_devices: LaneDevices,
    second_lane: LaneDevices,
    server: PostgresServer,
) -> None:
    database = server.new_database()
    configs = [
        node_config(tmp_path / "node-1", mosquitto, lane_devices, database, 1),
        node_config(tmp_path / "node-2", mosquitto, second_lane, database, 2),
    ]
    holds = tmp_path / "holds.csv"
    holds.write_text(f"container,agency,hold_type\n{HELD},CBP,customs\n", encoding="utf-8")
    gated("holds", "import", str(holds), "--reason", "CBP's list of today", "--config", str(configs[0]))
    customs = subscriber_factory(mosquitto.port)
    daemons = [start_daemon(config, config.parent / "daemon.log") for config in configs]
    try:
        for lane in ("lane-1", "lane-2"):
            customs.wait_for(
                lambda m, lane=lane: m.topic == f"{PREFIX}/{lane}/status" and m.payload["state"] == "open", 60
            )
        # Both lanes at once: a clean truck and the held one on each.
        lanes = [ScriptedLane(lane_devices, pace=0.5), ScriptedLane(second_lane, pace=0.5)]

        def drive(index: int) -> None:
            lanes[index].drive(
                Truck(f"clean-{index}", f"e2801160600002000000010{index}", (ContainerSighting(CLEAN[index]),))
            )
            lanes[index].drive(
                Truck(f"held-{index}", f"e2801160600002000000020{index}", (ContainerSighting(HELD),))
            )

        drivers = [threading.Thread(target=drive, args=(index,)) for index in (0, 1)]
        for thread in drivers:
            thread.start()
        for thread in drivers:
            thread.join(120)

        def decided(lane: str, container: str) -> str:
            found = customs.wait_for(
                lambda m: m.topic == f"{PREFIX}/{lane}/decision" and m.payload["container"] == container, 60
            )
            return str(found[-1].payload["outcome"])

        for index, lane in enumerate(("lane-1", "lane-2")):
            assert decided(lane, CLEAN[index]) == "RELEASE"
            assert decided(lane, HELD) == "HOLD"
        # A hold placed through node 1's command line, enforced at node 2's lane.
        gated(
            "holds", "add", "--container", LATE_HOLD, "--agency", "CBP", "--type", "exam",
            "--reason", "tip-off", "--config", str(configs[0]),
        )  # fmt: skip
        lanes[1].drive(Truck("late-hold", "e28011606000020000000301", (ContainerSighting(LATE_HOLD),)))
        assert decided("lane-2", LATE_HOLD) == "HOLD"
        # Customs' signed command reaches both nodes (both subscribe): applied once, answered.
        key = write_private_key(tmp_path / f"{KEY_ID}.pem")
        sent = gated(
            "holds", "send", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--site", "e2e",
            "--key", str(key), "--action", "place", "--container", SIGNED_HOLD, "--agency", "CBP",
            "--type", "customs", "--id", "cbp-two-nodes-1", "--json", "--timeout", "30", check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        answers = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/holds/ack" and m.payload.get("command") == "cbp-two-nodes-1", 30
        )
        lanes[0].drive(Truck("signed-hold", "e28011606000020000000302", (ContainerSighting(SIGNED_HOLD),)))
        assert decided("lane-1", SIGNED_HOLD) == "HOLD"
        acks = [
            m.payload
            for m in customs.snapshot()
            if m.topic == f"{PREFIX}/holds/ack" and m.payload.get("command") == "cbp-two-nodes-1"
        ]
        # Each node answers: one applied it, the other found it applied already (a duplicate).
        assert sorted((a["applied"], a["duplicate"]) for a in acks) == [(True, False), (True, True)], acks
        assert {a["node"] for a in acks} == {"gate-1", "gate-2"}
        assert answers
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(30)
    for config in configs:
        log = (config.parent / "daemon.log").read_text(errors="replace")
        assert "UniqueViolation" not in log and "storage failed" not in log, log[-3000:]
    messages = customs.snapshot()
    for node in ("gate-1", "gate-2"):
        mine = [
            m.payload for m in messages if m.payload.get("node") == node and m.payload.get("seq") is not None
        ]
        seqs = sorted(payload["seq"] for payload in mine)
        assert seqs == list(range(1, len(seqs) + 1)), f"{node}: gaps or repeats in {seqs}"
        repeated = [i for i, count in Counter(payload["id"] for payload in mine).items() if count > 1]
        assert repeated == [], f"{node} sent ids twice: {repeated}"
        assert any(payload.get("schema") == "gated.decision/1" for payload in mine)
