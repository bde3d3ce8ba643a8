"""`gated demo` as a new user runs it: all four outcomes, and mosquitto_sub sees the traffic."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import Mosquitto
from tests.system import free_port, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OUTCOMES = ("RELEASE", "HOLD", "SECONDARY_INSPECTION", "MANUAL_REVIEW")


def start_demo(*args: str, own_group: bool = False) -> subprocess.Popen[str]:
    """``gated demo ARGS``; ``own_group``: in a process group of its own, as a terminal runs it
    (a Ctrl-C there reaches every process of the group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gated", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=own_group,
    )


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 60) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"demo never printed {text!r}: {''.join(lines)}")


def test_demo_with_embedded_broker_shows_the_four_outcomes(tmp_path: Path) -> None:
    mosquitto_sub = require_tool("mosquitto_sub")
    port = free_port()
    # The default two lanes share gated's own OCR, whose pace depends on how busy the machine is:
    # run until the four outcomes are out, then stop the demo as a user does, with Ctrl-C.
    demo = start_demo("--duration", "100", "--mqtt-port", str(port), "--data-dir", str(tmp_path))
    watcher: subprocess.Popen[str] | None = None
    try:
        head = wait_for_line(demo, "mosquitto_sub")
        head += wait_for_line(demo, "login: supervisor")
        # The watcher sees the whole run, however long the machine takes to read the trucks.
        watcher = subprocess.Popen(
            [mosquitto_sub, "-h", "127.0.0.1", "-p", str(port), "-t", "gated/#", "-v"],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = head[:]
        # The console, on its default port, with the printed accounts.
        console = next(line for line in head if "operator console:" in line).split()[-1]
        assert console == "http://127.0.0.1:8080/"
        accounts = dict(re.findall(r"^  login: (\S+) / (\S+)$", "".join(head), re.MULTILINE))
        assert {"operator", "supervisor"} <= accounts.keys()
        answer = httpx.post(
            console + "api/login", json={"username": "operator", "password": accounts["operator"]}, timeout=30
        )
        assert answer.status_code == 200 and answer.json()["role"] == "operator"
        for outcome in OUTCOMES:
            if not any(f" {outcome} " in line for line in lines):
                lines += wait_for_line(demo, f" {outcome} ", timeout=70)
        watcher.send_signal(signal.SIGINT)
        seen, _ = watcher.communicate(timeout=10)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        for process in (demo, watcher):
            if process is not None and process.poll() is None:
                process.kill()
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    for outcome in OUTCOMES:
        assert f" {outcome} " in output, output
    for lane in ("lane-1", "lane-2"):
        assert f"gated/v1/demo/{lane}/decision" in seen
        assert f"gated/v1/demo/{lane}/reading/rfid/rfid-1" in seen
    # The first truck's plate, read by gated from the lane's plate camera.
    plates = [line for line in seen.splitlines() if '"licence_plate"' in line]
    assert any('"GTA1001"' in line for line in plates), seen[-3000:]
    assert "gated/v1/demo/node/demo-gate/status" in seen
    assert "gated/v1/demo/node/demo-gate/audit" in seen  # the audit chain's head, kept outside


def test_demo_against_an_external_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mosquitto_sub = require_tool("mosquitto_sub")
    watcher = subprocess.Popen(
        [
            mosquitto_sub,
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-t",
            "gated/+/+/+/decision",
            "-v",
            "-C",
            "2",
            "-W",
            "40",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    demo = start_demo(
        "--console-port",
        "0",
        "--lanes",
        "2",
        "--duration",
        "6",
        "--broker",
        f"mqtt://127.0.0.1:{mosquitto.port}",
        "--data-dir",
        str(tmp_path),
    )
    output, _ = demo.communicate(timeout=60)
    seen, _ = watcher.communicate(timeout=45)
    assert demo.returncode == 0, output
    assert "(external)" in output
    assert seen.count("/decision ") == 2, seen


def test_demo_refuses_a_bad_broker_url() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gated", "demo", "--broker", "http://x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78 and "--broker" in result.stderr


DECISION_LINE = re.compile(
    r"^\d\d:\d\d:\d\d lane-\d+ +\S+ +(RELEASE|HOLD|SECONDARY_INSPECTION|MANUAL_REVIEW) "
)
# An MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, an empty client id.
MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def printed_decisions(output: str) -> Counter[str]:
    return Counter(match.group(1) for line in output.splitlines() if (match := DECISION_LINE.match(line)))


def summary(output: str) -> Counter[str]:
    line = next(line for line in output.splitlines() if line.startswith("gated demo: done; decisions:"))
    return Counter({outcome: int(count) for outcome, count in re.findall(r"([A-Z_]+) (\d+)", line)})


def test_demo_runs_again_at_once_on_the_same_port_and_data_dir(tmp_path: Path) -> None:
    port = free_port()
    args = ("--lanes", "1", "--duration", "5", "--mqtt-port", str(port), "--data-dir", str(tmp_path))
    args += ("--console-port", "0")
    first = start_demo(*args)
    # Someone watches the traffic: the broker closes that connection when the demo ends, which
    # leaves the broker's port in TIME_WAIT for the next demo.
    head = "".join(wait_for_line(first, "mosquitto_sub"))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as watcher:
        watcher.sendall(MQTT_CONNECT)
        assert watcher.recv(4)[:1] == b"\x20", "no CONNACK"
        output = head + first.communicate(timeout=90)[0]
    assert first.returncode == 0, output
    holds = sqlite3.connect(tmp_path / "gated.db").execute("select count(*) from holds").fetchone()[0]

    second = start_demo(*args)
    again = second.communicate(timeout=90)[0]
    assert second.returncode == 0, again
    assert "holds already in place" in again, again
    with sqlite3.connect(tmp_path / "gated.db") as db:
        assert db.execute("select count(*) from holds").fetchone()[0] == holds
    # The summary counts this run's decisions, not the earlier run's kept in the same database.
    assert summary(again) == printed_decisions(again), again


def test_ctrl_c_stops_the_demo_within_seconds() -> None:
    demo = start_demo("--mqtt-port", str(free_port()), "--console-port", "0", own_group=True)
    try:
        wait_for_line(demo, "reasons")  # the table's head: trucks are on their way
        time.sleep(2.0)
        os.killpg(demo.pid, signal.SIGINT)
        began = time.monotonic()
        output = demo.communicate(timeout=60)[0]
        took = time.monotonic() - began
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, output
    assert "Traceback" not in output, output
    assert took < 4.5, f"Ctrl-C took {took:.1f} s to stop the demo"
