"""The production broker configuration (config/mosquitto/) on a real mosquitto, with certificates
made here: who gets in, who may publish what, and that nobody can take gated's session."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.customs import write_private_key
from tests.gate import gated, number, start_daemon, write_config
from tests.system import require_tool
from tests.tls import Client, Pki, secure_broker

pytestmark = pytest.mark.timeout(60)

SITE = "gated/v1/terminal-a"
NODE = "gated-terminal-a-gate-1"
NOT_AUTHORIZED = 135
CLEAN = number("MSKU413532")
HELD = number("TGHU100002")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    running = secure_broker(tmp_path / "broker", pki)
    yield running
    running.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(
    clients: list[Client], broker: Mosquitto, pki: Pki, name: str | None, **options: object
) -> Client:
    client = Client(broker.port, ca=pki.ca, identity=pki.client(name) if name else None, **options)  # type: ignore[arg-type]
    clients.append(client)
    assert client.open(), f"{name} was refused: {client.connect_reason}"
    return client


def test_a_client_without_a_certificate_is_refused(
    broker: Mosquitto, pki: Pki, clients: list[Client]
) -> None:
    anonymous = Client(broker.port, ca=pki.ca, identity=None)
    clients.append(anonymous)
    assert not anonymous.open()


def test_clear_text_is_refused(broker: Mosquitto, pki: Pki, clients: list[Client]) -> None:
    plain = Client(broker.port, ca=None, identity=None, protocol=mqtt.MQTTv311)
    clients.append(plain)
    assert not plain.open(timeout=5)


def test_a_certificate_from_another_ca_is_refused(
    broker: Mosquitto, pki: Pki, tmp_path: Path, clients: list[Client]
) -> None:
    stranger = Pki(tmp_path / "other-ca", name="someone else's CA")
    forged = Client(broker.port, ca=pki.ca, identity=stranger.client(NODE))
    clients.append(forged)
    assert not forged.open()


def test_a_gate_node_cannot_publish_hold_commands(broker: Mosquitto, pki: Pki, clients: list[Client]) -> None:
    observer = connect(clients, broker, pki, "observer-control-room")
    assert observer.subscribe(f"{SITE}/#") < 0x80
    node = connect(clients, broker, pki, NODE)
    assert node.publish(f"{SITE}/holds/cmd", b'{"action": "release"}') == NOT_AUTHORIZED
    # What the node may publish arrives, after the refused command, which never does.
    assert node.publish(f"{SITE}/holds/ack", b"{}") == 0
    observer.wait_for(lambda topic, _: topic == f"{SITE}/holds/ack")
    assert [topic for topic, _ in observer.messages] == [f"{SITE}/holds/ack"]
    # Nor another site's topics, nor another node's status.
    assert node.publish("gated/v1/terminal-b/lane-1/decision", b"{}") == NOT_AUTHORIZED
    assert node.publish(f"{SITE}/node/gate-north/status", b"{}") == NOT_AUTHORIZED


def test_customs_cannot_publish_as_gated(broker: Mosquitto, pki: Pki, clients: list[Client]) -> None:
    observer = connect(clients, broker, pki, "observer-control-room")
    assert observer.subscribe(f"{SITE}/#") < 0x80
    customs = connect(clients, broker, pki, "customs-cbp")
    for topic in (
        f"{SITE}/lane-1/decision",
        f"{SITE}/lane-1/alarm",
        f"{SITE}/holds/ack",
        f"{SITE}/holds/state",
    ):
        assert customs.publish(topic, b'{"outcome": "RELEASE"}') == NOT_AUTHORIZED, topic
    assert customs.publish(f"{SITE}/holds/cmd", b"{}") == 0
    observer.wait_for(lambda topic, _: topic == f"{SITE}/holds/cmd")
    assert [topic for topic, _ in observer.messages] == [f"{SITE}/holds/cmd"]


def test_an_unknown_identity_may_do_nothing(broker: Mosquitto, pki: Pki, clients: list[Client]) -> None:
    contractor = connect(clients, broker, pki, "camera-vendor")
    contractor.subscribe(f"{SITE}/#")  # mosquitto grants a wildcard and filters what it delivers
    observer = connect(clients, broker, pki, "observer-control-room")
    assert observer.subscribe(f"{SITE}/#") < 0x80
    assert contractor.publish(f"{SITE}/lane-1/decision", b"{}") == NOT_AUTHORIZED
    assert contractor.publish(f"{SITE}/holds/cmd", b"{}") == NOT_AUTHORIZED
    node = connect(clients, broker, pki, NODE)
    assert node.publish(f"{SITE}/lane-1/decision", b'{"outcome": "HOLD"}') == 0
    customs = connect(clients, broker, pki, "customs-cbp")
    assert customs.publish(f"{SITE}/holds/cmd", b"{}") == 0
    observer.wait_for(lambda topic, _: topic == f"{SITE}/holds/cmd")
    assert [topic for topic, _ in observer.messages] == [f"{SITE}/lane-1/decision", f"{SITE}/holds/cmd"]
    assert contractor.messages == []


def test_nobody_else_gets_gated_s_client_id(broker: Mosquitto, pki: Pki, clients: list[Client]) -> None:
    node = connect(clients, broker, pki, NODE, client_id=NODE)
    assert node.subscribe(f"{SITE}/holds/cmd") < 0x80
    # Another identity asks for gated's client id: the broker gives it its own name instead, so
    # gated keeps its session and its hold commands.
    intruder = connect(clients, broker, pki, "observer-control-room", client_id=NODE)
    customs = connect(clients, broker, pki, "customs-cbp")
    assert customs.publish(f"{SITE}/holds/cmd", b'{"n": 1}') == 0
    node.wait_for(lambda topic, payload: payload == b'{"n": 1}')
    assert not node.ended.is_set() and not intruder.ended.is_set()


def tls_settings(pki: Pki, port: int, name: str = NODE) -> str:
    node = pki.client(name)
    return (
        f'host = "localhost"\nport = {port}\nkeepalive = 5\nclient_id = "{name}"\n[mqtt.tls]\n'
        f'ca_file = "{pki.ca}"\ncert_file = "{node.cert}"\nkey_file = "{node.key}"'
    )


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_daemon_decides_trucks_over_tls_and_keeps_its_session(
    tmp_path: Path, broker: Mosquitto, pki: Pki, clients: list[Client], lane_devices: LaneDevices
) -> None:
    config = write_config(
        tmp_path, broker, lane_devices, site="terminal-a", mqtt=tls_settings(pki, broker.port)
    )
    assert gated("check-config", "--config", str(config)).returncode == 0
    holds = tmp_path / "holds.csv"
    holds.write_text(f"container,agency,hold_type\n{HELD},CBP,customs\n", encoding="utf-8")
    gated("holds", "import", str(holds), "--reason", "CBP's list of today", "--config", str(config))
    observer = connect(clients, broker, pki, "observer-control-room")
    assert observer.subscribe(f"{SITE}/#") < 0x80
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        observer.wait_for(
            lambda topic, payload: topic == f"{SITE}/lane-1/status" and b'"open"' in payload, 30
        )
        # Someone on the network asks for gated's client id: the broker names it by its own
        # certificate, so customs' commands still reach gated, every one of them.
        connect(clients, broker, pki, "camera-vendor", client_id=NODE)
        customs = pki.client("customs-cbp")
        key = write_private_key(tmp_path / "cbp-test.pem")
        commands = tmp_path / "commands.jsonl"
        places = [
            {"action": "place", "container": number(f"TGHU2{index:05d}"), "agency": "CBP",
             "hold_type": "customs", "id": f"cbp-test-tls-{index}"}
            for index in range(10)
        ]  # fmt: skip
        commands.write_text("".join(json.dumps(place) + "\n" for place in places), encoding="utf-8")
        sent = gated(
            "holds", "send", "--broker", f"mqtts://localhost:{broker.port}", "--ca", str(pki.ca),
            "--cert", str(customs.cert), "--cert-key", str(customs.key), "--site", "terminal-a",
            "--key", str(key), "--file", str(commands), "--timeout", "30", check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.count("applied") == 10, sent.stdout

        lane = ScriptedLane(lane_devices, pace=0.5)
        lane.drive(Truck("clean", "e28011606000020000000001", (ContainerSighting(CLEAN),)))
        # Decided before the next tag comes: a new truck, not one superseding it.
        observer.wait_for(
            lambda topic, payload: topic.endswith("/decision") and CLEAN.encode() in payload, 60
        )
        lane.drive(Truck("held", "e28011606000020000000002", (ContainerSighting(HELD),)))
        observer.wait_for(lambda topic, payload: topic.endswith("/decision") and HELD.encode() in payload, 60)
        outcomes = {
            json.loads(payload)["container"]: json.loads(payload)["outcome"]
            for topic, payload in observer.messages
            if topic == f"{SITE}/lane-1/decision"
        }
        assert outcomes == {CLEAN: "RELEASE", HELD: "HOLD"}
        text = log.read_text(errors="replace")
        assert "taken" not in text and "connection lost" not in text, text[-3000:]
    finally:
        daemon.terminate()
        daemon.wait(30)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_session_taken_over_raises_an_alarm(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    # A broker without identities (a lab's): anyone may connect with gated's client id.
    config = write_config(tmp_path, mosquitto, lane_devices)
    officers = subscriber_factory(mosquitto.port)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        officers.wait_for(
            lambda m: m.topic == "gated/v1/e2e/node/gate-1/status" and m.payload["state"] == "online",
            what="node birth",
        )
        intruder = Client(mosquitto.port, ca=None, identity=None, client_id="gated-e2e-gate-1")
        intruder.client.connect("127.0.0.1", mosquitto.port)
        intruder.client.loop_start()
        try:
            alarm = officers.wait_for(
                lambda m: (
                    m.topic == "gated/v1/e2e/lane-1/alarm" and m.payload["alarm"] == "session_taken_over"
                ),
                timeout=30,
                what="the takeover alarm",
            )[0]
        finally:
            intruder.client.loop_stop()
            intruder.client.disconnect()
        assert alarm.payload["severity"] == "high"
        assert "gated-e2e-gate-1" in alarm.payload["text"]
        assert "took gated's session" in log.read_text(errors="replace")
    finally:
        daemon.terminate()
        daemon.wait(30)


def dynsec_broker(folder: Path) -> Mosquitto:
    """A mosquitto with the dynamic security plugin, which (unlike an acl_file) refuses a
    subscription the client may not make: user "gate" may publish under gated/ and subscribe to
    nothing; user "watch" may read everything."""
    ctrl = require_tool("mosquitto_ctrl")
    folder.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(folder)
    state = folder / "dynsec.json"
    subprocess.run([ctrl, "dynsec", "init", str(state), "admin", "admin-pw"], check=True, capture_output=True)
    plugin = next(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"), None)
    assert plugin is not None, "mosquitto's dynamic security plugin is not installed"
    broker.conf.write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous false\nuser root\nlog_dest stderr\n"
        f"plugin {plugin}\nplugin_opt_config_file {state}\nmax_queued_messages 100000\n",
        encoding="utf-8",
    )
    broker.start()
    admin = [ctrl, "-h", "127.0.0.1", "-p", str(broker.port), "-u", "admin", "-P", "admin-pw", "dynsec"]
    for command in (
        ["createClient", "gate", "-p", "gate-pw"],
        ["createRole", "gate"],
        ["addRoleACL", "gate", "publishClientSend", "gated/#", "allow"],
        ["addClientRole", "gate", "gate"],
        ["createClient", "watch", "-p", "watch-pw"],
        ["createRole", "watch"],
        ["addRoleACL", "watch", "subscribePattern", "gated/#", "allow"],
        ["addClientRole", "watch", "watch"],
    ):
        subprocess.run([*admin, *command], check=True, capture_output=True, timeout=10)
    return broker


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_refused_subscription_raises_an_alarm(tmp_path: Path, lane_devices: LaneDevices) -> None:
    broker = dynsec_broker(tmp_path / "broker")
    password = tmp_path / "mqtt-password"
    password.write_text("gate-pw\n", encoding="utf-8")
    password.chmod(0o600)
    settings = f'host = "127.0.0.1"\nport = {broker.port}\nusername = "gate"\npassword_file = "{password}"'
    config = write_config(tmp_path, broker, lane_devices, mqtt=settings)
    officers = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    officers.username_pw_set("watch", "watch-pw")
    alarms: list[dict[str, Any]] = []
    officers.on_message = lambda _c, _u, message: alarms.append(json.loads(message.payload))
    officers.connect("127.0.0.1", broker.port)
    officers.subscribe("gated/v1/e2e/+/alarm", qos=1)
    officers.loop_start()
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a["alarm"] == "subscription_refused" for a in alarms):
            time.sleep(0.1)
        refused = [a for a in alarms if a["alarm"] == "subscription_refused"]
        assert refused, (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]
        assert "holds/cmd" in refused[0]["text"] and refused[0]["lane"] == "lane-1"
    finally:
        daemon.terminate()
        daemon.wait(30)
        officers.loop_stop()
        officers.disconnect()
        broker.stop()
