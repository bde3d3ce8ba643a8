"""A scripted lane: the simulators of one gate lane driven truck by truck.

Each ``Truck`` says what the devices will see: its RFID tag, the container numbers as the camera
will read them (with confidence), and what the radiation portal monitor will measure. ``drive``
plays one truck through the lane in the order real devices report: tag at the approach, portal
occupancy, camera reads while the truck passes, end of the pass with its result, end of passage.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

from simulators.barrier_plc import BarrierPlcSimulator
from simulators.ocr_camera import SmartCameraSimulator
from simulators.printer_escpos import EscposPrinterSimulator
from simulators.rfid_serial import SerialRfidSimulator
from simulators.rpm_modbus import ModbusRpmSimulator

Simulator = (
    SerialRfidSimulator
    | ModbusRpmSimulator
    | SmartCameraSimulator
    | BarrierPlcSimulator
    | EscposPrinterSimulator
)
BARRIER_OPEN = 2  # the PLC's state register value for "open"

Radiation = Literal["clear", "gamma", "neutron", "fault"]


@dataclass(frozen=True)
class ContainerSighting:
    code: str  # as the camera will report it (may be wrong or empty)
    confidence: float = 0.97
    size_type: str | None = "22G1"


@dataclass(frozen=True)
class Truck:
    label: str
    tag: str | None
    containers: tuple[ContainerSighting, ...]
    radiation: Radiation = "clear"
    background_cps: float = 250.0


@dataclass
class LaneDevices:
    rfid: SerialRfidSimulator
    rpm: ModbusRpmSimulator
    camera: SmartCameraSimulator
    barrier: BarrierPlcSimulator | None = None
    printer: EscposPrinterSimulator | None = None

    def start(self) -> None:
        for device in self.all():
            device.start()

    def stop(self) -> None:
        for device in self.all():
            device.stop()

    def all(self) -> list[Simulator]:
        devices: list[Simulator] = [self.rfid, self.rpm, self.camera]
        if self.barrier is not None:
            devices.append(self.barrier)
        if self.printer is not None:
            devices.append(self.printer)
        return devices


class ScriptedLane:
    def __init__(self, devices: LaneDevices, *, pace: float = 1.0) -> None:
        self.devices = devices
        self.pace = pace  # scales every pause: 1.0 is a truck at walking pace, quicker than real

    def _pause(self, seconds: float, stop: threading.Event | None) -> bool:
        """Wait; True when asked to stop."""
        waiter = stop or threading.Event()
        return waiter.wait(seconds * self.pace)

    def drive(self, truck: Truck, stop: threading.Event | None = None, *, pass_through: bool = True) -> bool:
        """Play one truck; True when the barrier opened for it (and, with ``pass_through``, the
        truck then drove through, which the PLC's loop detector reports)."""
        devices = self.devices
        if truck.tag:
            devices.rfid.present_tag(truck.tag)
        if self._pause(0.3, stop):
            return False
        devices.rpm.begin_pass()
        if self._pause(0.4, stop):
            return False
        for slot, sighting in enumerate(truck.containers, start=1):
            devices.camera.read(
                sighting.code, sighting.confidence, slot=slot, view="rear", size_type=sighting.size_type
            )
        if self._pause(0.6, stop):
            return False
        gamma_alarm = truck.radiation == "gamma"
        neutron_alarm = truck.radiation == "neutron"
        background = truck.background_cps
        devices.rpm.end_pass(
            gamma_peak=background * (4.0 if gamma_alarm else 1.05),
            neutron_peak=6.0 if neutron_alarm else 0.4,
            gamma_alarm=gamma_alarm,
            neutron_alarm=neutron_alarm,
            fault=truck.radiation == "fault",
        )
        devices.camera.passage_end(len(truck.containers))
        return self._through_the_barrier(pass_through)

    def _through_the_barrier(self, pass_through: bool) -> bool:
        barrier = self.devices.barrier
        if barrier is None:
            return False
        # The truck waits at the barrier for a moment; it opens only if gated grants a permit.
        deadline = time.monotonic() + max(2.0, 2.5 * self.pace)
        while time.monotonic() < deadline:
            if barrier.state() == BARRIER_OPEN:
                if pass_through:
                    time.sleep(0.2 * self.pace)
                    barrier.simulate_vehicle_passed()
                return True
            time.sleep(0.05)
        return False
