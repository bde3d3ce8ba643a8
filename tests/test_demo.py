"""`gated demo` as a new user runs it: all four outcomes, and mosquitto_sub sees the traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Mosquitto
from tests.system import free_port, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OUTCOMES = ("RELEASE", "HOLD", "SECONDARY_INSPECTION", "MANUAL_REVIEW")


def start_demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gated", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
    # The lane's camera is read by gated's own OCR, whose pace depends on how busy the machine is:
    # run until the four outcomes are out, then stop the demo as a user does, with Ctrl-C.
    demo = start_demo(
        "--lanes", "1", "--duration", "100", "--mqtt-port", str(port), "--data-dir", str(tmp_path)
    )
    try:
        head = wait_for_line(demo, "mosquitto_sub")
        watcher = subprocess.run(
            [mosquitto_sub, "-h", "127.0.0.1", "-p", str(port), "-t", "gated/#", "-v", "-W", "20"],
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        lines = head[:]
        for outcome in OUTCOMES:
            if not any(f" {outcome} " in line for line in lines):
                lines += wait_for_line(demo, f" {outcome} ", timeout=70)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    for outcome in OUTCOMES:
        assert f" {outcome} " in output, output
    assert "gated/v1/demo/lane-1/decision" in watcher.stdout
    assert "gated/v1/demo/lane-1/reading/rfid/rfid-1" in watcher.stdout
    # The first truck's plate, read by gated from the lane's plate camera.
    plates = [line for line in watcher.stdout.splitlines() if '"licence_plate"' in line]
    assert any('"GTA1001"' in line for line in plates), watcher.stdout[-3000:]
    assert "gated/v1/demo/node/demo-gate/status" in watcher.stdout


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
