"""Every device kind gated knows, each declared once: its settings model (whose ``driver`` literal is
the name a config writes) and the class that drives it (whose ``kind`` places it in the lane).

The config schema, the daemon and check-config all read this one table; adding a device kind is one
driver module and one line here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, get_args

from drivers.barrier_modbus import BarrierModbusDevice, ModbusBarrier
from drivers.base import Driver
from drivers.credential_serial import CredentialSerialDevice, SerialCredentialDriver
from drivers.nii_folder import NiiFolderDevice, NiiFolderDriver
from drivers.ocr_camera import OcrCameraDevice, SmartCameraDriver
from drivers.ocr_frames import FramesCameraDriver, OcrFramesDevice
from drivers.printer_escpos import EscposPrinter, PrinterEscposDevice
from drivers.rfid_llrp import LlrpRfidDriver, RfidLlrpDevice
from drivers.rfid_serial import RfidSerialDevice, SerialRfidDriver
from drivers.rpm_modbus import ModbusRpmDriver, RpmModbusDevice
from drivers.rpm_rapiscan import RapiscanRpmDriver, RpmRapiscanDevice
from gated.model import Kind
from gated.settings import DeviceSettings, DriverContext

D = TypeVar("D", covariant=True)


class Buildable(Protocol[D]):
    """A driver class: what it is (``kind``) and how it is made from its settings."""

    @property
    def kind(self) -> Kind: ...

    def from_settings(self, lane: str, settings: Any, context: DriverContext) -> D: ...


@dataclass(frozen=True)
class DeviceType(Generic[D]):
    """One ``driver = "..."`` entry a config may use."""

    settings: type[DeviceSettings]
    driver: Buildable[D]

    @property
    def name(self) -> str:
        """The ``driver`` value, taken from the settings model's literal."""
        (name,) = get_args(self.settings.model_fields["driver"].annotation)
        return str(name)

    @property
    def kind(self) -> Kind:
        return self.driver.kind

    def build(self, lane: str, settings: DeviceSettings, context: DriverContext) -> D:
        if not isinstance(settings, self.settings):
            raise TypeError(f"{self.name} is built from {self.settings.__name__}, not {settings!r}")
        return self.driver.from_settings(lane, settings, context)


READERS: tuple[DeviceType[Driver], ...] = (
    DeviceType(RfidSerialDevice, SerialRfidDriver),
    DeviceType(RfidLlrpDevice, LlrpRfidDriver),
    DeviceType(RpmModbusDevice, ModbusRpmDriver),
    DeviceType(RpmRapiscanDevice, RapiscanRpmDriver),
    DeviceType(OcrCameraDevice, SmartCameraDriver),
    DeviceType(OcrFramesDevice, FramesCameraDriver),
    DeviceType(CredentialSerialDevice, SerialCredentialDriver),
    DeviceType(NiiFolderDevice, NiiFolderDriver),
)
"""Devices that report readings: each runs in its own thread under ``Driver.run``."""

BARRIER: DeviceType[ModbusBarrier] = DeviceType(BarrierModbusDevice, ModbusBarrier)
PRINTER: DeviceType[EscposPrinter] = DeviceType(PrinterEscposDevice, EscposPrinter)

DEVICE_TYPES: dict[str, DeviceType[object]] = {
    device_type.name: device_type for device_type in (*READERS, BARRIER, PRINTER)
}
"""Every device kind by its ``driver`` name, in the order the config schema lists them."""
