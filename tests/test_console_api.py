"""The console's JSON API (CONTRACT section 7) over real HTTP: the app served by uvicorn, accounts
on a real SQLite file, the clock in the test's hands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from gated.audit import verify
from gated.clock import rfc3339
from gated.holds import HoldStore
from gated.query import query_container
from gated.store import audit
from tests.console_kit import PASSWORDS, RunningConsole, running_console

HELD = "CSQU3054383"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[RunningConsole]:
    with running_console(tmp_path) as running:
        yield running


def client(console: RunningConsole) -> httpx.Client:
    return httpx.Client(base_url=console.url, timeout=30)


def login(http: httpx.Client, username: str, password: str | None = None) -> httpx.Response:
    return http.post("/api/login", json={"username": username, "password": password or PASSWORDS[username]})


def test_login_sets_a_strict_httponly_cookie_and_gives_the_csrf_token(console: RunningConsole) -> None:
    with client(console) as http:
        answer = login(http, "operator")
        assert answer.status_code == 200
        assert answer.json()["username"] == "operator" and answer.json()["role"] == "operator"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert http.get("/api/session").json()["csrf"] == answer.json()["csrf"]


def test_wrong_password_401_and_three_failures_423_for_that_account_only(console: RunningConsole) -> None:
    with client(console) as http:
        assert login(http, "operator", "not the password").status_code == 401
        assert login(http, "nobody", "not the password").status_code == 401
        assert login(http, "operator", "not the password").status_code == 401
        locked = login(http, "operator", "not the password")
        until = rfc3339(console.clock.now() + timedelta(minutes=15))
        assert locked.status_code == 423 and locked.json()["locked_until"] == until
        assert login(http, "operator").status_code == 423  # the right password, still locked
        assert login(http, "supervisor").status_code == 200  # another account is not touched
    console.clock.advance(15 * 60)
    with client(console) as http:
        assert login(http, "operator").status_code == 200


def test_a_supervisor_unlock_ends_the_lock_at_once(console: RunningConsole) -> None:
    with client(console) as http:
        for _ in range(3):
            login(http, "viewer", "wrong password")
        assert login(http, "viewer").status_code == 423
        console.accounts.unlock("viewer", actor="user:supervisor")
        assert login(http, "viewer").status_code == 200


def test_the_container_api_needs_a_session_and_answers_as_gated_query(console: RunningConsole) -> None:
    HoldStore(console.engine, console.clock).place(
        container=HELD, agency="CBP", hold_type="customs", code="1H", actor="operator:test", reason="test"
    )
    with client(console) as http:
        assert http.get(f"/api/containers/{HELD}").status_code == 401
        login(http, "viewer")
        answer = http.get(f"/api/containers/{HELD}")
        assert answer.status_code == 200
        assert answer.json() == query_container(console.engine, HELD)
        bad = http.get("/api/containers/NOT-A-NUMBER")
        assert bad.status_code == 400 and "error" in bad.json()


def test_changes_need_the_csrf_token(console: RunningConsole) -> None:
    with client(console) as http:
        token = login(http, "operator").json()["csrf"]
        refused = http.post("/api/logout")
        assert refused.status_code == 403
        assert http.get("/api/session").status_code == 200  # still logged in
        assert http.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 200
        assert http.get("/api/session").status_code == 401


def test_login_takes_only_json_and_small_bodies(console: RunningConsole) -> None:
    with client(console) as http:
        form = http.post("/api/login", data={"username": "operator", "password": PASSWORDS["operator"]})
        assert form.status_code == 415  # a form on another site cannot log a browser in
        huge = http.post(
            "/api/login",
            content=b'{"username": "operator", "password": "' + b"x" * 20000 + b'"}',
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        for body in (b"[]", b"{", b'{"username": 1, "password": 2}'):
            answer = http.post("/api/login", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400


def test_a_session_locks_after_10_idle_minutes_and_the_password_opens_it(console: RunningConsole) -> None:
    with client(console) as http:
        token = login(http, "operator").json()["csrf"]
        console.clock.advance(9 * 60)
        assert http.get("/api/containers/" + HELD).status_code == 200  # the user did something
        console.clock.advance(9 * 60)
        assert http.get("/api/lanes").status_code == 200  # a refresh of the page is not the user
        console.clock.advance(60)
        locked = http.get("/api/lanes")
        assert locked.status_code == 401 and locked.json()["locked"] is True
        wrong = http.post(
            "/api/session/unlock", json={"password": "wrong one"}, headers={"X-CSRF-Token": token}
        )
        assert wrong.status_code == 401
        opened = http.post(
            "/api/session/unlock", json={"password": PASSWORDS["operator"]}, headers={"X-CSRF-Token": token}
        )
        assert opened.status_code == 200
        assert http.get("/api/lanes").status_code == 200


def test_every_answer_carries_the_security_headers(console: RunningConsole) -> None:
    with client(console) as http:
        for path in ("/", "/api/session", "/static/console.js"):
            headers = http.get(path).headers
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
        assert http.get("/api/session").headers["cache-control"] == "no-store"
        assert "gated console" in http.get("/").text


def test_logins_are_audited_in_the_chain(console: RunningConsole) -> None:
    with client(console) as http:
        login(http, "operator")
        login(http, "operator", "wrong password")
    with console.engine.connect() as connection:
        rows = connection.execute(select(audit.c.action, audit.c.detail).order_by(audit.c.seq)).all()
        assert verify(connection).intact
    assert [row.action for row in rows][-2:] == ["login", "login_failed"]
    assert '"source":"127.0.0.1"' in rows[-1].detail


def test_the_hold_list_is_seen_by_anyone_and_changed_only_by_a_supervisor(console: RunningConsole) -> None:
    with client(console) as http:
        assert http.get("/api/holds").status_code == 401
        token = login(http, "operator").json()["csrf"]
        place = {
            "container": HELD,
            "agency": "CBP",
            "hold_type": "customs",
            "code": "1H",
            "reason": "manifest risk",
        }
        refused = http.post("/api/holds", json=place, headers={"X-CSRF-Token": token})
        assert refused.status_code == 403 and "supervisor" in refused.json()["error"]
        assert http.get("/api/holds").json() == {"holds": [], "total": 0}
    with client(console) as http:
        token = login(http, "supervisor").json()["csrf"]
        assert http.post("/api/holds", json=place, headers={}).status_code == 403  # no CSRF token
        unreasoned = http.post("/api/holds", json={**place, "reason": ""}, headers={"X-CSRF-Token": token})
        assert unreasoned.status_code == 400 and unreasoned.json()["error"] == "reason is required"
        placed = http.post("/api/holds", json=place, headers={"X-CSRF-Token": token})
        assert placed.status_code == 200 and placed.json()["placed"] is True
        again = http.post("/api/holds", json=place, headers={"X-CSRF-Token": token})
        assert again.json()["placed"] is False  # an identical active hold: nothing changed
        bad = http.post("/api/holds", json={**place, "container": "NOPE"}, headers={"X-CSRF-Token": token})
        assert bad.status_code == 400
        hold = placed.json()["hold"]["id"]
        listed = http.get("/api/holds", params={"container": HELD}).json()
        assert [h["id"] for h in listed["holds"]] == [hold]
        released = http.post(
            f"/api/holds/{hold}/release", json={"reason": "cleared"}, headers={"X-CSRF-Token": token}
        )
        assert released.status_code == 200 and released.json()["released"][0]["released_at"]
        gone = http.post(
            f"/api/holds/{hold}/release", json={"reason": "again"}, headers={"X-CSRF-Token": token}
        )
        assert gone.status_code == 409
        assert (
            http.post(
                "/api/holds/x/release", json={"reason": "r"}, headers={"X-CSRF-Token": token}
            ).status_code
            == 400
        )
        assert http.get("/api/holds").json()["total"] == 0
        history = http.get("/api/holds", params={"all": "1"}).json()["holds"]
        assert [(h["id"], h["active"]) for h in history] == [(hold, False)]
    with console.engine.connect() as connection:
        rows = connection.execute(select(audit.c.actor, audit.c.action).order_by(audit.c.seq)).all()
        assert verify(connection).intact
    assert [tuple(row) for row in rows if row.action.startswith("hold_")] == [
        ("user:supervisor", "hold_place"),
        ("user:supervisor", "hold_release"),
    ]


def test_a_gate_pass_that_is_not_one_or_names_no_visit(console: RunningConsole) -> None:
    with client(console) as http:
        assert http.get("/api/pass", params={"qr": "gated:pass?v=x"}).status_code == 401
        login(http, "viewer")
        assert http.get("/api/pass", params={"qr": "https://evil.example/"}).status_code == 400
        assert http.get("/api/pass", params={"qr": "gated:pass?l=lane-1"}).status_code == 400
        missing = http.get("/api/pass", params={"qr": "gated:pass?v=no-such-visit&l=lane-1"})
        assert missing.status_code == 404 and "no visit" in missing.json()["error"]
