"""The shared database down: decide from a local replica, keep records locally, catch up after.

With ``storage.local_replica`` set, a node keeps a SQLite file of its own beside the shared
PostgreSQL, with the same schema:

- ``HoldReplica`` copies the hold list into it every few seconds (new holds and the manifest by
  id, releases since the last look, the list's state row), so the replica is as fresh as the
  shared list was at its last copy, and ages out exactly as the shared list would: a lane decides
  from it while it is fresh and fails closed once it is older than ``holds.max_age_seconds``.
- ``FailoverStore`` writes to the shared database; when a write fails it writes there instead
  (durable on the node's disk before anything is published or actuated, as always), goes on with
  the node's own ``seq`` where the shared database left it (the node is the only writer of its
  seq), and publishes from it. Every few seconds it tries the shared database again and copies
  over what it kept (records already there are skipped by their ids, so a copy interrupted half
  way is simply done again), moves the node's ``seq`` on, and goes back to the shared database.
- ``FailoverHolds`` looks holds up in the replica while the shared database is unreachable.

Hold commands, preadvice and card checks need the shared database: while it is down customs'
commands are not answered (customs sends them again) and lanes that check preadvice or cards
fail closed as before.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gated.audit import GENESIS, audit_head
from gated.clock import Clock
from gated.errors import StorageError
from gated.holds import HoldStore
from gated.holds.store import holdlist_state, holds, manifest
from gated.model import Visit
from gated.preadvice import preadvice
from gated.store import (
    AuditRecord,
    Batch,
    OutboxRow,
    Store,
    alerts,
    audit,
    counters,
    decisions,
    insert_audit,
    outbox,
    readings,
    visits,
)

log = logging.getLogger(__name__)

CATCH_UP_EVERY = 2.0
REPLICA_EVERY = 5.0
CHUNK = 5000
RELEASE_OVERLAP = timedelta(minutes=5)
"""Releases looked for since the last copy, less this (clocks of nodes a little apart)."""
HOLDS_ACTIVE = "holds_active"


class FailoverStore(Store):
    """The shared store (this object), and ``local`` standing in while it is unreachable."""

    def __init__(self, primary_engine: Engine, local: Store, *, site: str, node: str, clock: Clock) -> None:
        super().__init__(primary_engine, site=site, node=node, clock=clock)
        self.local = local
        self.outage = False
        self.on_outage: Callable[[bool, str], None] = lambda _down, _detail: None
        self._switch = threading.RLock()
        self._last_seq = 0
        self.caught_up = 0  # records copied to the shared database after outages
        self._tries = 0

    # -- writing -----------------------------------------------------------------------------------
    def next_boot(self) -> int:
        boot = super().next_boot()
        self._last_seq = super().counter("seq")
        return boot

    def write(self, batch: Batch, *, prepare: Callable[[Connection], Batch] | None = None) -> list[OutboxRow]:
        with self._switch:
            if not self.outage:
                try:
                    rows = super().write(batch, prepare=prepare)
                except StorageError as error:
                    if prepare is not None:
                        raise  # a hold command is applied in the shared database or not at all
                    self._enter_outage(str(error))
                else:
                    if rows:
                        self._last_seq = max(self._last_seq, max(row.seq for row in rows))
                    return rows
            if prepare is not None:
                raise StorageError("the shared database is unreachable: try again when it is back")
            return self.local.write(batch)

    def _enter_outage(self, detail: str) -> None:
        self.local.continue_seq(self._last_seq)
        self.outage = True
        log.error(
            "the shared database is unreachable: keeping records locally, holds from the replica: %s", detail
        )
        self.on_outage(True, detail)

    # -- reading: from where the records are now ------------------------------------------------
    def _here(self) -> Store | None:
        return self.local if self.outage else None

    def pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        here = self._here()
        return here.pending(after_seq, limit) if here else super().pending(after_seq, limit)

    def recently_delivered(self, since: datetime, limit: int) -> list[OutboxRow]:
        here = self._here()
        return here.recently_delivered(since, limit) if here else super().recently_delivered(since, limit)

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        chosen = list(seqs)
        with self._switch:
            if self.outage:
                self.local.mark_delivered(chosen)
                return
        super().mark_delivered(chosen)

    def purge_delivered(self, before: datetime) -> int:
        here = self._here()
        return 0 if here else super().purge_delivered(before)

    def drop_oldest_pending_readings(self, keep: int) -> int:
        here = self._here()
        return here.drop_oldest_pending_readings(keep) if here else super().drop_oldest_pending_readings(keep)

    def outbox_depth(self) -> int:
        here = self._here()
        return here.outbox_depth() if here else super().outbox_depth()

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        here = self._here()
        return here.outbox_backlog() if here else super().outbox_backlog()

    def pending_readings(self) -> int:
        here = self._here()
        return here.pending_readings() if here else super().pending_readings()

    def open_visits(self) -> list[Visit]:
        here = self._here()
        return here.open_visits() if here else super().open_visits()

    def decision_row(self, decision_id: str) -> Any:
        here = self._here()
        return here.decision_row(decision_id) if here else super().decision_row(decision_id)

    def latest_decision(self, visit: str, slot: int) -> Any:
        here = self._here()
        return here.latest_decision(visit, slot) if here else super().latest_decision(visit, slot)

    def last_visit_of(self, container: str) -> str | None:
        here = self._here()
        return here.last_visit_of(container) if here else super().last_visit_of(container)

    def visit(self, visit_id: str) -> Visit | None:
        here = self._here()
        return here.visit(visit_id) if here else super().visit(visit_id)

    # -- catching up -------------------------------------------------------------------------------
    def catch_up(self) -> int | None:
        """Copy what was kept locally to the shared database and go back to it; how many records
        were copied, or None while it is still unreachable."""
        with self._switch:
            if not self.outage:
                return 0
            try:
                copied = self._copy()
            except (SQLAlchemyError, StorageError) as error:
                self._tries += 1
                if self._tries % 30 == 1:  # once a minute is enough to say it
                    log.info("the shared database is still unreachable: %s", str(error).splitlines()[0][:200])
                return None
            self._tries = 0
            self.outage = False
            self.caught_up += copied
        log.warning("the shared database is back: %d records kept locally are in it now", copied)
        self.on_outage(False, f"{copied} records caught up")
        return copied

    def _copy(self) -> int:
        local = self.local.engine
        with local.connect() as source:
            rows = {
                table.name: source.execute(select(table)).mappings().all()
                for table in (readings, visits, decisions, alerts)
            }
            outbox_rows = (
                source.execute(select(outbox).where(outbox.c.node == self.node).order_by(outbox.c.seq))
                .mappings()
                .all()
            )
            audit_rows = source.execute(select(audit).order_by(audit.c.seq)).mappings().all()
            last_seq = int(
                source.execute(select(counters.c.value).where(counters.c.name == f"seq@{self.node}")).scalar()
                or 0
            )
        copied = 0
        with self.engine.begin() as conn:
            for table, key in ((readings, "id"), (decisions, "id"), (alerts, "id")):
                copied += _insert_missing(conn, table, rows[table.name], key)
            for row in rows[visits.name]:  # a visit may have closed since the shared database saw it
                values = {k: v for k, v in row.items() if k != "id"}
                if not conn.execute(update(visits).where(visits.c.id == row["id"]).values(**values)).rowcount:
                    conn.execute(insert(visits).values(**row))
                    copied += 1
            copied += _insert_missing_outbox(conn, outbox_rows)
            known = _existing(conn, audit, "id", [row["id"] for row in audit_rows])
            records = [
                AuditRecord(
                    actor=row["actor"],
                    action=row["action"],
                    subject=row["subject"],
                    detail=json.loads(row["detail"]),
                    ts=row["ts"],
                    id=row["id"],
                )
                for row in audit_rows
                if row["id"] not in known
            ]
            insert_audit(conn, records)  # chained onto the shared trail, in the order they were made
            copied += len(records)
            self.continue_seq_in(conn, last_seq)
        # Copied: the local store starts empty again (its chain too) for the next outage.
        with local.begin() as conn:
            for table in (readings, decisions, alerts, outbox, audit):
                conn.execute(delete(table))
            conn.execute(delete(visits))
            conn.execute(update(audit_head).values(seq=0, hash=GENESIS))
        self._last_seq = max(self._last_seq, last_seq)
        return copied

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.outage:
                try:
                    self.catch_up()
                except Exception:
                    log.exception("catching up with the shared database failed (trying again)")
            stop.wait(CATCH_UP_EVERY)


def _existing(conn: Connection, table: Table, key: str, values: Sequence[Any]) -> set[Any]:
    found: set[Any] = set()
    column = table.c[key]
    for start in range(0, len(values), 500):
        found.update(conn.execute(select(column).where(column.in_(values[start : start + 500]))).scalars())
    return found


def _insert_missing(conn: Connection, table: Table, rows: Sequence[Any], key: str) -> int:
    if not rows:
        return 0
    known = _existing(conn, table, key, [row[key] for row in rows])
    missing = [dict(row) for row in rows if row[key] not in known]
    if missing:
        conn.execute(insert(table), missing)
    return len(missing)


def _insert_missing_outbox(conn: Connection, rows: Sequence[Any]) -> int:
    if not rows:
        return 0
    node = rows[0]["node"]
    seqs = [row["seq"] for row in rows]
    known = set(
        conn.execute(select(outbox.c.seq).where((outbox.c.node == node) & outbox.c.seq.in_(seqs))).scalars()
    )
    missing = [dict(row) for row in rows if row["seq"] not in known]
    if missing:
        conn.execute(insert(outbox), missing)
    return len(missing)


class FailoverHolds(HoldStore):
    """The shared hold list (this object), and the local replica while the shared database is down."""

    def __init__(self, engine: Engine, clock: Clock, replica: HoldStore, store: FailoverStore) -> None:
        super().__init__(engine, clock)
        self.replica = replica
        self.store = store

    def active_holds_for(self, container: str) -> list[Any]:
        if not self.store.outage:
            try:
                return super().active_holds_for(container)
            except StorageError as error:
                log.warning("hold lookup in the shared database failed, the replica answers: %s", error)
        return self.replica.active_holds_for(container)

    def state(self) -> Any:
        if not self.store.outage:
            try:
                return super().state()
            except StorageError as error:
                log.warning("hold list state from the shared database failed, the replica's: %s", error)
        return self.replica.state()


class HoldReplica:
    """Copies the shared hold list into the node's local database, a little at a time."""

    def __init__(self, shared: Engine, local: Engine, clock: Clock) -> None:
        self.shared, self.local, self.clock = shared, local, clock
        self.version: int | None = None
        self.preadvice_mark: tuple[int, int] | None = None
        self.state_seen: dict[str, Any] | None = None
        self.last_hold = 0
        self.last_manifest = 0
        self.checked_at: datetime | None = None
        self.copies = 0

    def refresh(self) -> bool:
        """Copy what changed since the last look; True when something was copied."""
        copied = self._refresh_preadvice()
        return self._refresh_holds() or copied

    def _refresh_preadvice(self) -> bool:
        """The pre-advice, whole, whenever it changed (it is replaced by imports, and small)."""
        with self.shared.connect() as source:
            count, top = source.execute(select(func.count(), func.max(preadvice.c.id))).one()
            mark = (int(count or 0), int(top or 0))
            if mark == self.preadvice_mark:
                return False
            rows = [dict(row) for row in source.execute(select(preadvice)).mappings()]
        with self.local.begin() as conn:
            conn.execute(delete(preadvice))
            for start in range(0, len(rows), CHUNK):
                conn.execute(insert(preadvice), rows[start : start + CHUNK])
        self.preadvice_mark = mark
        return True

    def _refresh_holds(self) -> bool:
        started = self.clock.now()
        with self.shared.connect() as source:
            state = source.execute(select(holdlist_state)).mappings().one_or_none()
            # Any change of the state row counts: a confirmation moves no version but the list's age.
            if state is None or dict(state) == self.state_seen:
                return False
            placed = (
                source.execute(
                    select(holds)
                    .where((holds.c.id > self.last_hold) & holds.c.released_at.is_(None))
                    .order_by(holds.c.id)
                )
                .mappings()
                .all()
            )
            released: list[int] = []
            if self.checked_at is not None:
                released = list(
                    source.execute(
                        select(holds.c.id).where(holds.c.released_at >= self.checked_at - RELEASE_OVERLAP)
                    ).scalars()
                )
            top = source.execute(select(func.max(holds.c.id))).scalar() or 0
            mapped = (
                source.execute(
                    select(manifest).where(manifest.c.id > self.last_manifest).order_by(manifest.c.id)
                )
                .mappings()
                .all()
            )
        gone = set(released)
        with self.local.begin() as conn:
            if self.checked_at is None:
                # The first copy of this run: the whole list (what the file held may be stale).
                conn.execute(delete(holds))
                conn.execute(delete(manifest))
            for start in range(0, len(released), 500):
                conn.execute(delete(holds).where(holds.c.id.in_(released[start : start + 500])))
            rows = [dict(row) for row in placed if row["id"] not in gone]
            for table, new in ((holds, rows), (manifest, [dict(row) for row in mapped])):
                for start in range(0, len(new), CHUNK):
                    chunk = new[start : start + CHUNK]
                    known = _existing(conn, table, "id", [row["id"] for row in chunk])
                    fresh = [row for row in chunk if row["id"] not in known]
                    if fresh:
                        conn.execute(insert(table), fresh)
            conn.execute(delete(holdlist_state))
            conn.execute(insert(holdlist_state).values(**state))
            active = conn.execute(
                select(func.count()).select_from(holds).where(holds.c.released_at.is_(None))
            ).scalar()
            if (
                conn.execute(
                    update(counters).where(counters.c.name == HOLDS_ACTIVE).values(value=int(active or 0))
                ).rowcount
                == 0
            ):
                conn.execute(insert(counters).values(name=HOLDS_ACTIVE, value=int(active or 0)))
        self.version = int(state["version"])
        self.state_seen = dict(state)
        self.last_hold = max(self.last_hold, int(top))
        if mapped:
            self.last_manifest = int(mapped[-1]["id"])
        self.checked_at = started
        self.copies += 1
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.refresh()
            except (SQLAlchemyError, StorageError) as error:
                log.debug("hold replica not refreshed: %s", error)
            except Exception:
                log.exception("hold replica: unexpected error (trying again)")
            stop.wait(REPLICA_EVERY)
