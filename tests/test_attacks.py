"""The attacks on the hold check, each tried as an intruder on the broker or a careless operator
would, against the daemon as its own process, a real mosquitto and the lane's simulators. Each of
these let a held container leave, or stopped the gate, before gated refused it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto, Subscriber
from tests.customs import ROGUE_KEY, command, signed
from tests.gate import gated, number, start_daemon, write_config

PREFIX = "gated/v1/e2e"
HELD = "MSKU4135329"
CLEAN = number("CSQU305438")
OTHER = number("TGHU900001")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class Broker:
    """An anonymous client on the broker: what anyone on the terminal network can do."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, payload: bytes | dict[str, Any]) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(f"{PREFIX}/holds/cmd", data, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def gate(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    lane_devices: LaneDevices,
    *,
    hold_list: str | None = "",
) -> Iterator[tuple[Subscriber, Broker, Path]]:
    """The daemon on its own process, with the operator's hold list imported first (``None``: no
    list at all, a new gate)."""
    config = write_config(tmp_path, mosquitto, lane_devices)
    if hold_list is not None:
        path = tmp_path / "holds.csv"
        path.write_text("container,agency,hold_type,code\n" + hold_list, encoding="utf-8")
        gated("holds", "import", str(path), "--allow-empty", "--reason", "CBP list", "--config", str(config))
    customs = subscriber_factory(mosquitto.port)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    broker = Broker(mosquitto.port)
    try:
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open")
        yield customs, broker, config
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        broker.close()
        daemon.terminate()
        daemon.wait(20)


def ack(customs: Subscriber, command_id: str | None, after: int = 0) -> dict[str, Any]:
    found = customs.wait_for(
        lambda m: (
            m.topic == f"{PREFIX}/holds/ack"
            and m.payload["command"] == command_id
            and m.payload["seq"] > after
        ),
        what=f"the ack of {command_id}",
    )
    return found[-1].payload


def mark(customs: Subscriber) -> int:
    return max((m.payload.get("seq") or 0 for m in customs.snapshot()), default=0)


def decisions(customs: Subscriber, tag_box: str, after: int, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        found = [
            m.payload
            for m in customs.snapshot()
            if m.topic == f"{PREFIX}/lane-1/decision" and m.payload["seq"] > after
        ]
        if len(found) >= count and any(d["container"] == tag_box for d in found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"no decision for {tag_box}")


def codes(decision: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in decision["reasons"]}


def audit_actors(config: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(config.parent / "gated.db") as db:
        return list(db.execute("SELECT actor, action FROM audit WHERE action LIKE 'hold%' ORDER BY ts"))


def release_of(container: str, command_id: str) -> dict[str, Any]:
    return command("release", id=command_id, container=container, agency="CBP", hold_type="customs")


# 1 and 2: anyone could release a hold; a junk command could squat a real one's id. -----------------


def test_nobody_but_customs_releases_a_hold_and_nobody_squats_its_ids(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    with gate(
        tmp_path, mosquitto, subscriber_factory, lane_devices, hold_list=f"{HELD},CBP,customs,1H\n"
    ) as (
        customs,
        broker,
        config,
    ):
        # The anonymous release of the report, verbatim.
        broker.send(
            b'{"schema":"gated.hold/1","id":"x-1","action":"release","container":"MSKU4135329",'
            b'"agency":"CBP","hold_type":"customs"}'
        )
        assert (found := ack(customs, "x-1"))["applied"] is False and "unsigned" in found["reason"]
        # Signed, but by a key customs does not own, under customs' key id.
        broker.send(signed(release_of(HELD, "x-2"), key=ROGUE_KEY))
        assert "does not verify" in ack(customs, "x-2")["reason"]
        # Customs' key, for an agency it may not act for.
        broker.send(signed(command("release", id="x-3", container=HELD, agency="LINE", hold_type="customs")))
        assert "may not act for agency LINE" in ack(customs, "x-3")["reason"]
        # A real release captured ten minutes ago and replayed.
        broker.send(signed(release_of(HELD, "x-4"), ts=datetime.now(UTC) - timedelta(minutes=10)))
        assert "too old" in ack(customs, "x-4")["reason"]
        # A signed field changed after signing.
        tampered = signed(release_of(OTHER, "x-5"))
        tampered["container"] = HELD
        broker.send(tampered)
        assert "does not verify" in ack(customs, "x-5")["reason"]

        check = json.loads(
            gated("holds", "check", HELD, "--json", "--config", str(config), check=False).stdout
        )
        assert check["held"] is True
        before = mark(customs)
        ScriptedLane(lane_devices, pace=0.5).drive(
            Truck("held", "e28011606000090000000001", (ContainerSighting(HELD),))
        )
        [decision] = [d for d in decisions(customs, HELD, before) if d["container"] == HELD]
        assert decision["outcome"] == "HOLD"

        # Junk sent first with the id of a real customs command does not make the real one a duplicate.
        broker.send(command("place", id="cbp-0042", container=OTHER, agency="CBP", hold_type="exam"))
        assert ack(customs, "cbp-0042")["applied"] is False
        after = mark(customs)
        broker.send(
            signed(command("place", id="cbp-0042", container=OTHER, agency="CBP", hold_type="customs"))
        )
        real = ack(customs, "cbp-0042", after)
        assert (real["applied"], real["duplicate"], real["key"]) == (True, False, "cbp-test")
        # Sent again (at least once delivery): a duplicate that changes nothing.
        broker.send(
            signed(command("place", id="cbp-0042", container=OTHER, agency="CBP", hold_type="customs"))
        )
        assert ack(customs, "cbp-0042", real["seq"])["duplicate"] is True
        check = json.loads(
            gated("holds", "check", OTHER, "--json", "--config", str(config), check=False).stdout
        )
        assert len(check["holds"]) == 1

    actors = audit_actors(config)
    assert ("unverified", "hold_command") in actors  # the record no longer blames customs
    assert ("key:cbp-test", "hold_command") in actors
    assert all(actor == "unverified" or actor.startswith(("key:", "operator:")) for actor, _ in actors)


# 3: one 3-byte message stopped every decision, silently. -------------------------------------------

HOSTILE = [
    b"NaN",
    b"Infinity",
    b"1e400",
    b'"\\ud800"',
    b'{"schema":"gated.hold/1","id":"\\ud800","action":"place"}',
    b"[" * 988 + b"]" * 988,
    b"{" * 100_000,
    b"\xff\xfe not utf-8",
    b'{"id": "a", "id": "b"}',
    b'{"schema":"gated.hold/1","id":"n-1","action":"sync","agency":"CBP","count":NaN}',
]


def test_no_message_stops_the_gate(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    with gate(tmp_path, mosquitto, subscriber_factory, lane_devices) as (customs, broker, _config):
        before = mark(customs)
        for payload in HOSTILE:
            broker.send(payload)

        def answers() -> list[dict[str, Any]]:
            return [
                m.payload
                for m in customs.snapshot()
                if m.topic.endswith("/holds/ack") and m.payload["seq"] > before
            ]

        deadline = time.monotonic() + 30
        while len(answers()) < len(HOSTILE) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(answers()) == len(HOSTILE)
        assert all(a["applied"] is False and a["key"] is None for a in answers())
        # The gate still decides, and its lane is still open.
        after = mark(customs)
        ScriptedLane(lane_devices, pace=0.5).drive(
            Truck("clean", "e28011606000090000000002", (ContainerSighting(CLEAN),))
        )
        [decision] = [d for d in decisions(customs, CLEAN, after) if d["container"] == CLEAN]
        assert decision["outcome"] == "RELEASE"
        lane = [m.payload for m in customs.snapshot() if m.topic == f"{PREFIX}/lane-1/status"][-1]
        assert lane["state"] == "open"


# 4: a held truck passed on the previous truck's permit. ---------------------------------------------


def test_a_held_truck_does_not_pass_on_the_previous_trucks_permit(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    barrier = lane_devices.barrier
    assert barrier is not None
    with gate(
        tmp_path, mosquitto, subscriber_factory, lane_devices, hold_list=f"{HELD},CBP,customs,1H\n"
    ) as (
        customs,
        _broker,
        _config,
    ):
        lane = ScriptedLane(lane_devices, pace=0.5)
        # Truck A is released but stays put at the open barrier.
        assert lane.drive(
            Truck("A", "e28011606000090000000003", (ContainerSighting(CLEAN),)), pass_through=False
        )
        assert barrier.permit() == 1
        passed = barrier.vehicles_passed()
        # Truck B, carrying a held box, arrives 3 s later: its tag withdraws A's permit at once.
        time.sleep(3.0)
        before = mark(customs)
        lane_devices.rfid.present_tag("e28011606000090000000004")
        deadline = time.monotonic() + 5
        while barrier.permit() != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert barrier.permit() == 0
        lane_devices.rpm.begin_pass()
        lane_devices.camera.read(HELD, 0.97)  # type: ignore[union-attr]
        lane_devices.rpm.end_pass()
        lane_devices.camera.passage_end(1)  # type: ignore[union-attr]
        [decision] = [d for d in decisions(customs, HELD, before) if d["container"] == HELD]
        assert decision["outcome"] == "HOLD"
        # B tries to drive through: the barrier stays shut, nobody passes on a permit.
        time.sleep(1.0)
        assert barrier.permit() == 0 and barrier.state() == 0
        assert barrier.vehicles_passed() == passed


# 5: any command made the hold list loaded and fresh. -------------------------------------------------


def test_only_customs_sync_makes_the_hold_list_fresh(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    with gate(tmp_path, mosquitto, subscriber_factory, lane_devices, hold_list=None) as (
        customs,
        broker,
        _config,
    ):

        def state(after: dict[str, Any] | None = None) -> dict[str, Any]:
            """The hold list's state as published (after the ack ``after``, when given)."""
            seq = after["seq"] if after else 0
            found = customs.wait_for(
                lambda m: m.topic == f"{PREFIX}/holds/state" and (m.payload["seq"] or 0) > seq
            )
            return found[-1].payload

        broker.send(command("place", id="junk-1", container=OTHER, agency="CBP", hold_type="customs"))
        ack(customs, "junk-1")
        assert (state()["loaded"], state()["fresh"]) == (False, False)
        broker.send(signed(command("place", id="p-1", container=HELD, agency="CBP", hold_type="customs")))
        placed = ack(customs, "p-1")
        assert placed["applied"] is True
        assert (state(placed)["loaded"], state(placed)["fresh"]) == (
            False,
            False,
        )  # one command proves nothing

        before = mark(customs)
        lane = ScriptedLane(lane_devices, pace=0.5)
        lane.drive(Truck("early", "e28011606000090000000005", (ContainerSighting(CLEAN),)))
        [decision] = [d for d in decisions(customs, CLEAN, before) if d["container"] == CLEAN]
        assert decision["outcome"] == "MANUAL_REVIEW" and "HOLD_LIST_NOT_LOADED" in codes(decision)

        # Customs says it has no holds, gated has one: out of step, an alarm, still not fresh.
        broker.send(signed(command("sync", id="s-1", agency="CBP", count=0)))
        refused = ack(customs, "s-1")
        assert "out of step" in refused["reason"]
        customs.wait_for(
            lambda m: m.topic.endswith("/alarm") and m.payload["alarm"] == "hold_list_out_of_sync"
        )
        assert state(refused)["fresh"] is False
        broker.send(signed(command("sync", id="s-2", agency="CBP", count=1)))
        synced = ack(customs, "s-2")
        assert synced["applied"] is True
        confirmed = state(synced)
        assert (confirmed["loaded"], confirmed["fresh"], confirmed["confirmed_by"]) == (
            True,
            True,
            "key:cbp-test",
        )
        time.sleep(1.5)
        before = mark(customs)
        lane.drive(Truck("after the sync", "e28011606000090000000006", (ContainerSighting(OTHER),)))
        [decision] = [d for d in decisions(customs, OTHER, before) if d["container"] == OTHER]
        assert decision["outcome"] == "RELEASE"


# 6: a pre-advised container the camera never saw was not checked. ----------------------------------


def test_a_preadvised_box_the_camera_missed_is_still_checked(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    tag = "e28011606000090000000007"
    preadvice = tmp_path / "preadvice.csv"
    preadvice.write_text(f"tag,container\n{tag},{CLEAN}\n{tag},{HELD}\n", encoding="utf-8")
    with gate(
        tmp_path, mosquitto, subscriber_factory, lane_devices, hold_list=f"{HELD},CBP,customs,1H\n"
    ) as (
        customs,
        _broker,
        config,
    ):
        gated("preadvice", "import", str(preadvice), "--config", str(config))
        before = mark(customs)
        # The camera reads and counts only the first box.
        opened = ScriptedLane(lane_devices, pace=0.5).drive(
            Truck("two boxes", tag, (ContainerSighting(CLEAN),))
        )
        found = decisions(customs, HELD, before, count=2)
        by_box = {d["container"]: d for d in found}
        assert by_box[HELD]["outcome"] == "HOLD"
        assert {"PREADVISED_NOT_READ", "HOLD_ACTIVE"} <= codes(by_box[HELD])
        assert opened is False


# 7: an empty file cleared the gate. -------------------------------------------------------------------


def test_empty_truncated_and_old_lists_are_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    refused = gated(
        "holds", "import", "--kind", "holds", str(empty), "--reason", "r", "--db", db, check=False
    )
    assert refused.returncode == 1 and "--allow-empty" in refused.stderr
    check = json.loads(gated("holds", "check", CLEAN, "--json", "--db", db, check=False).stdout)
    assert (check["eligible"], check["hold_list"]["loaded"]) == (False, False)

    full = tmp_path / "full.csv"
    full.write_text(
        "container,agency,hold_type\n"
        + "".join(f"{number(f'TGHU{n:06d}')},CBP,customs\n" for n in range(12)),
        encoding="utf-8",
    )
    gated("holds", "import", str(full), "--replace", "--reason", "CBP list", "--db", db)
    truncated = tmp_path / "truncated.csv"
    truncated.write_text(
        "\n".join(full.read_text(encoding="utf-8").splitlines()[:3]) + "\n", encoding="utf-8"
    )
    refused = gated("holds", "import", str(truncated), "--replace", "--reason", "r", "--db", db, check=False)
    assert refused.returncode == 1 and "--allow-shrink" in refused.stderr
    old = gated(
        "holds",
        "import",
        str(full),
        "--list-date",
        "2020-01-01T00:00:00Z",
        "--reason",
        "r",
        "--db",
        db,
        check=False,
    )
    assert old.returncode == 1 and "--allow-old" in old.stderr
    listed = json.loads(gated("holds", "list", "--json", "--db", db).stdout)
    assert len(listed["holds"]) == 12

    # The cancelled-card list likewise.
    cards = tmp_path / "cards.csv"
    cards.write_text("".join(f"{n:016x}\n" for n in range(1, 13)), encoding="utf-8")
    today = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    gated("credentials", "import", str(cards), "--list-date", today, "--db", db)
    for text, flag, date in (("", "--allow-empty", today), ("0000000000000001\n", "--allow-shrink", today)):
        path = tmp_path / "new-cards.csv"
        path.write_text(text, encoding="utf-8")
        refused = gated("credentials", "import", str(path), "--list-date", date, "--db", db, check=False)
        assert refused.returncode == 1 and flag in refused.stderr
    refused = gated(
        "credentials", "import", str(cards), "--list-date", "2020-01-01T00:00:00Z", "--db", db, check=False
    )
    assert refused.returncode == 1 and "--allow-old" in refused.stderr
    assert "12 cancelled cards" in gated("credentials", "status", "--db", db).stdout

    # Every hold change by hand names its operator and reason; every agency's holds only when said.
    box = number("TGHU000001")
    wide = gated("holds", "release", "--container", box, "--reason", "r", "--db", db, check=False)
    assert wide.returncode == 1 and "--all-agencies" in wide.stderr
    gated("holds", "release", "--container", box, "--agency", "CBP", "--reason", "entry filed", "--db", db)
    with sqlite3.connect(db) as conn:
        actor, detail = conn.execute(
            "SELECT actor, detail FROM audit WHERE action = 'hold_release' ORDER BY ts DESC"
        ).fetchone()
    assert actor.startswith("operator:") and json.loads(detail)["reason"] == "entry filed"


# The whole gate under fire: arbitrary bytes and JSON on holds/cmd while trucks pass. ----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
command_like = st.fixed_dictionaries(
    {
        "schema": st.just("gated.hold/1"),
        "id": st.text(max_size=8),
        "action": st.sampled_from(["place", "release", "sync"]),
    },
    optional={
        "container": st.sampled_from([HELD, CLEAN, "garbage"]),
        "agency": st.sampled_from(["CBP", "LINE", ""]),
        "hold_type": st.text(max_size=8),
        "count": st.integers(),
        "key": st.sampled_from(["cbp-test", "nobody"]),
        "sig": st.text(max_size=90),
        "ts": st.text(max_size=30),
    },
)


def test_arbitrary_commands_while_trucks_pass(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    with gate(
        tmp_path, mosquitto, subscriber_factory, lane_devices, hold_list=f"{HELD},CBP,customs,1H\n"
    ) as (
        customs,
        broker,
        config,
    ):
        before = mark(customs)
        lane = ScriptedLane(lane_devices, pace=0.5)
        trucks = [
            Truck("clean", "e28011606000090000000011", (ContainerSighting(CLEAN),)),
            Truck("held", "e28011606000090000000012", (ContainerSighting(HELD),)),
            Truck("clean again", "e28011606000090000000013", (ContainerSighting(OTHER),)),
        ]

        def drive() -> None:
            for truck in trucks:
                lane.drive(truck)
                # Decided before the next tag comes: a new truck, not one superseding it.
                decisions(customs, truck.containers[0].code, before)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            payload=st.binary(max_size=200)
            | json_values.map(lambda v: json.dumps(v).encode())
            | command_like.map(lambda v: json.dumps(v).encode())
        )
        def fire(payload: bytes) -> None:
            broker.send(payload)
            time.sleep(0.05)  # spread over the trucks' passes

        fire()
        driver.join(120)
        found = decisions(customs, OTHER, before, count=3)
        outcomes = {d["container"]: d["outcome"] for d in found}
        assert outcomes == {CLEAN: "RELEASE", HELD: "HOLD", OTHER: "RELEASE"}, outcomes
        check = json.loads(
            gated("holds", "check", HELD, "--json", "--config", str(config), check=False).stdout
        )
        assert check["held"] is True
        lanes = [m.payload for m in customs.snapshot() if m.topic == f"{PREFIX}/lane-1/status"]
        assert all(status["state"] != "closed" for status in lanes)
