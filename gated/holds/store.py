"""The hold list in the database: its tables, ``HoldStore`` (placing, releasing, what holds a
container, the list's state and freshness) and the digest customs' ``sync`` may carry.

Every change bumps ``holdlist_state.version``. Every write transaction starts by writing that one
row, so writers (the daemon and a CLI at the same time) take turns and each check-then-write is
atomic, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    Row,
    String,
    Table,
    UniqueConstraint,
    and_,
    false,
    func,
    insert,
    select,
    union,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from gated.clock import Clock, SystemClock
from gated.db import UTCDateTime, metadata
from gated.errors import HoldListError, StorageError
from gated.holds.model import (
    MAX_ACTOR,
    MAX_AGENCY,
    MAX_BILL_OF_LADING,
    MAX_CODE,
    MAX_HOLD_TYPE,
    MAX_KEY_ID,
    MAX_MESSAGE_ID,
    MAX_NOTE,
    MAX_REASON,
    MAX_REFERENCE,
    MAX_SOURCE_ID,
    HoldCommandResult,
    HoldListState,
    HoldRecord,
    ImportKind,
    ImportResult,
    Place,
    Release,
    VerifiedCommand,
    check_place,
    check_release,
    describe,
    normalise_bill_of_lading,
    normalise_container,
    optional_text,
    source_id,
)
from gated.redact import error_text
from gated.store import AuditRecord, counters, insert_audit

_STATE_ID = 1
_ACTIVE = "holds_active"  # the node_counters row that counts the active holds


holds = Table(
    "holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("container", String(11), nullable=True),
    Column("bill_of_lading", String(MAX_BILL_OF_LADING), nullable=True),
    Column("agency", String(MAX_AGENCY), nullable=False),
    Column("hold_type", String(MAX_HOLD_TYPE), nullable=False),
    Column("code", String(MAX_CODE), nullable=True),
    Column("reference", String(MAX_REFERENCE), nullable=True),
    Column("note", String(MAX_NOTE), nullable=True),
    Column("source_message_id", String(MAX_SOURCE_ID), nullable=True, unique=True),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("released_at", UTCDateTime(), nullable=True),
    Column("release_code", String(MAX_CODE), nullable=True),
    Column("release_reference", String(MAX_REFERENCE), nullable=True),
    Column("release_source_message_id", String(MAX_SOURCE_ID), nullable=True),
    CheckConstraint("container IS NOT NULL OR bill_of_lading IS NOT NULL", name="ck_holds_container_or_bill"),
    Index("ix_holds_container", "container"),
    Index("ix_holds_bill_of_lading", "bill_of_lading"),
    Index("ix_holds_release_source_message_id", "release_source_message_id"),
)

manifest = Table(
    "manifest",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("container", String(11), nullable=False),
    Column("bill_of_lading", String(MAX_BILL_OF_LADING), nullable=False),
    Column("source", String(1024), nullable=True),
    Column("imported_at", UTCDateTime(), nullable=False),
    UniqueConstraint("container", "bill_of_lading", name="uq_manifest_container_bill"),
    Index("ix_manifest_container", "container"),
    Index("ix_manifest_bill_of_lading", "bill_of_lading"),
)

holdlist_state = Table(
    "holdlist_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=True),
    Column("loaded", Boolean(), nullable=False),
    Column("loaded_at", UTCDateTime(), nullable=True),
    # The as-of time of the last authenticated full view (operator import or customs' sync), and who.
    Column("confirmed_at", UTCDateTime(), nullable=True),
    Column("confirmed_by", String(MAX_ACTOR + 16), nullable=True),
    # Customs' signed word that the list differs from theirs: stale until a matching sync or a full list.
    Column("out_of_step", Boolean(), nullable=False, server_default=false()),
    CheckConstraint(f"id = {_STATE_ID}", name="ck_holdlist_state_single_row"),
)

# Every signed command gated accepted as authentic, applied or not: its id is spent for that key, so
# a replay (or a second command with the same id) is answered as a duplicate and changes nothing.
hold_commands = Table(
    "hold_commands",
    metadata,
    Column("key_id", String(MAX_KEY_ID), primary_key=True),
    Column("command_id", String(MAX_MESSAGE_ID), primary_key=True),
    Column("action", String(16), nullable=True),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("applied", Boolean(), nullable=False),
    Column("reason", String(MAX_REASON), nullable=False),
)


def _record(row: Row[Any]) -> HoldRecord:
    return HoldRecord(
        id=row.id,
        container=row.container,
        bill_of_lading=row.bill_of_lading,
        agency=row.agency,
        hold_type=row.hold_type,
        code=row.code,
        reference=row.reference,
        note=row.note,
        source_message_id=row.source_message_id,
        placed_at=row.placed_at,
        released_at=row.released_at,
        release_code=row.release_code,
        release_reference=row.release_reference,
        release_source_message_id=row.release_source_message_id,
    )


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as error:
        raise StorageError(f"hold list: cannot {what}: {error_text(error)}") from error


class HoldStore:
    """The hold list in the database. Safe to use from several threads and processes at once."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()
        self._lookups = _Lookups(engine)
        with storage_errors("initialise the hold list state"):
            self._ensure_state_row()

    def _ensure_state_row(self) -> None:
        with self._engine.connect() as conn:
            has_state = conn.execute(select(holdlist_state.c.id)).first() is not None
            has_count = conn.execute(select(counters.c.value).where(counters.c.name == _ACTIVE)).first()
        if has_count is None:
            self._ensure_active_count()
        if has_state:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(holdlist_state).values(
                        id=_STATE_ID,
                        version=0,
                        updated_at=None,
                        loaded=False,
                        loaded_at=None,
                        confirmed_at=None,
                        confirmed_by=None,
                        out_of_step=False,
                    )
                )
        except IntegrityError:
            pass  # another process created it first

    def _ensure_active_count(self) -> None:
        """Count the active holds once (a database from before the count was kept); from then on
        every change keeps the count, so reading the state never scans a million holds."""
        try:
            with self._engine.begin() as conn:
                self.lock(conn)
                if conn.execute(select(counters.c.value).where(counters.c.name == _ACTIVE)).first() is None:
                    active = conn.execute(
                        select(func.count()).select_from(holds).where(holds.c.released_at.is_(None))
                    ).scalar_one()
                    conn.execute(insert(counters).values(name=_ACTIVE, value=int(active)))
        except IntegrityError:
            pass  # another process counted first

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the calling thread's lookup connection (others close with their threads)."""
        self._lookups.close()

    @contextmanager
    def writing(self, what: str) -> Iterator[Transaction]:
        """A write transaction that first takes the hold-list lock (a write to the state row)."""
        with storage_errors(what), self._engine.begin() as conn:
            self.lock(conn)
            yield Transaction(conn, self._clock)

    @staticmethod
    def lock(conn: Connection) -> None:
        """Take the hold-list lock inside ``conn``'s transaction (writers take turns on this row)."""
        conn.execute(
            update(holdlist_state)
            .where(holdlist_state.c.id == _STATE_ID)
            .values(version=holdlist_state.c.version)
        )

    # -- placing and releasing

    def place(
        self,
        *,
        container: str | None = None,
        bill_of_lading: str | None = None,
        agency: str,
        hold_type: str,
        code: str | None = None,
        reference: str | None = None,
        note: str | None = None,
        source_message_id: str | None = None,
        actor: str = "operator",
        reason: str | None = None,
    ) -> HoldRecord:
        """Place a hold on a container and/or a B/L, audited with ``actor`` and ``reason``. With
        ``source_message_id``, placing again with the same id returns the hold already placed and
        changes nothing. A single hold never makes the list loaded or fresh."""
        spec = check_place(
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
            note=note,
        )
        message_id = None if source_message_id is None else source_id(source_message_id)
        why = optional_text("reason", reason, MAX_NOTE)
        with self.writing("place a hold") as tx:
            if message_id is not None:
                existing = tx.placed_by(message_id)
                if existing is not None:
                    return existing
                if tx.released_by(message_id):
                    raise HoldListError(f"message id {message_id!r} was already used by a release")
            return self._insert(tx, spec, message_id, actor, why)

    def add(
        self,
        *,
        container: str | None = None,
        bill_of_lading: str | None = None,
        agency: str,
        hold_type: str,
        code: str | None = None,
        reference: str | None = None,
        note: str | None = None,
        actor: str = "operator",
        reason: str | None = None,
    ) -> tuple[HoldRecord, bool]:
        """An operator's ``place``: when an identical hold (same container, B/L, agency, type,
        code and reference, as an import compares them) is already active, that hold and False,
        with nothing changed; otherwise the new hold and True."""
        spec = check_place(
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
            note=note,
        )
        why = optional_text("reason", reason, MAX_NOTE)
        with self.writing("place a hold") as tx:
            existing = tx.same_active(spec)
            if existing is not None:
                return existing, False
            return self._insert(tx, spec, None, actor, why), True

    @staticmethod
    def _insert(
        tx: Transaction, spec: Place, message_id: str | None, actor: str, why: str | None
    ) -> HoldRecord:
        record = tx.insert(spec, message_id)
        tx.changed(changed=True)
        tx.audit(actor, "hold_place", str(record.id), {"hold": record.to_json(), "reason": why})
        return record

    def release(
        self,
        *,
        hold_id: int | None = None,
        container: str | None = None,
        bill_of_lading: str | None = None,
        agency: str | None = None,
        hold_type: str | None = None,
        code: str | None = None,
        reference: str | None = None,
        source_message_id: str | None = None,
        actor: str = "operator",
        reason: str | None = None,
    ) -> list[HoldRecord]:
        """Release the active holds that match every field given: a hold id, or all holds placed on
        that container and/or B/L, optionally only those of one agency and hold type. ``code`` and
        ``reference`` are the release's own (e.g. 1I). Raises ``HoldListError`` when nothing matches.
        With ``source_message_id``, releasing again with the same id returns the holds it released.
        Audited with ``actor`` and ``reason``."""
        spec = check_release(
            hold_id=hold_id,
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
        )
        message_id = None if source_message_id is None else source_id(source_message_id)
        why = optional_text("reason", reason, MAX_NOTE)
        with self.writing("release holds") as tx:
            if message_id is not None:
                earlier = tx.released_by(message_id)
                if earlier:
                    return earlier
                if tx.placed_by(message_id) is not None:
                    raise HoldListError(f"message id {message_id!r} was already used to place a hold")
            released = tx.release(spec, message_id)
            if not released:
                raise HoldListError(f"no active hold matches ({describe(spec)})")
            tx.changed(changed=True)
            tx.audit(
                actor,
                "hold_release",
                ",".join(str(record.id) for record in released)[:128],
                {"holds": [record.to_json() for record in released], "reason": why},
            )
            return released

    # -- reading

    def active_holds_for(self, container: str) -> list[HoldRecord]:
        """The active holds that stop ``container``: on the container itself, or on any B/L the
        manifest says it carries. Raises ``ContainerNumberError`` for text that is no container
        number (never an empty answer for a number it could not look up).

        Every truck asks this, so it runs one prepared statement on a connection of the calling
        thread's own (``_Lookups``); should that connection fail, the pooled path below answers
        (or raises ``StorageError``)."""
        number = container if _CANONICAL.fullmatch(container) else normalise_container(container)
        found = self._lookups.active_holds_for(number)
        if found is not None:
            return found
        bills = select(manifest.c.bill_of_lading).where(manifest.c.container == number)
        direct = select(holds).where(holds.c.released_at.is_(None), holds.c.container == number)
        carried = select(holds).where(holds.c.released_at.is_(None), holds.c.bill_of_lading.in_(bills))
        query = union(direct, carried).order_by("id")
        with storage_errors("read holds"), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def bills_for(self, container: str) -> list[str]:
        """The B/Ls the manifest says ``container`` carries."""
        number = normalise_container(container)
        query = (
            select(manifest.c.bill_of_lading)
            .where(manifest.c.container == number)
            .order_by(manifest.c.bill_of_lading)
        )
        with storage_errors("read the manifest"), self._engine.connect() as conn:
            return [str(bill) for bill in conn.execute(query).scalars()]

    def list_holds(
        self,
        *,
        active_only: bool = True,
        container: str | None = None,
        bill_of_lading: str | None = None,
    ) -> list[HoldRecord]:
        """Holds as placed (filtering on the hold's own container and B/L fields), oldest first."""
        query = select(holds).order_by(holds.c.id)
        if active_only:
            query = query.where(holds.c.released_at.is_(None))
        if container is not None:
            query = query.where(holds.c.container == normalise_container(container))
        if bill_of_lading is not None:
            query = query.where(holds.c.bill_of_lading == normalise_bill_of_lading(bill_of_lading))
        with storage_errors("list holds"), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def state(self) -> HoldListState:
        """The list's state (asked for every truck: read like ``active_holds_for``)."""
        found = self._lookups.state()
        if found is not None:
            return found
        with storage_errors("read the hold list state"), self._engine.connect() as conn:
            return self.state_in(conn)

    @staticmethod
    def state_in(conn: Connection) -> HoldListState:
        """The state as ``conn``'s transaction sees it (with its own changes)."""
        row = conn.execute(select(holdlist_state).where(holdlist_state.c.id == _STATE_ID)).first()
        active = conn.execute(select(counters.c.value).where(counters.c.name == _ACTIVE)).scalar()
        if active is None:  # a database this store did not open (the count is made at start-up)
            active = conn.execute(
                select(func.count()).select_from(holds).where(holds.c.released_at.is_(None))
            ).scalar_one()
        if row is None:
            return HoldListState(version=0, active=int(active), updated_at=None, loaded=False, loaded_at=None)
        return HoldListState(
            version=int(row.version),
            active=int(active),
            updated_at=row.updated_at,
            loaded=bool(row.loaded),
            loaded_at=row.loaded_at,
            confirmed_at=row.confirmed_at,
            confirmed_by=row.confirmed_by,
            out_of_step=bool(row.out_of_step),
        )

    # -- files and customs' signed commands (gated.holds.imports, gated.holds.commands)

    def import_file(
        self,
        path: str | Path,
        kind: ImportKind | None = None,
        *,
        actor: str = "operator",
        reason: str | None = None,
        replace: bool = False,
        list_date: datetime | None = None,
        allow_empty: bool = False,
        allow_shrink: bool = False,
        allow_old: bool = False,
        progress: Callable[[str, int, int, int], None] | None = None,
    ) -> ImportResult:
        """Import a hold list or a manifest: see ``gated.holds.imports.import_file``."""
        from gated.holds.imports import import_file  # here: that module builds on this one

        return import_file(
            self,
            path,
            kind,
            actor=actor,
            reason=reason,
            replace=replace,
            list_date=list_date,
            allow_empty=allow_empty,
            allow_shrink=allow_shrink,
            allow_old=allow_old,
            progress=progress,
        )

    def import_holds(self, path: str | Path, **options: Any) -> ImportResult:
        return self.import_file(path, "holds", **options)

    def import_manifest(self, path: str | Path, **options: Any) -> ImportResult:
        return self.import_file(path, "manifest", **options)

    def apply_command(self, command: VerifiedCommand) -> HoldCommandResult:
        """``apply_command_in`` in a transaction of its own."""
        with self.writing("apply a hold command") as tx:
            return self.apply_command_in(tx.conn, command)

    def apply_command_in(self, conn: Connection, command: VerifiedCommand) -> HoldCommandResult:
        """Validate and apply one verified command inside ``conn``'s transaction: see
        ``gated.holds.commands.apply_command_in``."""
        from gated.holds.commands import apply_command_in  # here: that module builds on this one

        return apply_command_in(Transaction(conn, self._clock), command)


_CANONICAL = re.compile(r"[A-Z]{3}[UJZ][0-9]{7}")  # what normalise_container returns unchanged
_LOOKUP_COLUMNS = ", ".join(column.name for column in holds.c)
# Two indexed halves: an OR across them would make PostgreSQL scan every hold.
_LOOKUP = (
    f"SELECT {_LOOKUP_COLUMNS} FROM holds WHERE released_at IS NULL AND container = {{mark}}"  # noqa: S608 (constants)
    f" UNION SELECT {_LOOKUP_COLUMNS} FROM holds WHERE released_at IS NULL AND bill_of_lading IN"
    " (SELECT bill_of_lading FROM manifest WHERE container = {mark}) ORDER BY id"
)


_STATE = (
    "SELECT version, updated_at, loaded, loaded_at, confirmed_at, confirmed_by, out_of_step,"  # noqa: S608 (constants)
    f" (SELECT value FROM node_counters WHERE name = '{_ACTIVE}') FROM holdlist_state WHERE id = {_STATE_ID}"
)


class _Lookups:
    """The hot read, a container's active holds, on one plain DB-API connection per thread:
    no pool checkout, no statement building, a statement the driver has prepared. Read-only and
    outside any transaction (SQLite: autocommit reads; PostgreSQL: autocommit), so it never holds
    a snapshot or a lock. Any failure closes that connection and answers None: the caller then
    takes the pooled path, which reports the problem as gated does everywhere."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        dialect = engine.dialect.name
        self._sql = _LOOKUP.format(mark="?" if dialect == "sqlite" else "%s")
        self._sqlite = dialect == "sqlite"
        self._usable = dialect in ("sqlite", "postgresql")
        self._state_sql = _STATE

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            args, params = self._engine.dialect.create_connect_args(self._engine.url)
            if self._sqlite:
                conn = self._engine.dialect.loaded_dbapi.connect(*args, **params)
                conn.execute("PRAGMA busy_timeout=10000")
                conn.execute("PRAGMA query_only=1")
            else:
                conn = self._engine.dialect.loaded_dbapi.connect(*args, **params)
                conn.autocommit = True
            self._local.conn = conn
        return conn

    def active_holds_for(self, number: str) -> list[HoldRecord] | None:
        if not self._usable:
            return None
        try:
            conn = self._connection()
            rows = conn.execute(self._sql, (number, number)).fetchall()
        except Exception:  # noqa: BLE001 (any driver error: the pooled path answers and reports it)
            self.close()
            return None
        return [_plain_record(row, self._sqlite) for row in rows]

    def state(self) -> HoldListState | None:
        """The state row and the count of active holds in one statement; None as above, and
        when either row is missing (the pooled path knows what to do then)."""
        if not self._usable:
            return None
        try:
            row = self._connection().execute(self._state_sql).fetchone()
        except Exception:  # noqa: BLE001 (any driver error: the pooled path answers and reports it)
            self.close()
            return None
        if row is None or row[7] is None:
            return None
        sqlite = self._sqlite
        return HoldListState(
            version=int(row[0]),
            active=int(row[7]),
            updated_at=_utc(row[1], sqlite),
            loaded=bool(row[2]),
            loaded_at=_utc(row[3], sqlite),
            confirmed_at=_utc(row[4], sqlite),
            confirmed_by=row[5],
            out_of_step=bool(row[6]),
        )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _utc(value: Any, sqlite: bool) -> datetime | None:
    """A stored time as ``UTCDateTime`` reads it (SQLite keeps text without a zone, in UTC)."""
    if value is None:
        return None
    if sqlite:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _plain_record(row: Sequence[Any], sqlite: bool) -> HoldRecord:
    placed = _utc(row[9], sqlite)
    assert placed is not None  # NOT NULL in the table
    return HoldRecord(
        id=row[0],
        container=row[1],
        bill_of_lading=row[2],
        agency=row[3],
        hold_type=row[4],
        code=row[5],
        reference=row[6],
        note=row[7],
        source_message_id=row[8],
        placed_at=placed,
        released_at=_utc(row[10], sqlite),
        release_code=row[11],
        release_reference=row[12],
        release_source_message_id=row[13],
    )


class Transaction:
    """One write transaction on the hold list, its lock taken: the steps that placing, releasing,
    imports and customs' commands are made of. ``conn`` is the transaction's connection."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.conn = conn
        self._clock = clock

    def now(self) -> datetime:
        return self._clock.now()

    def adjust_active(self, delta: int) -> None:
        """Keep the count of active holds (``HoldListState.active``) with a change of ``delta``."""
        if delta:
            self.conn.execute(
                update(counters).where(counters.c.name == _ACTIVE).values(value=counters.c.value + delta)
            )

    def changed(self, *, changed: bool) -> int:
        if changed:
            self.conn.execute(
                update(holdlist_state)
                .where(holdlist_state.c.id == _STATE_ID)
                .values(version=holdlist_state.c.version + 1, updated_at=self._clock.now())
            )
        version = self.conn.execute(
            select(holdlist_state.c.version).where(holdlist_state.c.id == _STATE_ID)
        ).scalar_one()
        return int(version)

    def confirm(self, as_of: datetime, by: str) -> None:
        """Record an authenticated full view as of ``as_of``: loaded, fresh from then, in step."""
        self.conn.execute(
            update(holdlist_state)
            .where(holdlist_state.c.id == _STATE_ID)
            .values(
                confirmed_at=as_of,
                confirmed_by=by[: MAX_ACTOR + 16],
                loaded=True,
                loaded_at=self._clock.now(),
                out_of_step=False,
            )
        )

    def out_of_step(self) -> bool:
        return bool(
            self.conn.execute(
                select(holdlist_state.c.out_of_step).where(holdlist_state.c.id == _STATE_ID)
            ).scalar()
        )

    def confirmed_at(self) -> datetime | None:
        """The as-of time of the last authenticated full view, None before the first."""
        value: datetime | None = self.conn.execute(
            select(holdlist_state.c.confirmed_at).where(holdlist_state.c.id == _STATE_ID)
        ).scalar()
        return value

    def mark_out_of_step(self) -> None:
        """Customs' signed word that the list differs from theirs: stale until a matching sync."""
        self.conn.execute(
            update(holdlist_state).where(holdlist_state.c.id == _STATE_ID).values(out_of_step=True)
        )

    def audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        insert_audit(
            self.conn,
            [
                AuditRecord(
                    actor=actor[:MAX_ACTOR],
                    action=action,
                    subject=subject,
                    detail=detail,
                    ts=self._clock.now(),
                )
            ],
        )

    def same_active(self, spec: Place) -> HoldRecord | None:
        """The active hold identical to ``spec`` (its note aside), if there is one."""

        def same(column: Any, value: str | None) -> ColumnElement[bool]:
            return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]

        row = self.conn.execute(
            select(holds).where(
                holds.c.released_at.is_(None),
                same(holds.c.container, spec.container),
                same(holds.c.bill_of_lading, spec.bill_of_lading),
                holds.c.agency == spec.agency,
                holds.c.hold_type == spec.hold_type,
                same(holds.c.code, spec.code),
                same(holds.c.reference, spec.reference),
            )
        ).first()
        return None if row is None else _record(row)

    def insert(self, spec: Place, message_id: str | None) -> HoldRecord:
        result = self.conn.execute(
            insert(holds)
            .values(
                container=spec.container,
                bill_of_lading=spec.bill_of_lading,
                agency=spec.agency,
                hold_type=spec.hold_type,
                code=spec.code,
                reference=spec.reference,
                note=spec.note,
                source_message_id=message_id,
                placed_at=self._clock.now(),
            )
            .returning(*holds.c)
        )
        self.adjust_active(1)
        return _record(result.one())

    def release(self, spec: Release, message_id: str | None) -> list[HoldRecord]:
        conditions: list[ColumnElement[bool]] = [holds.c.released_at.is_(None)]
        if spec.hold_id is not None:
            conditions.append(holds.c.id == spec.hold_id)
        if spec.container is not None:
            conditions.append(holds.c.container == spec.container)
        if spec.bill_of_lading is not None:
            conditions.append(holds.c.bill_of_lading == spec.bill_of_lading)
        if spec.agency is not None:
            conditions.append(holds.c.agency == spec.agency)
        if spec.hold_type is not None:
            conditions.append(holds.c.hold_type == spec.hold_type)
        ids = list(
            self.conn.execute(select(holds.c.id).where(and_(*conditions)).order_by(holds.c.id)).scalars()
        )
        if not ids:
            return []
        self.conn.execute(
            update(holds)
            .where(holds.c.id.in_(ids))
            .values(
                released_at=self._clock.now(),
                release_code=spec.code,
                release_reference=spec.reference,
                release_source_message_id=message_id,
            )
        )
        self.adjust_active(-len(ids))
        rows = self.conn.execute(select(holds).where(holds.c.id.in_(ids)).order_by(holds.c.id))
        return [_record(row) for row in rows]

    def placed_by(self, message_id: str) -> HoldRecord | None:
        row = self.conn.execute(select(holds).where(holds.c.source_message_id == message_id)).first()
        return _record(row) if row is not None else None

    def released_by(self, message_id: str) -> list[HoldRecord]:
        rows = self.conn.execute(
            select(holds).where(holds.c.release_source_message_id == message_id).order_by(holds.c.id)
        )
        return [_record(row) for row in rows]


def holds_digest(active: Sequence[tuple[str | None, str | None, str]]) -> str:
    """The digest a ``sync`` may carry: sha256 over the sorted lines "container|bill|hold_type" of
    the agency's active holds (empty for a missing field), joined by newlines, in UTF-8."""
    lines = sorted(f"{container or ''}|{bill or ''}|{hold_type}" for container, bill, hold_type in active)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
