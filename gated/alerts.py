"""Alerts: every alarm put before the officers on duty until one of them acknowledges it.

An alarm is stored with its alert in the transaction that stores the alarm (``store.record_alerts``).
The desk shows the open ones (the console pushes them to every page), takes acknowledgements
(audited before they take effect), and escalates an alert nobody acknowledged within
``acknowledge_seconds``: to the supervisors, then to everyone, up to ``escalation_levels`` times.
Every raise, escalation and acknowledgement is queued for the webhook in the same transaction as
the change, and ``WebhookSender`` delivers the queue at least once (each event has its own id).

Several nodes may share one database: an escalation is a compare-and-set on the alert's level, so
exactly one node makes it and queues its webhook event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import Clock, rfc3339
from gated.config import AlertsConfig
from gated.errors import GatedError, StorageError
from gated.messages import Message
from gated.model import new_id
from gated.redact import error_text, printable, url_secrets
from gated.store import AuditRecord, alerts, insert_audit, record_alerts, webhook_outbox

log = logging.getLogger(__name__)

ALERT_EVENT = "gated.alert-event/1"
SHOWN_ACKNOWLEDGED = timedelta(hours=1)
"""Acknowledged alerts stay on the desk this long (who took them, and when)."""
SHOWN_MAX = 200
SNAPSHOT_KEPT = timedelta(seconds=10)
LEVEL_NAMES = ("officers on duty", "supervisors", "everyone")
WEBHOOK_BATCH = 20
WEBHOOK_BACKOFF_MAX = 300.0
WEBHOOK_KEPT = timedelta(days=7)
"""Delivered webhook events are kept this long (to look up what a receiver was told)."""
ESCALATOR = "gated:alerts"


class AlertError(GatedError):
    """An acknowledgement that cannot be made (no such alert, already acknowledged)."""


def level_name(level: int) -> str:
    return LEVEL_NAMES[min(level, len(LEVEL_NAMES) - 1)]


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    node: str
    lane: str
    alarm: str
    severity: str
    text: str
    device: str | None
    container: str | None
    visit: str | None
    raised_at: datetime
    last_at: datetime
    repeats: int
    level: int
    escalated_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    ack_note: str | None

    @classmethod
    def of(cls, row: Any) -> Alert:
        return cls(**{name: getattr(row, name) for name in cls.__slots__})

    def to_json(self) -> dict[str, Any]:
        shown = {name: getattr(self, name) for name in self.__slots__}
        return {
            **{
                name: rfc3339(value) if isinstance(value, datetime) else value
                for name, value in shown.items()
            },
            "level_name": level_name(self.level),
        }


class AlertDesk:
    """The alerts of one database, as one node sees and escalates them."""

    def __init__(self, engine: Engine, clock: Clock, settings: AlertsConfig, *, site: str, node: str) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.site = site
        self.node = node
        self.version = 0  # goes up whenever what ``snapshot`` shows may have changed
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._shown: list[dict[str, Any]] = []
        self._stale = True
        self._loaded_at = datetime.min.replace(tzinfo=UTC)

    # -- what the console shows ------------------------------------------------------------------
    def changed(self) -> None:
        """Something stored alarms (a store listener) or changed an alert: look again."""
        with self._lock:
            self._stale = True
            self.version += 1
        self.wake.set()

    def snapshot(self) -> list[dict[str, Any]]:
        """Open alerts (escalated, then high, then newest first), then those acknowledged within
        the last hour."""
        now = self.clock.now()
        with self._lock:
            # Looked at again when told, and now and then (acknowledged ones leave after an hour).
            if not self._stale and now - self._loaded_at < SNAPSHOT_KEPT:
                return self._shown
            self._stale, self._loaded_at = False, now
        try:
            shown = [alert.to_json() for alert in self.alerts()]
        except StorageError as error:
            log.warning("cannot read the alerts: %s", error)
            with self._lock:
                self._stale = True
            return self._shown
        with self._lock:
            self._shown = shown
        return shown

    def alerts(self) -> list[Alert]:
        since = self.clock.now() - SHOWN_ACKNOWLEDGED
        query = (
            select(alerts)
            .where(or_(alerts.c.acked_at.is_(None), alerts.c.acked_at >= since))
            # What needs someone first: open, escalated, high, newest.
            .order_by(
                alerts.c.acked_at.is_not(None),
                alerts.c.level.desc(),
                case((alerts.c.severity == "high", 0), else_=1),
                alerts.c.raised_at.desc(),
            )
            .limit(SHOWN_MAX)
        )
        with self._storage("read the alerts"), self.engine.connect() as conn:
            return [Alert.of(row) for row in conn.execute(query)]

    def record_direct(self, messages: list[Message]) -> bool:
        """Alerts for alarms published without the outbox (storage failed, the node fails): stored
        when the database still takes them; False when it does not (the lanes are closed anyway,
        and their status says why)."""
        try:
            with self._storage("store the alerts"), self.engine.begin() as conn:
                record_alerts(conn, self.node, messages, self.clock.now())
        except StorageError as error:
            log.warning("alerts of alarms sent directly not stored: %s", error)
            return False
        self.changed()
        return True

    # -- an officer acknowledges -----------------------------------------------------------------
    def acknowledge(self, alert_id: str, *, actor: str, note: str = "") -> Alert:
        """``actor`` took the alert: audited, and the webhook told, in the same transaction."""
        now = self.clock.now()
        with self._storage("acknowledge the alert"), self.engine.begin() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id[:40])).one_or_none()
            if row is None:
                raise AlertError(f"no alert {alert_id[:40]!r}")
            if row.acked_at is not None:
                raise AlertError(
                    f"alert {row.id} was acknowledged by {row.acked_by} at {rfc3339(row.acked_at)}"
                )
            insert_audit(
                conn,
                [
                    AuditRecord(
                        actor=actor[:64],
                        action="alert_ack",
                        subject=row.id,
                        detail={"alarm": row.alarm, "lane": row.lane, "level": row.level, "note": note[:500]},
                        ts=now,
                    )
                ],
            )
            taken = conn.execute(
                update(alerts)
                .where((alerts.c.id == row.id) & alerts.c.acked_at.is_(None))
                .values(acked_at=now, acked_by=actor[:64], ack_note=note[:500] or None)
            ).rowcount
            if not taken:
                raise AlertError(f"alert {row.id} was acknowledged meanwhile")
            alert = Alert.of(conn.execute(select(alerts).where(alerts.c.id == row.id)).one())
            self._announce(conn, alert, "acknowledged", now)
        log.info(
            "alert %s (%s on %s) acknowledged by %s", alert.id, alert.alarm, alert.lane, printable(actor)
        )
        self.changed()
        return alert

    # -- the desk's own clock work ---------------------------------------------------------------
    def tick(self) -> int:
        """Escalate what is due and queue the webhook's raise events; how many alerts changed."""
        now = self.clock.now()
        due = now - timedelta(seconds=self.settings.acknowledge_seconds)
        changed = 0
        with self._storage("escalate the alerts"), self.engine.begin() as conn:
            if self.settings.webhook_url is not None:
                fresh = conn.execute(
                    select(alerts).where(alerts.c.announced < 0).order_by(alerts.c.raised_at).limit(100)
                ).all()
                for row in fresh:
                    if self._claim(conn, row, announced=0):
                        self._announce(conn, Alert.of(row), "raised", now)
                        changed += 1
            overdue = conn.execute(
                select(alerts)
                .where(
                    alerts.c.acked_at.is_(None)
                    & (alerts.c.level < self.settings.escalation_levels)
                    & or_(
                        and_(alerts.c.escalated_at.is_(None), alerts.c.raised_at <= due),
                        alerts.c.escalated_at <= due,
                    )
                )
                .order_by(alerts.c.raised_at)
                .limit(100)
            ).all()
            for row in overdue:
                level = row.level + 1
                taken = conn.execute(
                    update(alerts)
                    .where(
                        (alerts.c.id == row.id) & (alerts.c.level == row.level) & alerts.c.acked_at.is_(None)
                    )
                    .values(level=level, escalated_at=now, announced=level)
                ).rowcount
                if not taken:
                    continue  # another node escalated it (or someone acknowledged it) meanwhile
                insert_audit(
                    conn,
                    [
                        AuditRecord(
                            actor=ESCALATOR,
                            action="alert_escalated",
                            subject=row.id,
                            detail={
                                "alarm": row.alarm,
                                "lane": row.lane,
                                "level": level,
                                "to": level_name(level),
                            },
                            ts=now,
                        )
                    ],
                )
                alert = Alert.of(conn.execute(select(alerts).where(alerts.c.id == row.id)).one())
                self._announce(conn, alert, "escalated", now)
                log.warning(
                    "alert %s (%s on %s) not acknowledged within %.0f s: escalated to %s",
                    row.id,
                    row.alarm,
                    row.lane,
                    self.settings.acknowledge_seconds,
                    level_name(level),
                )
                changed += 1
        if changed:
            self.changed()
        return changed

    def _claim(self, conn: Connection, row: Any, *, announced: int) -> bool:
        return bool(
            conn.execute(
                update(alerts)
                .where((alerts.c.id == row.id) & (alerts.c.announced < announced))
                .values(announced=announced)
            ).rowcount
        )

    def _announce(self, conn: Connection, alert: Alert, event: str, now: datetime) -> None:
        if self.settings.webhook_url is None:
            return
        event_id = new_id()
        payload = {
            "schema": ALERT_EVENT,
            "id": event_id,
            "site": self.site,
            "node": self.node,
            "ts": rfc3339(now),
            "event": event,
            "alert": alert.to_json(),
        }
        last = conn.execute(
            select(func.max(webhook_outbox.c.seq)).where(webhook_outbox.c.node == self.node)
        ).scalar()
        conn.execute(
            insert(webhook_outbox).values(
                id=event_id,
                node=self.node,
                seq=(last or 0) + 1,
                payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Escalate on time until ``stop``; a failure is logged and tried again, never fatal (the
        lanes decide without the desk)."""
        failures = 0
        while not stop.is_set():
            try:
                self.tick()
                failures = 0
            except GatedError as error:
                failures += 1
                if failures % 60 == 1:  # the database down: said once a minute, not every second
                    log.warning("alerts: %s", error)
            except Exception:
                log.exception("alerts: unexpected error (trying again)")
            self.wake.wait(interval)
            self.wake.clear()

    def _storage(self, what: str) -> AbstractContextManager[None]:
        return _storage_errors(what, self.engine)


@contextmanager
def _storage_errors(what: str, engine: Engine) -> Iterator[None]:
    """SQLAlchemy's errors as ``StorageError`` with what was being done (no password shown)."""
    try:
        yield
    except SQLAlchemyError as error:
        raise StorageError(f"cannot {what}: {error_text(error, url_secrets(engine.url))}") from error


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: the event is not re-sent somewhere else."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers this node's queued webhook events, oldest first, until the receiver answers 2xx;
    a failure waits (doubling, at most five minutes) and is tried again."""

    def __init__(
        self, engine: Engine, clock: Clock, settings: AlertsConfig, *, node: str, secret: bytes | None
    ) -> None:
        if settings.webhook_url is None:
            raise GatedError("the webhook has no URL")
        self.engine = engine
        self.clock = clock
        self.url = settings.webhook_url
        self.timeout = settings.webhook_timeout_seconds
        self.node = node
        self.secret = secret
        self.delivered = 0
        self.failed = 0

    def drain(self) -> int:
        """Send what is due; how many were delivered."""
        now = self.clock.now()
        with _storage_errors("read the webhook queue", self.engine), self.engine.connect() as conn:
            due = conn.execute(
                select(
                    webhook_outbox.c.id,
                    webhook_outbox.c.payload,
                    webhook_outbox.c.attempts,
                    webhook_outbox.c.next_attempt_at,
                )
                .where((webhook_outbox.c.node == self.node) & webhook_outbox.c.delivered_at.is_(None))
                .order_by(webhook_outbox.c.seq)
                .limit(WEBHOOK_BATCH)
            ).all()
        sent = 0
        for event_id, payload, attempts, next_attempt_at in due:
            if next_attempt_at > now:
                break  # the oldest is backing off: the rest wait behind it, in order
            error = self._post(event_id, payload.encode())
            with _storage_errors("record a webhook delivery", self.engine), self.engine.begin() as conn:
                if error is None:
                    conn.execute(
                        update(webhook_outbox)
                        .where(webhook_outbox.c.id == event_id)
                        .values(delivered_at=self.clock.now(), attempts=attempts + 1, last_error=None)
                    )
                    sent += 1
                    self.delivered += 1
                    continue
                self.failed += 1
                wait = min(WEBHOOK_BACKOFF_MAX, 2.0 ** min(attempts, 10))
                conn.execute(
                    update(webhook_outbox)
                    .where(webhook_outbox.c.id == event_id)
                    .values(
                        attempts=attempts + 1,
                        next_attempt_at=self.clock.now() + timedelta(seconds=wait),
                        last_error=error[:500],
                    )
                )
            log.warning(
                "webhook event %s not delivered (attempt %d, again in %.0f s): %s",
                event_id,
                attempts + 1,
                wait,
                error,
            )
            break  # the receiver is not taking events: the rest wait for the next round, in order
        return sent

    def _post(self, event_id: str, body: bytes) -> str | None:
        headers = {"Content-Type": "application/json", "X-Gated-Event": event_id, "User-Agent": "gated"}
        if self.secret is not None:
            headers["X-Gated-Signature"] = signature(self.secret, body)
        # http(s) only: the config checks the URL
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as error:
            return f"the receiver answered {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return f"cannot reach the receiver: {printable(str(reason))[:200]}"
        return None if 200 <= status < 300 else f"the receiver answered {status}"

    def purge(self, older_than: timedelta = WEBHOOK_KEPT) -> int:
        """Forget events delivered more than ``older_than`` ago (their alerts and audit stay)."""
        before = self.clock.now() - older_than
        with _storage_errors("purge the webhook queue", self.engine), self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(webhook_outbox).where(
                        (webhook_outbox.c.node == self.node)
                        & webhook_outbox.c.delivered_at.is_not(None)
                        & (webhook_outbox.c.delivered_at < before)
                    )
                ).rowcount
            )

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        purged_at = 0.0
        failures = 0
        while not stop.is_set():
            try:
                if time.monotonic() - purged_at > 3600:
                    purged_at = time.monotonic()
                    self.purge()
                self.drain()
                failures = 0
            except GatedError as error:
                failures += 1
                if failures % 60 == 1:
                    log.warning("webhook: %s", error)
            except Exception:
                log.exception("webhook: unexpected error (trying again)")
            stop.wait(interval)
