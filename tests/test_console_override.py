"""A supervisor's override through the console, on real parts: the pipeline running on its own
thread with SQLite, the console served by uvicorn, customs' signed hold commands. An override
needs the supervisor role, the password again and a reason; it goes the daemon's decision path
(stored with its audit record, published with the operator and the reason); a refused one is
audited as refused; a held container is never released by one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gated.alerts import AlertDesk
from gated.audit import verify
from gated.clock import ManualClock
from gated.config import AlertsConfig
from gated.console.app import Console
from gated.console.board import LaneBoard
from gated.console.server import ConsoleServer
from gated.db import open_engine
from gated.hold_commands import HoldCommandWorker
from gated.holds import HoldStore
from gated.messages import Topics
from gated.model import Decision, DeviceState, Outcome
from gated.pipeline import Pipeline
from gated.policy import ScreeningVerdict
from gated.store import Store, audit, decisions
from gated.users import Accounts, Role
from tests.console_kit import PASSWORDS, QUICK_HASHES
from tests.test_payload_schemas import (
    CLEAN,
    HELD,
    LANE,
    OTHER,
    SITE,
    Gate,
    gate_config,
    place_command,
    sync_command,
)


@dataclass
class Site:
    gate: Gate
    url: str
    decided: dict[str, dict[str, Any]]  # container (or "unread") -> its decision's body
    evidence: Path
    alerts: AlertDesk


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_site(tmp_path) as running:
        yield running


@contextmanager
def running_site(tmp_path: Path) -> Iterator[Site]:
    """A lane's pipeline running on its thread, four trucks decided, and its console served."""
    config = gate_config()
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    engine = open_engine(tmp_path / "gated.db")
    store = Store(engine, site=config.site, node=config.node, clock=clock)
    alerts = AlertDesk(engine, clock, AlertsConfig(), site=config.site, node=config.node)
    store.alarm_listeners.append(alerts.changed)
    holds = HoldStore(engine, clock)
    commands = HoldCommandWorker(holds, store, config.holds, Topics(SITE), [LANE], clock)
    pipeline = Pipeline(config, store, holds, clock)
    gate = Gate(config, clock, store, holds, pipeline, commands)
    board = LaneBoard(pipeline)
    pipeline.listeners.append(board.decided)
    pipeline.scan_listeners.append(board.scanned)
    for device in ("rfid-1", "rpm-1", "ocr-1"):
        pipeline.device_status(LANE, device, DeviceState.ONLINE, "connected")
    pipeline.step()
    gate.command(place_command("cmd-1"))
    gate.command(sync_command("cmd-s", 1))
    gate.truck("e2801100000000000000a001", HELD, ScreeningVerdict.CLEAR)
    gate.truck("e2801100000000000000a002", OTHER, ScreeningVerdict.GAMMA_ALARM)
    gate.truck("e2801100000000000000a003", None, ScreeningVerdict.CLEAR)
    gate.truck("e2801100000000000000a004", CLEAN, ScreeningVerdict.GAMMA_ALARM)
    with engine.connect() as connection:
        rows = connection.execute(select(decisions.c.container, decisions.c.body)).all()
    decided = {row.container or "unread": json.loads(row.body) for row in rows}
    accounts = Accounts(engine, clock, QUICK_HASHES)
    for name, password in PASSWORDS.items():
        accounts.add(name, Role(name), password, actor="operator:test")
    console = Console(
        accounts,
        board,
        engine,
        secure_cookies=False,
        decisions=pipeline,
        evidence_root=tmp_path / "evidence",
        alerts=alerts,
    )
    server = ConsoleServer(console.app, "127.0.0.1", 0)
    server.start()
    stop = threading.Event()
    running = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    running.start()
    try:
        yield Site(gate, server.url.rstrip("/"), decided, tmp_path / "evidence", alerts)
    finally:
        stop.set()
        running.join(10)
        server.stop()
        engine.dispose()


def logged_in(site: Site, username: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=site.url, timeout=30)
    answer = http.post("/api/login", json={"username": username, "password": PASSWORDS[username]})
    assert answer.status_code == 200
    return http, answer.json()["csrf"]


def override(
    http: httpx.Client, csrf: str, decision: str, outcome: str, reason: str | None, password: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"outcome": outcome}
    if reason is not None:
        body["reason"] = reason
    if password is not None:
        body["password"] = password
    return http.post(f"/api/decisions/{decision}/override", json=body, headers={"X-CSRF-Token": csrf})


def trail(site: Site) -> list[tuple[str, str, dict[str, Any]]]:
    with site.gate.store.engine.connect() as connection:
        rows = connection.execute(select(audit.c.actor, audit.c.action, audit.c.detail).order_by(audit.c.seq))
        return [(row.actor, row.action, json.loads(row.detail)) for row in rows]


def test_a_supervisor_releases_a_box_after_secondary_inspection(site: Site) -> None:
    radiation = site.decided[OTHER]
    assert radiation["outcome"] == "SECONDARY_INSPECTION"
    http, csrf = logged_in(site, "supervisor")
    answer = override(
        http,
        csrf,
        radiation["id"],
        "RELEASE",
        "hand-held scan: naturally occurring (tiles)",
        PASSWORDS["supervisor"],
    )
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["outcome"] == "RELEASE" and made["container"] == OTHER and made["visit"] == radiation["visit"]
    [reason] = made["reasons"]
    assert reason["code"] == "OPERATOR_OVERRIDE"
    assert "user:supervisor" in reason["text"] and "naturally occurring" in reason["text"]
    # Stored as a decision of its own (the first stays), audited in the same transaction, published.
    with site.gate.store.engine.connect() as connection:
        stored = connection.execute(
            select(decisions.c.id, decisions.c.revision).where(decisions.c.visit == radiation["visit"])
        ).all()
        assert verify(connection).intact
    assert sorted((row.id, row.revision) for row in stored) == sorted([(radiation["id"], 0), (made["id"], 1)])
    actor, action, detail = trail(site)[-1]
    assert (actor, action) == ("user:supervisor", "override")
    assert detail["overrides"] == radiation["id"] and detail["to"] == "RELEASE"
    published = [json.loads(row.payload) for row in site.gate.published() if row.topic.endswith("/decision")]
    assert published[-1]["id"] == made["id"] and published[-1]["reasons"] == made["reasons"]
    # The queue's entry for it is settled; the board shows the override as the lane's last word.
    board = http.get("/api/lanes").json()
    assert all(item["visit"] != radiation["visit"] for item in board["queue"])
    # The same decision again: it has been overridden, only the newest one may be.
    again = override(http, csrf, radiation["id"], "HOLD", "second thoughts", PASSWORDS["supervisor"])
    assert again.status_code == 409 and "overridden already" in again.json()["error"]


def test_a_held_box_is_never_released_by_an_override(site: Site) -> None:
    held = site.decided[HELD]
    assert held["outcome"] == "HOLD"
    http, csrf = logged_in(site, "supervisor")
    answer = override(http, csrf, held["id"], "RELEASE", "driver insists", PASSWORDS["supervisor"])
    assert answer.status_code == 409 and "on hold" in answer.json()["error"]
    unread = site.decided["unread"]
    answer = override(http, csrf, unread["id"], "RELEASE", "looks fine", PASSWORDS["supervisor"])
    assert answer.status_code == 409 and "no container number" in answer.json()["error"]
    refused = [(action, detail["why"]) for _, action, detail in trail(site) if action == "override_refused"]
    assert [why for _, why in refused][-2:] == [
        f"{HELD} is on hold: only the agency's release lifts a hold",
        "no container number: enter the number the camera could not read instead",
    ]


@pytest.mark.parametrize(
    ("username", "reason", "password", "status", "why"),
    [
        ("operator", "cleared", PASSWORDS["operator"], 403, "an override needs the supervisor role"),
        ("supervisor", None, PASSWORDS["supervisor"], 400, "an override needs a reason"),
        ("supervisor", "   ", PASSWORDS["supervisor"], 400, "an override needs a reason"),
        ("supervisor", "cleared", None, 401, "an override needs your password again"),
        ("supervisor", "cleared", "not my password", 401, "wrong password"),
    ],
)
def test_an_override_without_the_role_a_reason_or_the_password_is_refused_and_audited(
    site: Site, username: str, reason: str | None, password: str | None, status: int, why: str
) -> None:
    target = site.decided[CLEAN]
    http, csrf = logged_in(site, username)
    answer = override(http, csrf, target["id"], "RELEASE", reason, password)
    assert answer.status_code == status and answer.json()["error"] == why
    actor, action, detail = trail(site)[-1]
    assert (actor, action, detail["why"], detail["decision"]) == (
        f"user:{username}",
        "override_refused",
        why,
        target["id"],
    )
    with site.gate.store.engine.connect() as connection:
        count = connection.execute(select(decisions.c.id).where(decisions.c.visit == target["visit"])).all()
    assert len(count) == 1  # nothing decided


def test_an_override_needs_the_csrf_token(site: Site) -> None:
    http, _ = logged_in(site, "supervisor")
    answer = override(
        http, "forged", site.decided[CLEAN]["id"], "RELEASE", "cleared", PASSWORDS["supervisor"]
    )
    assert answer.status_code == 403


def test_three_wrong_passwords_at_an_override_lock_the_account(site: Site) -> None:
    target = site.decided[CLEAN]
    http, csrf = logged_in(site, "supervisor")
    statuses = [
        override(http, csrf, target["id"], "RELEASE", "cleared", "wrong again").status_code for _ in range(3)
    ]
    assert statuses == [401, 401, 423]
    assert http.get("/api/lanes").status_code == 401  # its sessions are closed
    assert Outcome(target["outcome"]) is Outcome.SECONDARY_INSPECTION


def resolve(http: httpx.Client, csrf: str, decision: str, **body: Any) -> httpx.Response:
    return http.post(f"/api/decisions/{decision}/resolve", json=body, headers={"X-CSRF-Token": csrf})


def test_an_operator_enters_the_unread_number_and_the_policy_decides_again(site: Site) -> None:
    unread = site.decided["unread"]
    assert unread["outcome"] == "MANUAL_REVIEW" and unread["container"] is None
    http, csrf = logged_in(site, "operator")
    answer = resolve(http, csrf, unread["id"], container="abcu 123456-0", note="read off the door on CCTV")
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["container"] == CLEAN and made["outcome"] == "RELEASE"
    codes = [reason["code"] for reason in made["reasons"]]
    assert codes[0] == "CLEAR" and codes[-1] == "OPERATOR_ENTRY"
    assert "user:operator entered ABCU1234560: read off the door on CCTV" in made["reasons"][-1]["text"]
    with site.gate.store.engine.connect() as connection:
        from gated.store import readings

        numbers = connection.execute(
            select(readings.c.device, readings.c.container).where(
                (readings.c.visit == unread["visit"]) & (readings.c.source == "container_number")
            )
        ).all()
        assert verify(connection).intact
    # The camera's own (unread) record stays as it was; the entry is a reading of its own.
    assert sorted((row.device, row.container) for row in numbers) == [("console", CLEAN), ("ocr-1", None)]
    actor, action, detail = trail(site)[-1]
    assert (actor, action, detail["container"], detail["replaces"]) == (
        "user:operator",
        "number_entered",
        CLEAN,
        unread["id"],
    )
    published = [json.loads(row.payload) for row in site.gate.published()]
    assert any(p.get("device") == "console" and p.get("value") == CLEAN for p in published)
    assert http.get("/api/lanes").json()["queue"][0]["visit"] != unread["visit"]


def test_an_entered_number_that_is_held_is_held(site: Site) -> None:
    http, csrf = logged_in(site, "operator")
    answer = resolve(http, csrf, site.decided["unread"]["id"], container=HELD, note="")
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "HOLD" and answer.json()["holds"]


def test_entries_that_are_not_numbers_or_for_read_boxes_are_refused(site: Site) -> None:
    http, csrf = logged_in(site, "operator")
    unread = site.decided["unread"]["id"]
    wrong_digit = resolve(http, csrf, unread, container="ABCU1234561", note="")
    assert wrong_digit.status_code == 409 and "not a container number" in wrong_digit.json()["error"]
    read = resolve(http, csrf, site.decided[OTHER]["id"], container=CLEAN, note="")
    assert read.status_code == 409 and "override it instead" in read.json()["error"]
    viewer, viewer_csrf = logged_in(site, "viewer")
    assert resolve(viewer, viewer_csrf, unread, code="OTHER").status_code == 403


def test_a_resolution_code_closes_the_entry_without_a_new_decision(site: Site) -> None:
    held = site.decided[HELD]
    http, csrf = logged_in(site, "operator")
    assert any(item["id"] == held["id"] for item in http.get("/api/lanes").json()["queue"])
    bad = resolve(http, csrf, held["id"], code="MADE_UP")
    assert bad.status_code == 400
    answer = resolve(
        http, csrf, held["id"], code="REFERRED_TO_CUSTOMS", note="driver sent to the customs office"
    )
    assert answer.status_code == 200
    assert all(item["id"] != held["id"] for item in http.get("/api/lanes").json()["queue"])
    actor, action, detail = trail(site)[-1]
    assert (actor, action, detail["code"]) == ("user:operator", "resolution", "REFERRED_TO_CUSTOMS")
    with site.gate.store.engine.connect() as connection:
        kept = connection.execute(select(decisions.c.outcome).where(decisions.c.visit == held["visit"])).all()
    assert [row.outcome for row in kept] == ["HOLD"]


def test_a_suspect_scan_joins_its_visit_holds_the_box_and_shows_with_its_image(site: Site) -> None:
    import time

    import cv2
    import numpy as np

    from gated.evidence import EvidenceStore
    from gated.model import Kind, Reading, Source

    target = site.decided[CLEAN]
    image = cv2.imencode(".png", np.full((40, 60), 128, dtype=np.uint8))[1].tobytes()
    stored = EvidenceStore(site.evidence).put_bytes(image, "image/png")
    value = {
        "scan_id": "vacis-1-0001",
        "container": CLEAN,
        "verdict": "suspect",
        "scanner": "vacis-1",
        "finished_at": "2026-12-04T12:00:14.5Z",
    }
    clock = site.gate.clock
    site.gate.pipeline.reading(
        Reading(LANE, Kind.NII, "nii-1", Source.SCAN_RESULT, value, clock.now(), evidence=(stored,))
    )
    http, _ = logged_in(site, "operator")
    deadline = time.monotonic() + 30
    while not any(item["outcome"] == "NII_SUSPECT" for item in http.get("/api/lanes").json()["queue"]):
        assert time.monotonic() < deadline, "the suspect scan never reached the queue"
        time.sleep(0.05)
    [item] = [item for item in http.get("/api/lanes").json()["queue"] if item["outcome"] == "NII_SUSPECT"]
    assert item["container"] == CLEAN and item["visit"] == target["visit"]
    served = http.get(f"/api/evidence/{item['evidence'][0]['sha256']}")
    assert (
        served.status_code == 200
        and served.headers["content-type"] == "image/png"
        and served.content == image
    )
    assert http.get("/api/evidence/" + "0" * 64).status_code == 404
    assert http.get("/api/evidence/../../etc/passwd").status_code == 404
    # Joined to the visit that sent the box to the scanner; an alarm; an inspection hold on it.
    published = [json.loads(row.payload) for row in site.gate.published()]
    [scan] = [p for p in published if p.get("source") == "scan_result"]
    assert scan["visit"] == target["visit"]
    [alarm] = [p for p in published if p.get("alarm") == "nii_suspect"]
    assert alarm["container"] == CLEAN and "inspection hold" in alarm["text"]
    [hold] = site.gate.holds.active_holds_for(CLEAN)
    assert (hold.agency, hold.hold_type, hold.reference) == ("NII", "inspection", "vacis-1-0001")
    anonymous = httpx.get(f"{site.url}/api/evidence/{item['evidence'][0]['sha256']}", timeout=30)
    assert anonymous.status_code == 401


def radiation_truck_with_evidence(site: Site) -> str:
    """A truck that sets the portal off, fed to the running pipeline as its devices would, with a
    crop of the number and the monitor's count profile; returns its container number."""
    import cv2
    import numpy as np

    from gated.evidence import EvidenceStore
    from gated.model import Kind, Quality, Reading, Source

    number = "MSCU1234566"
    crop = cv2.imencode(".jpg", np.full((48, 220, 3), 200, dtype=np.uint8))[1].tobytes()
    evidence = EvidenceStore(site.evidence).put_bytes(crop, "image/jpeg")
    clock, pipeline = site.gate.clock, site.gate.pipeline
    gamma = [30, 31, 29, 33, 48, 95, 140, 120, 70, 40, 31, 30]

    def say(kind: Kind, device: str, source: Source, value: Any, **extra: Any) -> None:
        pipeline.reading(
            Reading(
                LANE, kind, device, source, value, clock.now(), extra.pop("quality", Quality.GOOD), **extra
            )
        )

    say(Kind.RFID, "rfid-1", Source.EPC, "e2801100000000000000a0ff")
    say(Kind.RPM, "rpm-1", Source.OCCUPANCY, True)
    say(Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, number, confidence=0.97, evidence=(evidence,))
    say(Kind.OCR, "ocr-1", Source.PASSAGE_END, 1)
    say(Kind.RPM, "rpm-1", Source.OCCUPANCY, False)
    say(Kind.RPM, "rpm-1", Source.GAMMA_CPS, 1400.0, units="cps")
    say(Kind.RPM, "rpm-1", Source.GAMMA_BACKGROUND_CPS, 300.0, units="cps")
    say(Kind.RPM, "rpm-1", Source.RPM_PROFILE, {"gamma": gamma, "interval_s": 0.1, "n_sigma": 4.0})
    say(Kind.RPM, "rpm-1", Source.SCREENING, ScreeningVerdict.GAMMA_ALARM)
    return number


def test_a_queue_entry_carries_its_crops_and_the_count_profile(site: Site) -> None:
    import time

    number = radiation_truck_with_evidence(site)
    http, _ = logged_in(site, "operator")
    deadline = time.monotonic() + 30
    while True:
        site.gate.clock.advance(0.5)  # the visit settles
        entries = [i for i in http.get("/api/lanes").json()["queue"] if i["container"] == number]
        if entries:
            break
        assert time.monotonic() < deadline, "the radiation alarm never reached the queue"
        time.sleep(0.05)
    [entry] = entries
    assert entry["outcome"] == "SECONDARY_INSPECTION"
    assert entry["rpm_profile"]["gamma"][6] == 140 and entry["rpm_profile"]["background_cps"] == 300.0
    [crop] = entry["evidence"]
    assert http.get(f"/api/evidence/{crop['sha256']}").headers["content-type"] == "image/jpeg"


def test_a_gate_pass_brings_up_its_visit(site: Site) -> None:
    from drivers.printer_escpos import render_pass

    held = site.decided[HELD]
    http, _ = logged_in(site, "viewer")
    visit = http.get(f"/api/visits/{held['visit']}").json()
    assert visit["visit"]["id"] == held["visit"] and [d["outcome"] for d in visit["decisions"]] == ["HOLD"]
    decision = Decision(
        lane=LANE,
        visit=held["visit"],
        container=HELD,
        outcome=Outcome.HOLD,
        reasons=(),
        holds=(),
        inputs=(),
        decided_at=site.gate.clock.now(),
    )
    printed = render_pass(
        [decision],
        lane=LANE,
        truck="e280",
        printed_at=site.gate.clock.now(),
        instructions="park in the holding area",
    )
    shown = http.get("/api/pass", params={"qr": printed.qr_payload})
    assert shown.status_code == 200 and shown.json() == visit


def test_a_hold_placed_in_the_console_is_the_one_the_lane_checks(site: Site) -> None:
    http, csrf = logged_in(site, "supervisor")
    place = {"container": CLEAN, "agency": "CBP", "hold_type": "customs", "code": "1H", "reason": "tip-off"}
    placed = http.post("/api/holds", json=place, headers={"X-CSRF-Token": csrf})
    assert placed.status_code == 200
    # The pipeline's own lookup (the one every decision makes) sees it at once.
    assert [hold.agency for hold in site.gate.pipeline.holds.active_holds_for(CLEAN)] == ["CBP"]
    hold = placed.json()["hold"]["id"]
    released = http.post(
        f"/api/holds/{hold}/release", json={"reason": "cleared"}, headers={"X-CSRF-Token": csrf}
    )
    assert released.status_code == 200
    assert site.gate.pipeline.holds.active_holds_for(CLEAN) == []
    entries = [(actor, action) for actor, action, _ in trail(site) if action.startswith("hold_")]
    assert entries[-2:] == [("user:supervisor", "hold_place"), ("user:supervisor", "hold_release")]


def test_a_lane_another_node_drives_shows_as_standby(site: Site) -> None:
    http, _ = logged_in(site, "viewer")
    assert http.get("/api/lanes").json()["lanes"][0]["state"] == "open"
    site.gate.pipeline.standby.add(LANE)  # the lease went to another node
    [tile] = http.get("/api/lanes").json()["lanes"]
    assert tile["state"] == "standby" and "another node" in tile["reason"]
