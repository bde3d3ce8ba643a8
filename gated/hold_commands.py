"""Customs' hold commands from MQTT: verified, paced, applied, answered, on a thread of their own.

Every command on ``holds/cmd`` is hostile until proven otherwise: it is parsed strictly
(``gated.jsonsafe``), must carry an Ed25519 signature by a configured customs key
(``gated.signing``), must have been made within ``holds.command_max_age_seconds``, and that key
must act for the command's agency. Only then does it reach the hold list, where its id is spent
for its key (``HoldStore.apply_command_in``); the change, its acknowledgement on ``holds/ack`` and
its audit record (actor: the verified key) are stored in one transaction.

Commands never share a queue with the lanes: the MQTT thread drops them into a bounded inbox
(overflow is counted and raises a ``hold_command_flood`` alarm), this worker verifies them as fast
as it can, applies authentic ones at most ``commands_per_second`` and answers rejected ones at
most ``REJECTION_ACKS_PER_SECOND`` (the rest are counted), so a flood of junk can neither crowd out
the trucks' decisions nor the real customs commands.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection

from gated.clock import Clock, rfc3339
from gated.config import HoldsConfig
from gated.errors import HoldListError, PayloadError, SignatureError, StorageError
from gated.holds import MAX_MESSAGE_ID, HoldCommandResult, HoldListState, HoldStore, VerifiedCommand
from gated.jsonsafe import parse_json
from gated.messages import HOLD, STATUS, Message, Topics, alarm_message
from gated.model import new_id
from gated.redact import printable, shown
from gated.signing import public_key_from_text, verify_command
from gated.store import AuditRecord, Batch, Store

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 8192
MAX_COMMAND_DEPTH = 8
MAX_FUTURE_SECONDS = 60.0  # clock skew a command's ts may show
REJECTION_ACKS_PER_SECOND = 10.0
FLOOD_ALARM_EVERY_SECONDS = 60.0
MAX_AUDITED_COMMAND = 4096
MIN_YEAR, MAX_YEAR = 2000, 2999  # beyond these a command's ts is no time customs could have meant


@dataclass(frozen=True, slots=True)
class CustomsKey:
    """A customs signing key gated trusts: its id, public half, and the agencies it acts for."""

    id: str
    public_key: Ed25519PublicKey
    agencies: frozenset[str]


def customs_keys(config: HoldsConfig) -> list[CustomsKey]:
    """The configured keys (their public halves were checked when the config was loaded)."""
    return [
        CustomsKey(key.id, public_key_from_text(key.public_key), frozenset(a.upper() for a in key.agencies))
        for key in config.customs_keys
    ]


class CommandVerifier:
    """Tells an authentic, current command from everything else; touches no storage."""

    def __init__(self, keys: Sequence[CustomsKey], clock: Clock, max_age_seconds: float) -> None:
        self.keys = {key.id: key for key in keys}
        self.clock = clock
        self.max_age = timedelta(seconds=max_age_seconds)
        self.max_future = timedelta(seconds=MAX_FUTURE_SECONDS)

    def verify(self, raw: bytes) -> VerifiedCommand | HoldCommandResult:
        """The verified command, or the rejection to acknowledge (nothing of it was applied)."""
        try:
            payload = parse_json(raw, max_bytes=MAX_COMMAND_BYTES, max_depth=MAX_COMMAND_DEPTH)
        except PayloadError as error:
            return _rejected(None, None, None, f"not an acceptable JSON document: {error}")
        if not isinstance(payload, dict):
            return _rejected(None, None, None, f"a hold command is a JSON object, got {_json_type(payload)}")
        command_id = _echoable(payload.get("id"))
        raw_action = payload.get("action")
        action = raw_action if raw_action in ("place", "release", "sync") else None
        key_id = payload.get("key")
        if key_id is None or "sig" not in payload:
            return _rejected(command_id, action, None, "unsigned: a hold command needs a key and a sig")
        key = self.keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            shown = _echoable(key_id)
            return _rejected(command_id, action, None, f"unknown key {shown!r}" if shown else "unknown key")
        try:
            verify_command(payload, key.public_key)
        except SignatureError as error:
            return _rejected(
                command_id, action, None, f"signature does not verify with key {key.id!r}: {error}"
            )
        issued = _timestamp(payload.get("ts"))
        if issued is None:
            return _rejected(command_id, action, key.id, "ts must be an RFC 3339 time with its offset")
        now = self.clock.now()
        if now - issued > self.max_age:
            return _rejected(
                command_id,
                action,
                key.id,
                f"too old: made {rfc3339(issued)}, more than {self.max_age.total_seconds():.0f} s ago "
                "(a replay, or a clock out of step)",
            )
        if issued - now > self.max_future:
            return _rejected(
                command_id, action, key.id, f"made in the future ({rfc3339(issued)}): clock out of step"
            )
        return VerifiedCommand(key_id=key.id, agencies=key.agencies, issued_at=issued, payload=payload)


class _Bucket:
    """A token bucket: ``rate`` a second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float, monotonic: Callable[[], float]) -> None:
        self.rate, self.burst = rate, burst
        self.monotonic = monotonic  # the daemon's clock, so a test's manual clock sets the pace
        self.tokens = burst
        self.at = monotonic()

    def take(self) -> bool:
        now = self.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class CommandStats:
    received: int = 0
    applied: int = 0
    rejected: int = 0
    unanswered: int = 0  # rejected beyond the answer rate: counted, not acknowledged
    dropped: int = 0  # the inbox or the queue of verified commands was full
    storage_failures: int = 0


class HoldCommandWorker:
    """The thread that takes customs' commands from the MQTT thread to the hold list."""

    def __init__(
        self,
        holds: HoldStore,
        store: Store,
        config: HoldsConfig,
        topics: Topics,
        lanes: Sequence[str],
        clock: Clock,
        *,
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        self.holds = holds
        self.store = store
        self.config = config
        self.topics = topics
        self.lanes = list(lanes)
        self.clock = clock
        self.on_stored = on_stored
        self.verifier = CommandVerifier(customs_keys(config), clock, config.command_max_age_seconds)
        self.stats = CommandStats()
        self.beat = time.monotonic()  # last turn of the loop (the watchdog looks at it)
        self._inbox: queue.Queue[bytes] = queue.Queue(maxsize=config.command_queue)
        self._verified: deque[VerifiedCommand] = deque()
        self._apply_pace = _Bucket(
            config.commands_per_second, max(1.0, config.commands_per_second * 5), clock.monotonic
        )
        self._answer_pace = _Bucket(REJECTION_ACKS_PER_SECOND, REJECTION_ACKS_PER_SECOND * 2, clock.monotonic)
        self._flood_alarm_at = -FLOOD_ALARM_EVERY_SECONDS
        self._flood_reported = (0, 0)

    # -- from paho's network thread: never block
    def offer(self, payload: bytes) -> None:
        self.stats.received += 1
        try:
            # An oversized payload is kept only as far as it takes to say so: one byte past the limit.
            self._inbox.put_nowait(payload[: MAX_COMMAND_BYTES + 1])
        except queue.Full:
            self.stats.dropped += 1

    # -- the worker thread
    def run(self, stop: threading.Event) -> None:
        """Until ``stop``; any error but a storage failure escapes to the thread's supervisor."""
        while not stop.is_set():
            self.beat = time.monotonic()
            self.step(0.1)

    def step(self, wait: float = 0.0) -> bool:
        """Apply one paced command or verify one received; False when there was nothing to do."""
        self._report_flood()
        if self._verified and self._apply_pace.take():
            self._store(self._verified.popleft())
            return True
        try:
            raw = (
                self._inbox.get(timeout=min(wait, 0.02) if self._verified else wait)
                if wait
                else self._inbox.get_nowait()
            )
        except queue.Empty:
            return False
        try:
            outcome = self.verifier.verify(raw)
        except Exception:  # a bug in checking one message must not let outsiders stop the gate
            log.exception("hold command could not be checked")
            outcome = _rejected(None, None, None, "the command could not be checked")
        time.sleep(0)  # hand the interpreter to the pipeline between commands: trucks come first
        if isinstance(outcome, VerifiedCommand):
            if len(self._verified) >= self.config.command_queue:
                self.stats.dropped += 1
            else:
                self._verified.append(outcome)
            return True
        self.stats.rejected += 1
        if self.stats.rejected <= 5 or self.stats.rejected % 100 == 0:
            # The id and the reason quote the sender: escaped and bounded, never a line of their own.
            log.warning(
                "hold command %s rejected (#%d): %s",
                shown(outcome.command_id),
                self.stats.rejected,
                printable(outcome.reason),
            )
        if not self._answer_pace.take():
            self.stats.unanswered += 1
            return True
        audit = AuditRecord(
            actor="unverified",
            action="hold_command",
            subject=outcome.command_id,
            detail={"applied": False, "reason": outcome.reason, "bytes": len(raw)},
            ts=self.clock.now(),
        )
        self._write(Batch(messages=[self._ack(outcome)], audit=[audit]))
        return True

    def drain(self) -> None:
        """Handle everything received so far, ignoring the pace (for tests). At a stop, what was not
        applied yet is not acknowledged either: customs sends it again."""
        while self.step() or self._verified:
            while self._verified:
                self._store(self._verified.popleft())

    def _store(self, command: VerifiedCommand) -> None:
        results: list[HoldCommandResult] = []

        def apply(conn: Connection) -> Batch:
            result = self.holds.apply_command_in(conn, command)
            results.append(result)
            state = self.holds.state_in(conn)
            audit = AuditRecord(
                actor=f"key:{command.key_id}",
                action="hold_command",
                subject=result.command_id,
                detail={
                    "applied": result.applied,
                    "duplicate": result.duplicate,
                    "reason": result.reason,
                    "command": _bounded(command.payload),
                },
                ts=self.clock.now(),
            )
            messages = [
                self._ack(result),
                holds_state_message(self.topics, state, self.clock.now(), self.config.max_age_seconds),
            ]
            if result.out_of_step:
                messages.extend(
                    alarm_message(
                        self.topics,
                        lane=lane,
                        alarm="hold_list_out_of_sync",
                        text=f"customs key {command.key_id}: {result.reason}",
                        ts=self.clock.now(),
                    )
                    for lane in self.lanes
                )
            return Batch(messages=messages, audit=[audit])

        if self._write(Batch(), prepare=apply):
            self.stats.applied += 1
            result = results[-1]
            log.info(
                "hold command %s of key %s %s: %s",
                shown(command.payload.get("id")),
                command.key_id,
                "applied" if result.applied else "refused",
                printable(result.reason),
            )

    def _write(self, batch: Batch, prepare: Callable[[Connection], Batch] | None = None) -> bool:
        try:
            self.store.write(batch, prepare=prepare)
        except (StorageError, HoldListError) as error:
            # Nothing of it was stored (one transaction): customs sends again when no ack comes.
            self.stats.storage_failures += 1
            log.error("hold command not stored: %s", printable(str(error)))
            return False
        self.on_stored()
        return True

    def _ack(self, result: HoldCommandResult) -> Message:
        body = {"id": new_id(), "ts": rfc3339(self.clock.now()), **result.to_json()}
        return Message(self.topics.holds_ack, HOLD, body)

    def _report_flood(self) -> None:
        now = self.clock.monotonic()
        counts = (self.stats.dropped, self.stats.unanswered)
        if counts == self._flood_reported or now - self._flood_alarm_at < FLOOD_ALARM_EVERY_SECONDS:
            return
        self._flood_alarm_at, self._flood_reported = now, counts
        text = (
            f"hold command flood: {counts[0]} dropped unread, {counts[1]} rejected without an answer "
            f"({self.stats.received} received); customs should send again what was not acknowledged"
        )
        log.error("%s", text)
        self._write(
            Batch(
                messages=[
                    alarm_message(
                        self.topics,
                        lane=lane,
                        alarm="hold_command_flood",
                        text=text,
                        ts=self.clock.now(),
                        severity="medium",
                    )
                    for lane in self.lanes
                ]
            )
        )


def holds_state_message(
    topics: Topics, state: HoldListState, now: datetime, max_age_seconds: float
) -> Message:
    """The retained ``holds/state`` message for ``state``."""
    body = {
        "id": new_id(),
        "ts": rfc3339(now),
        "version": state.version,
        "count": state.active,
        "updated_at": rfc3339(state.updated_at) if state.updated_at else None,
        "confirmed_at": rfc3339(state.confirmed_at) if state.confirmed_at else None,
        "confirmed_by": state.confirmed_by,
        "out_of_step": state.out_of_step,
        "loaded": state.loaded,
        "fresh": state.fresh(now, max_age_seconds),
    }
    return Message(topics.holds_state, STATUS, body, retain=True)


def _rejected(command_id: str | None, action: str | None, key: str | None, reason: str) -> HoldCommandResult:
    return HoldCommandResult(command_id, action, False, False, reason, key=key)


def _echoable(value: object) -> str | None:
    """A value safe to echo in an ack and a log line: short text without control characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_MESSAGE_ID:
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return None
    return value


def _timestamp(value: object) -> datetime | None:
    """An RFC 3339 time with its offset, in UTC; None for anything else (year 0001 or 9999 in
    another zone cannot even be converted, so such years are refused first)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None or not MIN_YEAR <= parsed.year <= MAX_YEAR:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _bounded(payload: dict[str, Any] | Any) -> Any:
    """The command as received (strictly parsed, so it encodes), cut down for the audit table."""
    text = json.dumps(payload, ensure_ascii=False)
    return payload if len(text) <= MAX_AUDITED_COMMAND else {"truncated": text[:MAX_AUDITED_COMMAND]}
