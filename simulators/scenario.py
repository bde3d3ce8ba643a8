"""A whole lane from a scenario file, for integrators: `gated-sim lane --scenario FILE`.

The scenario (TOML) lists steps in order: trucks (tag, containers as the camera will read them,
radiation), pauses, and faults (a device unplugged and plugged back, garbage on a line, a tamper).
The runner starts the lane's simulators on real transports (RFID reader on a pty or TCP, RPM on
Modbus TCP, smart camera on TCP, barrier PLC on Modbus TCP), can write the daemon config that
points at them, and plays the steps.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gated.cli.argtypes import output_file, port
from simulators.barrier_plc import BarrierPlcSimulator
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from simulators.ocr_camera import SmartCameraSimulator
from simulators.rfid_serial import SerialRfidSimulator
from simulators.rpm_modbus import ModbusRpmSimulator

log = logging.getLogger(__name__)

DeviceName = Literal["rfid", "rpm", "ocr", "barrier"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainerStep(_Strict):
    code: str = Field(description="As the camera will report it: may be wrong or empty.")
    confidence: float = Field(0.97, ge=0, le=1)
    size_type: str | None = "22G1"


class TruckStep(_Strict):
    truck: str = Field(description="A label for the output.")
    tag: str | None = None
    containers: list[ContainerStep] = Field(default_factory=list, max_length=4)
    radiation: Literal["clear", "gamma", "neutron", "fault"] = "clear"
    drive_through: bool = True


class WaitStep(_Strict):
    wait: float = Field(gt=0, le=3600)


class FaultStep(_Strict):
    fault: Literal["unplug", "replug", "garbage", "tamper", "tamper_clear"]
    device: DeviceName


Step = Annotated[TruckStep | WaitStep | FaultStep, Field(union_mode="left_to_right")]


class Scenario(_Strict):
    lane: str = "lane-1"
    pace: float = Field(1.0, gt=0, le=10, description="Scales every pause; 1.0 is walking pace.")
    gap_seconds: float = Field(2.0, ge=0, description="Pause after each truck.")
    repeat: int = Field(1, ge=1, description="Play the steps this many times.")
    steps: list[Step] = Field(min_length=1)


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with one line per problem."""


def load_scenario(path: str | Path) -> Scenario:
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ScenarioError(f"{file}: {error}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        lines = [
            f"{file}: {'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
        ]
        raise ScenarioError("\n".join(lines)) from None


def start_lane(*, rfid_tcp_port: int | None = None) -> LaneDevices:
    devices = LaneDevices(
        SerialRfidSimulator(tcp_port=rfid_tcp_port) if rfid_tcp_port is not None else SerialRfidSimulator(),
        ModbusRpmSimulator(port=0),
        SmartCameraSimulator(),
        BarrierPlcSimulator(),
    )
    devices.start()
    return devices


CONFIG_HEADER = "# Written by `gated-sim lane`"


def _written_by_us(path: Path) -> bool:
    """Whether ``path`` is a config an earlier ``gated-sim lane`` wrote (so it may be replaced)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().startswith(CONFIG_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def daemon_config(devices: LaneDevices, *, lane: str, mqtt_port: int, profile: Path, database: str) -> str:
    """A `gated run` config (TOML) for a daemon driving this simulated lane."""
    rfid = devices.rfid.url
    barrier = devices.barrier.port if devices.barrier else 0
    return f"""{CONFIG_HEADER}: a daemon config for the simulated lane.
site = "sim"
node = "gate-sim"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[storage]
database = "{database}"

[holds]
# Nothing is released until the hold list is confirmed: `gated holds import` (the operator) or a
# signed sync from customs (`gated holds send --action sync`, with its key under [[holds.customs_keys]]).
max_age_seconds = 3600

[[lanes]]
id = "{lane}"
require = ["rfid", "ocr", "rpm"]

  [[lanes.devices]]
  id = "rfid-1"
  driver = "rfid-serial"
  url = "{rfid}"

  [[lanes.devices]]
  id = "rpm-1"
  driver = "rpm-modbus"
  host = "127.0.0.1"
  port = {devices.rpm.port}
  profile = "{profile}"

  [[lanes.devices]]
  id = "ocr-1"
  driver = "ocr-camera"
  host = "127.0.0.1"
  port = {devices.camera.port}

  [[lanes.devices]]
  id = "barrier-1"
  driver = "barrier-modbus"
  host = "127.0.0.1"
  port = {barrier}
"""


GARBAGE = b"\x00\xff$TAG,zz*00\r\n#?!garbage\r\n"


def _apply_fault(devices: LaneDevices, step: FaultStep) -> None:
    device: Any = {
        "rfid": devices.rfid,
        "rpm": devices.rpm,
        "ocr": devices.camera,
        "barrier": devices.barrier,
    }[step.device]
    if step.fault == "unplug":
        device.stop()
    elif step.fault == "replug":
        device.start()
    elif step.fault == "garbage":
        if step.device in ("rfid", "ocr"):
            device.send_raw(GARBAGE)
        else:
            raise ScenarioError(f"garbage is for line devices (rfid, ocr), not {step.device}")
    elif step.device == "rpm":
        devices.rpm.set_tamper(step.fault == "tamper")
    else:
        raise ScenarioError(f"{step.fault} is for the rpm, not {step.device}")


def play(
    scenario: Scenario,
    devices: LaneDevices,
    stop: threading.Event | None = None,
    report: Any = print,
) -> int:
    """Play the scenario; returns how many trucks passed the barrier."""
    lane = ScriptedLane(devices, pace=scenario.pace)
    stop = stop or threading.Event()
    passed = 0
    for _round in range(scenario.repeat):
        for step in scenario.steps:
            if stop.is_set():
                return passed
            if isinstance(step, WaitStep):
                stop.wait(step.wait * scenario.pace)
            elif isinstance(step, FaultStep):
                report(f"fault: {step.fault} {step.device}")
                _apply_fault(devices, step)
            else:
                truck = Truck(
                    step.truck,
                    step.tag,
                    tuple(ContainerSighting(c.code, c.confidence, c.size_type) for c in step.containers),
                    radiation=step.radiation,
                )
                opened = lane.drive(truck, stop, pass_through=step.drive_through)
                passed += int(opened)
                report(f"truck {step.truck!r}: barrier {'opened' if opened else 'stayed closed'}")
                stop.wait(scenario.gap_seconds * scenario.pace)
    return passed


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lane",
        help="a whole simulated lane played from a scenario file",
        description="Start the simulators of one lane (RFID, RPM, camera, barrier PLC) and play a "
        "scenario of trucks and faults. --write-config writes a `gated run` config for them.",
    )
    parser.add_argument("--scenario", required=True, metavar="FILE")
    parser.add_argument(
        "--write-config", metavar="PATH", type=output_file, help="write a daemon config pointing at the lane"
    )
    parser.add_argument("--mqtt-port", type=port, default=1883, help="broker port for the written config")
    parser.add_argument("--rfid-tcp-port", type=port, default=None, help="RFID on TCP instead of a pty")
    parser.add_argument("--start-delay", type=float, default=3.0, help="seconds before the first step")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    written: Path | None = args.write_config
    if written is not None and written.exists() and not _written_by_us(written):
        print(f"lane: --write-config: {written} exists and was not written by gated-sim; not replacing it")
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        print(error)
        return 78
    devices = start_lane(rfid_tcp_port=args.rfid_tcp_port)
    try:
        profile = Path(__file__).resolve().parent.parent / "config" / "profiles" / "rpm-modbus.toml"
        config = daemon_config(
            devices, lane=scenario.lane, mqtt_port=args.mqtt_port, profile=profile, database="gated-sim.db"
        )
        if written is not None:
            written.write_text(config, encoding="utf-8")
            print(f"daemon config written to {written}: gated run --config {written}", flush=True)
            # Without a hold list confirmed, the daemon sends every truck to MANUAL_REVIEW.
            print(
                "confirm a hold list first (here an empty one): gated holds import /dev/null --kind holds "
                f"--allow-empty --reason 'simulated lane' --config {written}",
                flush=True,
            )
        else:
            print(config, flush=True)
        time.sleep(args.start_delay)
        passed = play(scenario, devices)
        print(f"scenario done: {passed} trucks passed the barrier")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        devices.stop()
