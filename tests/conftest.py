"""Shared fixtures, the test tiers and the hypothesis profiles.

Tiers: every test gets markers from what it uses (see ``pytest_collection_modifyitems``): ``broker``,
``devices``, ``postgres``, ``ocr``, ``browser``, ``subprocess``. A test with none of them, and with
neither ``e2e`` nor ``slow``, is also marked ``fast``: `make check` runs ``-m fast``, `make test`
runs everything.

Hypothesis: profile ``ci`` (the default) and ``dev`` (few examples, for `make check`), chosen with
``--hypothesis-profile`` or the HYPOTHESIS_PROFILE environment variable. A test that needs more
examples than the default asks for ``examples(n)``: n under ``ci``, proportionally fewer under ``dev``.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import settings
from paho.mqtt.enums import CallbackAPIVersion

from simulators.lane import LaneDevices
from tests.gate import lane_devices_fixture
from tests.system import free_port, require_tool

# pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored in every program they
# start: give it back, so the Ctrl-C a test sends reaches the command it runs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis profiles. ``ci`` keeps hypothesis' defaults, what the suite has always run with; ``dev``
# runs a fifth of the examples. Loaded here, before the test modules are imported; a
# ``--hypothesis-profile`` option is applied later by hypothesis' own plugin and wins.
CI_EXAMPLES = 100
settings.register_profile("ci", max_examples=CI_EXAMPLES)
settings.register_profile("dev", max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(under_ci: int) -> int:
    """``under_ci`` examples under the ``ci`` profile, as many fewer under a smaller profile."""
    return max(1, round(under_ci * settings.default.max_examples / CI_EXAMPLES))


_scaled: set[int] = set()  # test functions already scaled (parametrized tests share one)


def _scale_examples(item: pytest.Item) -> None:
    """A test's own ``@settings(max_examples=n)`` is a number for ``ci``: scale it like ``examples``.

    Hypothesis keeps a test's settings on the test function; its own pytest plugin replaces them
    there the same way."""
    function = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
    own = getattr(function, "_hypothesis_internal_use_settings", None)
    if not isinstance(own, settings) or id(function) in _scaled:
        return
    _scaled.add(id(function))
    if own.max_examples != settings.default.max_examples:
        function._hypothesis_internal_use_settings = settings(own, max_examples=examples(own.max_examples))  # type: ignore[union-attr]


# The tiers. Each marker names a slow or outside part a test needs; ``fast`` is a test needing none.
SLOW_MARKERS = ("e2e", "slow", "broker", "devices", "postgres", "ocr", "browser", "subprocess")

# Fixtures that give a test such a part, by name (``item.fixturenames`` holds their closure).
MARKER_FIXTURES = {
    "broker": {"mosquitto", "subscriber_factory"},
    "devices": {"lane_devices"},
    "browser": {"browser"},
}

# What a test refers to, as ``module.name`` or as a module it imports inside a function, and the
# marker that follows. Helpers and classes of tests/ are followed to what they refer to.
USES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), marker)
    for pattern, marker in (
        (r"tests\.conftest\.(Mosquitto|Subscriber)|tests\.tls\.secure_broker", "broker"),
        (r"tests\.postgres\..*", "postgres"),
        (r"tests\.gate\.(gated|start_daemon)", "subprocess"),
        (
            r"tests\.gate\.lane_devices_fixture"
            r"|simulators\..*\.(\w+Simulator|LaneDevices|ScriptedLane|start_lane|register_cli)",
            "devices",
        ),
        (
            r"(easyocr|rapidocr)(\..*)?|gated\.bench[._]ocr.*"
            r"|ocr\.(engine\.load_engine|pool\.OcrPool|easy\.\w*Engine|rapid\.\w*Engine)",
            "ocr",
        ),
        (r"gated\.bench([._].*)?", "slow"),  # benchmarks run for seconds by design
        (r"(selenium|playwright)(\..*)?", "browser"),
    )
)

# Measured at a second or more each on two cores (dev profile) though they need none of the parts
# above: node ids, or their start for every parameter. A test file may mark them itself instead.
SLOW_TESTS = (
    "tests/test_bounded.py::test_a_device_that_only_fails_goes_offline",  # real-time state changes
    "tests/test_camera_frames.py::test_written_dataset_has_a_label_for_every_file",  # renders frames
    "tests/test_camera_frames.py::test_char_height_within_the_requested_range_and_marks_in_frame",
    "tests/test_camera_frames.py::test_rendering_is_deterministic_from_the_seed",
    "tests/test_camera_frames.py::test_image_folder_source_picks_up_new_files",
)


def _dotted(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return f"{getattr(obj, '__module__', None) or ''}.{getattr(obj, '__qualname__', '')}"


def _markers_of(name: str) -> set[str]:
    return {marker for pattern, marker in USES if pattern.fullmatch(name)}


def _code_of(obj: object) -> list[types.CodeType]:
    """The code of a function (unwrapped, or the test inside a hypothesis test) or of a class's methods."""
    if isinstance(obj, type):
        return [code for member in vars(obj).values() for code in _code_of(member)]
    if isinstance(obj, property):
        return _code_of(obj.fget)
    if isinstance(obj, staticmethod | classmethod):
        return _code_of(obj.__func__)
    obj = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
    if not callable(obj):
        return []
    code = getattr(inspect.unwrap(obj), "__code__", None)
    return [code] if isinstance(code, types.CodeType) else []


def markers_from_code(obj: object) -> set[str]:
    """The markers for what ``obj`` refers to, directly or through helpers and classes of tests/.

    Names are looked up in the globals of the code using them. A child Python process
    (``sys.executable``) means ``subprocess``; socat and mbpoll, the independent peers of the
    serial and Modbus simulators, mean ``devices``."""
    found: set[str] = set()
    seen: set[int] = set()
    pending = [obj]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, type):
            namespace = vars(inspect.getmodule(current) or types.ModuleType("unknown"))
        else:
            namespace = getattr(inspect.unwrap(current), "__globals__", {})  # type: ignore[arg-type]
        codes = _code_of(current)
        while codes:
            code = codes.pop()
            codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
            if {"sys", "executable"} <= set(code.co_names):
                found.add("subprocess")
            if {"socat", "mbpoll"} & set(code.co_consts):
                found.add("devices")
            for name in code.co_names:
                found |= _markers_of(name)  # a module imported inside the function
                if name not in namespace:
                    continue
                target = namespace[name]
                marked = _markers_of(_dotted(target))
                found |= marked
                if not marked and _dotted(target).startswith("tests."):
                    pending.append(target)
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the parts it uses, ``fast`` when it needs none of the slow ones, and
    scale its own number of hypothesis examples to the profile."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        markers = {marker for marker, fixtures in MARKER_FIXTURES.items() if names & fixtures}
        if isinstance(item, pytest.Function):
            markers |= markers_from_code(item.obj)
            # Fixtures written in tests/ are followed like the test (a module's own broker, say).
            definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
            for name in names:
                for definition in definitions.get(name, ()):
                    if _dotted(definition.func).startswith("tests."):
                        markers |= markers_from_code(definition.func)
            _scale_examples(item)
        if item.nodeid.startswith(SLOW_TESTS):
            markers.add("slow")
        for marker in sorted(markers):
            item.add_marker(marker)
        if not any(item.get_closest_marker(marker) for marker in SLOW_MARKERS):
            item.add_marker("fast")


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
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=not self.durable
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()

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
        assert self._subscribed.wait(10), "the broker did not acknowledge the subscription"
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
