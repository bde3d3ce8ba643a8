"""The gate never stops deciding quietly: an unexpected error closes every lane and ends the daemon
with exit 1 (so systemd restarts it), and the systemd watchdog is pinged only while every part of
the daemon is alive and turning."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gated.daemon
from gated.config import load_config
from gated.daemon import Daemon
from gated.payload_schemas import validate_payload
from simulators.lane import LaneDevices
from tests.conftest import Mosquitto
from tests.customs import confirm_hold_list
from tests.gate import write_config

PREFIX = "gated/v1/e2e"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def open_lane(customs: Any) -> None:
    customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open")


def run_in_main_thread(daemon: Daemon) -> int:
    """``run_forever`` installs signal handlers, which only the main thread may do."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return daemon.run_forever()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        daemon.stop()


def test_an_unexpected_error_closes_every_lane_and_ends_the_daemon(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    daemon = Daemon(load_config(write_config(tmp_path, mosquitto, lane_devices)))
    confirm_hold_list(daemon.holds, tmp_path)
    customs = subscriber_factory(mosquitto.port)
    seen: dict[str, bool] = {}

    def break_the_pipeline() -> None:
        open_lane(customs)
        seen["healthy before"] = daemon.healthy()

        def bug(wait: float = 0.0) -> int:
            raise RuntimeError("a bug nobody foresaw")

        daemon.pipeline.step = bug  # type: ignore[method-assign]

    threading.Thread(target=break_the_pipeline, daemon=True).start()
    started = time.monotonic()
    assert run_in_main_thread(daemon) == 1
    assert time.monotonic() - started < 60
    assert seen == {"healthy before": True}
    assert daemon.failed is not None and "a bug nobody foresaw" in daemon.failed
    assert not daemon.healthy()
    closed = customs.wait_for(
        lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "closed"
    )
    assert closed[-1].retain or "gated failed" in closed[-1].payload["reason"]
    alarm = customs.wait_for(
        lambda m: m.topic == f"{PREFIX}/lane-1/alarm" and m.payload["alarm"] == "node_failure"
    )
    assert "a bug nobody foresaw" in alarm[0].payload["text"]
    # The database still works: the officers get the alarm as an alert too.
    assert "node_failure" in {alert.alarm for alert in daemon.alerts.alerts() if alert.lane == "lane-1"}
    assert lane_devices.barrier is not None and lane_devices.barrier.permit() == 0
    for message in (closed[-1], alarm[0]):
        assert validate_payload(message.topic, message.payload) == []


def test_a_hung_part_is_not_healthy(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    lane_devices: LaneDevices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gated.daemon, "STALL_SECONDS", 1.0)
    daemon = Daemon(load_config(write_config(tmp_path, mosquitto, lane_devices)))
    customs = subscriber_factory(mosquitto.port)
    try:
        daemon.start()
        open_lane(customs)
        assert daemon.healthy()
        hang = threading.Event()
        daemon.commands.step = lambda wait=0.0: hang.wait(30)  # type: ignore[method-assign,assignment,misc]
        assert eventually(lambda: not daemon.healthy(), 5.0), "a hung hold-command thread went unnoticed"
        hang.set()
    finally:
        daemon.stop()


def eventually(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_gated_run_pings_the_systemd_watchdog(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(0.5)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gated", "run", "--config", str(config)], stdout=log, stderr=log, env=env
    )
    states: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while states.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
            try:
                states.append(listener.recv(256).decode())
            except TimeoutError:
                continue
        assert states[0] == "READY=1", states
        assert states.count("WATCHDOG=1") >= 3, states
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        while True:
            try:
                states.append(listener.recv(256).decode())
            except TimeoutError:
                break
        assert "STOPPING=1" in states
    finally:
        if daemon.poll() is None:
            daemon.kill()
        listener.close()
        log.close()


def test_the_unit_has_a_watchdog_longer_than_a_stall() -> None:
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "gated.service").read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and settings["Restart"] == "always"
    assert float(settings["WatchdogSec"]) >= 2 * gated.daemon.STALL_SECONDS


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sigterm_right_after_sigcont_stops_gated_run(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    """A node paused (SIGSTOP) and then stopped (SIGCONT, SIGTERM: what an operator or a test does)
    exits. The kernel may hand that SIGTERM to another thread than the main one, which must still
    see it: before, `gated run` slept on and never stopped."""
    from tests.gate import start_daemon

    config = write_config(tmp_path, mosquitto, lane_devices)
    customs = subscriber_factory(mosquitto.port)
    for attempt in range(3):
        daemon = start_daemon(config, tmp_path / "daemon.log")
        try:
            customs.wait_for(
                lambda m, n=attempt + 1: (
                    m.topic == f"{PREFIX}/node/gate-1/status"
                    and m.payload["state"] == "online"
                    and m.payload["boot"] == n
                ),
                60,
            )
            os.kill(daemon.pid, signal.SIGSTOP)
            time.sleep(0.3)
            os.kill(daemon.pid, signal.SIGCONT)
            os.kill(daemon.pid, signal.SIGTERM)
            assert daemon.wait(20) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
