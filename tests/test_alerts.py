"""Alerts before the officers, on real parts: alarms stored by the real store on SQLite, the desk
escalating by a clock in the test's hands, acknowledgements through the console's API served by
uvicorn, and the webhook delivered over HTTP to a real server on a free port."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from gated.alerts import AlertDesk, AlertError, WebhookSender, signature
from gated.audit import verify
from gated.config import AlertsConfig
from gated.errors import StorageError
from gated.messages import Topics, alarm_message
from gated.store import Batch, audit, webhook_outbox
from tests.console_kit import PASSWORDS, RunningConsole, running_console

TOPICS = Topics("test")
SECRET = b"webhook-key-for-tests"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[RunningConsole]:
    with running_console(tmp_path) as running:
        yield running


def raise_alarm(
    console: RunningConsole,
    alarm: str = "radiation_alarm",
    *,
    lane: str = "lane-1",
    container: str | None = "MSKU4135329",
    severity: str = "high",
    device: str | None = "rpm-1",
) -> str:
    message = alarm_message(
        TOPICS,
        lane=lane,
        alarm=alarm,
        text=f"{alarm} on {lane}",
        ts=console.clock.now(),
        severity=severity,
        container=container,
        device=device,
    )
    console.store.write(Batch(messages=[message]))
    return str(message.body["id"])


def trail(console: RunningConsole) -> list[tuple[str, str, str | None]]:
    with console.engine.connect() as conn:
        assert verify(conn).intact
        rows = conn.execute(select(audit.c.actor, audit.c.action, audit.c.subject).order_by(audit.c.seq))
        return [(row.actor, row.action, row.subject) for row in rows if row.action.startswith("alert_")]


def test_an_alarm_is_an_alert_until_someone_acknowledges_it(console: RunningConsole) -> None:
    desk = console.alerts
    first = raise_alarm(console)
    version = desk.version
    raise_alarm(console)  # the same alarm on the same box again: a repeat, not a second alert
    assert desk.version > version  # the store told the desk
    raise_alarm(console, "device_fault", container=None, device="ocr-1", severity="medium")
    shown = desk.snapshot()
    assert [(a["alarm"], a["repeats"], a["level"]) for a in shown] == [
        ("radiation_alarm", 2, 0),  # high before medium
        ("device_fault", 1, 0),
    ]
    taken = desk.acknowledge(first, actor="user:operator", note="driver stopped, RPO called")
    assert taken.acked_by == "user:operator" and taken.ack_note == "driver stopped, RPO called"
    with pytest.raises(AlertError, match="acknowledged by user:operator"):
        desk.acknowledge(first, actor="user:supervisor")
    with pytest.raises(AlertError, match="no alert"):
        desk.acknowledge("no-such-alert", actor="user:operator")
    # Open ones first; the acknowledged one stays on the desk, saying who took it.
    assert [(a["alarm"], a["acked_by"]) for a in desk.snapshot()] == [
        ("device_fault", None),
        ("radiation_alarm", "user:operator"),
    ]
    raise_alarm(console)  # after the acknowledgement, the same alarm is news again
    assert [a["alarm"] for a in desk.snapshot() if a["acked_at"] is None] == [
        "radiation_alarm",
        "device_fault",
    ]
    assert trail(console) == [("user:operator", "alert_ack", first)]
    console.clock.advance(3601)
    assert all(a["acked_at"] is None for a in desk.snapshot())  # an hour on, only open ones


def test_nobody_acknowledging_escalates_level_by_level_and_audits_it(console: RunningConsole) -> None:
    desk = console.alerts  # acknowledge within 120 s, escalated twice at most
    alert = raise_alarm(console)
    taken = raise_alarm(console, "tamper", container=None, device="rfid-1")
    console.clock.advance(119)
    assert desk.tick() == 0
    desk.acknowledge(taken, actor="user:operator")
    console.clock.advance(1)
    assert desk.tick() == 1
    [shown] = [a for a in desk.snapshot() if a["id"] == alert]
    assert (shown["level"], shown["level_name"]) == (1, "supervisors")
    console.clock.advance(60)
    assert desk.tick() == 0  # the next period counts from the escalation
    console.clock.advance(60)
    assert desk.tick() == 1
    console.clock.advance(600)
    assert desk.tick() == 0  # escalation_levels reached
    [shown] = [a for a in desk.snapshot() if a["id"] == alert]
    assert (shown["level"], shown["level_name"]) == (2, "everyone")
    assert trail(console) == [
        ("user:operator", "alert_ack", taken),
        ("gated:alerts", "alert_escalated", alert),
        ("gated:alerts", "alert_escalated", alert),
    ]


def test_two_nodes_on_one_database_escalate_an_alert_once(console: RunningConsole) -> None:
    other = AlertDesk(console.engine, console.clock, AlertsConfig(), site="test", node="gate-2")
    raise_alarm(console)
    console.clock.advance(121)
    results = [console.alerts.tick(), other.tick()]
    assert sorted(results) == [0, 1]
    assert [action for _, action, _ in trail(console)] == ["alert_escalated"]


class Receiver:
    """A webhook receiver: answers each POST with the next status of ``answers`` (then 204)."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answers.pop(0) if receiver.answers else 204
                if status == 204:
                    receiver.events.append((dict(self.headers), body))
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gated"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def test_the_webhook_hears_every_raise_escalation_and_acknowledgement_once_signed(
    console: RunningConsole, receiver: Receiver
) -> None:
    settings = AlertsConfig(webhook_url=receiver.url, acknowledge_seconds=30, escalation_levels=1)
    desk = AlertDesk(console.engine, console.clock, settings, site="test", node="gate-1")
    sender = WebhookSender(console.engine, console.clock, settings, node="gate-1", secret=SECRET)
    alert = raise_alarm(console)
    assert desk.tick() == 1  # queued "raised"
    assert desk.tick() == 0  # once
    console.clock.advance(31)
    assert desk.tick() == 1  # queued "escalated"
    desk.acknowledge(alert, actor="user:supervisor", note="seen")
    assert sender.drain() == 3 and sender.drain() == 0
    events = []
    for headers, body in receiver.events:
        assert headers["X-Gated-Signature"] == signature(SECRET, body)
        assert hmac.compare_digest(
            headers["X-Gated-Signature"], "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        )
        payload = json.loads(body)
        assert payload["schema"] == "gated.alert-event/1" and headers["X-Gated-Event"] == payload["id"]
        events.append((payload["event"], payload["alert"]["id"], payload["alert"]["level"]))
    assert events == [("raised", alert, 0), ("escalated", alert, 1), ("acknowledged", alert, 1)]
    assert len({json.loads(body)["id"] for _, body in receiver.events}) == 3
    assert sender.purge() == 0  # delivered just now: kept
    console.clock.advance(8 * 86400)
    assert sender.purge() == 3


def test_a_webhook_receiver_that_fails_gets_the_events_again_later_in_order(
    console: RunningConsole, receiver: Receiver
) -> None:
    settings = AlertsConfig(webhook_url=receiver.url)
    desk = AlertDesk(console.engine, console.clock, settings, site="test", node="gate-1")
    sender = WebhookSender(console.engine, console.clock, settings, node="gate-1", secret=None)
    first = raise_alarm(console)
    console.clock.advance(1)
    second = raise_alarm(console, "tamper", container=None, device="rfid-1")
    desk.tick()
    receiver.answers = [500, 302]
    assert sender.drain() == 0  # 500: the first waits, and the second behind it
    console.clock.advance(1)
    assert sender.drain() == 0  # a redirect is not followed: not delivered
    with console.engine.connect() as conn:
        rows = conn.execute(select(webhook_outbox.c.attempts, webhook_outbox.c.last_error)).all()
    assert sorted(rows) == [(0, None), (2, "the receiver answered 302")]
    assert sender.drain() == 0  # backing off: nothing is due yet
    console.clock.advance(2)
    assert sender.drain() == 2
    assert [json.loads(body)["alert"]["id"] for _, body in receiver.events] == [first, second]
    assert "X-Gated-Signature" not in receiver.events[0][0]
    receiver.close()
    raise_alarm(console, "device_fault", container=None, device="ocr-1")
    desk.tick()
    assert sender.drain() == 0 and sender.failed == 3  # nobody listening: kept for later, no crash


def test_the_webhook_url_must_be_http(tmp_path: Path) -> None:
    for url in ("ftp://example.org/x", "file:///etc/passwd", "http://", "not a url"):
        with pytest.raises(ValidationError, match="http:// or https://"):
            AlertsConfig(webhook_url=url)
    assert AlertsConfig(webhook_url="https://siem.example.org/hook").webhook_url


def test_the_console_api_shows_alerts_to_all_and_takes_acknowledgements_from_operators(
    console: RunningConsole,
) -> None:
    alert = raise_alarm(console)
    with httpx.Client(base_url=console.url, timeout=30) as http:
        assert http.get("/api/alerts").status_code == 401
        assert http.post(
            "/api/login", json={"username": "viewer", "password": PASSWORDS["viewer"]}
        ).is_success
        csrf = http.get("/api/session").json()["csrf"]
        assert [a["id"] for a in http.get("/api/alerts").json()["alerts"]] == [alert]
        refused = http.post(f"/api/alerts/{alert}/ack", json={}, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 403
    with httpx.Client(base_url=console.url, timeout=30) as http:
        answer = http.post("/api/login", json={"username": "operator", "password": PASSWORDS["operator"]})
        csrf = answer.json()["csrf"]
        assert http.post(f"/api/alerts/{alert}/ack", json={}).status_code == 403  # no CSRF token
        taken = http.post(
            f"/api/alerts/{alert}/ack", json={"note": "on my way"}, headers={"X-CSRF-Token": csrf}
        )
        assert taken.status_code == 200 and taken.json()["acked_by"] == "user:operator"
        again = http.post(f"/api/alerts/{alert}/ack", json={}, headers={"X-CSRF-Token": csrf})
        assert again.status_code == 409
        with http.stream("GET", "/api/events") as events:
            lines = events.iter_lines()
            pushed = next(line for line in lines if line.startswith("event: alerts"))
            data = json.loads(next(lines).removeprefix("data: "))
        assert pushed and data["alerts"][0]["acked_by"] == "user:operator"
    assert trail(console) == [("user:operator", "alert_ack", alert)]


def test_an_alert_is_stored_with_its_alarm_or_not_at_all(console: RunningConsole) -> None:
    """A batch that fails leaves neither the alarm in the outbox nor its alert."""
    message = alarm_message(TOPICS, lane="lane-1", alarm="tamper", text="t", ts=console.clock.now())
    bad = alarm_message(TOPICS, lane="lane-1", alarm="tamper", text="t", ts=console.clock.now())
    bad.body["id"] = message.body["id"]  # the same id twice: the alert's key refuses the batch
    bad.body["device"] = "other"
    with pytest.raises(StorageError):
        console.store.write(Batch(messages=[message, bad]))
    assert console.alerts.snapshot() == [] and console.store.pending(0, 10) == []
