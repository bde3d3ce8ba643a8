"""`gated bench pipeline`: gated's durable path against plain paho, side by side on one mosquitto
the bench starts; the ratio is what counts, since the machines it runs on are shared and noisy."""

from __future__ import annotations

import os
import signal
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

from gated.bench.common import Mosquitto, machine, progress
from gated.errors import GatedError
from gated.messages import Topics
from gated.model import Kind, Reading, Source

PIPELINE_ROUNDS = 3
PIPELINE_MAX_INFLIGHT = 100
PIPELINE_SOURCE = Source.TAMPER
_RUN_TIMEOUT = 600.0


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
                "from gated.bench.pipeline import count_messages; count_messages()",
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
        topics=topics,
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
                .where((outbox.c.node == store.node) & (outbox.c.seq > seq_before))
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
        broker = Mosquitto(folder)
        broker.start()
        progress(f"mosquitto on 127.0.0.1:{broker.port}; {count} readings, {PIPELINE_ROUNDS} rounds")
        subscriber: _Subscriber | None = None
        try:
            subscriber = _Subscriber(broker.port, f"{Topics(site).prefix}/+/reading/#")
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
                    progress(f"round {round_ + 1}: {path:5} {rate:8.0f} readings/s")
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
