"""The Rapiscan line-protocol RPM: record parser, gated's own alarm statistics, the driver against its
simulator over real TCP, and the detection benchmark in quick mode."""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rpm_rapiscan import RapiscanRpmDriver, RpmRapiscanDevice, RpmRecord, parse_record
from gated.bench.rpm import bench_rpm
from gated.errors import ProtocolError
from gated.model import DeviceState, Kind, Quality, Reading, ScreeningVerdict, Source
from gated.radiation import (
    alarm_threshold,
    analyse_occupancy,
    clopper_pearson_lower,
    clopper_pearson_upper,
    n_sigma_for,
    sigma,
)
from simulators.rpm_rapiscan import RapiscanRpmSimulator, poisson, register_cli, simulate_occupancy
from tests.sinks import RecordingSink
from tests.system import free_port

LANE, DEVICE = "lane-1", "rpm-1"
WAIT = 30.0  # generous: the machine may be busy


# -- gated.radiation ---------------------------------------------------------------------------


def test_threshold_is_in_counts_per_sample_interval() -> None:
    # 1500 cps over 200 ms is 300 counts; 300 + 5 * sqrt(300)
    assert alarm_threshold(1500.0, 5.0) == pytest.approx(386.6025, abs=1e-3)
    assert alarm_threshold(1500.0, 5.0, interval_s=1.0) == pytest.approx(1500 + 5 * 1500**0.5)
    assert sigma(330.0, 300.0) == pytest.approx(30 / 300**0.5)
    assert sigma(1.0, 0.25) == pytest.approx(0.75)  # variance floored at one count


def test_n_sigma_for_matches_the_normal_quantiles() -> None:
    assert n_sigma_for(1e-3, 1) == pytest.approx(3.090, abs=1e-3)
    assert n_sigma_for(1e-4, 1) == pytest.approx(3.719, abs=1e-3)
    assert n_sigma_for(1e-3, 15) == pytest.approx(3.820, abs=1e-3)  # several samples need a larger n
    assert n_sigma_for(1e-3, 15, background_ratio=0.05) > n_sigma_for(1e-3, 15)
    assert n_sigma_for(1e-3, 15, background_counts=300) > n_sigma_for(1e-3, 15)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            n_sigma_for(bad, 1)
    with pytest.raises(ValueError):
        n_sigma_for(1e-3, 0)


def test_clopper_pearson_bounds() -> None:
    assert clopper_pearson_lower(59, 59) == pytest.approx(0.05 ** (1 / 59), abs=1e-9)
    assert clopper_pearson_lower(59, 59) >= 0.95 > clopper_pearson_lower(58, 58)
    assert clopper_pearson_lower(15, 20) == pytest.approx(0.5444, abs=1e-3)
    assert clopper_pearson_upper(0, 2995) == pytest.approx(1 - 0.05 ** (1 / 2995), rel=1e-6)
    assert clopper_pearson_lower(0, 10) == 0.0 and clopper_pearson_upper(10, 10) == 1.0
    with pytest.raises(ValueError):
        clopper_pearson_lower(3, 2)


def test_analyse_occupancy_windows_and_peaks() -> None:
    flat = [300] * 15
    result = analyse_occupancy(flat, 300.0, 5.0, window=5)
    assert not result.alarm and result.peak_counts == 1500 and result.peak_sigma == 0.0
    assert result.tests == 11 and result.profile == tuple(flat)
    bumped = [300] * 6 + [420] * 3 + [300] * 6
    hit = analyse_occupancy(bumped, 300.0, 5.0, window=5)
    assert hit.alarm and hit.peak_counts == 1500 + 360
    assert hit.peak_sigma == pytest.approx(360 / 1500**0.5)
    single = analyse_occupancy(bumped, 300.0, 5.0)
    assert single.alarm and single.peak_counts == 420  # 420 > 300 + 5 * 17.3
    assert analyse_occupancy([], 300.0, 5.0, window=5).alarm is False
    short = analyse_occupancy([300, 300], 300.0, 5.0, window=5)
    assert short.window == 2 and not short.alarm


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
    background=st.floats(min_value=0.0, max_value=2000.0),
    n=st.floats(min_value=0.0, max_value=20.0),
    window=st.integers(min_value=1, max_value=8),
)
def test_analyse_occupancy_alarm_is_peak_over_threshold(
    samples: list[int], background: float, n: float, window: int
) -> None:
    result = analyse_occupancy(samples, background, n, window=window)
    assert result.alarm == (bool(samples) and result.peak_counts > result.threshold)
    assert result.alarm == (result.alarm_tests > 0)


def test_poisson_draws_have_the_right_mean_and_spread() -> None:
    rng = random.Random(3)
    for mean in (0.4, 7.0, 300.0):
        draws = [poisson(rng, mean) for _ in range(20000)]
        average = sum(draws) / len(draws)
        variance = sum((d - average) ** 2 for d in draws) / len(draws)
        assert average == pytest.approx(mean, rel=0.05, abs=0.02)
        assert variance == pytest.approx(mean, rel=0.08, abs=0.03)


def test_simulated_occupancy_shows_baseline_depression_and_the_source() -> None:
    rng = random.Random(1)
    quiet = simulate_occupancy(rng, 1500.0, 0.0, baseline_depression=0.1)
    assert len(quiet) == 15 and 200 < sum(quiet) / 15 < 340  # 270 expected
    hot = simulate_occupancy(rng, 1500.0, 5000.0, baseline_depression=0.1)
    assert max(hot) > 1000 and hot.index(max(hot)) in range(5, 10)  # closest approach mid-pass


# -- parse_record --------------------------------------------------------------------------------


def test_parse_known_records() -> None:
    assert parse_record(b"GB,000383,000389,000432,000423\r\n") == RpmRecord("GB", (383, 389, 432, 423))
    assert parse_record(b"GS,000063,000079,000087,000077").counts == (63, 79, 87, 77)
    gx = parse_record(b"GX,000594,002391,000000,000000\n")
    assert gx.tag == "GX" and gx.values[1] == 2391
    speed = parse_record(b"SP,0.1281,05.323,008.57,000000\r\n")
    assert speed.values[2] == pytest.approx(8.57)
    assert parse_record(b"SG1,000600,000050,000005,000002,04.00,000000").values[4] == 4.0
    assert parse_record(b"TC,111111,111111,111111,111111").tag == "TC"
    other = parse_record(b"AX, -0.1242,  0.1434,  0.6573,  0.1374,  1.0091")
    assert other.tag == "AX" and not other.known


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\r\n",
        b"GX,000001",
        b"GB,000383,000389,000432",
        b"GB,000383,000389,000432,000423,000001",
        b"GB,-00383,000389,000432,000423",
        b"GB,0003a3,000389,000432,000423",
        b"GB,,000389,000432,000423",
        b"SP,0.1281,05.323,008.57",
        b"SG1,1,2,3,4,x,6",
        b'"unterminated,quote',
        b"gb,000383,000389,000432,000423",
        b"G\xffB,000383,000389,000432,000423",
        b"GB,0003\x0083,000389,000432,000423",
        b"GB," + b"1" * 300,
    ],
)
def test_malformed_records_raise_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_record(line)


COUNT_TAGS = ["GB", "GS", "GA", "GH", "GL", "NB", "NS", "NA", "NH", "GX", "TT", "TC"]


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from(COUNT_TAGS),
    counts=st.lists(st.integers(min_value=0, max_value=999_999), min_size=4, max_size=4),
    end=st.sampled_from([b"", b"\r\n", b"\n", b"\r"]),
)
def test_count_records_round_trip(tag: str, counts: list[int], end: bytes) -> None:
    line = (",".join([tag, *(f"{c:06d}" for c in counts)])).encode() + end
    record = parse_record(line)
    assert record.tag == tag and record.counts == tuple(counts) and record.known


@settings(max_examples=200, deadline=None)
@given(
    mph=st.decimals(min_value=0, max_value=99, places=3),
    kmh=st.decimals(min_value=0, max_value=160, places=2),
    n=st.decimals(min_value=0, max_value=99, places=2),
)
def test_decimal_records_round_trip(mph: Any, kmh: Any, n: Any) -> None:
    speed = parse_record(f"SP,0.1281,{mph},{kmh},000000\r\n".encode())
    assert speed.values[1:3] == (float(mph), float(kmh))
    setup = parse_record(f"SG1,000600,000050,000005,000002,{n},000000".encode())
    assert setup.values[4] == float(n)


VALID_LINES = [
    b"GB,000383,000389,000432,000423\r\n",
    b"GX,000594,002391,000000,000000\r\n",
    b"SP,0.1281,05.323,008.57,000000\r\n",
    b"SN1,000050,000005,000000,000004,000001,000020\r\n",
]


def _only_protocol_errors(line: bytes) -> None:
    try:
        record = parse_record(line)
    except ProtocolError:
        return
    assert isinstance(record, RpmRecord)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_truncated_or_bit_flipped_records_only_raise_protocol_error(data: st.DataObject) -> None:
    line = bytearray(data.draw(st.sampled_from(VALID_LINES)))
    cut = data.draw(st.integers(min_value=0, max_value=len(line)))
    line = line[:cut]
    for _ in range(data.draw(st.integers(min_value=0, max_value=4))):
        if line:
            index = data.draw(st.integers(min_value=0, max_value=len(line) - 1))
            line[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    _only_protocol_errors(bytes(line))


@settings(max_examples=500, deadline=None)
@given(line=st.binary(max_size=300))
def test_garbage_only_raises_protocol_error(line: bytes) -> None:
    _only_protocol_errors(line)


# -- driver against the simulator over TCP -------------------------------------------------------


def make_driver(port: int, **options: Any) -> RapiscanRpmDriver:
    """A driver for the monitor on ``port``; ``n_sigma`` and ``silence_timeout`` go into its
    settings, the rest to the driver."""
    settings: dict[str, Any] = {"id": DEVICE, "driver": "rpm-rapiscan", "host": "127.0.0.1", "port": port}
    if "n_sigma" in options:
        settings["n_sigma"] = options.pop("n_sigma")
    if "silence_timeout" in options:
        settings["silence_timeout_seconds"] = options.pop("silence_timeout")
    options = {"backoff_initial": 0.05, "backoff_max": 0.5, **options}
    return RapiscanRpmDriver(LANE, RpmRapiscanDevice.model_validate(settings), **options)


@contextmanager
def running(driver: RapiscanRpmDriver, sink: RecordingSink) -> Iterator[threading.Thread]:
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
def rig(
    driver_options: dict[str, Any] | None = None, **simulator: Any
) -> Iterator[tuple[RapiscanRpmSimulator, RecordingSink]]:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with (
        RapiscanRpmSimulator(seed=7, **simulator) as sim,
        running(make_driver(sim.port, **(driver_options or {})), sink),
    ):
        sink.wait_for("online", lambda: DeviceState.ONLINE in sink.states)
        sink.wait_for("a connected client", lambda: sim.clients >= 1)
        time.sleep(1.5)  # a little background before the first pass
        yield sim, sink


def pass_readings(sink: RecordingSink, number: int) -> dict[str, Reading]:
    """The readings of the ``number``-th reported pass end (1-based), by source."""
    sink.wait_for(f"pass {number}", lambda: len(sink.of("screening_check")) >= number)
    check = sink.of("screening_check")[number - 1]
    same = [reading for reading in sink.readings if reading.ts == check.ts]
    return {reading.source: reading for reading in same}


@pytest.mark.timeout(90)
def test_a_clear_pass() -> None:
    with rig() as (sim, sink):
        sim.drive_pass(duration_s=3.0, speed_kmh=7.5)
        readings = pass_readings(sink, 1)
        assert [r.value for r in sink.of(Source.OCCUPANCY)] == [True, False]
        assert readings[Source.SCREENING].value == ScreeningVerdict.CLEAR
        check = readings["screening_check"]
        assert check.value["verdict"] == "clear" and check.value["agrees"] is True  # type: ignore[index]
        assert check.quality is Quality.GOOD
        background = readings[Source.GAMMA_BACKGROUND_CPS].value
        assert isinstance(background, float) and 1400 < background < 1600
        peak = readings[Source.GAMMA_CPS].value
        assert isinstance(peak, float) and 1100 < peak < 1600  # the truck shields 10%
        assert readings[Source.NEUTRON_BACKGROUND_CPS].units == "cps"
        assert readings["speed_kmh"].value == pytest.approx(7.5)
        profile = readings["rpm_profile"].value
        assert isinstance(profile, dict)
        assert len(profile["gamma"]) == 15 and len(profile["neutron"]) == 3
        assert profile["interval_s"] == 0.2 and profile["device_n_sigma_gamma"] == 4.0
        assert abs(profile["peak_sigma_gamma"]) < 5
        for reading in readings.values():
            assert (reading.kind, reading.lane, reading.device) == (Kind.RPM, LANE, DEVICE)
        assert sink.errors == []


@pytest.mark.timeout(90)
def test_a_gamma_source_alarms_on_the_monitor_and_in_gated() -> None:
    with rig() as (sim, sink):
        played = sim.drive_pass(source_cps=20000.0)
        assert played.gamma_alarm
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.GAMMA_ALARM
        check = readings["screening_check"]
        assert check.quality is Quality.GOOD
        assert check.value["verdict"] == "gamma_alarm" and check.value["agrees"] is True  # type: ignore[index]
        profile = readings["rpm_profile"].value
        assert isinstance(profile, dict) and profile["peak_sigma_gamma"] > 50
        assert max(profile["gamma"]) > 2 * min(profile["gamma"])
        peak = readings[Source.GAMMA_CPS].value
        assert isinstance(peak, float) and peak > 10000


@pytest.mark.timeout(90)
def test_a_source_the_monitor_misses_makes_gateds_check_uncertain() -> None:
    with rig(gamma_n_sigma=60.0) as (sim, sink):  # a monitor set far too insensitive
        played = sim.drive_pass(source_cps=1500.0)
        assert not played.gamma_alarm
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.CLEAR
        check = readings["screening_check"]
        assert check.quality is Quality.UNCERTAIN
        value = check.value
        assert isinstance(value, dict)
        assert value["verdict"] == "gamma_alarm" and value["device_verdict"] == "clear"
        assert (
            value["agrees"] is False
            and "gamma: gated alarm" in value["detail"]
            and "(n 60)" in value["detail"]
        )


@pytest.mark.timeout(90)
def test_norm_cargo_the_monitor_flags_but_a_stricter_gated_rule_does_not() -> None:
    with rig(driver_options={"n_sigma": 14.0}, gamma_n_sigma=4.0) as (sim, sink):
        played = sim.drive_pass(norm_cps=500.0)  # about 9 sigma over the shielded background
        assert played.gamma_alarm
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.GAMMA_ALARM
        check = readings["screening_check"]
        assert check.quality is Quality.UNCERTAIN
        assert check.value["verdict"] == "clear" and "monitor alarm" in check.value["detail"]  # type: ignore[index]


@pytest.mark.timeout(90)
def test_neutron_source() -> None:
    with rig() as (sim, sink):
        played = sim.drive_pass(neutron_source_cps=200.0)
        assert played.neutron_alarm and not played.gamma_alarm
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.NEUTRON_ALARM
        assert readings["screening_check"].value["verdict"] == "neutron_alarm"  # type: ignore[index]
        assert readings["screening_check"].quality is Quality.GOOD


@pytest.mark.timeout(120)
def test_faults_and_tamper() -> None:
    with rig() as (sim, sink):
        sim.set_fault(gamma_high=True)
        sink.wait_for("fault", lambda: [r.value for r in sink.of("fault")] == ["gamma_high_fault"])
        assert sink.of("fault")[0].quality is Quality.BAD
        sim.drive_pass(duration_s=1.0)
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.FAULT
        assert readings[Source.SCREENING].quality is Quality.BAD
        assert readings["screening_check"].quality is Quality.BAD
        sim.set_fault()
        sink.wait_for(
            "fault cleared", lambda: [r.value for r in sink.of("fault")] == ["gamma_high_fault", ""]
        )
        sim.set_fault(neutron_high=True)
        sink.wait_for("neutron fault", lambda: sink.of("fault")[-1].value == "neutron_high_fault")
        sim.set_fault()
        sink.wait_for("neutron fault cleared", lambda: sink.of("fault")[-1].value == "")

        sim.set_tamper(True)
        sink.wait_for("tamper", lambda: [r.value for r in sink.of("tamper")][-1:] == [True])
        assert sink.of("tamper")[-1].quality is Quality.BAD
        sim.drive_pass(duration_s=1.0)
        assert pass_readings(sink, 2)[Source.SCREENING].value == ScreeningVerdict.FAULT
        sim.set_tamper(False)
        sink.wait_for("tamper cleared", lambda: sink.of("tamper")[-1].value is False)
        sim.drive_pass(duration_s=1.0)
        assert pass_readings(sink, 3)[Source.SCREENING].value == ScreeningVerdict.CLEAR
        assert [r.value for r in sink.of("tamper")] == [False, True, False]  # reported on change only


@pytest.mark.timeout(90)
def test_garbage_is_counted_and_the_stream_goes_on() -> None:
    with rig() as (sim, sink):
        sim.send_raw(b"GB,0003\r\n\xff\xfe garbage\r\n\r\nGQ,1,2\r\n")
        sink.wait_for("frame errors", lambda: len(sink.errors) >= 2)
        sim.drive_pass(duration_s=1.0)
        assert pass_readings(sink, 1)[Source.SCREENING].value == ScreeningVerdict.CLEAR
        assert sink.states == [DeviceState.ONLINE]


@pytest.mark.timeout(90)
def test_silence_goes_offline_and_a_restart_comes_back() -> None:
    with rig(driver_options={"silence_timeout": 1.0}) as (sim, sink):
        sim.set_silent(True)
        sink.wait_for("offline", lambda: sink.states[-1:] == [DeviceState.OFFLINE])
        assert "no record for 1 s" in sink.statuses[-1][1]
        sim.set_silent(False)
        sink.wait_for("online again", lambda: sink.states[-2:] == [DeviceState.OFFLINE, DeviceState.ONLINE])
        sim.stop()
        sink.wait_for("offline after stop", lambda: sink.states[-1:] == [DeviceState.OFFLINE])
        sim.start()
        sink.wait_for("online after restart", lambda: sink.states[-1:] == [DeviceState.ONLINE])
        time.sleep(1.5)
        sim.drive_pass(duration_s=1.0)
        assert pass_readings(sink, 1)[Source.SCREENING].value == ScreeningVerdict.CLEAR


@pytest.mark.timeout(90)
def test_a_pass_cut_short_by_a_lost_connection_ends_as_not_screened() -> None:
    with rig() as (sim, sink):
        sim.drive_pass(duration_s=20.0, wait=False)
        sink.wait_for("occupancy", lambda: [r.value for r in sink.of(Source.OCCUPANCY)] == [True])
        sim.stop()
        sink.wait_for("offline", lambda: DeviceState.OFFLINE in sink.states)
        sim.start()
        readings = pass_readings(sink, 1)
        assert readings[Source.SCREENING].value == ScreeningVerdict.FAULT
        assert readings["screening_check"].value["verdict"] == "unchecked"  # type: ignore[index]
        assert [r.value for r in sink.of(Source.OCCUPANCY)] == [True, False]


@pytest.mark.timeout(90)
def test_cli_runs_scripted_passes(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    port = free_port()
    args = parser.parse_args(
        [
            *("rpm-rapiscan", "--port", str(port), "--seed", "1"),
            *("--pass-every", "2", "--source-every", "2", "--duration", "12"),
        ]
    )
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    worker.start()
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with running(make_driver(port), sink):
        sink.wait_for("two passes", lambda: len(sink.of(Source.SCREENING)) >= 2, timeout=60)
        verdicts = [r.value for r in sink.of(Source.SCREENING)]
    worker.join(timeout=45)
    assert result == [0]
    assert ScreeningVerdict.GAMMA_ALARM in verdicts[:3]
    assert f"127.0.0.1:{port}" in capsys.readouterr().out


# -- the benchmark ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_bench_rpm_meets_the_goals() -> None:
    # The full run (100,000 occupancies, a few seconds): the quick one is too small to judge 1e-3.
    result = bench_rpm(quick=False)
    for key in (
        "bench",
        "occupancies",
        "n_sigma",
        "false_alarms",
        "false_alarm_rate",
        "false_alarm_rate_upper95",
        "source_cps",
        "background_cps",
        "detections",
        "detection_lower95",
        "seconds",
        "machine",
    ):
        assert key in result
    assert result["bench"] == "rpm" and result["occupancies"] >= 100_000
    assert result["false_alarm_rate"] <= 1e-3
    assert result["false_alarm_rate_upper95"] >= result["false_alarm_rate"]
    assert result["detections"] == "59/59"
    assert result["detection_lower95"] >= 0.95
    assert 3.5 < result["n_sigma"] < 4.5
