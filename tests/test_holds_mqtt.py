"""Customs places and releases holds over MQTT with signed commands (``gated holds send``, as the
README shows); the daemon answers each command and the next truck is decided on the new hold list.
Malformed payloads are rejected with a reason and change nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gated.payload_schemas import validate_payload
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto, Subscriber
from tests.customs import command, signed, write_private_key
from tests.gate import gated, number, start_daemon, write_config

PREFIX = "gated/v1/e2e"
CONTAINER = number("OOLU812345")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def publish(port: int, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(f"{PREFIX}/holds/cmd", payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def ack_for(customs: Subscriber, command: str | None, after: int) -> dict[str, Any]:
    found = customs.wait_for(
        lambda m: (
            m.topic == f"{PREFIX}/holds/ack" and m.payload["command"] == command and m.payload["seq"] > after
        ),
        what=f"ack of {command}",
    )
    return found[0].payload


def decision_for(customs: Subscriber, tag: str, after_seq: int) -> str:
    decisions = customs.wait_for(
        lambda m: (
            m.topic == f"{PREFIX}/lane-1/decision"
            and m.payload["container"] == CONTAINER
            and m.payload["seq"] > after_seq
        ),
        what=f"decision for truck {tag}",
    )
    return str(decisions[0].payload["outcome"])


def last_seq(customs: Subscriber) -> int:
    return max((m.payload["seq"] or 0 for m in customs.snapshot()), default=0)


def test_holds_over_mqtt(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    customs = subscriber_factory(mosquitto.port)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    lane = ScriptedLane(lane_devices, pace=0.5)
    try:
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open")
        state = customs.wait_for(lambda m: m.topic == f"{PREFIX}/holds/state")[0].payload
        assert state["loaded"] is False  # nothing imported: nothing may be released yet

        # Hostile and malformed commands: each answered, none applied.
        mark = last_seq(customs)
        publish(mosquitto.port, b"\xff\xfe not json")
        assert ack_for(customs, None, mark)["applied"] is False
        for hostile in (
            [1, 2, 3],
            signed(command("explode", id="bad-1", container=CONTAINER)),
            signed(command("place", id="bad-2", container="NOT A BOX", agency="CBP", hold_type="customs")),
            signed(command("place", id="bad-3", container=CONTAINER)),
            {"id": "x" * 10_000},
        ):
            publish(mosquitto.port, json.dumps(hostile).encode())
        for bad in ("bad-1", "bad-2", "bad-3"):
            ack = ack_for(customs, bad, mark)
            assert ack["applied"] is False and ack["reason"], ack

        # Customs places a hold with `gated holds send`: acknowledged; then confirms the list.
        key = write_private_key(tmp_path / "cbp-test.key")
        send = (
            "holds",
            "send",
            "--broker",
            f"mqtt://127.0.0.1:{mosquitto.port}",
            "--site",
            "e2e",
            "--key",
            str(key),
        )
        mark = last_seq(customs)
        sent = gated(
            *send,
            *("--action", "place", "--container", CONTAINER, "--agency", "CBP", "--type", "customs"),
            *("--code", "1H", "--reference", "EXAM-42", "--id", "cbp-0001"),
        )
        assert "applied cbp-0001: hold placed" in sent.stdout
        ack = ack_for(customs, "cbp-0001", mark)
        assert (
            ack["applied"] is True and ack["holds"][0]["container"] == CONTAINER and ack["key"] == "cbp-test"
        )
        state = customs.wait_for(lambda m: m.topic == f"{PREFIX}/holds/state" and m.payload["seq"] > mark)
        assert state[-1].payload["loaded"] is False  # one command does not make the list current
        assert "applied" in gated(*send, "--action", "sync", "--agency", "CBP", "--count", "1").stdout
        state = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/holds/state" and m.payload["seq"] > mark and m.payload["loaded"]
        )[0].payload
        assert state["count"] == 1 and state["fresh"] is True and state["confirmed_by"] == "key:cbp-test"
        again = gated(
            *send,
            "--action",
            "place",
            "--container",
            CONTAINER,
            "--agency",
            "CBP",
            "--type",
            "customs",
            "--id",
            "cbp-0001",
        )
        assert "a duplicate" in again.stdout  # delivered twice: applied once

        mark = last_seq(customs)
        lane.drive(Truck("held", "e28011606000030000000001", (ContainerSighting(CONTAINER),)))
        assert decision_for(customs, "held", mark) == "HOLD"
        time.sleep(1.5)

        # Customs releases it (1I): the next visit of the same box is released.
        release = signed(
            command(
                "release", id="cbp-0002", container=CONTAINER, agency="CBP", hold_type="customs", code="1I"
            )
        )
        mark = last_seq(customs)
        publish(mosquitto.port, json.dumps(release).encode())
        assert ack_for(customs, "cbp-0002", mark)["applied"] is True
        mark = last_seq(customs)
        lane.drive(Truck("released", "e28011606000030000000002", (ContainerSighting(CONTAINER),)))
        assert decision_for(customs, "released", mark) == "RELEASE"
        assert daemon.poll() is None, "the daemon died on hostile input"
        for message in customs.snapshot():
            assert validate_payload(message.topic, message.payload) == [], message
    finally:
        daemon.terminate()
        daemon.wait(20)
    # A graceful stop announces the node offline with a seq (unlike the Will).
    offline = customs.wait_for(
        lambda m: m.topic == f"{PREFIX}/node/gate-1/status" and m.payload["state"] == "offline"
    )
    assert isinstance(offline[-1].payload["seq"], int)
