"""A device kind is one entry in ``drivers.registry``: from it alone the config schema accepts the
kind, the lane knows its role, and the daemon builds its driver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Driver
from drivers.registry import BARRIER, DEVICE_TYPES, PRINTER, READERS, DeviceType
from gated.clock import ManualClock
from gated.config import DEVICE_KINDS, json_schema, load_config, validate
from gated.devices import build_barrier, build_driver, build_printer, is_reader
from gated.errors import ConfigError
from gated.evidence import EvidenceStore
from gated.settings import DriverContext
from ocr.pool import OcrPool

PROFILE = Path(__file__).resolve().parent.parent / "config" / "profiles" / "rpm-modbus.toml"


def sample_values(tmp_path: Path) -> dict[str, Any]:
    """A valid value for every required device setting, by name: a kind with a new required
    setting adds it here."""
    return {
        "host": "127.0.0.1",
        "port": 1,
        "url": "loop://",
        "profile": str(PROFILE),
        "views": [str(tmp_path)],
        "inbox": str(tmp_path / "inbox"),
    }


def minimal_device(device_type: DeviceType[object], tmp_path: Path) -> dict[str, Any]:
    """The smallest ``[[lanes.devices]]`` entry of a kind: its required settings only."""
    samples = sample_values(tmp_path)
    entry: dict[str, Any] = {"id": "dev-1", "driver": device_type.name}
    for name, field in device_type.settings.model_fields.items():
        if field.is_required() and name not in entry:
            assert name in samples, f"{device_type.name}: no sample value for its required {name!r}"
            entry[name] = samples[name]
    return entry


def one_device_config(device: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": "test",
        "holds": {"max_age_seconds": 3600},
        "lanes": [{"id": "lane-1", "require": [], "devices": [device]}],
    }


@pytest.fixture
def context(tmp_path: Path) -> DriverContext:
    return DriverContext(ManualClock(), EvidenceStore(tmp_path / "evidence"), OcrPool)


def test_every_kind_has_one_entry_under_its_own_driver_name() -> None:
    entries = [*READERS, BARRIER, PRINTER]
    assert len(DEVICE_TYPES) == len(entries), "two entries share a driver name"
    assert len({entry.settings for entry in entries}) == len(entries)
    assert len({entry.driver for entry in entries}) == len(entries)
    assert {name: entry.kind.value for name, entry in DEVICE_TYPES.items()} == DEVICE_KINDS
    for reader in READERS:
        assert isinstance(reader.driver, type) and issubclass(reader.driver, Driver), reader.name


def test_every_kind_is_in_the_config_schema_under_its_driver_name() -> None:
    schema = json.loads(json_schema())
    devices = schema["$defs"]["LaneConfig"]["properties"]["devices"]["items"]
    mapping = devices["discriminator"]["mapping"]
    assert set(mapping) == set(DEVICE_TYPES)
    for name, device_type in DEVICE_TYPES.items():
        model = device_type.settings.__name__
        assert mapping[name] == f"#/$defs/{model}"
        assert schema["$defs"][model]["properties"]["driver"]["const"] == name


@pytest.mark.parametrize("name", sorted(DEVICE_TYPES))
def test_every_kind_builds_its_driver_from_a_minimal_config(
    name: str, tmp_path: Path, context: DriverContext
) -> None:
    device_type = DEVICE_TYPES[name]
    config = validate(one_device_config(minimal_device(device_type, tmp_path)))
    [device] = config.lanes[0].devices
    assert isinstance(device, device_type.settings)
    assert device.problems() == []
    if device_type in READERS:
        assert is_reader(device)
        driver: object = build_driver("lane-1", device, context)
    else:
        assert not is_reader(device)
        build = build_barrier if device_type is BARRIER else build_printer
        driver = build("lane-1", device, context)
    assert isinstance(driver, device_type.driver)  # type: ignore[arg-type]
    assert (driver.lane, driver.device, driver.kind) == ("lane-1", "dev-1", device_type.kind)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(DEVICE_TYPES))
def test_every_kind_refuses_an_unknown_setting_by_its_path(name: str, tmp_path: Path) -> None:
    device = {**minimal_device(DEVICE_TYPES[name], tmp_path), "colour": "red"}
    with pytest.raises(ConfigError) as error:
        validate(one_device_config(device), source="g.toml")
    assert error.value.problems == ["g.toml: lanes[0:lane-1].devices[0:dev-1].colour: unknown key"]


def test_a_kind_is_built_only_from_its_own_settings(tmp_path: Path, context: DriverContext) -> None:
    config = validate(one_device_config(minimal_device(PRINTER, tmp_path)))
    [printer] = config.lanes[0].devices
    with pytest.raises(TypeError, match="barrier-modbus"):
        build_barrier("lane-1", printer, context)


def test_file_paths_of_a_kind_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "profile.toml").write_text(PROFILE.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "gated.toml").write_text(
        'site = "test"\n[holds]\nmax_age_seconds = 3600\n[[lanes]]\nid = "lane-1"\nrequire = []\n'
        '[[lanes.devices]]\nid = "rpm-1"\ndriver = "rpm-modbus"\nhost = "127.0.0.1"\nprofile = "profile.toml"\n'
        '[[lanes.devices]]\nid = "nii-1"\ndriver = "nii-folder"\ninbox = "drop"\n',
        encoding="utf-8",
    )
    rpm, nii = load_config(tmp_path / "gated.toml").lanes[0].devices
    assert rpm.model_dump()["profile"] == str(tmp_path / "profile.toml")
    assert nii.model_dump()["inbox"] == str(tmp_path / "drop")
    assert rpm.problems() == [] and nii.problems() == []
    (tmp_path / "profile.toml").write_text("resources = 1\n", encoding="utf-8")
    assert rpm.problems(), "a profile that no longer loads is a problem"
