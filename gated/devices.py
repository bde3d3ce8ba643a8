"""From configured devices to running drivers: the one place that knows which driver class serves
which ``driver = "..."`` entry of the config."""

from __future__ import annotations

from drivers.barrier_modbus import ModbusBarrier
from drivers.base import Driver
from drivers.ocr_camera import SmartCameraDriver
from drivers.profile import load_profile
from drivers.rfid_serial import SerialRfidDriver
from drivers.rpm_modbus import ModbusRpmDriver
from gated.clock import Clock
from gated.config import (
    BarrierModbusDevice,
    DeviceConfig,
    OcrCameraDevice,
    RfidSerialDevice,
    RpmModbusDevice,
)

ReadingDevice = RfidSerialDevice | RpmModbusDevice | OcrCameraDevice


def build_driver(lane: str, device: ReadingDevice, clock: Clock) -> Driver:
    """A driver for one configured device. Raises ``ConfigError`` for a bad device profile."""
    if isinstance(device, RfidSerialDevice):
        return SerialRfidDriver(
            lane,
            device.id,
            url=device.url,
            baudrate=device.baudrate,
            repeat_window=device.repeat_window_seconds,
            clock=clock,
        )
    if isinstance(device, RpmModbusDevice):
        return ModbusRpmDriver(
            lane,
            device.id,
            host=device.host,
            port=device.port,
            unit=device.unit,
            profile=load_profile(device.profile),
            poll_interval=device.poll_interval_seconds,
            timeout=device.timeout_seconds,
            clock=clock,
        )
    if isinstance(device, OcrCameraDevice):
        return SmartCameraDriver(
            lane,
            device.id,
            host=device.host,
            port=device.port,
            min_confidence=device.min_confidence,
            silence_timeout=device.silence_timeout_seconds,
            clock=clock,
        )
    raise AssertionError(f"no driver for {device!r}")  # the config schema makes this unreachable


def build_barrier(lane: str, device: BarrierModbusDevice, clock: Clock) -> ModbusBarrier:
    return ModbusBarrier(
        lane,
        device.id,
        host=device.host,
        port=device.port,
        unit=device.unit,
        heartbeat_interval=device.heartbeat_interval_seconds,
        timeout=device.timeout_seconds,
        clock=clock,
    )


def check_devices(config_lanes: list[tuple[str, DeviceConfig]]) -> list[str]:
    """Problems a config has beyond its schema (device profiles that do not load)."""
    from gated.errors import ConfigError

    problems: list[str] = []
    for _lane, device in config_lanes:
        if isinstance(device, RpmModbusDevice):
            try:
                load_profile(device.profile)
            except ConfigError as error:
                problems.extend(error.problems)
    return problems
