from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.lane import LaneDevices
from tests.gate import lane_devices_fixture
from tests.system import free_port, require_tool


class Mosquitto:
    """A real mosquitto broker on a loopback port, owned by the test."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = require_tool("mosquitto")
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # Queues large enough that "everything arrived" tests are not cut by broker defaults.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            + ("" if persistent else "persistence false\n")
            + "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            + (
                # Sessions and queued messages survive a restart; snapshot every second.
                f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
                # As root mosquitto would switch to its own user, who cannot write the test's folder.
                "user root\n"
                if persistent
                else ""
            ),
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            import socket

            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@dataclass
class Received:
    topic: str
    payload: dict[str, Any]
    retain: bool


@dataclass
class Subscriber:
    """Subscribes like a customs system would: QoS 1 to everything under gated/. A durable one
    keeps its session on the broker (clean_session=False) and reconnects by itself."""

    port: int
    topic: str = "gated/#"
    client_id: str = ""
    durable: bool = False
    messages: list[Received] = field(default_factory=list)
    raw_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=not self.durable
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/holds/cmd"):
            return  # inbound commands to gated, not gated's output
        try:
            payload = json.loads(message.payload)
        except ValueError as error:
            with self._lock:
                self.raw_errors.append(f"{message.topic}: {error}")
            return
        with self._lock:
            self.messages.append(Received(message.topic, payload, bool(message.retain)))

    def start(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self._connected.wait(10), "subscriber could not connect"
        time.sleep(0.2)  # the SUBACK
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "messages") -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.snapshot() if predicate(m)]
            if found:
                return found
            time.sleep(0.05)
        topics = sorted({m.topic for m in self.snapshot()})
        raise AssertionError(f"timed out waiting for {what}; topics seen: {topics}")


@pytest.fixture
def subscriber_factory() -> Iterator[Any]:
    made: list[Subscriber] = []

    def make(port: int, topic: str = "gated/#", *, client_id: str = "", durable: bool = False) -> Subscriber:
        subscriber = Subscriber(port, topic, client_id=client_id, durable=durable).start()
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.stop()


@pytest.fixture
def lane_devices() -> Iterator[LaneDevices]:
    """The simulators of one lane (RFID on a pty, RPM on Modbus TCP, camera on TCP), running."""
    yield from lane_devices_fixture()
