"""Durable storage of what gated learns and says: readings, visits, decisions, audit records, and
the outbox of MQTT messages waiting for the broker's acknowledgement.

Everything one step of the pipeline produces is written in ONE transaction before anything is
published or actuated, and each outgoing message gets its ``seq`` here, from a counter stored in
the same transaction, so ``seq`` goes up by exactly one per message across restarts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gated.audit import canonical, chain
from gated.clock import Clock, SystemClock, rfc3339
from gated.db import UTCDateTime, metadata
from gated.errors import ContainerNumberError, StorageError
from gated.iso6346 import ContainerNumber
from gated.messages import ALARM, READING, Message
from gated.model import Decision, Reading, Source, Visit, new_id
from gated.redact import error_text, url_secrets

log = logging.getLogger(__name__)

counters = Table(
    "node_counters",
    metadata,
    # A node's own counters are named "<name>@<node>" (boot, seq, dropped_readings); the rest
    # (holds_active) belong to the whole database.
    Column("name", String(100), primary_key=True),
    Column("value", Integer, nullable=False),
)
NODE_COUNTERS = ("boot", "seq", "dropped_readings")
"""Counters each node keeps for itself when several share a database."""
LEGACY_NODE = ""
"""The ``node`` of outbox rows stored before nodes had their own: the first node to start adopts them."""

outbox = Table(
    "outbox",
    metadata,
    # Each node has its own outbox and its own gap-free seq (CONTRACT section 4) in one database.
    Column("node", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("topic", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("qos", Integer, nullable=False),
    Column("retain", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Set when the broker acknowledged the message. Delivered rows are kept for a while so they
    # can be sent again if the broker turns out to have lost them (it restarted without them).
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("is_reading", Integer, nullable=False, default=0),
)
# What the publisher scans: undelivered rows in seq order.
Index(
    "ix_outbox_pending",
    outbox.c.node,
    outbox.c.seq,
    sqlite_where=outbox.c.delivered_at.is_(None),
    postgresql_where=outbox.c.delivered_at.is_(None),
)
Index("ix_outbox_delivered", outbox.c.delivered_at)

readings = Table(
    "readings",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("lane", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("device", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("visit", String(40), nullable=True, index=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    # The number an OCR reading read (normalised), so `gated query` finds reads nobody decided on.
    Column("container", String(11), nullable=True),
)

visits = Table(
    "visits",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("lane", String(64), nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("close_cause", String(16), nullable=True),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("visit", String(40), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("lane", String(64), nullable=False),
    Column("container", String(11), nullable=True, index=True),
    Column("outcome", String(24), nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    # 0: the daemon's own decision; 1, 2, ...: a supervisor's overrides of it, in order.
    Column("revision", Integer, nullable=False, server_default="0"),
    # One decision per container slot of a visit (and revision), even when a restart replays it.
    UniqueConstraint("visit", "slot", "revision", name="uq_decision_visit_slot_revision"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(128), nullable=True),
    Column("detail", Text, nullable=False),
    # The hash chain (gated/audit.py): position, the hash of the record before, this one's hash.
    Column("seq", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    UniqueConstraint("seq", name="uq_audit_seq"),
)

# Alarms put before the officers (gated/alerts.py): one row per alarm, or per run of the same alarm
# on the same lane, device, box and visit while it is not acknowledged (``repeats`` counts the run).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(40), primary_key=True),  # the first alarm message's id
    Column("node", String(64), nullable=False),
    Column("lane", String(64), nullable=False),
    Column("alarm", String(32), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("text", Text, nullable=False),
    Column("device", String(64), nullable=True),
    Column("container", String(11), nullable=True),
    Column("visit", String(40), nullable=True),
    Column("dedupe_key", String(200), nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("repeats", Integer, nullable=False, server_default="1"),
    # 0: before the officers on duty; 1, 2, ...: escalated that many times (nobody acknowledged).
    Column("level", Integer, nullable=False, server_default="0"),
    Column("escalated_at", UTCDateTime, nullable=True),
    # The last level announced on the webhook (-1: not yet raised there).
    Column("announced", Integer, nullable=False, server_default="-1"),
    Column("acked_at", UTCDateTime, nullable=True),
    Column("acked_by", String(64), nullable=True),
    Column("ack_note", Text, nullable=True),
)
Index("ix_alerts_open", alerts.c.acked_at, alerts.c.raised_at)
Index("ix_alerts_dedupe", alerts.c.dedupe_key, alerts.c.acked_at)

# Webhook events waiting for the receiver's 2xx, per node (each node sends what it queued).
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", String(40), primary_key=True),  # the event's id, for the receiver's deduplication
    Column("node", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),  # the node's order of events: delivered in it
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
)
Index(
    "ix_webhook_pending",
    webhook_outbox.c.node,
    webhook_outbox.c.delivered_at,
    webhook_outbox.c.seq,
)

Index("ix_readings_lane_ts", readings.c.lane, readings.c.ts)
Index("ix_readings_container_ts", readings.c.container, readings.c.ts)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str
    action: str
    subject: str | None
    detail: dict[str, Any]
    ts: datetime
    id: str = field(default_factory=new_id)


@dataclass
class Batch:
    """Everything one pipeline step wants stored together, atomically."""

    readings: list[Reading] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    decisions: list[tuple[Decision, int]] = field(default_factory=list)  # (decision, slot)
    audit: list[AuditRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    overrides: list[tuple[Decision, int, int]] = field(default_factory=list)  # (decision, slot, revision)

    def __bool__(self) -> bool:
        return bool(
            self.readings or self.visits or self.decisions or self.audit or self.messages or self.overrides
        )


def record_alerts(conn: Connection, node: str, messages: Sequence[Message], now: datetime) -> None:
    """An alert for each alarm in ``messages``, inside ``conn``'s transaction (the alarm and its
    alert are stored together). The same alarm again on the same lane, device and box while its
    alert is not acknowledged counts as a repeat of that alert, so a flapping device is one alert
    (each truck's alarm is its own: the visit is part of the key)."""
    for message in messages:
        body = message.body
        lane, alarm = str(body.get("lane", ""))[:64], str(body.get("alarm", ""))[:32]
        device, container = body.get("device"), body.get("container")
        key = f"{lane}|{alarm}|{device or ''}|{container or ''}|{body.get('visit') or ''}"[:200]
        repeated = conn.execute(
            update(alerts)
            .where((alerts.c.dedupe_key == key) & alerts.c.acked_at.is_(None))
            .values(repeats=alerts.c.repeats + 1, last_at=now, text=str(body.get("text", ""))[:2000])
        ).rowcount
        if repeated:
            continue
        conn.execute(
            insert(alerts).values(
                id=str(body.get("id") or new_id())[:40],
                node=node,
                lane=lane,
                alarm=alarm,
                severity=str(body.get("severity", "high"))[:8],
                text=str(body.get("text", ""))[:2000],
                device=None if device is None else str(device)[:64],
                container=None if container is None else str(container)[:11],
                visit=None if body.get("visit") is None else str(body["visit"])[:40],
                dedupe_key=key,
                raised_at=now,
                last_at=now,
                repeats=1,
                level=0,
                announced=-1,
            )
        )


def insert_audit(conn: Connection, records: Sequence[AuditRecord]) -> None:
    """Add audit records inside ``conn``'s transaction (the change they record is in the same one),
    each chained to the one before (``gated.audit``)."""
    if not records:
        return
    details = [_dumps(a.detail) for a in records]
    bodies = [
        canonical(a.id, a.ts, a.actor, a.action, a.subject, detail)
        for a, detail in zip(records, details, strict=True)
    ]
    links = chain(conn, bodies)
    conn.execute(
        insert(audit),
        [
            {
                "id": a.id,
                "ts": a.ts,
                "actor": a.actor,
                "action": a.action,
                "subject": a.subject,
                "detail": detail,
                "seq": link.seq,
                "prev_hash": link.prev_hash,
                "hash": link.hash,
            }
            for a, detail, link in zip(records, details, links, strict=True)
        ],
    )


def container_read(source: str, value: object) -> str | None:
    """The container number a reading read, as stored for lookups (normalised, shape checked,
    any check digit); None for other readings and for text that is no container number."""
    if source != Source.CONTAINER_NUMBER or not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(ContainerNumber.parse(value, require_valid_check_digit=False))
    except ContainerNumberError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Store:
    """The daemon's durable state. Thread-safe: one writer at a time inside this process."""

    def __init__(self, engine: Engine, *, site: str, node: str, clock: Clock | None = None) -> None:
        self.engine = engine
        self.site = site
        self.node = node
        self.clock: Clock = clock or SystemClock()
        self._write_lock = threading.Lock()
        # Told after a commit that stored alarms (the alert desk looks at once, not at its next tick).
        self.alarm_listeners: list[Callable[[], None]] = []

    # -- counters ---------------------------------------------------------------------------
    def _counter_name(self, name: str) -> str:
        return f"{name}@{self.node}" if name in NODE_COUNTERS else name

    def _counter(self, conn: Connection, name: str) -> int:
        key = self._counter_name(name)
        value = conn.execute(select(counters.c.value).where(counters.c.name == key)).scalar()
        if value is None:
            conn.execute(insert(counters).values(name=key, value=0))
            return 0
        return int(value)

    def _set_counter(self, conn: Connection, name: str, value: int) -> None:
        key = self._counter_name(name)
        conn.execute(update(counters).where(counters.c.name == key).values(value=value))

    def next_boot(self) -> int:
        """Count one more start of this node (carried in the birth message). The first node to
        start on a database from before nodes had their own counters adopts its counters and
        outbox, so its boot and seq go on from where they were."""
        with self._write_lock, self._begin() as conn:
            self._adopt_legacy(conn)
            boot = self._counter(conn, "boot") + 1
            self._set_counter(conn, "boot", boot)
            return boot

    def continue_seq(self, seq: int) -> None:
        """Go on from ``seq``: the node's next message gets at least ``seq + 1`` (its records were
        stored elsewhere up to there: gated.failover)."""
        try:
            with self._write_lock, self.engine.begin() as conn:
                self.continue_seq_in(conn, seq)
        except SQLAlchemyError as error:
            raise StorageError(f"cannot move the seq on: {self._failure(error)}") from error

    def continue_seq_in(self, conn: Connection, seq: int) -> None:
        if seq > self._counter(conn, "seq"):
            self._set_counter(conn, "seq", seq)

    def _adopt_legacy(self, conn: Connection) -> None:
        legacy = (
            conn.execute(select(counters.c.name).where(counters.c.name.in_(NODE_COUNTERS))).scalars().all()
        )
        if not legacy:
            return
        for name in legacy:
            own = self._counter_name(name)
            if conn.execute(select(counters.c.name).where(counters.c.name == own)).first() is not None:
                log.warning("the database's earlier counter %r is left: node %s has its own", name, self.node)
                continue
            conn.execute(update(counters).where(counters.c.name == name).values(name=own))
        moved = conn.execute(
            update(outbox).where(outbox.c.node == LEGACY_NODE).values(node=self.node)
        ).rowcount
        log.info("node %s adopted the database's earlier counters and %d outbox messages", self.node, moved)

    # -- writing ----------------------------------------------------------------------------
    def _begin(self) -> Any:
        try:
            return self.engine.begin()
        except SQLAlchemyError as error:
            raise StorageError(f"cannot open a transaction: {self._failure(error)}") from error

    def envelope(self, message: Message, seq: int | None) -> dict[str, Any]:
        """The full payload: the message body inside the CONTRACT envelope."""
        body = message.body
        payload: dict[str, Any] = {
            "schema": message.schema,
            "id": body.get("id") or new_id(),
            "site": self.site,
            "node": self.node,
            "seq": seq,
            "ts": body.get("ts") or rfc3339(self.clock.now()),
        }
        payload.update((key, value) for key, value in body.items() if key not in payload)
        return payload

    def write(self, batch: Batch, *, prepare: Callable[[Connection], Batch] | None = None) -> list[OutboxRow]:
        """Store the whole batch in one transaction; return the outbox rows it queued. ``prepare``
        runs first in the same transaction and adds to the batch what it returns (a hold command
        applied together with its acknowledgement and audit record).

        Raises ``StorageError`` when nothing could be stored; then nothing of the batch was."""
        if not batch and prepare is None:
            return []
        now = self.clock.now()
        try:
            with self._write_lock, self.engine.begin() as conn:
                if prepare is not None:
                    extra = prepare(conn)
                    batch = Batch(
                        readings=[*batch.readings, *extra.readings],
                        visits=[*batch.visits, *extra.visits],
                        decisions=[*batch.decisions, *extra.decisions],
                        audit=[*batch.audit, *extra.audit],
                        messages=[*batch.messages, *extra.messages],
                        overrides=[*batch.overrides, *extra.overrides],
                    )
                rows: list[OutboxRow] = []
                payloads: dict[str, str] = {}  # message id -> JSON, reused as the reading's record
                if batch.messages:
                    seq = self._counter(conn, "seq")
                    values = []
                    for message in batch.messages:
                        seq += 1
                        envelope = self.envelope(message, seq)
                        payload = _dumps(envelope)
                        payloads[envelope["id"]] = payload
                        values.append(
                            {
                                "node": self.node,
                                "seq": seq,
                                "topic": message.topic,
                                "payload": payload,
                                "qos": message.qos,
                                "retain": int(message.retain),
                                "created_at": now,
                                "delivered_at": None,
                                "is_reading": int(message.schema == READING),
                            }
                        )
                        rows.append(
                            OutboxRow(seq, message.topic, payload.encode(), message.qos, message.retain)
                        )
                    conn.execute(insert(outbox), values)
                    self._set_counter(conn, "seq", seq)
                if batch.readings:
                    conn.execute(
                        insert(readings),
                        [
                            {
                                "id": r.id,
                                "lane": r.lane,
                                "kind": str(r.kind),
                                "device": r.device,
                                "source": r.source,
                                "visit": r.visit,
                                "ts": r.ts,
                                # What was published, when it was (encoding it once is half the cost).
                                "body": payloads.get(r.id) or _dumps(r.body()),
                                "container": container_read(r.source, r.value),
                            }
                            for r in batch.readings
                        ],
                    )
                for visit in batch.visits:
                    self._upsert_visit(conn, visit)
                made = [(d, slot, 0) for d, slot in batch.decisions] + batch.overrides
                if made:
                    conn.execute(
                        insert(decisions),
                        [
                            {
                                "id": d.id,
                                "visit": d.visit,
                                "slot": slot,
                                "revision": revision,
                                "lane": d.lane,
                                "container": d.container,
                                "outcome": str(d.outcome),
                                "decided_at": d.decided_at,
                                "body": payloads.get(d.id) or _dumps(d.body()),
                            }
                            for d, slot, revision in made
                        ],
                    )
                insert_audit(conn, batch.audit)
                raised = [m for m in batch.messages if m.schema == ALARM]
                record_alerts(conn, self.node, raised, now)
        except SQLAlchemyError as error:
            raise StorageError(f"cannot store {self._describe(batch)}: {self._failure(error)}") from error
        if raised:
            for listener in self.alarm_listeners:
                listener()
        return rows

    def _failure(self, error: SQLAlchemyError) -> str:
        return error_text(error, url_secrets(self.engine.url))

    @staticmethod
    def _describe(batch: Batch) -> str:
        return (
            f"{len(batch.readings)} readings, {len(batch.decisions)} decisions, "
            f"{len(batch.audit)} audit records, {len(batch.messages)} messages"
        )

    def _upsert_visit(self, conn: Connection, visit: Visit) -> None:
        values = {
            "lane": visit.lane,
            "trigger": visit.trigger,
            "opened_at": visit.opened_at,
            "closed_at": visit.closed_at,
            "close_cause": visit.close_cause,
        }
        changed = conn.execute(update(visits).where(visits.c.id == visit.id).values(**values)).rowcount
        if not changed:
            conn.execute(insert(visits).values(id=visit.id, **values))

    # -- the outbox -------------------------------------------------------------------------
    @property
    def _mine(self) -> Any:
        """This node's rows of the outbox (other nodes on the database have their own)."""
        return outbox.c.node == self.node

    def pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """Undelivered messages with seq > ``after_seq``, oldest first."""
        return self._select_rows(
            self._mine & outbox.c.delivered_at.is_(None) & (outbox.c.seq > after_seq),
            limit,
            "read the outbox",
        )

    def recently_delivered(self, since: datetime, limit: int) -> list[OutboxRow]:
        """Messages the broker acknowledged since ``since``: sent again when the broker comes back
        without our session, since it may have lost what it had acknowledged but not yet passed on."""
        return self._select_rows(
            self._mine & (outbox.c.delivered_at >= since), limit, "read recent deliveries"
        )

    def _select_rows(self, condition: Any, limit: int, what: str) -> list[OutboxRow]:
        try:
            with self.engine.connect() as conn:
                result = conn.execute(
                    select(outbox.c.seq, outbox.c.topic, outbox.c.payload, outbox.c.qos, outbox.c.retain)
                    .where(condition)
                    .order_by(outbox.c.seq)
                    .limit(limit)
                )
                return [
                    OutboxRow(int(seq), topic, payload.encode(), int(qos), bool(retain))
                    for seq, topic, payload, qos, retain in result
                ]
        except SQLAlchemyError as error:
            raise StorageError(f"cannot {what}: {self._failure(error)}") from error

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        """The broker acknowledged these. Acks come mostly in order, so runs of consecutive seqs
        are marked with one range update each."""
        chosen = sorted(set(seqs))
        if not chosen:
            return
        now = self.clock.now()
        runs: list[tuple[int, int]] = []
        for seq in chosen:
            if runs and seq == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq, seq))
        try:
            with self._write_lock, self.engine.begin() as conn:
                for first, last in runs:
                    conn.execute(
                        update(outbox)
                        .where(
                            self._mine & outbox.c.seq.between(first, last) & outbox.c.delivered_at.is_(None)
                        )
                        .values(delivered_at=now)
                    )
        except SQLAlchemyError as error:
            failure = self._failure(error)
            raise StorageError(f"cannot mark {len(chosen)} messages delivered: {failure}") from error

    def purge_delivered(self, before: datetime) -> int:
        """Forget outbox rows delivered before ``before`` (the records stay in their own tables)."""
        try:
            with self._write_lock, self.engine.begin() as conn:
                return int(
                    conn.execute(
                        delete(outbox).where(
                            self._mine & outbox.c.delivered_at.is_not(None) & (outbox.c.delivered_at < before)
                        )
                    ).rowcount
                )
        except SQLAlchemyError as error:
            raise StorageError(f"cannot purge delivered messages: {self._failure(error)}") from error

    def drop_oldest_pending_readings(self, keep: int) -> int:
        """Enforce the cap on reading messages waiting for the broker: drop the oldest beyond
        ``keep`` and count them. Decisions, alarms, status and audit messages are never dropped."""
        try:
            with self._write_lock, self.engine.begin() as conn:
                waiting = int(
                    conn.execute(
                        select(func.count())
                        .select_from(outbox)
                        .where(self._mine & outbox.c.delivered_at.is_(None) & (outbox.c.is_reading == 1))
                    ).scalar()
                    or 0
                )
                excess = waiting - keep
                if excess <= 0:
                    return 0
                oldest = (
                    select(outbox.c.seq)
                    .where(self._mine & outbox.c.delivered_at.is_(None) & (outbox.c.is_reading == 1))
                    .order_by(outbox.c.seq)
                    .limit(excess)
                )
                dropped = int(
                    conn.execute(delete(outbox).where(self._mine & outbox.c.seq.in_(oldest))).rowcount
                )
                total = self._counter(conn, "dropped_readings") + dropped
                self._set_counter(conn, "dropped_readings", total)
                return dropped
        except SQLAlchemyError as error:
            raise StorageError(f"cannot enforce the reading cap: {self._failure(error)}") from error

    def counter(self, name: str) -> int:
        with self.engine.connect() as conn:
            key = self._counter_name(name)
            value = conn.execute(select(counters.c.value).where(counters.c.name == key)).scalar()
            return int(value or 0)

    def outbox_depth(self) -> int:
        """Messages not yet acknowledged by the broker."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(outbox)
                    .where(self._mine & outbox.c.delivered_at.is_(None))
                ).scalar()
                or 0
            )

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        """Messages not yet acknowledged by the broker, and when the oldest of them was stored."""
        with self.engine.connect() as conn:
            pending = self._mine & outbox.c.delivered_at.is_(None)
            depth = conn.execute(select(func.count()).select_from(outbox).where(pending)).scalar()
            # The oldest by seq: the pending index gives it without a scan.
            oldest = conn.execute(
                select(outbox.c.created_at).where(pending).order_by(outbox.c.seq).limit(1)
            ).scalar()
            return int(depth or 0), oldest

    def pending_readings(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(outbox)
                    .where(self._mine & outbox.c.delivered_at.is_(None) & (outbox.c.is_reading == 1))
                ).scalar()
                or 0
            )

    # -- reading back ------------------------------------------------------------------------
    def decision_row(self, decision_id: str) -> Any:
        """A stored decision (its visit, slot, revision, outcome, body), or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(decisions).where(decisions.c.id == decision_id)).one_or_none()

    def latest_decision(self, visit: str, slot: int) -> Any:
        """The last word on one container of a visit: its highest revision."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(decisions)
                .where((decisions.c.visit == visit) & (decisions.c.slot == slot))
                .order_by(decisions.c.revision.desc())
                .limit(1)
            ).one_or_none()

    def last_visit_of(self, container: str) -> str | None:
        """The visit of the latest decision about ``container``, or None."""
        with self.engine.connect() as conn:
            found: str | None = conn.execute(
                select(decisions.c.visit)
                .where(decisions.c.container == container)
                .order_by(decisions.c.decided_at.desc())
                .limit(1)
            ).scalar()
        return found

    def visit(self, visit_id: str) -> Visit | None:
        """A stored visit with its readings, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(visits).where(visits.c.id == visit_id)).one_or_none()
            if row is None:
                return None
            bodies = conn.execute(
                select(readings.c.body).where(readings.c.visit == row.id).order_by(readings.c.ts)
            )
            items = tuple(Reading.from_body(json.loads(body)) for (body,) in bodies)
        return Visit(
            id=row.id,
            lane=row.lane,
            opened_at=row.opened_at,
            trigger=row.trigger,
            readings=items,
            closed_at=row.closed_at,
            close_cause=row.close_cause,
        )

    def open_visits(self) -> list[Visit]:
        """Visits that were open when the daemon stopped (never closed, never decided), with
        their readings, so they can be decided after a restart instead of forgotten."""
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(select(visits).where(visits.c.closed_at.is_(None)).order_by(visits.c.opened_at))
            )
            found = []
            for row in rows:
                bodies = conn.execute(
                    select(readings.c.body).where(readings.c.visit == row.id).order_by(readings.c.ts)
                )
                items = tuple(Reading.from_body(json.loads(body)) for (body,) in bodies)
                found.append(
                    Visit(
                        id=row.id, lane=row.lane, opened_at=row.opened_at, trigger=row.trigger, readings=items
                    )
                )
            return found
