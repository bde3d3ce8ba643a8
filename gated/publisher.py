"""MQTT output: drains the durable outbox to the broker at QoS 1, in order.

A row leaves the outbox only when the broker has acknowledged it (PUBACK). paho keeps its
unacknowledged messages in memory and sends them again after a reconnect, so within one run the
mid -> seq map below stays valid across reconnects; across restarts the outbox itself replays.
The node's Will marks it offline; a birth with the boot counter is published on every connect,
followed by the current lane and device status (retained), so a broker that lost its retained
messages is brought up to date.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gated.clock import rfc3339
from gated.config import MqttConfig
from gated.errors import ConfigError, StorageError
from gated.model import new_id
from gated.store import Batch, Message, Store

log = logging.getLogger(__name__)

InboundHandler = Callable[[str, bytes], None]
StatusSnapshot = Callable[[], list[Message]]


@dataclass
class PublisherStats:
    published: int = 0
    acknowledged: int = 0
    connects: int = 0
    disconnects: int = 0


class MqttPublisher:
    """One paho client for the node: publishes the outbox, receives the hold commands."""

    def __init__(
        self,
        store: Store,
        config: MqttConfig,
        *,
        prefix: str,
        boot: int,
        subscriptions: list[str],
        on_message: InboundHandler,
        status_snapshot: StatusSnapshot,
    ) -> None:
        self.store = store
        self.config = config
        self.prefix = prefix
        self.boot = boot
        self.subscriptions = subscriptions
        self.on_inbound = on_message
        self.status_snapshot = status_snapshot
        self.stats = PublisherStats()
        self.node_topic = f"{prefix}/node/{store.node}/status"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._early_acks: set[int] = set()  # acks that beat the mid bookkeeping
        self._acked: list[int] = []
        self._sent_ahead: set[int] = set()  # seqs published out of order (births)
        self._cursor = 0
        self._connected = threading.Event()
        self._needs_birth = False
        self._thread: threading.Thread | None = None
        self.client = self._make_client()

    # -- paho set-up and callbacks (paho's network thread: never block here) ---------------
    def _make_client(self) -> mqtt.Client:
        client_id = self.config.client_id or f"gated-{self.store.site}-{self.store.node}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        if self.config.username:
            password = None
            if self.config.password_file:
                try:
                    password = Path(self.config.password_file).read_text(encoding="utf-8").strip()
                except OSError as error:
                    raise ConfigError([f"mqtt.password_file: cannot read: {error}"]) from None
            client.username_pw_set(self.config.username, password)
        will = self.store.envelope(
            Message(self.node_topic, "gated.status/1", {"state": "offline", "boot": self.boot}), None
        )
        client.will_set(self.node_topic, _json_bytes(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        log.info("connected to MQTT broker %s:%s", self.config.host, self.config.port)
        self.stats.connects += 1
        # Subscriptions do not survive a reconnect with a clean session: make them every time.
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        with self._lock:
            self._needs_birth = True
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not self._stop.is_set():
            log.warning("MQTT connection lost: %s (reconnecting)", reason)
        self.stats.disconnects += 1
        self._connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early_acks.add(mid)
            else:
                self._acked.append(seq)
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.on_inbound(message.topic, bytes(message.payload))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._drain_loop, name="gated-publisher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (used at shutdown and by tests)."""
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout:
            if self.store.outbox_depth() == 0:
                return True
            self._wake.set()
            deadline.wait(0.05)
            waited += 0.05
        return False

    def stop(self, *, graceful_offline: bool = True, timeout: float = 5.0) -> None:
        """Stop publishing. A graceful stop announces the node offline (through the outbox)."""
        if graceful_offline and self._connected.is_set():
            offline = Message(
                self.node_topic, "gated.status/1", {"state": "offline", "boot": self.boot}, retain=True
            )
            try:
                self.store.write(Batch(messages=[offline]))
            except StorageError as error:
                log.error("cannot store the offline status: %s", error)
            self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # -- the drain loop ----------------------------------------------------------------------
    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._drain_once()
            except StorageError as error:
                log.error("outbox: %s", error)
                self._stop.wait(1.0)
            except Exception:  # the publisher must keep running whatever happens
                log.exception("publisher failed; continuing")
                self._stop.wait(1.0)

    def _drain_once(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
            needs_birth, self._needs_birth = self._needs_birth, False
        if acked:
            self.store.mark_delivered(acked)
            self.stats.acknowledged += len(acked)
            with self._lock:
                self._sent_ahead.difference_update(acked)
        if needs_birth:
            self._publish_birth()
        while not self._stop.is_set():
            with self._lock:
                room = self.config.max_inflight - len(self._inflight)
            if room <= 0:
                return
            rows = self.store.pending(self._cursor, room)
            if not rows:
                return
            for row in rows:
                self._cursor = row.seq
                if row.seq in self._sent_ahead:
                    continue
                self._publish(row.seq, row.topic, row.payload, row.qos, row.retain)

    def _publish(self, seq: int, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        # Published even while disconnected: paho queues it and sends it on reconnect.
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.stats.published += 1
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._acked.append(seq)
            else:
                self._inflight[info.mid] = seq

    def _publish_birth(self) -> None:
        """Birth first, then the retained status of lanes and devices, ahead of any backlog."""
        birth = Message(
            self.node_topic,
            "gated.status/1",
            {"id": new_id(), "state": "online", "boot": self.boot, "since": rfc3339(self.store.clock.now())},
            retain=True,
        )
        rows = self.store.write(Batch(messages=[birth, *self.status_snapshot()]))
        with self._lock:
            self._sent_ahead.update(row.seq for row in rows)
        for row in rows:
            self._publish(row.seq, row.topic, row.payload, row.qos, row.retain)

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    import json

    return json.dumps(payload, separators=(",", ":")).encode()
