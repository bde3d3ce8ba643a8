"""The console in a real headless Chromium (Debian's, driven by Playwright): logging in, the lock
after failed logins and its unlock by `gated users unlock`, the idle lock, and, on the real demo
gate, lane tiles updating as the simulated trucks pass, the exception queue and container search.
Screenshots are kept in ``test-artifacts/console`` (or ``$GATED_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_kit import PASSWORDS, RunningConsole, running_console
from tests.system import free_port, require_tool
from tests.test_console_override import Site, radiation_truck_with_evidence, running_site

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("GATED_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = require_tool("chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def log_in(page: object, username: str, password: str) -> None:
    """Submit the login form and wait for the answer, as a person would before trying again."""
    page.fill("#login-username", username)  # type: ignore[attr-defined]
    page.fill("#login-password", password)  # type: ignore[attr-defined]
    with page.expect_response(lambda r: r.url.endswith("/api/login")):  # type: ignore[attr-defined]
        page.click("#login-form button[type=submit]")  # type: ignore[attr-defined]


@pytest.fixture
def console(tmp_path: Path) -> Iterator[RunningConsole]:
    with running_console(tmp_path) as running:
        yield running


def test_login_lockout_unlock_and_the_idle_lock(page: object, console: RunningConsole) -> None:
    expect = sync_api.expect
    page.goto(console.url + "/")  # type: ignore[attr-defined]
    expect(page.locator("#login-view")).to_be_visible()  # type: ignore[attr-defined]
    log_in(page, "operator", "not my password")
    expect(page.locator("#login-error")).to_have_text("wrong user name or password")  # type: ignore[attr-defined]
    log_in(page, "operator", "not my password either")
    log_in(page, "operator", "third time wrong")
    expect(page.locator("#login-error")).to_contain_text("Account locked until")  # type: ignore[attr-defined]
    shot(page, "login-locked")
    log_in(page, "operator", PASSWORDS["operator"])  # the right password: still locked
    expect(page.locator("#login-error")).to_contain_text("Account locked until")  # type: ignore[attr-defined]
    # A supervisor unlocks it from the command line.
    unlocked = subprocess.run(
        [sys.executable, "-m", "gated", "users", "unlock", "operator", "--db", str(console.database)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unlocked.returncode == 0 and unlocked.stdout.strip() == "operator unlocked", unlocked.stderr
    log_in(page, "operator", PASSWORDS["operator"])
    expect(page.locator("#console-view")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#who-name")).to_have_text("operator")  # type: ignore[attr-defined]
    expect(page.locator("#live")).to_have_text("live")  # type: ignore[attr-defined]
    # Ten idle minutes: the page locks itself and asks for the password again.
    console.clock.advance(10 * 60)
    expect(page.locator("#locked-view")).to_be_visible(timeout=WAIT_MS)  # type: ignore[attr-defined]
    shot(page, "idle-locked")
    page.fill("#unlock-password", "a wrong password")  # type: ignore[attr-defined]
    page.click("#unlock-form button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#unlock-error")).to_have_text("wrong password")  # type: ignore[attr-defined]
    page.fill("#unlock-password", PASSWORDS["operator"])  # type: ignore[attr-defined]
    page.click("#unlock-form button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#console-view")).to_be_visible()  # type: ignore[attr-defined]
    page.click("#logout")  # type: ignore[attr-defined]
    expect(page.locator("#login-view")).to_be_visible()  # type: ignore[attr-defined]


def test_lane_tiles_follow_the_demo_trucks_and_the_queue_and_search_work(
    page: object, tmp_path: Path
) -> None:
    expect = sync_api.expect
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gated",
            "demo",
            "--lanes",
            "1",
            "--duration",
            "150",
            "--mqtt-port",
            str(free_port()),
            "--console-port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert demo.stdout is not None
        printed = ""
        while "login: supervisor" not in printed:
            line = demo.stdout.readline()
            assert line, printed
            printed += line
        url = re.search(r"operator console: (\S+)", printed)
        accounts = dict(re.findall(r"login: (\S+) / (\S+)", printed))
        assert url is not None
        page.goto(url.group(1))  # type: ignore[attr-defined]
        log_in(page, "operator", accounts["operator"])
        tile = page.locator("article.tile[data-lane='lane-1']")  # type: ignore[attr-defined]
        expect(tile).to_be_visible()
        expect(tile.locator(".device")).to_have_count(4)
        # The first truck (clean) and then the held one: the tile's last decision follows them.
        expect(tile.locator(".last-decision .outcome")).to_have_text("RELEASE", timeout=WAIT_MS)
        expect(tile.locator(".last-decision")).to_contain_text("MSKU1000016")
        shot(page, "lanes")
        expect(tile.locator(".last-decision .outcome")).to_have_text("HOLD", timeout=WAIT_MS)
        queue = page.locator("#queue .queue-item")  # type: ignore[attr-defined]
        expect(queue.first).to_contain_text("TGHU1000023")
        expect(queue.first.locator(".reason")).to_contain_text("hold")
        # Container search: everything gated knows about the held box.
        page.fill("#search-number", "TGHU1000023")  # type: ignore[attr-defined]
        page.click("#search-form button[type=submit]")  # type: ignore[attr-defined]
        result = page.locator("#search-result")  # type: ignore[attr-defined]
        expect(result).to_contain_text("On hold: CBP")
        expect(result).to_contain_text("HOLD")
        shot(page, "queue-and-search")
        # The barrier PLC's state on the tile, and the alarms before the officer until acknowledged.
        expect(tile.locator(".barrier")).to_contain_text("Barrier")
        held_alert = page.locator("#alert-list .alert:not(.acked)", has_text="hold_hit")  # type: ignore[attr-defined]
        expect(held_alert.first).to_contain_text("TGHU1000023", timeout=WAIT_MS)
        held_alert.first.locator("input.ack-note").fill("truck sent to the holding area")
        held_alert.first.locator("button.ack").click()
        acked = page.locator("#alert-list .alert.acked", has_text="TGHU1000023")  # type: ignore[attr-defined]
        expect(acked.first).to_contain_text("Acknowledged by user:operator")
        # A supervisor overrides the radiation alarm once inspected: the password again, a reason.
        page.click("#logout")  # type: ignore[attr-defined]
        log_in(page, "supervisor", accounts["supervisor"])
        alarm = page.locator("#queue .queue-item.SECONDARY_INSPECTION")  # type: ignore[attr-defined]
        expect(alarm.first).to_contain_text("HLXU1000049", timeout=WAIT_MS)
        alarm.first.locator("button.override-open").click()
        page.select_option("#override-outcome", "RELEASE")  # type: ignore[attr-defined]
        page.fill("#override-reason", "hand-held survey: naturally occurring material")  # type: ignore[attr-defined]
        page.fill("#override-password", "not my password")  # type: ignore[attr-defined]
        page.click("#override-form button[type=submit]")  # type: ignore[attr-defined]
        expect(page.locator("#override-error")).to_have_text("wrong password")  # type: ignore[attr-defined]
        shot(page, "override")
        page.fill("#override-password", accounts["supervisor"])  # type: ignore[attr-defined]
        page.click("#override-form button[type=submit]")  # type: ignore[attr-defined]
        expect(page.locator("#override-done")).to_have_text("Overridden: RELEASE for HLXU1000049.")  # type: ignore[attr-defined]
        expect(page.locator("#queue .queue-item.SECONDARY_INSPECTION")).to_have_count(0)  # type: ignore[attr-defined]
        # The number nobody could read: typed in, and the visit decided again by the same policy.
        unread = page.locator("#queue .queue-item.MANUAL_REVIEW")  # type: ignore[attr-defined]
        expect(unread.first).to_contain_text("number unread", timeout=WAIT_MS)
        unread.first.locator("button.resolve-open").click()
        page.fill("#resolve-number", "MSKU 413532-9")  # type: ignore[attr-defined]
        page.fill("#resolve-note", "read off the door on the CCTV")  # type: ignore[attr-defined]
        shot(page, "enter-number")
        page.click("#resolve-form button[type=submit]")  # type: ignore[attr-defined]
        expect(page.locator("#override-done")).to_have_text("Decided again: RELEASE for MSKU4135329.")  # type: ignore[attr-defined]
    finally:
        demo.kill()
        demo.wait(timeout=30)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_site(tmp_path) as running:
        yield running


def test_the_queue_shows_the_crop_and_plots_the_count_profile(page: object, site: Site) -> None:
    expect = sync_api.expect
    number = radiation_truck_with_evidence(site)
    page.goto(site.url + "/")  # type: ignore[attr-defined]
    log_in(page, "operator", PASSWORDS["operator"])
    entry = page.locator("#queue .queue-item", has_text=number)  # type: ignore[attr-defined]
    for _ in range(200):
        if entry.count():
            break
        site.gate.clock.advance(0.5)  # the visit settles
        page.wait_for_timeout(50)  # type: ignore[attr-defined]
    expect(entry).to_have_count(1)
    plot = entry.locator("svg.rpm-plot")
    expect(plot).to_be_visible()
    points = plot.locator("polyline.counts").get_attribute("points")
    assert points is not None and len(points.split()) == 12
    expect(plot.locator("line.threshold")).to_have_count(1)
    expect(plot.locator("line.background")).to_have_count(1)
    crop = entry.locator("img.evidence")
    expect(crop).to_have_count(1)
    assert crop.evaluate("image => image.complete && image.naturalWidth") == 220
    shot(page, "rpm-profile")


def test_the_hold_list_and_a_gate_pass_lookup(page: object, site: Site) -> None:
    from drivers.printer_escpos import render_pass
    from gated.model import Decision, Outcome
    from tests.test_console_override import CLEAN, HELD, LANE

    expect = sync_api.expect
    page.goto(site.url + "/")  # type: ignore[attr-defined]
    log_in(page, "supervisor", PASSWORDS["supervisor"])
    table = page.locator("#holds-table tbody")  # type: ignore[attr-defined]
    expect(table.locator("tr")).to_have_count(1)
    expect(table.locator("tr").first).to_contain_text(HELD)
    page.fill("#place-container", CLEAN)  # type: ignore[attr-defined]
    page.fill("#place-agency", "CBP")  # type: ignore[attr-defined]
    page.fill("#place-type", "customs")  # type: ignore[attr-defined]
    page.fill("#place-code", "1H")  # type: ignore[attr-defined]
    page.fill("#place-reason", "intelligence referral")  # type: ignore[attr-defined]
    page.click("#place-form button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#holds-done")).to_contain_text("Placed hold")  # type: ignore[attr-defined]
    expect(table.locator("tr")).to_have_count(2)
    row = table.locator("tr", has_text=CLEAN)
    row.locator("button.hold-release").click()
    row.locator("input.release-reason").fill("referral closed")
    row.locator("button.release-go").click()
    expect(page.locator("#holds-done")).to_contain_text("Released hold")  # type: ignore[attr-defined]
    expect(table.locator("tr")).to_have_count(1)
    page.check("#holds-all")  # type: ignore[attr-defined]
    page.click("#holds-form button[type=submit]")  # type: ignore[attr-defined]
    expect(table.locator("tr.released")).to_have_count(1)
    shot(page, "hold-list")
    # The driver's gate pass, scanned: its QR text brings up the visit.
    held = site.decided[HELD]
    decision = Decision(LANE, held["visit"], HELD, Outcome.HOLD, (), (), (), site.gate.clock.now())
    printed = render_pass(
        [decision], lane=LANE, truck=None, printed_at=site.gate.clock.now(), instructions="park"
    )
    page.fill("#search-number", printed.qr_payload)  # type: ignore[attr-defined]
    page.click("#search-form button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#search-result")).to_contain_text(f"Visit {held['visit']} on {LANE}")  # type: ignore[attr-defined]
    expect(page.locator("#search-result .outcome")).to_have_text("HOLD")  # type: ignore[attr-defined]


def test_alerts_are_pushed_acknowledged_and_escalated_when_nobody_does(page: object, site: Site) -> None:
    expect = sync_api.expect
    page.goto(site.url + "/")  # type: ignore[attr-defined]
    log_in(page, "operator", PASSWORDS["operator"])
    alerts = page.locator("#alert-list .alert")  # type: ignore[attr-defined]
    radiation = alerts.filter(has_text="radiation_alarm")
    expect(radiation).to_have_count(2)  # two trucks alarmed: two alerts (each box its own)
    expect(page.locator("#alerts-count")).to_contain_text("open")  # type: ignore[attr-defined]
    assert re.match(r"\(\d+\) gated console", page.title())  # type: ignore[attr-defined]
    # Nobody acknowledges within two minutes: escalated to the supervisors, pushed to the page.
    site.gate.clock.advance(121)
    assert site.alerts.tick() >= 2
    expect(radiation.filter(has_text="escalated to supervisors")).to_have_count(2)
    radiation.first.locator("input.ack-note").fill("RPO on the way")
    radiation.first.locator("button.ack").click()
    taken = page.locator("#alert-list .alert.acked")  # type: ignore[attr-defined]
    expect(taken).to_have_count(1)
    expect(taken).to_contain_text("Acknowledged by user:operator at")
    expect(taken).to_contain_text("RPO on the way")
    shot(page, "alerts")


def test_the_console_fits_a_phone(browser: object, site: Site) -> None:
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)  # type: ignore[attr-defined]
    try:
        phone = context.new_page()
        phone.goto(site.url + "/")
        log_in(phone, "supervisor", PASSWORDS["supervisor"])
        expect(phone.locator("#queue .queue-item").first).to_be_visible()
        expect(phone.locator("#alert-list .alert").first).to_be_visible()
        # Nothing wider than the screen: no sideways scrolling to reach a button.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        for button in ("button.ack", "button.override-open", "button.resolve-open"):
            box = phone.locator(button).first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, button
        shot(phone, "phone")
    finally:
        context.close()
