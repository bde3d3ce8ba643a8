"""Fail closed: stale hold list, RPM fault, a device offline, contradictory evidence and a full
disk each keep the barrier shut, with a reason a person can act on and an alarm."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gated.config import load_config
from gated.daemon import Daemon
from simulators.lane import ContainerSighting, LaneDevices, ScriptedLane, Truck
from tests.conftest import Mosquitto, Subscriber
from tests.customs import confirm_hold_list
from tests.gate import number, write_config
from tests.sinks import wait_until

PREFIX = "gated/v1/e2e"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@contextlib.contextmanager
def running(config: Path) -> Iterator[Daemon]:
    daemon = Daemon(load_config(config))
    try:
        yield daemon
    finally:
        daemon.stop()


def start_and_wait_open(daemon: Daemon, customs: Subscriber) -> None:
    daemon.start()
    customs.wait_for(
        lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open", what="open"
    )


def loaded(daemon: Daemon, tmp_path: Path) -> None:
    confirm_hold_list(daemon.holds, tmp_path)


def decision_of(customs: Subscriber, container: str, timeout: float = 40) -> dict[str, Any]:
    found = customs.wait_for(
        lambda m: m.topic == f"{PREFIX}/lane-1/decision" and m.payload["container"] == container,
        timeout=timeout,
        what=f"decision for {container}",
    )
    return found[0].payload


def codes(decision: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in decision["reasons"]}


def test_stale_hold_list_never_releases(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices, max_age_seconds=2)
    customs = subscriber_factory(mosquitto.port)
    with running(config) as daemon:
        loaded(daemon, tmp_path)
        start_and_wait_open(daemon, customs)
        wait_until(
            "the list to be older than its 2 s maximum age",
            lambda: not daemon.holds.state().fresh(datetime.now(UTC), max_age_seconds=2),
            timeout=10,
        )
        box = number("MSKU700001")
        ScriptedLane(lane_devices, pace=0.3).drive(
            Truck("clean", "e28011606000070000000001", (ContainerSighting(box),))
        )
        decision = decision_of(customs, box)
        assert decision["outcome"] == "MANUAL_REVIEW" and "HOLD_LIST_STALE" in codes(decision)


def test_rpm_fault_and_tamper_never_release(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    customs = subscriber_factory(mosquitto.port)
    with running(config) as daemon:
        loaded(daemon, tmp_path)
        start_and_wait_open(daemon, customs)
        box = number("MSKU700002")
        lane = ScriptedLane(lane_devices, pace=0.3)
        lane.drive(
            Truck("faulty rpm", "e28011606000070000000002", (ContainerSighting(box),), radiation="fault")
        )
        decision = decision_of(customs, box)
        assert decision["outcome"] == "MANUAL_REVIEW" and "RPM_FAULT" in codes(decision)
        lane_devices.rpm.set_tamper(True)
        alarm = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/alarm" and m.payload["alarm"] == "tamper"
        )
        assert alarm[0].payload["device"] == "rpm-1"
        assert any(
            m.payload["alarm"] == "device_fault"
            for m in customs.snapshot()
            if m.topic == f"{PREFIX}/lane-1/alarm"
        )


def test_device_offline_during_the_visit_never_releases(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    customs = subscriber_factory(mosquitto.port)
    with running(config) as daemon:
        loaded(daemon, tmp_path)
        start_and_wait_open(daemon, customs)
        box = number("MSKU700003")
        lane_devices.rfid.present_tag("e28011606000070000000003")
        time.sleep(0.3)
        lane_devices.rpm.begin_pass()
        lane_devices.camera.read(box, 0.97)
        # The portal monitor drops off the network mid-pass and comes back before the end.
        lane_devices.rpm.stop()
        customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/device/rpm-1/status" and m.payload["state"] == "offline",
            what="rpm offline",
        )
        status = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "degraded"
        )
        assert "rpm-1" in status[0].payload["reason"]
        lane_devices.rpm.start()
        customs.wait_for(
            lambda m: (
                m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open" and m.payload["seq"] > 1
            ),
            what="lane open again",
        )
        lane_devices.rpm.end_pass()
        lane_devices.camera.passage_end(1)
        decision = decision_of(customs, box)
        assert decision["outcome"] == "MANUAL_REVIEW" and "DEVICE_OFFLINE" in codes(decision)
        assert "rpm-1" in next(r["text"] for r in decision["reasons"] if r["code"] == "DEVICE_OFFLINE")


def test_rfid_and_ocr_disagreeing_never_releases(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices)
    announced, other, second = number("MSKU700004"), number("MSKU700005"), number("MSKU700007")
    tag, second_tag = "e28011606000070000000004", "e28011606000070000000014"
    preadvice = tmp_path / "preadvice.csv"
    preadvice.write_text(
        f"tag,container,truck\n{tag},{announced},WA-1234\n{second_tag},{second},WA-5678\n", encoding="utf-8"
    )
    customs = subscriber_factory(mosquitto.port)
    with running(config) as daemon:
        loaded(daemon, tmp_path)
        daemon.pipeline.preadvice.import_file(preadvice)  # type: ignore[union-attr]
        start_and_wait_open(daemon, customs)
        lane = ScriptedLane(lane_devices, pace=0.3)
        lane.drive(Truck("wrong box", tag, (ContainerSighting(other),)))
        decision = decision_of(customs, other)
        assert decision["outcome"] == "MANUAL_REVIEW" and "EVIDENCE_MISMATCH" in codes(decision)
        assert announced in next(r["text"] for r in decision["reasons"] if r["code"] == "EVIDENCE_MISMATCH")
        # The first visit is decided, so the next tag is a new truck.
        lane.drive(Truck("the announced box", second_tag, (ContainerSighting(second),)))
        assert decision_of(customs, second)["outcome"] == "RELEASE"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs the test can fill up (mounting needs root). SQLite's WAL may reach ~4 MiB before
    it is checkpointed: a smaller disk could fill up before the filler does."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        message = "a size-limited file system needs root to mount"
        if os.environ.get("GATED_REQUIRE_SYSTEM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], check=True, timeout=30
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


def fill(folder: Path) -> Path:
    """Fill the disk to the last byte. Unbuffered, so nothing is left to flush (and fail) at close."""
    filler = folder / "filler"
    for chunk in (65536, 512):
        with filler.open("ab", buffering=0) as sink, contextlib.suppress(OSError):
            while True:
                sink.write(b"\0" * chunk)
    return filler


def test_disk_full_closes_the_lane_and_never_releases(
    tmp_path: Path, small_disk: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices, database=str(small_disk / "gated.db"))
    customs = subscriber_factory(mosquitto.port)
    with running(config) as daemon:
        loaded(daemon, tmp_path)
        start_and_wait_open(daemon, customs)
        filler = fill(small_disk)
        box = number("MSKU700006")
        ScriptedLane(lane_devices, pace=0.3).drive(
            Truck("clean", "e28011606000070000000006", (ContainerSighting(box),))
        )
        alarm = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/alarm" and m.payload["alarm"] == "storage_failure",
            what="the storage failure alarm",
        )
        assert alarm[0].payload["seq"] is None
        closed = customs.wait_for(
            lambda m: m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "closed"
        )
        assert closed[0].retain is False or closed[0].payload["state"] == "closed"
        assert not daemon.pipeline.storage_ok
        time.sleep(2.0)
        assert not [m for m in customs.snapshot() if m.topic.endswith("/decision")], (
            "nothing stored: nothing decided"
        )
        filler.unlink()  # space again: what waited in memory is stored, and only then published
        decision = decision_of(customs, box)
        assert decision["outcome"] == "MANUAL_REVIEW" and "STORAGE_FAILURE" in codes(decision)
        customs.wait_for(
            lambda m: (
                m.topic == f"{PREFIX}/lane-1/status" and m.payload["state"] == "open" and m.payload["seq"]
            ),
            what="lane open again",
        )
    assert not [
        m for m in customs.snapshot() if m.topic.endswith("/decision") and m.payload["outcome"] == "RELEASE"
    ]
