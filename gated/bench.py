"""`gated bench NAME`: benchmarks that print progress to stderr and one JSON object last on stdout.

Comparisons run side by side in the same process and are reported as ratios, since the machines
they run on are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gated.bench_commands import bench_commands
from gated.errors import GatedError
from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source, Visit
from gated.policy import HoldListStatus, PolicySettings, decide


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _visit(index: int) -> Visit:
    now = datetime.now(UTC)
    visit = Visit(id=f"v{index}", lane="lane-1", opened_at=now, trigger="rfid:epc", close_cause="complete")
    for reading in (
        Reading("lane-1", Kind.RFID, "rfid-1", Source.EPC, f"e28011{index:010x}", now),
        Reading("lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, "MSKU4135329", now, confidence=0.97),
        Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now),
        Reading(
            "lane-1", Kind.RPM, "rpm-1", Source.SCREENING, str(ScreeningVerdict.CLEAR), now, Quality.GOOD
        ),
    ):
        visit = visit.with_reading(reading)
    return visit


def bench_policy(quick: bool) -> dict[str, Any]:
    count = 2_000 if quick else 50_000
    visits = [_visit(i) for i in range(count)]
    status = HoldListStatus(loaded=True, confirmed_at=datetime.now(UTC), version=1)
    settings = PolicySettings(hold_list_max_age_seconds=3600)
    _progress(f"deciding {count} visits")
    start = time.perf_counter()
    for visit in visits:
        decide(visit, {}, status, settings, now=datetime.now(UTC))
    elapsed = time.perf_counter() - start
    return {
        "bench": "policy",
        "visits": count,
        "decisions_per_second": round(count / elapsed),
        "machine": machine(),
    }


def bench_store(quick: bool) -> dict[str, Any]:
    """Readings stored durably (SQLite, WAL, synchronous=FULL) one per transaction vs in batches."""
    from gated.db import open_engine
    from gated.messages import Topics, reading_message
    from gated.store import Batch, Store

    count = 500 if quick else 5_000
    topics = Topics("bench")
    now = datetime.now(UTC)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, batch_size in (("single", 1), ("batched", 200)):
            engine = open_engine(Path(folder) / f"{label}.db")
            store = Store(engine, site="bench", node="bench")
            readings = [
                Reading("lane-1", Kind.RPM, "rpm-1", Source.GAMMA_CPS, 250.0 + i, now, units="cps")
                for i in range(count)
            ]
            _progress(f"storing {count} readings, {batch_size} per transaction")
            start = time.perf_counter()
            for offset in range(0, count, batch_size):
                chunk = readings[offset : offset + batch_size]
                store.write(Batch(readings=chunk, messages=[reading_message(topics, r) for r in chunk]))
            results[label] = count / (time.perf_counter() - start)
            engine.dispose()
    return {
        "bench": "store",
        "readings": count,
        "single_per_second": round(results["single"]),
        "batched_per_second": round(results["batched"]),
        "batched_over_single": round(results["batched"] / results["single"], 2),
        "machine": machine(),
    }


# -- pipeline: gated's durable path against plain paho, on one mosquitto ------------------------

PIPELINE_ROUNDS = 3
PIPELINE_MAX_INFLIGHT = 100
PIPELINE_SOURCE = "tamper"
_RUN_TIMEOUT = 600.0


def _mosquitto_binary() -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    found = shutil.which("mosquitto", path=search)
    if found is None:
        raise GatedError(
            "the pipeline benchmark needs mosquitto (Debian package `mosquitto`), "
            "which is not installed or not on PATH, /usr/sbin or /usr/local/sbin"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Mosquitto:
    """A mosquitto broker of the benchmark's own, on a free loopback port, stopped by its PID."""

    def __init__(self, folder: Path) -> None:
        self.binary = _mosquitto_binary()
        self.port = _free_port()
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            # Nothing may be dropped or throttled by broker defaults: the bench counts arrivals.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_dest stderr",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # no privilege drop: nothing here is owned by `mosquitto`
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise GatedError(f"mosquitto did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def count_messages() -> None:
    """The subscriber process: ``python -c ... PORT TOPIC``. Subscribes at QoS 1, prints ``ready``
    once subscribed, then answers every line on stdin with the number of messages received."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port, topic = int(sys.argv[1]), sys.argv[2]
    received = [0]
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        received[0] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-subscriber-{os.getpid()}")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        print("not subscribed", flush=True)
        return
    print("ready", flush=True)
    for _line in sys.stdin:
        print(received[0], flush=True)
    client.disconnect()
    client.loop_stop()


class _Subscriber:
    """A paho subscriber in its own process (so its work does not share our GIL) that counts."""

    def __init__(self, port: int, topic: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from gated.bench import count_messages; count_messages()",
                str(port),
                topic,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().strip()
        if first != "ready":
            self.stop()
            raise GatedError(f"the benchmark's subscriber did not subscribe: {first or 'no answer'}")

    def count(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def wait_for(self, target: int, quiet: float = 3.0) -> int:
        """The count once it reaches ``target``, or once it has not moved for ``quiet`` seconds."""
        count, moved = self.count(), time.monotonic()
        while count < target and time.monotonic() - moved < quiet:
            time.sleep(0.05)
            now = self.count()
            if now != count:
                count, moved = now, time.monotonic()
        return count

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _bench_readings(count: int) -> list[Reading]:
    """What an RPM driver reports about its tamper switch: not truck-related, so the correlator
    opens no visit and the policy decides nothing; only the durable reading path is measured."""
    now = datetime.now(UTC)
    return [Reading("lane-1", Kind.RPM, "rpm-1", PIPELINE_SOURCE, False, now) for _ in range(count)]


def _gated_once(
    folder: Path, port: int, site: str, count: int, label: str
) -> tuple[float, list[tuple[str, bytes]]]:
    """N readings through Pipeline -> Store -> MqttPublisher until the outbox is empty.

    Returns readings per second and the (topic, payload) of every reading message published."""
    from sqlalchemy import select

    from gated.clock import SystemClock
    from gated.config import validate
    from gated.db import open_engine
    from gated.holds import HoldStore
    from gated.messages import Topics
    from gated.pipeline import Pipeline
    from gated.publisher import MqttPublisher
    from gated.store import Store, outbox

    config = validate(
        {
            "site": site,
            "node": "bench",
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "client_id": f"gated-{site}-{label}",
                "max_inflight": PIPELINE_MAX_INFLIGHT,
            },
            "storage": {"database": str(folder / f"{label}.db")},
            "holds": {"max_age_seconds": 3600},
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["rpm"],
                    # Never started: no driver runs, the readings come from the benchmark.
                    "devices": [
                        {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "unused.toml"}
                    ],
                }
            ],
        },
        source="pipeline bench",
    )
    clock = SystemClock()
    engine = open_engine(config.storage.database)
    store = Store(engine, site=config.site, node=config.node, clock=clock)
    pipeline = Pipeline(config, store, HoldStore(engine, clock), clock)
    topics = Topics(config.site)
    publisher = MqttPublisher(
        store,
        config.mqtt,
        prefix=topics.prefix,
        boot=store.next_boot(),
        subscriptions=[],
        on_message=lambda _topic, _payload: None,
        status_snapshot=pipeline.status_snapshot,
    )
    pipeline.on_stored = publisher.wake
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), name="bench-pipeline", daemon=True)
    readings = _bench_readings(count)
    try:
        publisher.start()
        if not publisher.wait_connected(10) or not publisher.flush(10):
            raise GatedError("gated's publisher did not connect to the benchmark's broker")
        thread.start()
        seq_before = store.counter("seq")
        start = time.perf_counter()
        for reading in readings:
            pipeline.reading(reading)
        deadline = time.monotonic() + _RUN_TIMEOUT
        while pipeline.stats.readings < count or store.counter("seq") - seq_before < count:
            _check_deadline(deadline, "gated stored", pipeline.stats.readings, count)
            time.sleep(0.02)  # polling the database more often would steal the CPU being measured
        while store.outbox_depth() > 0:
            _check_deadline(deadline, "gated delivered", count - store.outbox_depth(), count)
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        with engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.topic, outbox.c.payload)
                .where(outbox.c.seq > seq_before)
                .order_by(outbox.c.seq)
            )
            published = [(topic, payload.encode()) for topic, payload in rows if "/reading/" in topic]
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(10)
        publisher.stop(graceful_offline=False)
        engine.dispose()
    if len(published) != count:
        raise GatedError(f"gated's outbox held {len(published)} reading messages, expected {count}")
    return count / elapsed, published


def _plain_once(port: int, messages: list[tuple[str, bytes]], label: str) -> float:
    """The same payloads published by a bare paho client at QoS 1; returns messages per second."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    total = len(messages)
    acked = [0]
    connected, done = threading.Event(), threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            connected.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        acked[0] += 1
        if acked[0] >= total:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"plain-{label}-{os.getpid()}")
    client.max_inflight_messages_set(PIPELINE_MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise GatedError("the plain paho client did not connect to the benchmark's broker")
        start = time.perf_counter()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        if not done.wait(_RUN_TIMEOUT):
            raise GatedError(f"plain paho: {acked[0]} of {total} messages acknowledged in time")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return total / elapsed


def _check_deadline(deadline: float, what: str, done: int, total: int) -> None:
    if time.monotonic() > deadline:
        raise GatedError(f"{what} only {done} of {total} readings in {_RUN_TIMEOUT:.0f} s")


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_pipeline(quick: bool) -> dict[str, Any]:
    """Readings through gated's durable path (pipeline, SQLite outbox, publisher) vs the same
    payloads from a bare paho client, alternately, against one mosquitto the bench starts."""
    count = 2_000 if quick else 20_000
    site = f"bench-{uuid.uuid4().hex[:8]}"
    gated_rates: list[float] = []
    plain_rates: list[float] = []
    received: list[int] = []
    plain_received: list[int] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        broker = _Mosquitto(folder)
        broker.start()
        _progress(f"mosquitto on 127.0.0.1:{broker.port}; {count} readings, {PIPELINE_ROUNDS} rounds")
        subscriber: _Subscriber | None = None
        try:
            subscriber = _Subscriber(broker.port, f"gated/v1/{site}/+/reading/#")
            payloads: list[tuple[str, bytes]] = []
            for round_ in range(PIPELINE_ROUNDS):
                order = ("gated", "plain") if round_ % 2 == 0 else ("plain", "gated")
                for path in order:
                    before = subscriber.count()
                    if path == "gated":
                        rate, payloads = _gated_once(folder, broker.port, site, count, f"r{round_}")
                        gated_rates.append(rate)
                        received.append(subscriber.wait_for(before + count) - before)
                    else:
                        rate = _plain_once(broker.port, payloads, f"r{round_}")
                        plain_rates.append(rate)
                        plain_received.append(subscriber.wait_for(before + count) - before)
                    _progress(f"round {round_ + 1}: {path:5} {rate:8.0f} readings/s")
        finally:
            if subscriber is not None:
                subscriber.stop()
            broker.stop()
    gated_median = statistics.median(gated_rates)
    plain_median = statistics.median(plain_rates)
    return {
        "bench": "pipeline",
        "readings": count,
        "rounds": PIPELINE_ROUNDS,
        "max_inflight": PIPELINE_MAX_INFLIGHT,
        "source": PIPELINE_SOURCE,
        "gated_per_second": round(gated_median),
        "plain_paho_per_second": round(plain_median),
        "ratio": round(gated_median / plain_median, 2),
        "gated_rounds": [round(rate) for rate in gated_rates],
        "plain_paho_rounds": [round(rate) for rate in plain_rates],
        "received": min(received),
        "missing": max(count - got for got in received),
        "plain_paho_missing": max(count - got for got in plain_received),
        "peak_rss_mb": _peak_rss_mb(),
        "machine": machine(),
    }


def bench_rpm(quick: bool) -> dict[str, Any]:
    from gated.bench_rpm import bench_rpm as run

    return run(quick)


def bench_ocr(quick: bool) -> dict[str, Any]:
    from gated.bench_ocr import bench_ocr as run

    return run(quick)


BENCHES = {
    "commands": bench_commands,
    "policy": bench_policy,
    "store": bench_store,
    "pipeline": bench_pipeline,
    "rpm": bench_rpm,
    "ocr": bench_ocr,
}


def run_bench(name: str, *, quick: bool = False) -> dict[str, Any]:
    if name not in BENCHES:
        raise GatedError(f"no benchmark {name!r}; choose from {', '.join(BENCHES)}")
    return BENCHES[name](quick)
