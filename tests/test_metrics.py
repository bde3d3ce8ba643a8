"""Prometheus metrics: a real daemon (real mosquitto, the lane's simulators) serves them over HTTP,
a truck's readings and decision show up in what Prometheus' own parser reads, and an address that
cannot be bound is a configuration error that names the key."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gated.clock import ManualClock
from gated.config import load_config, validate
from gated.daemon import Daemon
from gated.db import open_engine
from gated.errors import ConfigError, ProtocolError
from gated.hold_commands import HoldCommandWorker
from gated.holds import HoldStore
from gated.messages import Topics
from gated.metrics import DaemonState, Metrics, MetricsServer
from gated.model import Kind, Reading, ScreeningVerdict, Source
from gated.pipeline import Pipeline
from gated.publisher import MqttPublisher
from gated.store import Store
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto
from tests.customs import confirm_hold_list
from tests.gate import gated, number, write_config
from tests.system import free_port
from tests.test_query import gate_config

PREFIX = "gated/v1/e2e"
CLEAN = number("MSKU413532")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, as Prometheus' own parser reads it."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return samples(answer.read().decode())


def with_metrics(config: Path, listen: str) -> Path:
    config.write_text(
        config.read_text(encoding="utf-8") + f'\n[metrics]\nlisten = "{listen}"\n', encoding="utf-8"
    )
    return config


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_trucks_readings_and_decision_show_up_in_the_daemons_metrics(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    port = free_port()
    daemon = Daemon(
        load_config(with_metrics(write_config(tmp_path, mosquitto, lane_devices), f"127.0.0.1:{port}"))
    )
    confirm_hold_list(daemon.holds, tmp_path)
    customs = subscriber_factory(mosquitto.port)
    try:
        daemon.start()
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open")
        before = scrape(port)
        assert value(before, "gated_device_state", lane="lane-1", device="rpm-1", state="online") == 1.0
        assert value(before, "gated_device_state", lane="lane-1", device="rpm-1", state="offline") == 0.0
        assert value(before, "gated_hold_list_loaded") == 1.0
        assert 0.0 <= value(before, "gated_hold_list_age_seconds") < 60.0
        assert (
            "gated_decision_latency_seconds_count",
            frozenset({("lane", "lane-1"), ("outcome", "RELEASE")}),
        ) not in before

        truck = Truck("clean", "e28011606000020000000001", (ContainerSighting(CLEAN),))
        assert ScriptedLane(lane_devices, pace=0.5).drive(truck), "the clean truck was not released"
        customs.wait_for(lambda m: m.topic == f"{PREFIX}/lane-1/decision", what="the decision")
        after = scrape(port)
        assert value(after, "gated_readings_total", lane="lane-1", device="rfid-1", kind="rfid") >= 1
        assert value(after, "gated_readings_total", lane="lane-1", device="ocr-1", kind="ocr") >= 2
        assert value(after, "gated_readings_total", lane="lane-1", device="rpm-1", kind="rpm") >= 3
        latency = {"lane": "lane-1", "outcome": "RELEASE"}
        assert value(after, "gated_decision_latency_seconds_count", **latency) == 1.0
        # Settled for the lane's 0.5 s after the last reading, then decided and stored.
        assert 0.5 <= value(after, "gated_decision_latency_seconds_sum", **latency) < 10.0
        assert value(after, "gated_decision_latency_seconds_bucket", le="+Inf", **latency) == 1.0
        assert value(after, "gated_mqtt_connected") == 1.0 and value(after, "gated_storage_ok") == 1.0
        assert (
            value(after, "gated_outbox_backlog") >= 0 and value(after, "gated_outbox_oldest_age_seconds") >= 0
        )
        assert value(after, "gated_dropped_inputs_total") == 0.0
    finally:
        daemon.stop()
    with pytest.raises(OSError):
        scrape(port)  # the endpoint stops with the daemon


def test_bad_input_and_the_outbox_are_exported_as_the_parts_count_them(tmp_path: Path) -> None:
    """The counters the parts keep and the backlog of a broker never reached, read at scrape time."""
    clock = ManualClock(datetime(2026, 12, 4, 8, 0, tzinfo=UTC))
    engine = open_engine(tmp_path / "g.db")
    config = gate_config()
    store = Store(engine, site="s", node="n", clock=clock)
    holds = HoldStore(engine, clock)
    metrics = Metrics()
    pipeline = Pipeline(config, store, holds, clock, metrics=metrics)
    topics = Topics("s")
    commands = HoldCommandWorker(holds, store, config.holds, topics, ["lane-1"], clock)
    # Never started: it has no broker to reach, so nothing it stores is ever acknowledged.
    publisher = MqttPublisher(
        store,
        config.mqtt,
        topics=topics,
        boot=1,
        subscriptions=[topics.holds_cmd],
        on_message=lambda _topic, _payload: None,
        status_snapshot=list,
    )
    metrics.watch(DaemonState(pipeline, store, holds, publisher, commands, clock))
    for _ in range(4):
        pipeline.frame_error("lane-1", "rpm-1", ProtocolError("CRC mismatch"))
    commands.offer(b"not a signed command")
    commands.drain()
    pipeline.reading(Reading("lane-1", Kind.RPM, "rpm-1", Source.GAMMA_BACKGROUND_CPS, 80.0, clock.now()))
    pipeline.step()
    clock.advance(30)
    port = free_port()
    server = MetricsServer(metrics.registry, f"127.0.0.1:{port}")
    try:
        found = scrape(port)
    finally:
        server.close()
    engine.dispose()
    assert value(found, "gated_bad_frames_total", lane="lane-1", device="rpm-1") == 4.0
    assert value(found, "gated_hold_commands_rejected_total") == 1.0
    assert value(found, "gated_publish_refused_total") == 0.0
    assert value(found, "gated_readings_total", lane="lane-1", device="rpm-1", kind="rpm") == 1.0
    # The reading's message and the rejected command's answer, never acknowledged.
    assert value(found, "gated_outbox_backlog") == 2.0
    assert value(found, "gated_outbox_oldest_age_seconds") == 30.0
    assert value(found, "gated_hold_list_loaded") == 0.0
    assert not any(name == "gated_hold_list_age_seconds" for name, _ in found)  # never confirmed
    assert value(found, "gated_device_state", lane="lane-1", device="ocr-1", state="offline") == 1.0
    assert value(found, "gated_mqtt_connected") == 0.0


def test_decision_latency_is_measured_from_the_last_reading_to_the_decision_stored(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 12, 4, 8, 0, tzinfo=UTC))
    engine = open_engine(tmp_path / "g.db")
    metrics = Metrics()
    pipeline = Pipeline(
        gate_config(),
        Store(engine, site="s", node="n", clock=clock),
        HoldStore(engine, clock),
        clock,
        metrics=metrics,
    )
    for kind, device, source, reading_value in (
        (Kind.RFID, "rfid-1", Source.EPC, "e2801100000000000000a001"),
        (Kind.RPM, "rpm-1", Source.OCCUPANCY, True),
        (Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, CLEAN),
        (Kind.OCR, "ocr-1", Source.PASSAGE_END, 1),
        (Kind.RPM, "rpm-1", Source.SCREENING, ScreeningVerdict.CLEAR),
    ):
        pipeline.reading(Reading("lane-1", kind, device, source, reading_value, clock.now()))
    pipeline.step()
    clock.advance(1.5)  # the lane settles for 1 s after its last reading
    pipeline.step()
    engine.dispose()
    found = samples(generate_latest(metrics.registry).decode())
    # No hold list was ever loaded: the truck goes to a person.
    review = {"lane": "lane-1", "outcome": "MANUAL_REVIEW"}
    assert value(found, "gated_decision_latency_seconds_count", **review) == 1.0
    assert value(found, "gated_decision_latency_seconds_sum", **review) == 1.5
    assert value(found, "gated_decision_latency_seconds_bucket", le="1.0", **review) == 0.0
    assert value(found, "gated_decision_latency_seconds_bucket", le="1.5", **review) == 1.0


def test_the_ocr_metrics_record_a_cameras_queue_and_frame_time() -> None:
    metrics = Metrics()
    metrics.ocr_queue_depth("lane-1", "cam-1", 3)
    metrics.ocr_frame("lane-1", "cam-1", 0.31)
    metrics.ocr_frame("lane-1", "cam-1", 2.5)
    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "gated_ocr_queue_depth", lane="lane-1", device="cam-1") == 3.0
    assert value(found, "gated_ocr_frame_seconds_count", lane="lane-1", device="cam-1") == 2.0
    assert value(found, "gated_ocr_frame_seconds_bucket", lane="lane-1", device="cam-1", le="0.5") == 1.0
    # Each daemon has its own registry: another one starts from nothing.
    assert ("gated_ocr_queue_depth", frozenset({("lane", "lane-1"), ("device", "cam-1")})) not in samples(
        generate_latest(Metrics().registry).decode()
    )


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("9108", "is not host:port"),
        ("127.0.0.1:0", "port from 1 to 65535"),
        ("127.0.0.1:70000", "port from 1 to 65535"),
        (":9108", "has no host"),
        ("::1:9108", "IPv6 address in brackets"),
    ],
)
def test_a_listen_value_that_is_no_address_is_refused_naming_the_key(listen: str, problem: str) -> None:
    data = {"site": "s", "holds": {"max_age_seconds": 60}, "metrics": {"listen": listen}}
    data["lanes"] = [
        {
            "id": "lane-1",
            "require": [],
            "devices": [{"id": "ocr-1", "driver": "ocr-camera", "host": "192.0.2.20", "port": 5300}],
        }
    ]
    with pytest.raises(ConfigError) as refused:
        validate(data, source="gate.toml")
    [line] = [p for p in refused.value.problems if "metrics" in p]
    assert line.startswith("gate.toml: metrics.listen: ") and problem in line


def test_an_ipv6_loopback_address_is_served() -> None:
    port = free_port()
    server = MetricsServer(Metrics().registry, f"[::1]:{port}")
    try:
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as answer:
            assert b"# TYPE gated_readings_total counter" in answer.read()
    finally:
        server.close()


def test_a_port_already_taken_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as refused:
            MetricsServer(Metrics().registry, f"127.0.0.1:{port}")
    assert refused.value.problems == [
        f"metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_gated_run_refuses_an_address_not_on_this_machine(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(
        'site = "s"\n[storage]\ndatabase = "gated.db"\n[holds]\nmax_age_seconds = 60\n'
        '[metrics]\nlisten = "192.0.2.1:9108"\n'
        '[[lanes]]\nid = "lane-1"\nrequire = ["ocr"]\n[[lanes.devices]]\nid = "ocr-1"\n'
        'driver = "ocr-camera"\nhost = "192.0.2.20"\nport = 5300\n',
        encoding="utf-8",
    )
    result = gated("run", "--config", str(config), check=False)
    assert result.returncode == 78, result.stderr
    assert "metrics.listen: cannot listen on 192.0.2.1:9108: Cannot assign requested address" in result.stderr


def test_a_database_that_cannot_be_read_leaves_its_metrics_out_of_the_scrape(tmp_path: Path) -> None:
    clock = ManualClock()
    folder = tmp_path / "gone"
    engine = open_engine(folder / "g.db")
    config = gate_config()
    store = Store(engine, site="s", node="n", clock=clock)
    holds = HoldStore(engine, clock)
    topics = Topics("s")
    metrics = Metrics()
    pipeline = Pipeline(config, store, holds, clock, metrics=metrics)
    publisher = MqttPublisher(
        store,
        config.mqtt,
        topics=topics,
        boot=1,
        subscriptions=[topics.holds_cmd],
        on_message=lambda _topic, _payload: None,
        status_snapshot=list,
    )
    commands = HoldCommandWorker(holds, store, config.holds, topics, ["lane-1"], clock)
    metrics.watch(DaemonState(pipeline, store, holds, publisher, commands, clock))
    engine.dispose()
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()  # SQLite cannot even make a new file there
    found = samples(generate_latest(metrics.registry).decode())
    names = {name for name, _ in found}
    assert "gated_outbox_backlog" not in names and "gated_hold_list_loaded" not in names
    assert value(found, "gated_storage_ok") == 1.0  # the pipeline has not tried to store yet
    assert value(found, "gated_device_state", lane="lane-1", device="rfid-1", state="offline") == 1.0
