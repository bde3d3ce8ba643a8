"""MQTT output: drains the durable outbox to the broker at QoS 1, in order.

- A row is marked delivered only when the broker acknowledged it (PUBACK). paho keeps its
  unacknowledged messages in memory and sends them again after a reconnect, so within one run the
  mid -> seq map below stays valid across reconnects; across restarts the outbox itself replays.
- A broker that dies may lose messages it had acknowledged but not yet passed on or saved (a
  mosquitto snapshot is taken every ``autosave_interval``). So after every lost connection, the
  messages acknowledged in the ``replay_seconds`` before it was lost are sent again (consumers
  drop duplicates by id). The session is persistent so hold commands sent while gated is away
  wait for it.
- Over MQTT 5 the broker says when another client took gated's session, refused a subscription
  or refused a publish (its ACL): each is logged and raised as a node alarm (once a minute at most).
- A connection that stays open but goes silent is noticed by our own watchdog: nothing heard
  from the broker for 1.5 x keepalive (paho answers a ping in time on a live link) closes the
  socket and paho reconnects.
- The node's Will marks it offline; a birth with the boot counter is published on every connect,
  followed by the current lane and device status (retained), so a broker that lost its retained
  messages is brought up to date.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt

from gated.clock import rfc3339
from gated.config import MqttConfig
from gated.errors import StorageError
from gated.messages import STATUS, Message, Topics
from gated.model import new_id
from gated.mqtt_link import SESSION_TAKEN_OVER, connect_async, new_client, reason_value
from gated.store import Batch, OutboxRow, Store

log = logging.getLogger(__name__)

InboundHandler = Callable[[str, bytes], None]
StatusSnapshot = Callable[[], list[Message]]
BacklogWarning = Callable[[int, int], None]
LinkAlarm = Callable[[str, str], None]  # (alarm, text): the broker refused or displaced gated

HOUSEKEEPING_SECONDS = 5.0
PAGE_ROWS = 1000
MARK_BATCH = 5000  # acks marked delivered in one transaction at most...
MARK_SECONDS = 0.5  # ...and at least this often while messages flow
LINK_ALARM_EVERY_SECONDS = 60.0
# Closed by the broker this soon after connecting, this often in a minute: someone else is using
# gated's client id (mosquitto 2.0 closes the old connection without saying why).
SHORT_CONNECTION_SECONDS = 5.0
SHORT_CONNECTIONS_FOR_ALARM = 3
NO_ANSWER_WARNING_SECONDS = 5.0  # a broker that takes the connection but never answers it


@dataclass
class PublisherStats:
    published: int = 0
    acknowledged: int = 0
    connects: int = 0
    disconnects: int = 0
    replayed: int = 0
    stalls: int = 0
    dropped_readings: int = 0
    refused: int = 0  # publishes the broker answered with an error (MQTT 5: its ACL said no)
    takeovers: int = 0
    refused_subscriptions: int = 0


class MqttPublisher:
    """One paho client for the node: publishes the outbox, receives the hold commands."""

    def __init__(
        self,
        store: Store,
        config: MqttConfig,
        *,
        topics: Topics,
        boot: int,
        subscriptions: list[str],
        on_message: InboundHandler,
        status_snapshot: StatusSnapshot,
        max_pending_readings: int = 1_000_000,
        on_backlog_warning: BacklogWarning | None = None,
        on_link_alarm: LinkAlarm | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.topics = topics
        self.boot = boot
        self.subscriptions = subscriptions
        self.on_inbound = on_message
        self.status_snapshot = status_snapshot
        self.max_pending_readings = max_pending_readings
        self.on_backlog_warning = on_backlog_warning
        self.on_link_alarm = on_link_alarm
        self._link_alarmed: dict[str, float] = {}
        self._connect_failing = False
        self._connected_since = 0.0
        self._short_connections: deque[float] = deque(maxlen=SHORT_CONNECTIONS_FOR_ALARM)
        self.stats = PublisherStats()
        self.node_topic = topics.node_status(store.node)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._early_acks: set[int] = set()  # acks that beat the mid bookkeeping
        self._acked: list[int] = []
        self._sent_ahead: set[int] = set()  # seqs published out of order (births)
        self._replay: list[OutboxRow] = []
        self._page: deque[OutboxRow] = deque()
        self._last_mark = 0.0
        self._cursor = 0
        self._connected = threading.Event()
        self._needs_birth = False
        self._needs_replay = False
        self._disconnected_at: datetime | None = None
        self._last_heard = time.monotonic()
        self._next_housekeeping = 0.0
        self._backlog_warned = False
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()
        self.client = self._make_client()

    # -- paho set-up and callbacks (paho's network thread: never block here) ---------------
    def _make_client(self) -> mqtt.Client:
        self.client_id = self.config.client_id or f"gated-{self.store.site}-{self.store.node}"
        client = new_client(self.config, self.client_id, persistent=True)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        will = self.store.envelope(
            Message(self.node_topic, STATUS, {"state": "offline", "boot": self.boot}), None
        )
        client.will_set(self.node_topic, json.dumps(will, separators=(",", ":")).encode(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT broker %s:%s refused the connection: %s", self.config.host, self.config.port, reason
            )
            return
        self._connect_failing = False
        self._connected_since = time.monotonic()
        session_present = bool(getattr(flags, "session_present", False))
        log.info(
            "connected to MQTT broker %s:%s (session %s)",
            self.config.host,
            self.config.port,
            "resumed" if session_present else "new",
        )
        self.stats.connects += 1
        self._last_heard = time.monotonic()
        # Subscribe every time: a new session on the broker has no subscriptions.
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        with self._lock:
            self._needs_birth = True
            self._needs_replay = self._disconnected_at is not None and self.config.replay_seconds > 0
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        # paho retries by itself; say so once, not every second (TLS refused, nothing listening).
        if not self._connect_failing:
            log.warning(
                "cannot connect to the MQTT broker at %s:%s (%s); retrying",
                self.config.host,
                self.config.port,
                "TLS" if self.config.tls else "clear text",
            )
        self._connect_failing = True

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _props: Any) -> None:
        if any(getattr(reason, "is_failure", False) for reason in reasons):
            self.stats.refused_subscriptions += 1
            self._link_alarm(
                "subscription_refused",
                f"the broker refused gated's subscription to {', '.join(self.subscriptions)}: hold commands "
                "from customs cannot reach this node (check the broker's ACL for this node's identity)",
            )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        now = time.monotonic()
        if reason_value(reason) == SESSION_TAKEN_OVER:
            self._taken_over("another client connected to the broker with gated's client id")
        elif not self._stop.is_set():
            log.warning("MQTT connection lost: %s (reconnecting)", reason)
            if self._connected.is_set() and now - self._connected_since < SHORT_CONNECTION_SECONDS:
                self._short_connections.append(now)
                if (
                    len(self._short_connections) == SHORT_CONNECTIONS_FOR_ALARM
                    and now - self._short_connections[0] < 60
                ):
                    self._short_connections.clear()
                    self._taken_over(
                        f"the broker closed gated's connection {SHORT_CONNECTIONS_FOR_ALARM} times within "
                        f"{SHORT_CONNECTION_SECONDS:g} s of connecting: another client probably uses its id"
                    )
        self.stats.disconnects += 1
        if self._connected.is_set() or self._disconnected_at is None:
            self._disconnected_at = self.store.clock.now()
        self._connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        self._last_heard = time.monotonic()
        if getattr(reason, "is_failure", False):
            # Answered, so not sent again (it would be refused forever and hold up the rest).
            self.stats.refused += 1
            self._link_alarm(
                "publish_refused",
                f"the broker refused a message from gated ({reason}); {self.stats.refused} refused so far: "
                "check the broker's ACL for this node's identity",
            )
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early_acks.add(mid)
            else:
                self._acked.append(seq)
            # Wake the drain loop once the window is half free, not for every single ack.
            wake = len(self._inflight) <= self.config.max_inflight // 2
        if wake:
            self._wake.set()

    def _taken_over(self, why: str) -> None:
        self.stats.takeovers += 1
        self._link_alarm(
            "session_taken_over",
            f"{why} ({self.client_id!r}) and took gated's session: it may receive the hold commands meant "
            "for this node; the broker must tie client ids to identities (config/mosquitto/)",
        )

    def _link_alarm(self, alarm: str, text: str) -> None:
        log.error("%s", text)
        now = time.monotonic()
        if self.on_link_alarm is None or now - self._link_alarmed.get(alarm, -LINK_ALARM_EVERY_SECONDS) < (
            LINK_ALARM_EVERY_SECONDS
        ):
            return
        self._link_alarmed[alarm] = now
        self.on_link_alarm(alarm, text)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._last_heard = time.monotonic()
        self.on_inbound(message.topic, bytes(message.payload))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        connect_async(self.client, self.config, persistent=True)
        self.client.loop_start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._drain_loop, name="gated-publisher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def flush(self, timeout: float) -> bool:
        """Wait until every stored message is acknowledged (used at shutdown and by tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.outbox_depth() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    def stop(self, *, graceful_offline: bool = True, timeout: float = 5.0) -> None:
        """Stop publishing. A graceful stop announces the node offline (through the outbox)."""
        if graceful_offline and self._connected.is_set():
            offline = Message(self.node_topic, STATUS, {"state": "offline", "boot": self.boot}, retain=True)
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
    def alive(self, stall_seconds: float) -> bool:
        """The drain loop runs and has turned within ``stall_seconds``."""
        thread = self._thread
        return thread is not None and thread.is_alive() and time.monotonic() - self._beat < stall_seconds

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._beat = time.monotonic()
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._watch_for_silence()
                self._drain_once()
                self._housekeeping()
            except StorageError as error:
                log.error("outbox: %s", error)
                self._stop.wait(1.0)
            except Exception:  # the publisher must keep running whatever happens
                log.exception("publisher failed; continuing")
                self._stop.wait(1.0)

    def _watch_for_silence(self) -> None:
        """Close a connection that is open but silent, so paho reconnects."""
        if not self._connected.is_set():
            self._warn_no_answer()
            return
        heard = max(self._last_heard, _paho_last_heard(self.client))
        silent = time.monotonic() - heard
        if silent < 1.5 * self.config.keepalive:
            return
        self.stats.stalls += 1
        log.warning("MQTT broker silent for %.1f s: dropping the connection to reconnect", silent)
        self._disconnected_at = self.store.clock.now() - timedelta(seconds=silent)
        self._connected.clear()
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            try:
                # Shutting the socket makes paho's loop see the connection lost and reconnect;
                # nothing is lost: unacknowledged messages stay queued in paho and in the outbox.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as error:
                log.debug("shutdown of a dead socket: %s", error)

    def _warn_no_answer(self) -> None:
        """paho reports a broker it cannot reach (``_on_connect_fail``), but not one that takes the
        connection and never answers it: say so once, a few seconds after start."""
        waited = time.monotonic() - self._started
        if self._connect_failing or self.stats.connects or waited < NO_ANSWER_WARNING_SECONDS:
            return
        log.warning(
            "no answer from the MQTT broker at %s:%s after %.0f s; still trying",
            self.config.host,
            self.config.port,
            waited,
        )
        self._connect_failing = True

    def _drain_once(self) -> None:
        with self._lock:
            needs_birth, self._needs_birth = self._needs_birth, False
            needs_replay, self._needs_replay = self._needs_replay, False
            # Marking rows delivered costs a transaction; do it in bulk. A mark lost in a crash
            # only means the message is sent once more, which consumers drop by id.
            now = time.monotonic()
            due = (
                len(self._acked) >= MARK_BATCH or not self._inflight or now - self._last_mark >= MARK_SECONDS
            )
            acked: list[int] = []
            if due and self._acked:
                acked, self._acked = self._acked, []
                self._last_mark = now
        if acked:
            self.store.mark_delivered(acked)
            self.stats.acknowledged += len(acked)
            with self._lock:
                self._sent_ahead.difference_update(acked)
        if needs_birth:
            self._publish_birth()
        if needs_replay:
            lost_at = self._disconnected_at or self.store.clock.now()
            since = lost_at - timedelta(seconds=self.config.replay_seconds)
            self._replay = self.store.recently_delivered(since, 1_000_000)
            if self._replay:
                log.warning(
                    "connection was lost: sending again the %d messages the broker acknowledged "
                    "in the %d s before",
                    len(self._replay),
                    self.config.replay_seconds,
                )
        while not self._stop.is_set():
            with self._lock:
                room = self.config.max_inflight - len(self._inflight)
            if room <= 0:
                return
            if self._replay:
                batch, self._replay = self._replay[:room], self._replay[room:]
                for row in batch:
                    self._publish(row.seq, row.topic, row.payload, row.qos, row.retain)
                self.stats.replayed += len(batch)
                continue
            if not self._page:
                # Read ahead a page: the rows past the cursor change only by our own acks.
                self._page.extend(self.store.pending(self._cursor, PAGE_ROWS))
                if not self._page:
                    return
            while room > 0 and self._page:
                row = self._page.popleft()
                self._cursor = row.seq
                if row.seq in self._sent_ahead:
                    continue
                self._publish(row.seq, row.topic, row.payload, row.qos, row.retain)
                room -= 1

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
            STATUS,
            {"id": new_id(), "state": "online", "boot": self.boot, "since": rfc3339(self.store.clock.now())},
            retain=True,
        )
        rows = self.store.write(Batch(messages=[birth, *self.status_snapshot()]))
        with self._lock:
            self._sent_ahead.update(row.seq for row in rows)
        for row in rows:
            self._publish(row.seq, row.topic, row.payload, row.qos, row.retain)

    def _housekeeping(self) -> None:
        """Every few seconds: forget old deliveries, and keep the reading backlog within its cap."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + HOUSEKEEPING_SECONDS
        self.store.purge_delivered(self.store.clock.now() - timedelta(seconds=self.config.replay_seconds))
        waiting = self.store.pending_readings()
        warn_at = int(self.max_pending_readings * 0.8)
        if waiting >= warn_at and not self._backlog_warned:
            self._backlog_warned = True
            log.warning(
                "%d reading messages wait for the broker; beyond %d the oldest are dropped",
                waiting,
                self.max_pending_readings,
            )
            if self.on_backlog_warning is not None:
                self.on_backlog_warning(waiting, self.max_pending_readings)
        elif waiting < warn_at // 2:
            self._backlog_warned = False
        if waiting > self.max_pending_readings:
            dropped = self.store.drop_oldest_pending_readings(self.max_pending_readings)
            self.stats.dropped_readings += dropped
            log.error("dropped the %d oldest reading messages waiting for the broker", dropped)

    def publish_volatile(self, messages: list[Message]) -> None:
        """Publish without storing, with ``seq`` null: only for telling the world that storage
        itself has failed (nothing can be stored then, so nothing can wait in the outbox)."""
        for message in messages:
            payload = json.dumps(self.store.envelope(message, None), separators=(",", ":")).encode()
            self.client.publish(message.topic, payload, qos=message.qos, retain=message.retain)

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)


def _paho_last_heard(client: mqtt.Client) -> float:
    """When paho last received bytes from the broker (paho pings on an idle link, so on a live
    connection this is never much older than the keepalive). Not public in paho: 0.0 if absent."""
    value = getattr(client, "_last_bytes_received", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0
