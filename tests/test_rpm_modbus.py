"""The Modbus RPM: profile loader, decoder, change detection, and the driver against its simulator
over real TCP, with mbpoll as an independent Modbus master checking the simulator."""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.profile import RpmProfile, load_profile, parse_profile
from drivers.rpm_modbus import ModbusRpmDriver, RpmChangeDetector, RpmModbusDevice, RpmSnapshot, decode
from gated.clock import ManualClock
from gated.errors import ConfigError, DeviceUnavailable, ProtocolError
from gated.model import DeviceState, Kind, Quality, Reading, ScreeningVerdict, Source
from simulators.rpm_modbus import ModbusRpmSimulator, register_cli
from tests.sinks import RecordingSink
from tests.system import free_port, require_tool

PROFILE_PATH = Path(__file__).resolve().parents[1] / "config" / "profiles" / "rpm-modbus.toml"
LANE, DEVICE = "lane-1", "rpm-1"
WAIT = 20.0  # generous: the machine may be busy


@pytest.fixture(scope="module")
def profile() -> RpmProfile:
    return load_profile(PROFILE_PATH)


def shipped_document() -> dict[str, Any]:
    return tomllib.loads(PROFILE_PATH.read_text())


# -- a small TOML writer for broken profiles (inline tables are valid TOML at any depth) ----------


def toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def write_profile(path: Path, document: dict[str, Any]) -> Path:
    path.write_text("\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items()) + "\n")
    return path


# -- profile loader ------------------------------------------------------------------------------


def test_shipped_profile_loads(profile: RpmProfile) -> None:
    assert profile.name == "rpm-modbus"
    assert (profile.first_address, profile.count) == (0, 13)
    gamma = profile.resource("gamma_cps")
    assert (gamma.address, gamma.type.value, gamma.width, gamma.units) == (2, "uint32", 2, "cps")
    neutron = profile.resource("neutron_cps")
    assert neutron.address == 6 and neutron.scale == pytest.approx(0.1)
    status = profile.resource("status")
    assert status.bit("occupied") == 0 and status.bit("tamper") == 6
    assert profile.resource("last_result").bit("fault") == 2
    assert profile.resource("last_speed_kmh").units == "km/h"


def _delete(*keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _set(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


BROKEN = [
    pytest.param(
        _delete("resources", "pass_counter"), "resources.pass_counter: missing resource", id="missing"
    ),
    pytest.param(
        _set("zero", "resources", "status", "address"), "resources.status.address", id="address-str"
    ),
    pytest.param(_set(-1, "resources", "status", "address"), "resources.status.address", id="address-neg"),
    pytest.param(
        _set(True, "resources", "pass_counter", "address"), "resources.pass_counter.address", id="bool"
    ),
    pytest.param(_set("int64", "resources", "gamma_cps", "type"), "resources.gamma_cps.type", id="type"),
    pytest.param(
        _set(0, "resources", "neutron_cps", "scale"), "resources.neutron_cps.scale", id="scale-zero"
    ),
    pytest.param(
        _set("0.1", "resources", "neutron_cps", "scale"), "resources.neutron_cps.scale", id="scale-str"
    ),
    pytest.param(_set(5, "resources", "gamma_cps", "units"), "resources.gamma_cps.units", id="units"),
    pytest.param(
        _delete("resources", "gamma_cps", "units"), "resources.gamma_cps.units: missing", id="no-units"
    ),
    pytest.param(
        _set(3, "resources", "gamma_background_cps", "address"),
        "resources.gamma_background_cps.address: registers 3..4 overlap resources.gamma_cps",
        id="overlap",
    ),
    pytest.param(
        _set("red", "resources", "status", "colour"), "resources.status.colour: unknown key", id="key"
    ),
    pytest.param(_set("x", "vendor"), "vendor: unknown key", id="top-key"),
    pytest.param(
        _set({}, "resources", "pass_countr"), "resources.pass_countr: unknown resource", id="resource"
    ),
    pytest.param(
        _delete("resources", "status", "bits", "tamper"), "resources.status.bits.tamper", id="no-bit"
    ),
    pytest.param(
        _set(16, "resources", "status", "bits", "tamper"), "resources.status.bits.tamper", id="bit-16"
    ),
    pytest.param(
        _set(0, "resources", "status", "bits", "tamper"), "bit 0 is already occupied", id="bit-twice"
    ),
    pytest.param(
        _set(9, "resources", "status", "bits", "door"), "resources.status.bits.door", id="bit-unknown"
    ),
    pytest.param(
        _set({"a": 0}, "resources", "gamma_cps", "bits"), "resources.gamma_cps.bits", id="bits-where"
    ),
    pytest.param(_set(65535, "resources", "last_gamma_peak_cps", "address"), "runs past", id="past-end"),
    pytest.param(_set(200, "resources", "last_speed_kmh", "address"), "more than one read", id="span"),
    pytest.param(_set("little", "word_order"), "word_order", id="word-order"),
    pytest.param(_set("input", "register_table"), "register_table", id="table"),
    pytest.param(_set(7, "resources", "status"), "resources.status: must be a table", id="not-table"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("mutate", "expected"), BROKEN)
def test_broken_profile_is_refused_naming_the_key(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    document = shipped_document()
    mutate(document)
    path = write_profile(tmp_path / "broken.toml", document)
    with pytest.raises(ConfigError) as raised:
        load_profile(path)
    assert any(expected in line for line in raised.value.problems), raised.value.problems
    assert all(line.startswith(f"{path}: ") for line in raised.value.problems)


@pytest.mark.timeout(30)
def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    document = shipped_document()
    document["resources"]["status"]["address"] = "zero"
    document["resources"]["gamma_cps"]["type"] = "float64"
    del document["resources"]["last_result"]
    with pytest.raises(ConfigError) as raised:
        load_profile(write_profile(tmp_path / "p.toml", document))
    assert len(raised.value.problems) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name = \n", "not valid TOML"),
        (b"\xff\xfe name", "not UTF-8"),
        (None, "cannot read"),
    ],
)
def test_unreadable_profile(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "p.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        load_profile(path)


TOML_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.datetimes()
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(
    resource=st.sampled_from([*sorted(shipped_document()["resources"]), "extra"]),
    key=st.sampled_from(["address", "type", "scale", "units", "bits", "other"]),
    value=TOML_VALUES,
    top=st.one_of(
        st.none(), st.tuples(st.sampled_from(["name", "word_order", "resources", "x"]), TOML_VALUES)
    ),
)
def test_any_mutated_profile_loads_or_raises_config_error(
    resource: str, key: str, value: Any, top: tuple[str, Any] | None
) -> None:
    document = shipped_document()
    document["resources"].setdefault(resource, {})[key] = value
    if top is not None:
        document[top[0]] = top[1]
    try:
        loaded = parse_profile(document, "fuzz.toml")
    except ConfigError as error:
        assert error.problems and all(line.startswith("fuzz.toml: ") for line in error.problems)
    else:
        assert isinstance(loaded, RpmProfile)


# -- decoder -------------------------------------------------------------------------------------


def test_decode_a_known_block(profile: RpmProfile) -> None:
    registers = [0b1001001, 5, 0x0001, 0x0002, 0, 250, 25, 20, 0, 1000, 123, 0b0101, 80]
    snapshot = decode(profile, registers)
    assert snapshot.status.occupied and snapshot.status.gamma_high_fault and snapshot.status.tamper
    assert not snapshot.status.gamma_alarm and snapshot.status.faults == ("gamma_high_fault",)
    assert snapshot.pass_counter == 5
    assert snapshot.gamma_cps == 65538.0  # high word first
    assert snapshot.gamma_background_cps == 250.0
    assert snapshot.neutron_cps == pytest.approx(2.5)
    assert snapshot.neutron_background_cps == pytest.approx(2.0)
    last = snapshot.last_pass
    assert last.gamma_peak_cps == 1000.0 and last.neutron_peak_cps == pytest.approx(12.3)
    assert last.gamma_alarm and last.fault and not last.neutron_alarm and not last.tamper
    assert last.speed_kmh == pytest.approx(8.0)
    assert last.verdict is ScreeningVerdict.FAULT


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registers=st.lists(st.integers(min_value=-3, max_value=70000), max_size=20))
def test_decoder_accepts_anything_or_raises_protocol_error(profile: RpmProfile, registers: list[int]) -> None:
    try:
        snapshot = decode(profile, registers)
    except ProtocolError:
        assert len(registers) != 13 or any(not 0 <= word <= 0xFFFF for word in registers)
    else:
        assert isinstance(snapshot, RpmSnapshot)


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registers=st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=13, max_size=13))
def test_every_valid_block_decodes_to_a_consistent_verdict(profile: RpmProfile, registers: list[int]) -> None:
    snapshot = decode(profile, registers)
    assert 0 <= snapshot.pass_counter < snapshot.pass_counter_modulus == 65536
    assert snapshot.gamma_cps == (registers[2] << 16 | registers[3])
    result = registers[11]
    verdict = snapshot.last_pass.verdict
    if result & 0b1100:
        assert verdict is ScreeningVerdict.FAULT
    elif result & 0b01:
        assert verdict is ScreeningVerdict.GAMMA_ALARM
    elif result & 0b10:
        assert verdict is ScreeningVerdict.NEUTRON_ALARM
    else:
        assert verdict is ScreeningVerdict.CLEAR


# -- change detection (pure) ----------------------------------------------------------------------


def block(*, status: int = 0, counter: int = 0, result: int = 0) -> list[int]:
    return [status, counter, 0, 250, 0, 250, 20, 20, 0, 400, 30, result, 80]


def sources(readings: list[Reading]) -> list[str]:
    return [reading.source for reading in readings]


def test_counter_baseline_wrap_and_missed_passes(profile: RpmProfile) -> None:
    detector = RpmChangeDetector(LANE, DEVICE, ManualClock())
    assert detector.changes(decode(profile, block(counter=65535))) == []  # baseline, not a new pass
    ended = detector.changes(decode(profile, block(counter=0, result=0b10)))
    assert sources(ended).count(Source.SCREENING) == 1
    assert ended[-1].value == "neutron_alarm"
    assert detector.changes(decode(profile, block(counter=0))) == []
    several = detector.changes(decode(profile, block(counter=3)))
    assert sources(several).count(Source.SCREENING) == 1 and detector.missed_passes == 2
    detector.reset_baseline()
    assert detector.changes(decode(profile, block(counter=9))) == []


def test_occupancy_fault_and_tamper_edges(profile: RpmProfile) -> None:
    clock = ManualClock()
    detector = RpmChangeDetector(LANE, DEVICE, clock)
    first = detector.changes(decode(profile, block(status=0b1)))
    assert [(r.source, r.value) for r in first] == [("occupancy", True)]
    assert first[0].ts == clock.now() and first[0].kind is Kind.RPM
    assert detector.changes(decode(profile, block(status=0b1))) == []
    faults = detector.changes(decode(profile, block(status=0b1 | 0b101000 | 0b1000000)))
    assert [(r.source, r.value, r.quality) for r in faults] == [
        ("tamper", True, Quality.BAD),
        ("fault", "gamma_high_fault,neutron_high_fault", Quality.BAD),
    ]
    cleared = detector.changes(decode(profile, block(status=0b1)))
    assert [(r.source, r.value, r.quality) for r in cleared] == [
        ("tamper", False, Quality.GOOD),
        ("fault", "", Quality.GOOD),
    ]


# -- driver against the simulator over TCP ----------------------------------------------------------


def make_driver(
    profile: RpmProfile, port: int, *, unit: int = 1, offline_after: float = 5.0
) -> ModbusRpmDriver:
    settings = RpmModbusDevice(
        id=DEVICE,
        driver="rpm-modbus",
        host="127.0.0.1",
        port=port,
        unit=unit,
        profile=str(PROFILE_PATH),
        poll_interval_seconds=0.05,
        timeout_seconds=2.0,
    )
    return ModbusRpmDriver(
        LANE,
        settings,
        profile=profile,
        backoff_initial=0.05,
        backoff_max=0.5,
        offline_after=offline_after,
    )


@contextmanager
def running(driver: ModbusRpmDriver, sink: RecordingSink) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=driver.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the driver thread did not stop"


@contextmanager
def rig(profile: RpmProfile, **simulator: Any) -> Iterator[tuple[ModbusRpmSimulator, RecordingSink]]:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with ModbusRpmSimulator(seed=7, **simulator) as sim, running(make_driver(profile, sim.port), sink):
        sink.wait_for("online", lambda: DeviceState.ONLINE in sink.states)
        yield sim, sink


def pass_readings(sink: RecordingSink, number: int) -> dict[str, Reading]:
    """The readings of the ``number``-th reported pass end (1-based), by source."""
    sink.wait_for(f"pass {number}", lambda: len(sink.of(Source.SCREENING)) >= number)
    screening = sink.of(Source.SCREENING)[number - 1]
    same_poll = [reading for reading in sink.readings if reading.ts == screening.ts]
    by_source: dict[str, Reading] = {}
    for reading in same_poll:
        by_source.setdefault(reading.source, reading)  # occupancy False comes before a new True
    return by_source


@pytest.mark.timeout(90)
def test_a_clear_pass_reports_occupancy_counts_and_verdict(profile: RpmProfile) -> None:
    with rig(profile, gamma_background_cps=300.0, neutron_background_cps=1.5) as (sim, sink):
        sim.begin_pass()
        sink.wait_for("occupancy True", lambda: [r.value for r in sink.of(Source.OCCUPANCY)] == [True])
        sim.end_pass(gamma_peak=312.0, neutron_peak=1.7, speed_kmh=7.5)
        readings = pass_readings(sink, 1)
        assert readings["occupancy"].value is False
        assert readings[Source.GAMMA_CPS].value == 312.0 and readings[Source.GAMMA_CPS].units == "cps"
        assert readings[Source.GAMMA_BACKGROUND_CPS].value == 300.0
        assert readings[Source.NEUTRON_CPS].value == pytest.approx(1.7)
        assert readings[Source.NEUTRON_BACKGROUND_CPS].value == pytest.approx(1.5)
        assert readings["speed_kmh"].value == pytest.approx(7.5)
        assert readings[Source.SCREENING].value == ScreeningVerdict.CLEAR
        for reading in readings.values():
            assert (reading.kind, reading.lane, reading.device) == (Kind.RPM, LANE, DEVICE)
            assert reading.quality is Quality.GOOD
            assert reading.ts.tzinfo is not None
        assert isinstance(readings[Source.GAMMA_CPS].value, float)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("flags", "verdict", "quality"),
    [
        ({"gamma_alarm": True}, ScreeningVerdict.GAMMA_ALARM, Quality.GOOD),
        ({"neutron_alarm": True}, ScreeningVerdict.NEUTRON_ALARM, Quality.GOOD),
        ({"gamma_alarm": True, "neutron_alarm": True}, ScreeningVerdict.GAMMA_ALARM, Quality.GOOD),
        ({"fault": True, "gamma_alarm": True}, ScreeningVerdict.FAULT, Quality.BAD),
        ({"tamper": True}, ScreeningVerdict.FAULT, Quality.BAD),
    ],
    ids=["gamma", "neutron", "both", "fault", "tamper"],
)
def test_pass_verdicts(profile: RpmProfile, flags: dict[str, bool], verdict: str, quality: Quality) -> None:
    with rig(profile) as (sim, sink):
        sim.begin_pass()
        sink.wait_for("occupancy True", lambda: bool(sink.of(Source.OCCUPANCY)))
        sim.end_pass(gamma_peak=2600.0, neutron_peak=25.0, **flags)
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == verdict
        assert readings[Source.SCREENING].quality is quality
        assert readings[Source.GAMMA_CPS].value == 2600.0
        assert readings[Source.NEUTRON_CPS].value == pytest.approx(25.0)


@pytest.mark.timeout(90)
def test_status_faults_and_tamper_are_reported_while_set(profile: RpmProfile) -> None:
    with rig(profile) as (sim, sink):
        sim.set_fault(gamma_low=True)
        sink.wait_for("fault", lambda: len(sink.of("fault")) == 1)
        assert (sink.of("fault")[0].value, sink.of("fault")[0].quality) == ("gamma_low_fault", Quality.BAD)
        sim.set_tamper(True)
        sink.wait_for("tamper", lambda: len(sink.of("tamper")) == 1)
        assert sink.of("tamper")[0].value is True and sink.of("tamper")[0].quality is Quality.BAD
        sim.set_fault()
        sim.set_tamper(False)
        sink.wait_for("cleared", lambda: len(sink.of("fault")) == 2 and len(sink.of("tamper")) == 2)
        assert (sink.of("fault")[1].value, sink.of("fault")[1].quality) == ("", Quality.GOOD)
        assert (sink.of("tamper")[1].value, sink.of("tamper")[1].quality) == (False, Quality.GOOD)


@pytest.mark.timeout(90)
def test_passes_before_connecting_are_not_reported(profile: RpmProfile) -> None:
    with ModbusRpmSimulator(seed=3) as sim:
        for _ in range(2):
            sim.begin_pass()
            sim.end_pass(gamma_alarm=True)
        sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
        with running(make_driver(profile, sim.port), sink):
            sim.begin_pass()
            sink.wait_for("occupancy True", lambda: bool(sink.of(Source.OCCUPANCY)))
            sim.end_pass()
            assert pass_readings(sink, 1)[Source.SCREENING].value == ScreeningVerdict.CLEAR
            time.sleep(0.5)  # several more polls
            assert len(sink.of(Source.SCREENING)) == 1


@pytest.mark.timeout(90)
def test_counter_wraps_over_tcp(profile: RpmProfile) -> None:
    with rig(profile, pass_counter=65535) as (sim, sink):
        sim.begin_pass()
        sink.wait_for("occupancy True", lambda: bool(sink.of(Source.OCCUPANCY)))
        sim.end_pass(neutron_alarm=True)
        assert pass_readings(sink, 1)[Source.SCREENING].value == ScreeningVerdict.NEUTRON_ALARM
        assert sim.pass_counter == 0


@pytest.mark.timeout(120)
def test_simulator_restart_goes_offline_then_online_and_passes_still_count(profile: RpmProfile) -> None:
    with rig(profile) as (sim, sink):
        sim.begin_pass()
        sim.end_pass()
        pass_readings(sink, 1)
        sim.stop()
        sink.wait_for("offline", lambda: sink.states[-1] is DeviceState.OFFLINE)
        sim.stop()  # idempotent
        sim.start()
        sink.wait_for("online again", lambda: sink.states[-2:] == [DeviceState.OFFLINE, DeviceState.ONLINE])
        sim.begin_pass()
        sink.wait_for("occupancy True", lambda: [r.value for r in sink.of(Source.OCCUPANCY)][-1] is True)
        sim.end_pass(gamma_alarm=True)
        assert pass_readings(sink, 2)[Source.SCREENING].value == ScreeningVerdict.GAMMA_ALARM
        time.sleep(0.5)
        assert len(sink.of(Source.SCREENING)) == 2  # the pass seen before the restart was not repeated


@pytest.mark.timeout(60)
def test_wrong_unit_id_counts_protocol_errors_and_is_never_online(profile: RpmProfile) -> None:
    with ModbusRpmSimulator(unit=1) as sim:
        driver = make_driver(profile, sim.port, unit=9)
        sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
        with running(driver, sink) as thread:
            sink.wait_for("frame errors", lambda: len(sink.errors) >= 3)
            assert thread.is_alive()
        assert driver.frame_errors >= 3 and sink.readings == []
        # Every poll answered with an exception: connected, but not a working monitor.
        assert sink.states[0] is DeviceState.DEGRADED and DeviceState.ONLINE not in sink.states
        assert "exception 4" in sink.statuses[0][1]
        message = sink.errors[0]
        assert "unit 9" in message and "exception 4" in message and f":{sim.port}" in message


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("code", "name"), [(4, "device failure"), (2, "illegal data address")])
def test_a_monitor_answering_every_poll_with_an_exception_is_offline_until_it_answers(
    profile: RpmProfile, code: int, name: str
) -> None:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with ModbusRpmSimulator(seed=7) as sim:
        sim.refuse(code)
        with running(make_driver(profile, sim.port, offline_after=1.0), sink):
            sink.wait_for("offline", lambda: sink.state is DeviceState.OFFLINE)
            assert sink.states == [DeviceState.DEGRADED, DeviceState.OFFLINE]
            assert f"exception {code} ({name})" in sink.statuses[-1][1]
            assert sim.refused >= 3 and len(sink.errors) >= 3
            sim.refuse(None)
            sink.wait_for("online", lambda: sink.state is DeviceState.ONLINE)
            # Degraded on the way back while its last failure is recent; straight back online when
            # the driver's reconnect backoff outlasted that (a loaded machine, a longer backoff).
            assert sink.states in (
                [DeviceState.DEGRADED, DeviceState.OFFLINE, DeviceState.DEGRADED, DeviceState.ONLINE],
                [DeviceState.DEGRADED, DeviceState.OFFLINE, DeviceState.ONLINE],
            ), sink.states
            sim.begin_pass()
            sim.end_pass(gamma_alarm=True)
            assert pass_readings(sink, 1)[Source.SCREENING].value == ScreeningVerdict.GAMMA_ALARM


@pytest.mark.timeout(90)
def test_a_monitor_that_starts_refusing_polls_goes_degraded_then_offline_and_comes_back(
    profile: RpmProfile,
) -> None:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with ModbusRpmSimulator(seed=7) as sim, running(make_driver(profile, sim.port, offline_after=2.0), sink):
        sink.wait_for("online", lambda: DeviceState.ONLINE in sink.states)
        sim.refuse(4)
        sink.wait_for("offline", lambda: sink.state is DeviceState.OFFLINE)
        assert sink.states == [DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.OFFLINE]
        sim.refuse(None)
        sink.wait_for("online again", lambda: sink.state is DeviceState.ONLINE)
        assert sink.states[-2:] == [DeviceState.DEGRADED, DeviceState.ONLINE]


@pytest.mark.timeout(90)
def test_a_monitor_refusing_every_other_poll_is_degraded_not_offline(profile: RpmProfile) -> None:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with ModbusRpmSimulator(seed=7) as sim, running(make_driver(profile, sim.port, offline_after=0.5), sink):
        sink.wait_for("online", lambda: DeviceState.ONLINE in sink.states)
        sim.refuse(6, every=2)
        sink.wait_for("degraded", lambda: sink.state is DeviceState.DEGRADED)
        # Forty refused polls of 50 ms in every other one: far longer than offline_after.
        sink.wait_for("forty refused polls", lambda: sim.refused >= 40)
        assert sink.states == [DeviceState.ONLINE, DeviceState.DEGRADED]
        sim.refuse(None)
        sink.wait_for("online again", lambda: sink.state is DeviceState.ONLINE)


@pytest.mark.timeout(60)
def test_step_raises_protocol_error_and_connect_raises_device_unavailable(profile: RpmProfile) -> None:
    with ModbusRpmSimulator(unit=1) as sim:
        driver = make_driver(profile, sim.port, unit=2)
        driver.connect()
        try:
            with pytest.raises(ProtocolError, match="exception 4"):
                driver.step()
        finally:
            driver.close()
            driver.close()
    nobody = make_driver(profile, free_port())
    with pytest.raises(DeviceUnavailable):
        nobody.connect()
    nobody.close()


@pytest.mark.timeout(60)
def test_a_device_that_never_answers_is_unavailable(profile: RpmProfile) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        driver = make_driver(profile, silent.getsockname()[1])
        driver.timeout = 0.5
        try:
            # The first read is part of connecting: a device that never answers is never online.
            with pytest.raises(DeviceUnavailable, match="no answer"):
                driver.connect()
        finally:
            driver.close()


# -- the simulator seen by an independent Modbus master ---------------------------------------------


def mbpoll(port: int, unit: int, *args: str) -> dict[int, int]:
    """Values by (1-based) reference, as mbpoll prints them."""
    tool = require_tool("mbpoll")
    command = [tool, "-m", "tcp", "-a", str(unit), "-p", str(port), "-o", "5", "-1", *args, "127.0.0.1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    values = {}
    for line in done.stdout.splitlines():
        if line.startswith("[") and "]:" in line:
            reference, value = line.split("]:", 1)
            values[int(reference[1:])] = int(value.split()[0])
    return values


@pytest.mark.timeout(60)
def test_mbpoll_reads_the_simulator_registers() -> None:
    require_tool("mbpoll")
    with ModbusRpmSimulator(unit=17, gamma_background_cps=70000.0) as sim:
        sim.begin_pass()
        sim.end_pass(gamma_peak=123456.0, neutron_peak=4.2, gamma_alarm=True, speed_kmh=9.3)
        sim.end_pass(gamma_peak=123457.0, neutron_peak=4.3, tamper=True, speed_kmh=9.4)
        sim.set_tamper(True)
        sim.set_fault(neutron_high=True)
        sim.begin_pass()
        registers = mbpoll(sim.port, 17, "-t", "4", "-r", "1", "-c", "13")  # reference 1 is register 0
        assert registers[1] == 0b1100001  # occupied, neutron high fault, tamper
        assert registers[2] == 2  # pass counter
        assert registers[11] == 43  # peak neutron x10
        assert registers[12] == 0b1000  # result: tamper
        assert registers[13] == 94  # speed x10
        zero_based = mbpoll(sim.port, 17, "-0", "-t", "4", "-r", "1", "-c", "1")
        assert zero_based[1] == 2
        thirty_two = mbpoll(sim.port, 17, "-t", "4:int", "-B", "-r", "5", "-c", "1")  # registers 4-5
        assert thirty_two[5] == 70000
        peak = mbpoll(sim.port, 17, "-t", "4:int", "-B", "-r", "9", "-c", "1")
        assert peak[9] == 123457


@pytest.mark.timeout(60)
def test_simulator_counts_are_seeded_and_move() -> None:
    def samples(seed: int) -> list[int]:
        with ModbusRpmSimulator(seed=seed, gamma_background_cps=400.0) as sim:
            seen: list[int] = []
            deadline = time.monotonic() + WAIT
            while len(set(seen)) < 3 and time.monotonic() < deadline:
                registers = sim.registers()
                seen.append(registers[2] << 16 | registers[3])
                time.sleep(0.1)
            return seen

    seen = samples(5)
    assert len(set(seen)) >= 3
    assert all(250 < value < 550 for value in seen)


# -- gated-sim rpm-modbus -------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_cli_runs_scripted_passes(profile: RpmProfile, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    port = free_port()
    argv = ["rpm-modbus", "--port", str(port), "--unit", "3", "--seed", "1"]
    args = parser.parse_args([*argv, "--pass-every", "0.4", "--alarm-every", "2", "--duration", "8"])
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    worker.start()
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with running(make_driver(profile, port, unit=3), sink):
        sink.wait_for("two passes", lambda: len(sink.of(Source.SCREENING)) >= 2, timeout=60)
        verdicts = {r.value for r in sink.of(Source.SCREENING)}
        assert verdicts == {ScreeningVerdict.CLEAR, ScreeningVerdict.GAMMA_ALARM}  # every 2nd alarms
    worker.join(timeout=45)
    assert result == [0]
    assert f"127.0.0.1:{port} unit 3" in capsys.readouterr().out


def test_reading_timestamps_come_from_the_injected_clock(profile: RpmProfile) -> None:
    clock = ManualClock(datetime.fromisoformat("2026-03-01T12:00:00+00:00"))
    detector = RpmChangeDetector(LANE, DEVICE, clock)
    detector.changes(decode(profile, block(counter=1)))
    clock.advance(2.5)
    ended = detector.changes(decode(profile, block(counter=2)))
    assert {r.ts for r in ended} == {clock.now()}


@pytest.mark.timeout(60)
def test_a_pass_that_ends_right_after_connecting_is_reported(profile: RpmProfile) -> None:
    # The baseline is taken while connecting, so a pass ending before the first poll still counts.
    with ModbusRpmSimulator() as sim:
        driver = make_driver(profile, sim.port)
        driver.connect()
        try:
            sim.begin_pass()
            sim.end_pass(gamma_alarm=True)
            readings: list[Reading] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(r.source == Source.SCREENING for r in readings):
                readings.extend(driver.step())
            verdicts = [r.value for r in readings if r.source == Source.SCREENING]
            assert verdicts == [ScreeningVerdict.GAMMA_ALARM]
        finally:
            driver.close()
