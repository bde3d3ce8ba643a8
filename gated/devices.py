"""From configured devices to running drivers, through the one table of device kinds
(``drivers.registry``): no device kind is named here."""

from __future__ import annotations

from collections.abc import Callable

from drivers.barrier_modbus import ModbusBarrier
from drivers.base import Driver
from drivers.printer_escpos import EscposPrinter
from drivers.registry import BARRIER, PRINTER, READERS
from gated.settings import DeviceSettings, DriverContext
from ocr.pool import OcrPool

OcrPools = Callable[[str], OcrPool]
"""The daemon's OCR worker pool for an engine name (one per engine, shared by every camera)."""

_READERS = {reader.name: reader for reader in READERS}


def is_reader(device: DeviceSettings) -> bool:
    """Whether the device reports readings (and so runs as a ``Driver``)."""
    return device.driver in _READERS


def build_driver(lane: str, device: DeviceSettings, context: DriverContext) -> Driver:
    """A driver for one configured device that reports readings. Raises ``ConfigError`` for a bad
    device profile."""
    return _READERS[device.driver].build(lane, device, context)


def build_barrier(lane: str, device: DeviceSettings, context: DriverContext) -> ModbusBarrier:
    return BARRIER.build(lane, device, context)


def build_printer(lane: str, device: DeviceSettings, context: DriverContext) -> EscposPrinter:
    return PRINTER.build(lane, device, context)
