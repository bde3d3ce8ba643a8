"""Device profiles: a device type's register map as data (``config/profiles/*.toml``).

A profile names each resource the driver needs, with its register address, type, scale, units and,
for bit fields, the meaning of each bit. The loader refuses anything it does not understand, with one
line per problem naming the file and the key, so a typo never turns into a silently wrong reading.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeGuard

from gated.errors import ConfigError

MAX_READ_REGISTERS = 125  # the most holding registers one Modbus read may return


class RegisterType(StrEnum):
    UINT16 = "uint16"
    UINT32 = "uint32"  # two registers, high word first

    @property
    def width(self) -> int:
        """Registers taken by one value."""
        return 2 if self is RegisterType.UINT32 else 1


@dataclass(frozen=True, slots=True)
class Resource:
    """One value of the device: where it lives and how to turn raw registers into units."""

    name: str
    address: int
    type: RegisterType
    scale: float
    units: str
    bits: tuple[tuple[str, int], ...] = ()

    @property
    def width(self) -> int:
        return self.type.width

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.width

    def bit(self, name: str) -> int:
        for bit_name, number in self.bits:
            if bit_name == name:
                return number
        raise KeyError(f"resource {self.name} has no bit {name!r}")


# What the RPM driver needs: resource name -> the bit names it must define (None: not a bit field).
STATUS_BITS = (
    "occupied",
    "gamma_alarm",
    "neutron_alarm",
    "gamma_high_fault",
    "gamma_low_fault",
    "neutron_high_fault",
    "tamper",
)
RESULT_BITS = ("gamma_alarm", "neutron_alarm", "fault", "tamper")
RPM_RESOURCES: dict[str, tuple[str, ...] | None] = {
    "status": STATUS_BITS,
    "pass_counter": None,
    "gamma_cps": None,
    "gamma_background_cps": None,
    "neutron_cps": None,
    "neutron_background_cps": None,
    "last_gamma_peak_cps": None,
    "last_neutron_peak_cps": None,
    "last_result": RESULT_BITS,
    "last_speed_kmh": None,
}

TOP_KEYS = {"name", "description", "register_table", "word_order", "resources"}
RESOURCE_KEYS = {"address", "type", "scale", "units", "bits"}


@dataclass(frozen=True, slots=True)
class RpmProfile:
    """The register map of one radiation portal monitor type."""

    name: str
    description: str
    source: str
    resources: tuple[Resource, ...]

    def resource(self, name: str) -> Resource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise KeyError(f"profile {self.name} has no resource {name!r}")

    @property
    def first_address(self) -> int:
        return min(resource.address for resource in self.resources)

    @property
    def count(self) -> int:
        """Registers one read must cover to see every resource."""
        return max(resource.end for resource in self.resources) - self.first_address


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return _is_int(value) or isinstance(value, float)


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, text: str) -> None:
        self.lines.append(f"{self.path}: {key}: {text}")


def load_profile(path: str | Path) -> RpmProfile:
    """Read and check an RPM profile. Raises ``ConfigError`` (one line per problem), nothing else."""
    where = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError([f"{where}: cannot read: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{where}: not UTF-8 text: {error.reason} at byte {error.start}"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{where}: not valid TOML: {error}"]) from None
    return parse_profile(document, where)


def parse_profile(document: dict[str, Any], where: str) -> RpmProfile:
    """Check an already parsed profile document; ``where`` names it in error messages."""
    problems = _Problems(where)
    for key in sorted(set(document) - TOP_KEYS):
        problems.add(key, "unknown key")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        problems.add("name", "missing" if name is None else "must be a non-empty string")
    description = document.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "must be a string")
        description = ""
    table = document.get("register_table")
    if table != "holding":
        problems.add(
            "register_table", "missing" if table is None else f"{table!r} is not supported (holding)"
        )
    word_order = document.get("word_order")
    if word_order != "high_first":
        problems.add(
            "word_order", "missing" if word_order is None else f"{word_order!r} is not supported (high_first)"
        )
    resources: list[Resource] = []
    table_value = document.get("resources")
    if not isinstance(table_value, dict):
        problems.add("resources", "missing" if table_value is None else "must be a table")
    else:
        for resource_name in sorted(set(table_value) - set(RPM_RESOURCES)):
            problems.add(f"resources.{resource_name}", "unknown resource")
        for resource_name, bit_names in RPM_RESOURCES.items():
            raw = table_value.get(resource_name)
            if raw is None:
                problems.add(f"resources.{resource_name}", "missing resource")
                continue
            resource = _parse_resource(resource_name, raw, bit_names, problems)
            if resource is not None:
                resources.append(resource)
        _check_layout(resources, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    assert isinstance(name, str)
    return RpmProfile(name=name, description=description, source=where, resources=tuple(resources))


def _parse_resource(
    name: str, raw: object, bit_names: tuple[str, ...] | None, problems: _Problems
) -> Resource | None:
    key = f"resources.{name}"
    if not isinstance(raw, dict):
        problems.add(key, "must be a table")
        return None
    before = len(problems.lines)
    for unknown in sorted(set(raw) - RESOURCE_KEYS):
        problems.add(f"{key}.{unknown}", "unknown key")
    for required in ("address", "type", "scale", "units"):
        if required not in raw:
            problems.add(f"{key}.{required}", "missing")

    address = raw.get("address")
    if "address" in raw and not (_is_int(address) and 0 <= address <= 65535):
        problems.add(f"{key}.address", f"{address!r} is not a register address 0..65535")
    type_raw = raw.get("type")
    register_type: RegisterType | None = None
    if "type" in raw:
        if isinstance(type_raw, str) and type_raw in {member.value for member in RegisterType}:
            register_type = RegisterType(type_raw)
        else:
            choices = ", ".join(member.value for member in RegisterType)
            problems.add(f"{key}.type", f"{type_raw!r} is not one of {choices}")
    scale = raw.get("scale")
    if "scale" in raw and not (_is_number(scale) and math.isfinite(scale) and scale > 0):
        problems.add(f"{key}.scale", f"{scale!r} is not a positive number")
    units = raw.get("units")
    if "units" in raw and not isinstance(units, str):
        problems.add(f"{key}.units", f"{units!r} is not a string")

    bits = _parse_bits(key, raw.get("bits"), bit_names, register_type, problems)
    if len(problems.lines) != before:
        return None
    assert isinstance(address, int) and register_type is not None
    assert isinstance(scale, int | float) and isinstance(units, str)
    return Resource(name, address, register_type, float(scale), units, bits)


def _parse_bits(
    key: str,
    raw: object,
    bit_names: tuple[str, ...] | None,
    register_type: RegisterType | None,
    problems: _Problems,
) -> tuple[tuple[str, int], ...]:
    if bit_names is None:
        if raw is not None:
            problems.add(f"{key}.bits", "this resource is not a bit field")
        return ()
    if raw is None:
        problems.add(f"{key}.bits", "missing")
        return ()
    if not isinstance(raw, dict):
        problems.add(f"{key}.bits", "must be a table of name = bit number")
        return ()
    highest = 16 * (register_type.width if register_type else 1) - 1
    for unknown in sorted(set(raw) - set(bit_names)):
        problems.add(f"{key}.bits.{unknown}", "unknown bit")
    bits: list[tuple[str, int]] = []
    used: dict[int, str] = {}
    for bit_name in bit_names:
        number = raw.get(bit_name)
        if number is None:
            problems.add(f"{key}.bits.{bit_name}", "missing")
        elif not (_is_int(number) and 0 <= number <= highest):
            problems.add(f"{key}.bits.{bit_name}", f"{number!r} is not a bit number 0..{highest}")
        elif number in used:
            problems.add(f"{key}.bits.{bit_name}", f"bit {number} is already {used[number]}")
        else:
            used[number] = bit_name
            bits.append((bit_name, number))
    return tuple(bits)


def _check_layout(resources: list[Resource], problems: _Problems) -> None:
    ordered = sorted(resources, key=lambda resource: resource.address)
    for resource in ordered:
        if resource.end > 65536:
            problems.add(f"resources.{resource.name}.address", "the value runs past register 65535")
    for index, first in enumerate(ordered):
        for second in ordered[index + 1 :]:
            if second.address < first.end:
                problems.add(
                    f"resources.{second.name}.address",
                    f"registers {second.address}..{second.end - 1} overlap resources.{first.name} "
                    f"({first.address}..{first.end - 1})",
                )
    if ordered:
        span = max(resource.end for resource in ordered) - ordered[0].address
        if span > MAX_READ_REGISTERS:
            problems.add("resources", f"span {span} registers, more than one read ({MAX_READ_REGISTERS})")
