"""Radiation portal monitors that expose their state as Modbus TCP holding registers.

Three parts, split the way a reader looks for them:

- ``decode()``, the converter: a pure function from one block of register values to a typed
  ``RpmSnapshot``, using the device profile (``drivers.profile``).
- ``RpmChangeDetector``: pure as well; compares snapshots and turns what changed into readings
  (occupancy, the result of each finished pass, fault and tamper changes).
- ``ModbusRpmDriver``, the connector: polls the monitor with pymodbus and translates every pymodbus
  exception and error response into ``DeviceUnavailable`` or ``ProtocolError``. No other module of
  gated imports pymodbus.

A Modbus exception response is an answer but not a reading: each one is a failed poll, so a
monitor that answers every poll with one goes degraded, then offline (``drivers.base``), and
never counts as online. Until one poll after connecting has succeeded the monitor is degraded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from drivers.base import Driver
from drivers.profile import Resource, RpmProfile, load_profile
from gated.clock import Clock
from gated.errors import ConfigError, DeviceUnavailable, ProtocolError
from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source
from gated.settings import DeviceSettings, DriverContext, Host

log = logging.getLogger(__name__)

FAULT_BITS = ("gamma_high_fault", "gamma_low_fault", "neutron_high_fault")
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


@dataclass(frozen=True, slots=True)
class RpmStatus:
    occupied: bool
    gamma_alarm: bool
    neutron_alarm: bool
    gamma_high_fault: bool
    gamma_low_fault: bool
    neutron_high_fault: bool
    tamper: bool

    @property
    def faults(self) -> tuple[str, ...]:
        """Names of the fault bits that are set, in profile order."""
        return tuple(name for name in FAULT_BITS if getattr(self, name))


@dataclass(frozen=True, slots=True)
class PassResult:
    """What the monitor measured during its last finished pass."""

    gamma_peak_cps: float
    neutron_peak_cps: float
    gamma_alarm: bool
    neutron_alarm: bool
    fault: bool
    tamper: bool
    speed_kmh: float

    @property
    def verdict(self) -> ScreeningVerdict:
        # A faulty or tampered monitor did not screen the vehicle, whatever its alarm bits say.
        if self.fault or self.tamper:
            return ScreeningVerdict.FAULT
        if self.gamma_alarm:
            return ScreeningVerdict.GAMMA_ALARM
        if self.neutron_alarm:
            return ScreeningVerdict.NEUTRON_ALARM
        return ScreeningVerdict.CLEAR


@dataclass(frozen=True, slots=True)
class RpmSnapshot:
    """Everything one poll of the monitor shows."""

    status: RpmStatus
    pass_counter: int
    pass_counter_modulus: int
    gamma_cps: float
    gamma_background_cps: float
    neutron_cps: float
    neutron_background_cps: float
    last_pass: PassResult


def _raw(resource: Resource, registers: Sequence[int], first: int) -> int:
    offset = resource.address - first
    value = 0
    for word in registers[offset : offset + resource.width]:
        value = (value << 16) | word
    return value


def _flags(resource: Resource, raw: int) -> dict[str, bool]:
    return {name: bool(raw >> number & 1) for name, number in resource.bits}


def decode(profile: RpmProfile, registers: Sequence[int]) -> RpmSnapshot:
    """Turn the registers of one read (starting at ``profile.first_address``) into a snapshot.

    Raises ``ProtocolError`` when the block has the wrong length or a value is not a register."""
    if len(registers) != profile.count:
        raise ProtocolError(f"expected {profile.count} registers, got {len(registers)}")
    for index, word in enumerate(registers):
        if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word <= 0xFFFF:
            raise ProtocolError(f"register {profile.first_address + index}: {word!r} is not a 16-bit value")
    first = profile.first_address

    def value(name: str) -> float:
        resource = profile.resource(name)
        return _raw(resource, registers, first) * resource.scale

    status_resource = profile.resource("status")
    status = _flags(status_resource, _raw(status_resource, registers, first))
    result_resource = profile.resource("last_result")
    result = _flags(result_resource, _raw(result_resource, registers, first))
    counter = profile.resource("pass_counter")
    return RpmSnapshot(
        status=RpmStatus(**status),
        pass_counter=_raw(counter, registers, first),
        pass_counter_modulus=1 << (16 * counter.width),
        gamma_cps=value("gamma_cps"),
        gamma_background_cps=value("gamma_background_cps"),
        neutron_cps=value("neutron_cps"),
        neutron_background_cps=value("neutron_background_cps"),
        last_pass=PassResult(
            gamma_peak_cps=value("last_gamma_peak_cps"),
            neutron_peak_cps=value("last_neutron_peak_cps"),
            speed_kmh=value("last_speed_kmh"),
            **result,
        ),
    )


class RpmChangeDetector:
    """Turns successive snapshots into readings; keeps only what it must remember between polls.

    The pass counter's baseline is taken from the first snapshot after ``reset_baseline()`` (each
    connect), so a pass shown before the driver was looking is never reported as new. Occupancy,
    fault and tamper state are kept across reconnects: a reconnect alone reports nothing twice."""

    def __init__(self, lane: str, device: str, clock: Clock) -> None:
        self.lane = lane
        self.device = device
        self.clock = clock
        self._counter: int | None = None
        self._occupied = False
        self._faults: tuple[str, ...] = ()
        self._tamper = False
        self.missed_passes = 0

    def reset_baseline(self) -> None:
        self._counter = None

    def changes(self, snapshot: RpmSnapshot) -> list[Reading]:
        ts = self.clock.now()
        readings: list[Reading] = []

        def reading(
            source: Source, value: Any, quality: Quality = Quality.GOOD, units: str | None = None
        ) -> None:
            readings.append(
                Reading(
                    lane=self.lane,
                    kind=Kind.RPM,
                    device=self.device,
                    source=source,
                    value=value,
                    ts=ts,
                    quality=quality,
                    units=units,
                )
            )

        status = snapshot.status
        if status.tamper != self._tamper:
            self._tamper = status.tamper
            reading(Source.TAMPER, status.tamper, Quality.BAD if status.tamper else Quality.GOOD)
        if status.faults != self._faults:
            self._faults = status.faults
            reading(Source.FAULT, ",".join(status.faults), Quality.BAD if status.faults else Quality.GOOD)

        if self._counter is not None:
            ended = (snapshot.pass_counter - self._counter) % snapshot.pass_counter_modulus
            if ended > 1:
                self.missed_passes += ended - 1
                log.warning(
                    "%s/%s: %d passes ended between two polls; only the last one is reported",
                    self.lane,
                    self.device,
                    ended,
                )
            if ended:
                result = snapshot.last_pass
                verdict = result.verdict
                quality = Quality.BAD if verdict is ScreeningVerdict.FAULT else Quality.GOOD
                self._occupied = False
                reading(Source.OCCUPANCY, False)
                reading(Source.GAMMA_CPS, result.gamma_peak_cps, quality, "cps")
                reading(Source.GAMMA_BACKGROUND_CPS, snapshot.gamma_background_cps, quality, "cps")
                reading(Source.NEUTRON_CPS, result.neutron_peak_cps, quality, "cps")
                reading(Source.NEUTRON_BACKGROUND_CPS, snapshot.neutron_background_cps, quality, "cps")
                reading(Source.SPEED_KMH, result.speed_kmh, quality, "km/h")
                reading(Source.SCREENING, str(verdict), quality)
        self._counter = snapshot.pass_counter

        if status.occupied and not self._occupied:
            reading(Source.OCCUPANCY, True)
        self._occupied = status.occupied
        return readings


def _open(client: ModbusTcpClient) -> bool:
    return bool(client.connect())  # type: ignore[no-untyped-call]


def _shut(client: ModbusTcpClient) -> None:
    client.close()  # type: ignore[no-untyped-call]


class RpmModbusDevice(DeviceSettings):
    driver: Literal["rpm-modbus"]
    host: Host
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    profile: str = Field(description="Register map profile (TOML), relative to the config file.")
    poll_interval_seconds: float = Field(0.2, gt=0, le=10)
    timeout_seconds: float = Field(1.0, gt=0, le=30)

    def with_paths(self, resolve: Callable[[str], str]) -> Self:
        return self.model_copy(update={"profile": resolve(self.profile)})

    def problems(self) -> list[str]:
        try:
            load_profile(self.profile)
        except ConfigError as error:
            return error.problems
        return []


class ModbusRpmDriver(Driver):
    """Polls one RPM over Modbus TCP and reports occupancy, pass results, faults and tamper.

    ``poll_interval`` is paced with the real monotonic clock; the injected ``clock`` only stamps
    readings (tests pass a manual clock without stalling the poll loop)."""

    kind = Kind.RPM

    @classmethod
    def from_settings(cls, lane: str, settings: RpmModbusDevice, context: DriverContext) -> Self:
        """Raises ``ConfigError`` when the device profile does not load."""
        return cls(lane, settings, profile=load_profile(settings.profile), clock=context.clock)

    def __init__(
        self,
        lane: str,
        settings: RpmModbusDevice,
        *,
        profile: RpmProfile,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        """``profile`` is the register map that ``settings.profile`` names, loaded."""
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        self.host = settings.host
        self.port = settings.port
        self.unit = settings.unit
        self.profile = profile
        self.poll_interval = settings.poll_interval_seconds
        self.timeout = settings.timeout_seconds
        self.detector = RpmChangeDetector(lane, settings.id, self.clock)
        self._carry: list[Reading] = []
        self._client: ModbusTcpClient | None = None
        self._next_poll = 0.0
        self._unproven: str | None = None  # why no poll has succeeded on this connection yet

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port} unit {self.unit}"

    def connect(self) -> None:
        self.close()
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)
        try:
            connected = _open(client)
        except (ModbusException, OSError) as error:
            _shut(client)
            raise DeviceUnavailable(f"{self._where}: cannot connect: {error}") from error
        if not connected:
            _shut(client)
            raise DeviceUnavailable(f"{self._where}: cannot connect")
        self._client = client
        self.detector.reset_baseline()
        # Take the pass counter's baseline now, before the device is reported online: a pass that
        # ends after "online" is then always reported, however late the first poll would come.
        try:
            self._carry = list(self.detector.changes(decode(self.profile, self.read_registers())))
            self._unproven = None
        except ProtocolError as error:
            self._carry = []  # step() reports the error; the first good read takes the baseline
            self._unproven = f"no usable answer since connecting: {error}"
        self._next_poll = time.monotonic() + self.poll_interval

    def degraded(self) -> str | None:
        return self._unproven

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _shut(client)

    def step(self) -> Sequence[Reading]:
        if self._carry:
            carried, self._carry = self._carry, []
            return carried
        delay = self._next_poll - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_poll = max(self._next_poll + self.poll_interval, time.monotonic())
        readings = self.detector.changes(decode(self.profile, self.read_registers()))
        self._unproven = None
        return readings

    def read_registers(self) -> list[int]:
        """One read of every register the profile names."""
        client = self._client
        if client is None:
            raise DeviceUnavailable(f"{self._where}: not connected")
        first, count = self.profile.first_address, self.profile.count
        span = f"holding registers {first}..{first + count - 1}"
        try:
            response = client.read_holding_registers(first, count=count, device_id=self.unit)
        except ConnectionException as error:
            raise DeviceUnavailable(f"{self._where}: connection lost: {error}") from error
        except ModbusIOException as error:
            # No (matching) answer in time. Over TCP the stream may now be out of step: reconnect.
            raise DeviceUnavailable(f"{self._where}: no answer reading {span}: {error}") from error
        except ModbusException as error:
            raise ProtocolError(f"{self._where}: reading {span}: {error}") from error
        except OSError as error:
            raise DeviceUnavailable(f"{self._where}: {error}") from error
        if isinstance(response, ExceptionResponse) or response.isError():
            code = getattr(response, "exception_code", None)
            name = EXCEPTION_NAMES.get(code, "unknown") if isinstance(code, int) else "unknown"
            raise ProtocolError(f"{self._where}: reading {span}: Modbus exception {code} ({name})")
        registers = getattr(response, "registers", None)
        if not isinstance(registers, list):
            raise ProtocolError(f"{self._where}: reading {span}: response without registers: {response}")
        return registers
