"""A site bridged to the central broker with the shipped configuration (config/mosquitto/
bridge.conf on the site's broker, central-acl on the central one): two real mosquitto instances
over TLS, a real daemon at the site. The site's decisions arrive at the central broker, and a hold
command customs publishes centrally is enforced at the site's lane and answered back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.customs import KEY_ID, write_private_key
from tests.gate import gated, number, start_daemon, write_config
from tests.test_mqtt_tls import tls_settings
from tests.tls import SHIPPED, Client, Pki, secure_broker

SITE = "gated/v1/terminal-a"
CLEAN = number("MSKU413532")
CENTRAL_HOLD = number("TGHU100002")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def central(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    running = secure_broker(tmp_path / "central", pki, acl=(SHIPPED / "central-acl").read_text())
    yield running
    running.stop()


@pytest.fixture
def site(tmp_path: Path, pki: Pki, central: Mosquitto) -> Iterator[Mosquitto]:
    folder = tmp_path / "site"
    running = secure_broker(folder, pki)
    running.stop()
    bridge = pki.client("bridge-terminal-a")
    text = (SHIPPED / "bridge.conf").read_text(encoding="utf-8")
    assert "central.example.org:8883" in text
    text = (
        text.replace("central.example.org:8883", f"localhost:{central.port}")
        .replace("/etc/mosquitto/gated/central-ca.pem", str(pki.ca))
        .replace("/etc/mosquitto/gated/bridge.pem", str(bridge.cert))
        .replace("/etc/mosquitto/gated/bridge.key", str(bridge.key))
    )
    running.conf.write_text(running.conf.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    running.start()
    yield running
    running.stop()


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_bridged_site_reports_centrally_and_enforces_a_central_hold(
    tmp_path: Path, site: Mosquitto, central: Mosquitto, pki: Pki, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, site, lane_devices, site="terminal-a", mqtt=tls_settings(pki, site.port))
    empty = tmp_path / "holds.csv"
    empty.write_text("container,agency,hold_type\n", encoding="utf-8")
    gated(
        "holds", "import", str(empty), "--allow-empty", "--reason", "no holds today", "--config", str(config)
    )
    customs = Client(central.port, ca=pki.ca, identity=pki.client("observer-central"))
    assert customs.open(), customs.connect_reason
    assert customs.subscribe(f"{SITE}/#") < 0x80
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        # The site's lane status reaches the central broker through the bridge.
        customs.wait_for(lambda topic, payload: topic == f"{SITE}/lane-1/status" and b'"open"' in payload, 60)
        lane = ScriptedLane(lane_devices, pace=0.5)
        lane.drive(Truck("clean", "e28011606000020000000001", (ContainerSighting(CLEAN),)))
        _, decided = customs.wait_for(
            lambda topic, payload: topic == f"{SITE}/lane-1/decision" and CLEAN.encode() in payload, 60
        )
        assert json.loads(decided)["outcome"] == "RELEASE"
        # Customs places a hold at the central broker: it crosses the bridge, gated applies it and
        # its answer comes back the same way (holds send waits for it).
        key = write_private_key(tmp_path / f"{KEY_ID}.pem")
        customs_id = pki.client("customs-cbp")
        sent = gated(
            "holds", "send", "--broker", f"mqtts://localhost:{central.port}", "--ca", str(pki.ca),
            "--cert", str(customs_id.cert), "--cert-key", str(customs_id.key), "--site", "terminal-a",
            "--key", str(key), "--action", "place", "--container", CENTRAL_HOLD, "--agency", "CBP",
            "--type", "customs", "--id", "cbp-central-1", "--timeout", "30", check=False,
        )  # fmt: skip
        assert sent.returncode == 0 and "applied" in sent.stdout, sent.stdout + sent.stderr
        lane.drive(Truck("held", "e28011606000020000000002", (ContainerSighting(CENTRAL_HOLD),)))
        _, held = customs.wait_for(
            lambda topic, payload: topic == f"{SITE}/lane-1/decision" and CENTRAL_HOLD.encode() in payload, 60
        )
        assert json.loads(held)["outcome"] == "HOLD"
    finally:
        daemon.terminate()
        daemon.wait(30)
        customs.close()
