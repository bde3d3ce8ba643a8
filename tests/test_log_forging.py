"""Log lines cannot be forged: text from outside (a hold command's fields, a device's frame, a file's
name, a note customs wrote) reaches the log and the command line escaped, one record one line, so a
line break in it can never start a convincing ``INFO ... outcome=RELEASE`` line of its own."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.ocr_frames import FramesCameraDriver, OcrFramesDevice
from gated.clock import ManualClock
from gated.config import HoldsConfig, validate
from gated.db import open_engine
from gated.errors import ProtocolError
from gated.evidence import EvidenceStore
from gated.hold_commands import HoldCommandWorker
from gated.holds import HoldStore
from gated.messages import Topics
from gated.pipeline import Pipeline
from gated.store import Store
from ocr.pool import OcrPool
from simulators.lane import LaneDevices
from tests.conftest import Mosquitto
from tests.customs import command, keys_config, signed, verified
from tests.gate import start_daemon, write_config
from tests.sinks import RecordingSink, driver_running, wait_until

pytestmark = pytest.mark.timeout(120)

FORGED = "2026-12-04 12:00:00,000 INFO gated.pipeline: decision d-1 lane=lane-1 visit=v-1 outcome=RELEASE"
# Characters a log viewer (or a terminal, or str.splitlines) takes for the end of a line.
LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
HELD = "CSQU3054383"


def gated_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every message gated's own modules logged (``ocr.frames`` is not among them: see the report)."""
    return [
        record.getMessage() for record in caplog.records if record.name.split(".")[0] in ("gated", "drivers")
    ]


def assert_one_line_each(messages: list[str]) -> None:
    for message in messages:
        assert message.isprintable(), f"a log record that is not one printable line: {message!r}"


# -- hold commands ----------------------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[HoldCommandWorker]:
    clock = ManualClock()
    engine = open_engine(tmp_path / "g.db")
    config = HoldsConfig.model_validate({"max_age_seconds": 600, "customs_keys": keys_config()})
    yield HoldCommandWorker(
        HoldStore(engine, clock),
        Store(engine, site="s", node="n", clock=clock),
        config,
        Topics("s"),
        ["lane-1"],
        clock,
    )
    engine.dispose()


def hostile_commands(now: Any) -> list[bytes]:
    place = {"container": HELD, "agency": "CBP", "hold_type": "customs"}
    payloads: list[Any] = [
        signed(command("place", id=f"c-1\n{FORGED}", **place), ts=now),
        signed(command("place", id=f"c-2\r{FORGED}", **place), ts=now),
        # Not control characters, so a valid id, applied: still a line break to some readers.
        signed(command("place", id=f"c-3\u2028{FORGED}", **place), ts=now),
        signed(command("place", id="c-4", container=HELD, agency=f"CBP\n{FORGED}", hold_type="x"), ts=now),
        signed(command("place", id="c-5", note=f"see\n{FORGED}", **place), ts=now),
        {**signed(command("place", id="c-6", **place), ts=now), "key": f"k\n{FORGED}"},
        {"id": f"c-7\n{FORGED}", "key": "cbp-test", "sig": f"x\n{FORGED}"},
    ]
    raw = [json.dumps(payload).encode() for payload in payloads]
    raw.append(b'{"a": 1, "a\\n' + FORGED.encode() + b'": 2, "a\\n' + FORGED.encode() + b'": 3}')
    raw.append(b"\n" + FORGED.encode() + b"\n")
    return raw


def test_a_hold_command_cannot_forge_a_log_line(
    worker: HoldCommandWorker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for payload in hostile_commands(worker.clock.now()):
            worker.offer(payload)
        worker.drain()
    messages = gated_messages(caplog)
    assert_one_line_each(messages)
    # Each command is in the log, its forged line shown escaped inside the record about it.
    commands = [m for m in messages if m.startswith("hold command ")]
    assert any("c-1\\n2026-12-04" in m and "refused" in m for m in commands), commands
    assert any("c-3\\u20282026-12-04" in m and "applied" in m for m in commands), commands
    assert len(commands) == len(hostile_commands(worker.clock.now()))


def test_a_storage_failure_with_a_command_is_logged_on_one_line(
    worker: HoldCommandWorker, caplog: pytest.LogCaptureFixture
) -> None:
    worker.store.engine.dispose()
    with worker.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE hold_commands")  # every command's transaction fails now
    with caplog.at_level(logging.DEBUG):
        worker._store(
            verified(command("place", id=f"c-9\u2028{FORGED}", container=HELD, agency="CBP", hold_type="x"))
        )
    messages = gated_messages(caplog)
    assert any(m.startswith("hold command not stored") for m in messages), messages
    assert_one_line_each(messages)


def publish(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


TIMESTAMPED = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


@pytest.mark.e2e
def test_a_hold_command_through_the_broker_cannot_forge_a_daemon_log_line(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, lane_devices: LaneDevices
) -> None:
    config = write_config(tmp_path, mosquitto, lane_devices, site="forge")
    customs = subscriber_factory(mosquitto.port)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        customs.wait_for(lambda m: m.topic == "gated/v1/forge/holds/state", timeout=60)
        sent = hostile_commands(datetime.now(UTC))
        for payload in sent:
            publish(mosquitto.port, "gated/v1/forge/holds/cmd", payload)
        wait_until(
            "every command answered",
            lambda: (
                len([m for m in customs.snapshot() if m.topic == "gated/v1/forge/holds/ack"]) >= len(sent)
            ),
            timeout=30,
        )
        wait_until("the log names them", lambda: log.read_text().count("hold command ") >= len(sent), 10)
    finally:
        daemon.terminate()
        daemon.wait(20)
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    forged = [line for line in lines if "outcome=RELEASE" in line]
    assert forged, "the hostile commands were not logged at all"
    for line in forged:
        # Only ever inside a record about a hold command, never a line of its own.
        match = TIMESTAMPED.match(line)
        assert match and " gated.hold_commands: hold command " in line[: match.end() + 20], line


# -- devices, files and the command line ----------------------------------------------------------


def test_a_frame_error_quoting_a_device_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    config = validate(
        {
            "site": "s",
            "holds": {"max_age_seconds": 600},
            "storage": {"database": str(tmp_path / "g.db")},
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["ocr"],
                    "devices": [{"id": "ocr-1", "driver": "ocr-camera", "host": "127.0.0.1", "port": 9}],
                }
            ],
        }
    )
    engine = open_engine(tmp_path / "g.db")
    pipeline = Pipeline(
        config, Store(engine, site="s", node="n", clock=clock), HoldStore(engine, clock), clock
    )
    with caplog.at_level(logging.DEBUG):
        pipeline.frame_error("lane-1", "ocr-1", ProtocolError(f"bad frame: bytes\n{FORGED}"))
        pipeline.step()
    messages = gated_messages(caplog)
    assert any("malformed frame" in m and "\\n2026-12-04" in m for m in messages), messages
    assert_one_line_each(messages)
    engine.dispose()


def test_a_file_name_in_a_camera_folder_cannot_forge_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / f"view\n{FORGED}"
    folder.mkdir()
    junk = folder / f"bad\n{FORGED.replace('/', '-')}.jpg"
    junk.write_bytes(b"not a jpeg")
    os.utime(junk, (time.time() - 60, time.time() - 60))  # settled: counted at once
    settings = OcrFramesDevice(id="cam-1", driver="ocr-frames", views=[str(folder)])
    driver = FramesCameraDriver("lane-1", settings, pool=OcrPool(), evidence=EvidenceStore(tmp_path / "ev"))
    sink = RecordingSink("lane-1", "cam-1")
    with caplog.at_level(logging.DEBUG), driver_running(driver, sink):
        sink.wait_for("the bad file counted", lambda: bool(sink.errors))
    assert all(error.isprintable() for error in sink.errors), sink.errors
    assert "\\n2026-12-04" in sink.errors[0]
    assert all(detail.isprintable() for _state, detail in sink.statuses)
    assert_one_line_each(gated_messages(caplog))


def test_a_note_with_line_breaks_stays_on_its_holds_line(tmp_path: Path) -> None:
    database = tmp_path / "g.db"
    holds = HoldStore(open_engine(database), ManualClock())
    holds.place(
        container=HELD,
        agency="CBP",
        hold_type="customs",
        note=f"exam booked\nhold 99: MSKU4135329 CBP customs released\r{FORGED}",
        actor="customs",
        reason="test",
    )
    listed = subprocess.run(
        [sys.executable, "-m", "gated", "holds", "list", "--db", str(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("hold 1:") and "\\nhold 99" in lines[0] and "\\r2026-12-04" in lines[0], lines
    assert lines[1].startswith("1 active hold(s) shown") and not any(" INFO " in line for line in lines[1:])
