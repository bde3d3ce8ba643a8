"""A running gate for tests: config, daemon process and simulators, shared by the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gated.iso6346 import check_digit
from simulators.barrier_plc import BarrierPlcSimulator
from simulators.lane import LaneDevices
from simulators.ocr_camera import SmartCameraSimulator
from simulators.printer_escpos import EscposPrinterSimulator
from simulators.rfid_serial import SerialRfidSimulator
from simulators.rpm_modbus import ModbusRpmSimulator
from tests.customs import keys_toml

if TYPE_CHECKING:
    from tests.conftest import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def number(first_ten: str) -> str:
    return first_ten + str(check_digit(first_ten))


def gated(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def lane_devices_fixture() -> Iterator[LaneDevices]:
    devices = LaneDevices(
        SerialRfidSimulator(),
        ModbusRpmSimulator(port=0),
        SmartCameraSimulator(),
        BarrierPlcSimulator(),
        EscposPrinterSimulator(),
    )
    devices.start()
    yield devices
    devices.stop()


def write_config(
    tmp_path: Path,
    broker: Mosquitto,
    devices: LaneDevices,
    *,
    max_age_seconds: int = 3600,
    visit_timeout_seconds: float = 20,
    database: str = "gated.db",
    site: str = "e2e",
    mqtt: str | None = None,
) -> Path:
    """A one-lane daemon config; ``mqtt`` replaces the [mqtt] section's settings (TOML lines)."""
    config = tmp_path / "gate.toml"
    mqtt_lines = mqtt if mqtt is not None else f'host = "127.0.0.1"\nport = {broker.port}\nkeepalive = 5'
    barrier = ""
    if devices.barrier is not None:
        barrier = (
            f'[[lanes.devices]]\nid = "barrier-1"\ndriver = "barrier-modbus"\nhost = "127.0.0.1"\n'
            f"port = {devices.barrier.port}\nlease_seconds = 30\n"
        )
    if devices.printer is not None:
        barrier += (
            f'[[lanes.devices]]\nid = "printer-1"\ndriver = "printer-escpos"\nhost = "127.0.0.1"\n'
            f'port = {devices.printer.port}\nsecondary_inspection_place = "bay 3"\n'
        )
    config.write_text(
        f"""
site = "{site}"
node = "gate-1"
[mqtt]
{mqtt_lines}
[storage]
database = "{database}"
[holds]
max_age_seconds = {max_age_seconds}
{keys_toml()}[[lanes]]
id = "lane-1"
require = ["rfid", "ocr", "rpm"]
settle_seconds = 0.5
visit_timeout_seconds = {visit_timeout_seconds}
[[lanes.devices]]
id = "rfid-1"
driver = "rfid-serial"
url = "{devices.rfid.device_path}"
[[lanes.devices]]
id = "rpm-1"
driver = "rpm-modbus"
host = "127.0.0.1"
port = {devices.rpm.port}
profile = "{ROOT / "config" / "profiles" / "rpm-modbus.toml"}"
[[lanes.devices]]
id = "ocr-1"
driver = "ocr-camera"
host = "127.0.0.1"
port = {devices.camera.port}
{barrier}""",
        encoding="utf-8",
    )
    return config


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gated", "run", "--config", str(config)],
            stdout=sink,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
