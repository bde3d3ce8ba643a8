"""From configured devices to running drivers: the one place that knows which driver class serves
which ``driver = "..."`` entry of the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drivers.barrier_modbus import ModbusBarrier
from drivers.base import Driver
from drivers.credential_serial import SerialCredentialDriver
from drivers.nii_folder import NiiFolderDriver
from drivers.ocr_camera import SmartCameraDriver
from drivers.ocr_frames import FramesCameraDriver
from drivers.printer_escpos import EscposPrinter
from drivers.profile import load_profile
from drivers.rfid_llrp import LlrpRfidDriver
from drivers.rfid_serial import SerialRfidDriver
from drivers.rpm_modbus import ModbusRpmDriver
from drivers.rpm_rapiscan import RapiscanRpmDriver
from gated.clock import Clock
from gated.config import (
    BarrierModbusDevice,
    CredentialSerialDevice,
    DeviceConfig,
    NiiFolderDevice,
    OcrCameraDevice,
    OcrFramesDevice,
    PrinterEscposDevice,
    RfidLlrpDevice,
    RfidSerialDevice,
    RpmModbusDevice,
    RpmRapiscanDevice,
)
from gated.evidence import EvidenceStore
from gated.model import Outcome
from ocr.pool import OcrPool

ReadingDevice = (
    RfidSerialDevice
    | RfidLlrpDevice
    | RpmModbusDevice
    | RpmRapiscanDevice
    | OcrCameraDevice
    | OcrFramesDevice
    | CredentialSerialDevice
    | NiiFolderDevice
)


OcrPools = Callable[[str], OcrPool]
"""The daemon's OCR worker pool for an engine name (one per engine, shared by every camera)."""


def build_driver(
    lane: str, device: ReadingDevice, clock: Clock, evidence: EvidenceStore, ocr_pools: OcrPools
) -> Driver:
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
    if isinstance(device, OcrFramesDevice):
        return FramesCameraDriver(
            lane,
            device.id,
            views=device.views,
            pool=ocr_pools(device.engine),
            evidence=evidence,
            min_confidence=device.min_confidence,
            pre_trigger=device.pre_trigger_seconds,
            post_trigger=device.post_trigger_seconds,
            frames_per_view=device.frames_per_view,
            sample_fps=device.sample_fps,
            silence_timeout=device.silence_timeout_seconds,
            plate_views=device.plate_views,
            plate_formats=device.plate_format_list(),
            plate_min_confidence=device.plate_min_confidence,
            clock=clock,
        )
    if isinstance(device, RpmRapiscanDevice):
        return RapiscanRpmDriver(
            lane,
            device.id,
            host=device.host,
            port=device.port,
            n_sigma=device.n_sigma,
            silence_timeout=device.silence_timeout_seconds,
            clock=clock,
        )
    if isinstance(device, RfidLlrpDevice):
        return LlrpRfidDriver(
            lane,
            device.id,
            host=device.host,
            port=device.port,
            repeat_window=device.repeat_window_seconds,
            silence_timeout=device.silence_timeout_seconds,
            clock=clock,
        )
    if isinstance(device, CredentialSerialDevice):
        return SerialCredentialDriver(
            lane,
            device.id,
            url=device.url,
            baudrate=device.baudrate,
            repeat_window=device.repeat_window_seconds,
            clock=clock,
        )
    if isinstance(device, NiiFolderDevice):
        return NiiFolderDriver(
            lane,
            device.id,
            inbox=Path(device.inbox),
            evidence=evidence,
            poll_interval=device.poll_interval_seconds,
            image_grace=device.image_grace_seconds,
            max_bytes=device.max_bytes,
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


def build_printer(lane: str, device: PrinterEscposDevice) -> EscposPrinter:
    return EscposPrinter(lane, device.id, host=device.host, port=device.port, timeout=device.timeout_seconds)


def printer_places(device: PrinterEscposDevice) -> dict[Outcome, str]:
    places = {}
    if device.secondary_inspection_place:
        places[Outcome.SECONDARY_INSPECTION] = device.secondary_inspection_place
    if device.holding_area_place:
        places[Outcome.HOLD] = device.holding_area_place
    return places


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
