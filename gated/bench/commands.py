"""``gated bench commands``: trucks' decision latency, quiet and during a burst of hold commands.

The daemon (``gated.daemon.Daemon``, real SQLite, its own MQTT client) runs against a mosquitto the
bench starts; a truck's readings are handed to its pipeline as its drivers would, and a truck's
latency is from its last reading to its decision arriving at a subscriber on the broker. Trucks
pass every ``TRUCK_GAP`` seconds, first on a quiet broker, then while another process floods
``holds/cmd`` with commands (nine in ten unsigned junk, one in ten signed and valid) as fast as
the broker takes them. The figures are side by side in one run; the ratio is what counts.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gated.errors import GatedError
from gated.messages import HOLD, Topics

TRUCK_GAP = 0.5
FLOOD_ISSUE_SECONDS = 30.0
BENCH_TOPICS = Topics("bench")  # the site of the bench's config


def bench_commands(quick: bool) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gated.bench.common import Mosquitto, free_port, machine, progress
    from gated.signing import public_key_text

    burst = 2_000 if quick else 20_000
    trucks = 10 if quick else 30
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        broker = Mosquitto(folder)
        broker.start()
        try:
            daemon = _daemon(folder, broker.port, public_key_text(key.public_key()), free_port())
            watcher = _Decisions(broker.port)
            try:
                daemon.start()
                if not daemon.publisher.wait_connected(15):
                    raise GatedError("the daemon did not connect to the benchmark's broker")
                time.sleep(1.0)
                progress(f"{trucks} trucks on a quiet broker")
                quiet = _trucks(daemon, watcher, trucks, "q")
                progress(f"{trucks} trucks while {burst} hold commands arrive")
                flooder = _start_flood(broker.port, burst, key)
                flood_started = time.monotonic()
                loud = _trucks(daemon, watcher, trucks, "f")
                flood_out = flooder.communicate(timeout=_flood_timeout(burst))[0].decode()
                issued = json.loads(flood_out.strip().splitlines()[-1])
                deadline = time.monotonic() + 120
                while daemon.commands.stats.received < issued["sent"] and time.monotonic() < deadline:
                    time.sleep(0.1)
                stats = daemon.commands.stats
                flood_seconds = time.monotonic() - flood_started
            finally:
                watcher.stop()
                daemon.stop()
        finally:
            broker.stop()
    quiet_p50, loud_p50 = statistics.median(quiet), statistics.median(loud)
    quiet_p95, loud_p95 = _p95(quiet), _p95(loud)
    return {
        "bench": "commands",
        "burst": burst,
        "trucks": trucks,
        "quiet_decision_ms": {"p50": _ms(quiet_p50), "p95": _ms(quiet_p95), "max": _ms(max(quiet))},
        "flood_decision_ms": {"p50": _ms(loud_p50), "p95": _ms(loud_p95), "max": _ms(max(loud))},
        "ratio_p50": round(loud_p50 / quiet_p50, 2),
        "ratio_p95": round(loud_p95 / quiet_p95, 2),
        "within_2x": loud_p95 <= 2 * quiet_p95,
        "commands": {
            "sent": issued["sent"],
            "signed": issued["signed"],
            "send_seconds": issued["seconds"],
            "received": stats.received,
            "applied": stats.applied,
            "rejected": stats.rejected,
            "answered_rejections": stats.rejected - stats.unanswered,
            "dropped": stats.dropped,
            "seconds": round(flood_seconds, 1),
        },
        "machine": machine(),
    }


def _daemon(folder: Path, port: int, public_key: str, dead_port: int) -> Any:
    from gated.config import validate
    from gated.daemon import Daemon

    config = validate(
        {
            "site": "bench",
            "node": "bench-1",
            "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 30},
            "storage": {"database": str(folder / "gated.db"), "evidence": str(folder / "evidence")},
            "holds": {
                "max_age_seconds": 3600,
                "customs_keys": [{"id": "bench", "public_key": public_key, "agencies": ["CBP"]}],
            },
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["rfid"],
                    "settle_seconds": 0.0,
                    # The reader is never there: the bench hands the readings to the pipeline.
                    "devices": [
                        {"id": "rfid-1", "driver": "rfid-serial", "url": f"socket://127.0.0.1:{dead_port}"}
                    ],
                }
            ],
        },
        source="bench",
    )
    return Daemon(config)


def _trucks(daemon: Any, watcher: _Decisions, count: int, tag: str) -> list[float]:
    """``count`` trucks, each: a container read and the portal's verdict, then its tag last (which
    completes the visit); returns each truck's seconds from the tag to its decision on the broker."""
    from gated.bench.common import present_truck
    from gated.iso6346 import check_digit

    latencies = []
    for index in range(count):
        first_ten = f"MSKU{(hash(tag) % 50 + 1) * 10_000 + index:06d}"
        box = first_ten + str(check_digit(first_ten))
        started = present_truck(daemon.pipeline, box, f"e2801160{tag}{index:015d}", time.monotonic)
        latencies.append(watcher.wait(box, started, timeout=120.0))
        time.sleep(TRUCK_GAP)
    return latencies


class _Decisions:
    """A subscriber to the lane's decisions: when each container's decision arrived."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._arrived: dict[str, float] = {}
        self._lock = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe(BENCH_TOPICS.decision("lane-1"), qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise GatedError("the decision subscriber could not subscribe")

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        container = json.loads(message.payload).get("container")
        with self._lock:
            self._arrived[str(container)] = time.monotonic()
            self._lock.notify_all()

    def wait(self, container: str, since: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._lock:
            while container not in self._arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GatedError(f"no decision for {container} within {timeout:.0f} s")
                self._lock.wait(left)
            return self._arrived[container] - since

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _start_flood(port: int, count: int, key: Any) -> subprocess.Popen[bytes]:
    """Another process floods ``holds/cmd``; it prints a JSON line of what it sent."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    code = "from gated.bench.commands import flood; flood()"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(count), raw],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _flood_timeout(count: int) -> float:
    return FLOOD_ISSUE_SECONDS + count / 200


def flood() -> None:
    """The flooding process: ``python -c ... PORT COUNT KEY_HEX``."""
    import paho.mqtt.client as mqtt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from paho.mqtt.enums import CallbackAPIVersion

    from gated.clock import rfc3339
    from gated.iso6346 import check_digit
    from gated.signing import sign_command

    port, count, key = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[3])),
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    signed = 0
    infos = []
    for index in range(count):
        if index % 10 == 0:
            first_ten = f"TGHU{index:06d}"
            command = {
                "schema": HOLD,
                "id": f"flood-{index}",
                "action": "place",
                "container": first_ten + str(check_digit(first_ten)),
                "agency": "CBP",
                "hold_type": "customs",
                "ts": rfc3339(datetime.now(UTC)),
            }
            payload = json.dumps(sign_command(command, key, "bench")).encode()
            signed += 1
        else:
            payload = json.dumps(
                {
                    "schema": HOLD,
                    "id": f"junk-{index}",
                    "action": "release",
                    "container": "MSKU4135329",
                }
            ).encode()
        infos.append(client.publish(BENCH_TOPICS.holds_cmd, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=60)
    seconds = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"sent": count, "signed": signed, "seconds": round(seconds, 2)}))


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
