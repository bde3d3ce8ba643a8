"""A scripted lane: the simulators of one gate lane driven truck by truck.

Each ``Truck`` says what the devices will see: its RFID tag, the container numbers as the camera
will read them (with confidence), and what the radiation portal monitor will measure. ``drive``
plays one truck through the lane in the order real devices report: tag at the approach, portal
occupancy, camera reads while the truck passes, end of the pass with its result, end of passage.

The camera is either a smart camera that reports the numbers itself (``SmartCameraSimulator``) or a
plain camera whose frames gated reads (``LaneCamera``): that one shows the truck from the moment it
pulls up to the tag reader until it has left, with the numbers painted on it (``truck_frames``).
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

from simulators.barrier_plc import BarrierPlcSimulator
from simulators.camera_frames import PAINTS, FrameSpec
from simulators.lane_camera import LaneCamera
from simulators.lifecycle import Simulator
from simulators.ocr_camera import SmartCameraSimulator
from simulators.plate_frames import PlateSpec
from simulators.printer_escpos import EscposPrinterSimulator
from simulators.rfid_serial import SerialRfidSimulator
from simulators.rpm_modbus import ModbusRpmSimulator

BARRIER_OPEN = 2  # the PLC's state register value for "open"

Radiation = Literal["clear", "gamma", "neutron", "fault"]

READABLE_CONFIDENCE = 0.5
"""A sighting below this confidence (or not shaped like a number) is painted unreadable."""
UNREADABLE_NUMBER = "ZZZU0000000"
"""Painted under mud and out of focus where the number cannot be read."""
FRAMES_CAMERA_EXTRA_WAIT = 1.5
"""A frames camera's read comes later than a smart camera's: trucks wait this much longer."""
_NUMBER = re.compile(r"[A-Z]{3}[UJZ][0-9]{7}")
_SIZE_TYPE = re.compile(r"[0-9L][0-9][A-Z][0-9]")


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
    plate: str | None = None
    """The licence plate as painted on the truck's front (``plate_frames`` us-style: ABC 1234)."""


@dataclass
class LaneDevices:
    rfid: SerialRfidSimulator
    rpm: ModbusRpmSimulator
    camera: SmartCameraSimulator | LaneCamera
    barrier: BarrierPlcSimulator | None = None
    printer: EscposPrinterSimulator | None = None
    plate_camera: LaneCamera | None = None
    """A frames camera aimed at the trucks' fronts, for their licence plates."""

    def start(self) -> None:
        for device in self.all():
            device.start()

    def stop(self) -> None:
        """Stop every device at once: a camera finishes the frame it is painting first, and one
        waiting after another would add up."""
        stop_all(self.all())

    def all(self) -> list[Simulator]:
        devices: list[Simulator] = [self.rfid, self.rpm, self.camera]
        if self.barrier is not None:
            devices.append(self.barrier)
        if self.printer is not None:
            devices.append(self.printer)
        if self.plate_camera is not None:
            devices.append(self.plate_camera)
        return devices


def stop_all(simulators: Sequence[Simulator]) -> None:
    """``stop()`` each of ``simulators``, all at the same time; the first error is raised."""
    if not simulators:
        return
    with ThreadPoolExecutor(len(simulators), thread_name_prefix="stop") as pool:
        for done in [pool.submit(simulator.stop) for simulator in simulators]:
            done.result()


def truck_frames(truck: Truck) -> tuple[FrameSpec, ...]:
    """What a frames camera sees of ``truck``: one frame on the move, then the truck standing at the
    gate (the same truck always looks the same). Two boxes are filmed from the side."""
    sightings = truck.containers[:2]
    if not sightings:
        return ()
    codes = [sighting.code.replace(" ", "").upper() for sighting in sightings]
    look = zlib.crc32("|".join(codes).encode())
    size_type = sightings[0].size_type
    readable = all(
        _NUMBER.fullmatch(code) and sighting.confidence >= READABLE_CONFIDENCE
        for code, sighting in zip(codes, sightings, strict=True)
    )
    spec = FrameSpec(
        container_numbers=tuple(codes) if readable else (UNREADABLE_NUMBER,),
        size_type=size_type if size_type and _SIZE_TYPE.fullmatch(size_type) else "22G1",
        view="side" if readable and len(codes) == 2 else "rear",
        paint=PAINTS[look % len(PAINTS)],
        char_height_px=40.0 if len(codes) == 2 else 46.0,
        view_angle_deg=5.0,
        texture_seed=look,
    )
    if not readable:
        spec = replace(spec, blur=6.0, dirt=1.0)
    moving = replace(spec, motion_blur_px=10, position=(spec.position[0] - 0.15, spec.position[1]))
    return moving, spec


def truck_front_frames(truck: Truck) -> tuple[PlateSpec, ...]:
    """What a plate camera sees of ``truck``: its front pulling up, then standing at the gate."""
    if truck.plate is None:
        return ()
    look = zlib.crc32(truck.plate.encode())
    spec = PlateSpec(text=truck.plate, char_height_px=30.0, yaw_deg=8.0, texture_seed=look)
    moving = replace(spec, motion_blur_px=8, position=(spec.position[0] - 0.1, spec.position[1]))
    return moving, spec


DECISION_WAIT = 15.0
"""With ``decided``, a truck waits up to this long at the barrier for the lane's decision."""
OPENING_SECONDS = 1.5
"""After a decision, how long the barrier may take to open (the permit goes out with a heartbeat)."""


class ScriptedLane:
    def __init__(
        self, devices: LaneDevices, *, pace: float = 1.0, decided: threading.Event | None = None
    ) -> None:
        self.devices = devices
        self.pace = pace  # scales every pause: 1.0 is a truck at walking pace, quicker than real
        # Set by whoever hears the lane's decisions (the demo): a truck then waits at the barrier
        # until its fate is known, however long the read takes, and leaves as soon as it is.
        self.decided = decided

    def _pause(self, seconds: float, stop: threading.Event | None) -> bool:
        """Wait; True when asked to stop."""
        waiter = stop or threading.Event()
        return waiter.wait(seconds * self.pace)

    def drive(self, truck: Truck, stop: threading.Event | None = None, *, pass_through: bool = True) -> bool:
        """Play one truck; True when the barrier opened for it (and, with ``pass_through``, the
        truck then drove through, which the PLC's loop detector reports)."""
        devices = self.devices
        camera = devices.camera
        if self.decided is not None:
            self.decided.clear()
        if isinstance(camera, LaneCamera):
            camera.arrive(truck_frames(truck))
        if devices.plate_camera is not None:
            devices.plate_camera.arrive(truck_front_frames(truck))
        try:
            return self._drive(truck, stop, pass_through)
        finally:
            if isinstance(camera, LaneCamera):
                camera.depart()
            if devices.plate_camera is not None:
                devices.plate_camera.depart()

    def _drive(self, truck: Truck, stop: threading.Event | None, pass_through: bool) -> bool:
        devices = self.devices
        camera = devices.camera
        if truck.tag:
            devices.rfid.present_tag(truck.tag)
        if self._pause(0.3, stop):
            return False
        devices.rpm.begin_pass()
        if self._pause(0.4, stop):
            return False
        if isinstance(camera, SmartCameraSimulator):
            for slot, sighting in enumerate(truck.containers, start=1):
                camera.read(
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
        if isinstance(camera, SmartCameraSimulator):
            camera.passage_end(len(truck.containers))
        return self._through_the_barrier(pass_through, stop)

    def _through_the_barrier(self, pass_through: bool, stop: threading.Event | None) -> bool:
        barrier = self.devices.barrier
        if barrier is None:
            return False
        # The truck waits at the barrier for a moment; it opens only if gated grants a permit.
        wait = max(2.0, 2.5 * self.pace)
        if isinstance(self.devices.camera, LaneCamera):
            wait += FRAMES_CAMERA_EXTRA_WAIT * self.pace
        if self.decided is not None:
            wait = max(wait, DECISION_WAIT)
        now = time.monotonic()
        deadline = now + wait
        while now < deadline:
            if stop is not None and stop.is_set():
                return False
            if barrier.state() == BARRIER_OPEN:
                if pass_through:
                    time.sleep(0.2 * self.pace)
                    barrier.simulate_vehicle_passed()
                return True
            if self.decided is not None and self.decided.is_set():
                deadline = min(deadline, now + OPENING_SECONDS)
            time.sleep(0.05)
            now = time.monotonic()
        return False
