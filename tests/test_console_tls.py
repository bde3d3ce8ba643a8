"""The console of a real daemon process served over TLS on every address: HTTPS with a certificate
from the site's CA, no cleartext, a Secure cookie; a held truck's alarm reaching the officers as an
alert, acknowledged over the API, and told to a webhook receiver with its signature."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pytest

from gated.alerts import signature
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.gate import gated, number, start_daemon, write_config
from tests.system import free_port
from tests.test_alerts import Receiver
from tests.tls import Pki

HELD = number("TGHU100002")
PASSWORD = "supervisor-password-for-tls"
SECRET = "webhook key of the test"


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_console_over_tls_and_a_held_truck_as_an_alert_and_a_webhook_event(
    tmp_path: Path, mosquitto: Mosquitto, lane_devices: LaneDevices
) -> None:
    pki = Pki(tmp_path / "pki")
    identity = pki.server("console", hosts=("localhost", "127.0.0.1"))
    port = free_port()
    receiver = Receiver()
    secret = tmp_path / "webhook.key"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    config = write_config(tmp_path, mosquitto, lane_devices)
    with config.open("a", encoding="utf-8") as extra:
        extra.write(
            f'\n[console]\nlisten = "0.0.0.0:{port}"\n'
            f'tls_cert_file = "{identity.cert}"\ntls_key_file = "{identity.key}"\n'
            f'[alerts]\nwebhook_url = "{receiver.url}"\nwebhook_secret_file = "{secret}"\n'
        )
    holds = tmp_path / "holds.csv"
    holds.write_text(f"container,agency,hold_type\n{HELD},CBP,customs\n", encoding="utf-8")
    gated("holds", "import", str(holds), "--reason", "CBP's list of today", "--config", str(config))
    password = tmp_path / "supervisor.pw"
    password.write_text(PASSWORD, encoding="utf-8")
    gated(
        "users",
        "add",
        "chief",
        "--role",
        "supervisor",
        "--password-file",
        str(password),
        "--config",
        str(config),
    )
    daemon = start_daemon(config, tmp_path / "daemon.log")
    https = httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=pki.ca), timeout=30
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if https.get("/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and daemon.poll() is None, (
                tmp_path / "daemon.log"
            ).read_text()
            time.sleep(0.2)
        # No cleartext on the TLS port.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/session", timeout=10)
        login = https.post("/api/login", json={"username": "chief", "password": PASSWORD})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        csrf = login.json()["csrf"]

        ScriptedLane(lane_devices, pace=0.5).drive(
            Truck("held", "e28011606000020000000002", (ContainerSighting(HELD),))
        )
        deadline = time.monotonic() + 90
        alert = None
        while alert is None:
            shown = https.get("/api/alerts").json()["alerts"]
            alert = next((a for a in shown if a["alarm"] == "hold_hit" and a["container"] == HELD), None)
            assert alert is not None or time.monotonic() < deadline, shown
            time.sleep(0.3)
        taken = https.post(
            f"/api/alerts/{alert['id']}/ack",
            json={"note": "driver to the holding area"},
            headers={"X-CSRF-Token": csrf},
        )
        assert taken.status_code == 200 and taken.json()["acked_by"] == "user:chief"
        deadline = time.monotonic() + 30
        while len([e for e in receiver.events if json.loads(e[1])["alert"]["id"] == alert["id"]]) < 2:
            assert time.monotonic() < deadline, receiver.events
            time.sleep(0.2)
        events = [
            (headers, json.loads(body))
            for headers, body in receiver.events
            if json.loads(body)["alert"]["id"] == alert["id"]
        ]
        assert [payload["event"] for _, payload in events] == ["raised", "acknowledged"]
        assert all(payload["site"] == "e2e" and payload["node"] == "gate-1" for _, payload in events)
        for headers, body in receiver.events:
            assert headers["X-Gated-Signature"] == signature(SECRET.encode(), body)
        verified = gated("audit", "verify", "--config", str(config), "--json")
        assert json.loads(verified.stdout)["intact"] is True
    finally:
        https.close()
        daemon.terminate()
        daemon.wait(30)
        receiver.close()
