"""The customs hold list: holds per container and per bill of lading, the manifest that links them.

A container is gate-eligible only when no active hold exists on it or on any bill of lading (B/L) the
manifest says it carries. History is kept: a release stamps ``released_at`` on the hold, nothing is
deleted or overwritten. Holds arrive three ways: an operator's imported files (CSV or JSON lines),
customs' signed MQTT commands (``gated.hold/1`` on ``holds/cmd``, verified in
``gated.hold_commands``) and the operator's ``gated holds`` commands; every change names its actor.

The list counts as loaded and fresh only from an authenticated full view: an operator's import or
customs' signed ``sync`` statement (so many active holds of that agency, as of then) that matches
what gated holds. A single command never makes it so: anyone who could forge one could otherwise
switch the freshness guard off.

Every change bumps ``holdlist_state.version``. Every write transaction starts by writing that one
row, so writers (the daemon and a CLI at the same time) take turns and each check-then-write is
atomic, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

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
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from gated.clock import Clock, SystemClock, rfc3339
from gated.db import UTCDateTime, metadata
from gated.errors import ContainerNumberError, HoldListError, PayloadError, StorageError
from gated.iso6346 import ContainerNumber, normalise
from gated.jsonsafe import parse_json
from gated.redact import error_text
from gated.store import AuditRecord, insert_audit

SCHEMA = "gated.hold/1"
MAX_BILL_OF_LADING = 35
MAX_AGENCY = 64
MAX_HOLD_TYPE = 32
MAX_CODE = 16
MAX_REFERENCE = 128
MAX_NOTE = 1000
MAX_MESSAGE_ID = 128
MAX_KEY_ID = 64
MAX_SOURCE_ID = MAX_KEY_ID + 1 + MAX_MESSAGE_ID  # "key:command id": ids are unique per key
MAX_ACTOR = 64
MAX_DIGEST = 80
MAX_REASON = 512
SHRINK_FLOOR = 10
"""A full list replacing one of at least this many holds may not shrink below half of it unasked."""
MAX_IMPORT_AGE = timedelta(days=1)
"""An imported list dated longer ago than this is refused unless the operator says so."""
MAX_FUTURE = timedelta(minutes=10)
"""How far ahead of gated's clock a list's date may be (clock skew)."""
MAX_REPORTED_PROBLEMS = 20
MAX_JSON_LINE_BYTES = 16384
MAX_JSON_LINE_DEPTH = 4
_HOLD_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_STATE_ID = 1

ImportKind = Literal["holds", "manifest"]
CommandAction = Literal["place", "release", "sync"]

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


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """One hold as stored, active until ``released_at`` is set."""

    id: int
    container: str | None
    bill_of_lading: str | None
    agency: str
    hold_type: str
    code: str | None
    reference: str | None
    note: str | None
    source_message_id: str | None
    placed_at: datetime
    released_at: datetime | None
    release_code: str | None
    release_reference: str | None
    release_source_message_id: str | None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "container": self.container,
            "bill_of_lading": self.bill_of_lading,
            "agency": self.agency,
            "hold_type": self.hold_type,
            "code": self.code,
            "reference": self.reference,
            "note": self.note,
            "placed_at": rfc3339(self.placed_at),
            "released_at": rfc3339(self.released_at) if self.released_at is not None else None,
            "release_code": self.release_code,
            "release_reference": self.release_reference,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class HoldListState:
    """How current the hold list is. ``version`` counts changes; ``updated_at`` is the last change.
    ``loaded`` is False until an authenticated full view arrived (an operator's import or customs'
    matching sync): an empty list that was never loaded must not release anything. ``confirmed_at``
    is that view's as-of time (freshness is measured from it); ``confirmed_by`` says who (``key:ID``
    or ``operator:USER``). ``out_of_step``: customs' last sync did not match, so the list is stale
    until one does or an operator imports the full list."""

    version: int
    active: int
    updated_at: datetime | None
    loaded: bool
    loaded_at: datetime | None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    out_of_step: bool = False

    def fresh(self, now: datetime, max_age_seconds: float) -> bool:
        """Loaded, in step with customs, and confirmed no longer than ``max_age_seconds`` ago."""
        return (
            self.loaded
            and not self.out_of_step
            and self.confirmed_at is not None
            and (now - self.confirmed_at).total_seconds() <= max_age_seconds
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "active": self.active,
            "updated_at": _time(self.updated_at),
            "loaded": self.loaded,
            "loaded_at": _time(self.loaded_at),
            "confirmed_at": _time(self.confirmed_at),
            "confirmed_by": self.confirmed_by,
            "out_of_step": self.out_of_step,
        }


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one imported file did. ``unchanged`` counts holds already active as given and manifest
    lines already known."""

    path: str
    kind: ImportKind
    rows: int
    placed: int
    released: int
    manifest_added: int
    unchanged: int
    version: int
    confirmed: bool = False  # the import confirmed the hold list (loaded and fresh as of its date)

    def to_json(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "path": self.path,
            "kind": self.kind,
            "rows": self.rows,
            "placed": self.placed,
            "released": self.released,
            "manifest_added": self.manifest_added,
            "unchanged": self.unchanged,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class HoldCommandResult:
    """The answer to one ``gated.hold/1`` command (the body of a ``holds/ack`` message). ``key`` is
    the id of the key whose signature verified, None when none did."""

    command_id: str | None
    action: str | None
    applied: bool
    duplicate: bool
    reason: str
    holds: tuple[HoldRecord, ...] = ()
    key: str | None = None
    out_of_step: bool = False  # a sync that did not match: the list is stale until one does

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command_id,
            "key": self.key,
            "action": self.action,
            "applied": self.applied,
            "duplicate": self.duplicate,
            "reason": self.reason,
            "holds": [hold.to_json() for hold in self.holds],
        }


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A hold command whose signature verified with the key ``key_id`` (which may act for
    ``agencies``), made at ``issued_at``; ``payload`` is the command as received."""

    key_id: str
    agencies: frozenset[str]
    issued_at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Place:
    container: str | None
    bill_of_lading: str | None
    agency: str
    hold_type: str
    code: str | None
    reference: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class _Release:
    hold_id: int | None
    container: str | None
    bill_of_lading: str | None
    agency: str | None
    hold_type: str | None
    code: str | None
    reference: str | None


@dataclass(frozen=True, slots=True)
class _Sync:
    """Customs' signed statement: ``agency`` has exactly ``count`` active holds (and, with
    ``digest``, exactly these: see ``holds_digest``)."""

    agency: str
    count: int
    digest: str | None


@dataclass(frozen=True, slots=True)
class _ManifestLine:
    container: str
    bill_of_lading: str


# --- validation: every value from outside passes through these -------------------------------------


def _text(what: str, value: object, limit: int, *, multiline: bool = False) -> str:
    if value is None:
        raise HoldListError(f"{what} is required")
    if not isinstance(value, str):
        raise HoldListError(f"{what} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise HoldListError(f"{what} is empty")
    if len(text) > limit:
        raise HoldListError(f"{what} is longer than {limit} characters")
    allowed = "\t\n\r" if multiline else ""
    if any((ord(char) < 32 and char not in allowed) or ord(char) == 127 for char in text):
        raise HoldListError(f"{what} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HoldListError(f"{what} is not valid Unicode text") from None
    return text


def _optional_text(what: str, value: object, limit: int, *, multiline: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text(what, value, limit, multiline=multiline)


def normalise_container(value: object) -> str:
    """An ISO 6346 number as stored: normalised, shape checked, check digit not required (some
    shipper-owned boxes carry a wrong one and can still be held)."""
    if not isinstance(value, str):
        raise ContainerNumberError(f"container number must be text, got {type(value).__name__}")
    return str(ContainerNumber.parse(normalise(value), require_valid_check_digit=False))


def normalise_bill_of_lading(value: object) -> str:
    """A B/L number as stored: stripped, upper-case, 1 to 35 characters."""
    text = _text("bill of lading", value, MAX_BILL_OF_LADING)
    return text.upper()


def _optional_container(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return normalise_container(value)
    except ContainerNumberError as error:
        raise HoldListError(str(error)) from None


def _optional_bill(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return normalise_bill_of_lading(value)


def _agency(value: object) -> str:
    return _text("agency", value, MAX_AGENCY).upper()


def _hold_type(value: object) -> str:
    text = _text("hold type", value, MAX_HOLD_TYPE).lower()
    if not _HOLD_TYPE.fullmatch(text):
        raise HoldListError(f"hold type {text!r} must be a word such as customs, exam, vacis, usda")
    return text


def _code(value: object) -> str | None:
    text = _optional_text("code", value, MAX_CODE)
    return text.upper() if text is not None else None


def _message_id(value: object) -> str:
    return _text("message id", value, MAX_MESSAGE_ID)


def _check_place(
    *,
    container: object,
    bill_of_lading: object,
    agency: object,
    hold_type: object,
    code: object,
    reference: object,
    note: object,
) -> _Place:
    place = _Place(
        container=_optional_container(container),
        bill_of_lading=_optional_bill(bill_of_lading),
        agency=_agency(agency),
        hold_type=_hold_type(hold_type),
        code=_code(code),
        reference=_optional_text("reference", reference, MAX_REFERENCE),
        note=_optional_text("note", note, MAX_NOTE, multiline=True),
    )
    if place.container is None and place.bill_of_lading is None:
        raise HoldListError("a hold needs a container or a bill of lading")
    return place


def _check_release(
    *,
    hold_id: object,
    container: object,
    bill_of_lading: object,
    agency: object,
    hold_type: object,
    code: object,
    reference: object,
) -> _Release:
    if hold_id is not None and (isinstance(hold_id, bool) or not isinstance(hold_id, int) or hold_id < 1):
        raise HoldListError(f"hold id must be a positive whole number, got {hold_id!r}")
    release = _Release(
        hold_id=hold_id,
        container=_optional_container(container),
        bill_of_lading=_optional_bill(bill_of_lading),
        agency=None if agency is None else _agency(agency),
        hold_type=None if hold_type is None else _hold_type(hold_type),
        code=_code(code),
        reference=_optional_text("reference", reference, MAX_REFERENCE),
    )
    if release.hold_id is None and release.container is None and release.bill_of_lading is None:
        raise HoldListError("a release needs a hold id, a container or a bill of lading")
    return release


# --- files --------------------------------------------------------------------------------------------

_COLUMN_ALIASES = {
    "container": "container",
    "container_number": "container",
    "bill_of_lading": "bill_of_lading",
    "bl": "bill_of_lading",
    "b/l": "bill_of_lading",
    "bol": "bill_of_lading",
    "agency": "agency",
    "hold_type": "hold_type",
    "type": "hold_type",
    "code": "code",
    "reference": "reference",
    "note": "note",
    "action": "action",
}
_HOLD_COLUMNS = frozenset({"agency", "hold_type", "code", "reference", "note", "action"})
_MANIFEST_COLUMNS = frozenset({"container", "bill_of_lading"})


def _column(name: str) -> str | None:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _COLUMN_ALIASES.get(key)


@dataclass(frozen=True, slots=True)
class _FileRow:
    line: int
    values: dict[str, object]


def _read_rows(path: Path) -> tuple[list[_FileRow], set[str]]:
    """The rows of a CSV (with header) or JSON lines file, keyed by canonical column name, and the
    set of columns the file uses. Any malformed line fails the whole file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise HoldListError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HoldListError(f"{path}: not UTF-8 text (byte {error.start})") from None
    first = next((line.strip() for line in content.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return _read_json_lines(path, content)
    return _read_csv(path, content)


def _read_json_lines(path: Path, content: str) -> tuple[list[_FileRow], set[str]]:
    rows: list[_FileRow] = []
    columns: set[str] = set()
    problems: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = parse_json(line, max_bytes=MAX_JSON_LINE_BYTES, max_depth=MAX_JSON_LINE_DEPTH)
        except PayloadError as error:
            problems.append(f"{path}:{number}: not valid JSON: {error}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
            continue
        values: dict[str, object] = {}
        for key, item in value.items():
            name = _column(key)
            if name is None:
                problems.append(f"{path}:{number}: unknown key {key!r}")
                continue
            if name in values:
                # "container" and "container_number" at once: which one is held must not be a guess.
                problems.append(f"{path}:{number}: {key!r} names the {name} a second time")
                continue
            if item is not None and not isinstance(item, str):
                problems.append(f"{path}:{number}: {key} must be text, got {type(item).__name__}")
                continue
            values[name] = item
        columns.update(values)
        rows.append(_FileRow(number, values))
    _raise_problems(path, problems)
    return rows, columns


def _read_csv(path: Path, content: str) -> tuple[list[_FileRow], set[str]]:
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    problems: list[str] = []
    names: list[str] = []
    rows: list[_FileRow] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], set()
        for raw in header:
            name = _column(raw)
            if name is None:
                problems.append(f"{path}:1: unknown column {raw!r}")
            elif name in names:
                problems.append(f"{path}:1: column {raw!r} appears twice")
            names.append(name or "")
        _raise_problems(path, problems)
        start = reader.line_num + 1
        for record in reader:
            line = start
            start = reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if len(record) > len(names):
                problems.append(f"{path}:{line}: {len(record)} fields, the header has {len(names)}")
                continue
            values: dict[str, object] = dict(zip(names, record, strict=False))
            rows.append(_FileRow(line, values))
    except csv.Error as error:
        problems.append(f"{path}:{reader.line_num}: malformed CSV: {error}")
        rows = []
    _raise_problems(path, problems)
    return rows, set(names)


def _raise_problems(path: Path, problems: Sequence[str]) -> None:
    if not problems:
        return
    shown = list(problems[:MAX_REPORTED_PROBLEMS])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more problems")
    raise HoldListError(f"{path}: {len(problems)} problem(s), nothing imported\n" + "\n".join(shown))


def _detect_kind(path: Path, columns: set[str]) -> ImportKind:
    if columns & _HOLD_COLUMNS:
        return "holds"
    if columns == _MANIFEST_COLUMNS:
        return "manifest"
    raise HoldListError(
        f"{path}: cannot tell a hold list from a manifest (columns: {', '.join(sorted(columns)) or 'none'});"
        " give the kind"
    )


# --- the store ----------------------------------------------------------------------------------------


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
def _storage(what: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as error:
        raise StorageError(f"hold list: cannot {what}: {error_text(error)}") from error


class HoldStore:
    """The hold list in the database. Safe to use from several threads and processes at once."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()
        with _storage("initialise the hold list state"):
            self._ensure_state_row()

    def _ensure_state_row(self) -> None:
        with self._engine.connect() as conn:
            if conn.execute(select(holdlist_state.c.id)).first() is not None:
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

    @contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """A write transaction that first takes the hold-list lock (a write to the state row)."""
        with _storage(what), self._engine.begin() as conn:
            self.lock(conn)
            yield conn

    @staticmethod
    def lock(conn: Connection) -> None:
        """Take the hold-list lock inside ``conn``'s transaction (writers take turns on this row)."""
        conn.execute(
            update(holdlist_state)
            .where(holdlist_state.c.id == _STATE_ID)
            .values(version=holdlist_state.c.version)
        )

    def _changed(self, conn: Connection, *, changed: bool) -> int:
        if changed:
            conn.execute(
                update(holdlist_state)
                .where(holdlist_state.c.id == _STATE_ID)
                .values(version=holdlist_state.c.version + 1, updated_at=self._clock.now())
            )
        version = conn.execute(
            select(holdlist_state.c.version).where(holdlist_state.c.id == _STATE_ID)
        ).scalar_one()
        return int(version)

    def _confirm(self, conn: Connection, as_of: datetime, by: str) -> None:
        """Record an authenticated full view as of ``as_of``: loaded, fresh from then, in step."""
        conn.execute(
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

    def _out_of_step(self, conn: Connection) -> bool:
        return bool(
            conn.execute(
                select(holdlist_state.c.out_of_step).where(holdlist_state.c.id == _STATE_ID)
            ).scalar()
        )

    def _audit(
        self, conn: Connection, actor: str, action: str, subject: str | None, detail: dict[str, Any]
    ) -> None:
        insert_audit(
            conn,
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
        spec = _check_place(
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
            note=note,
        )
        message_id = None if source_message_id is None else _source_id(source_message_id)
        why = _optional_text("reason", reason, MAX_NOTE)
        with self._writing("place a hold") as conn:
            if message_id is not None:
                existing = self._placed_by(conn, message_id)
                if existing is not None:
                    return existing
                if self._released_by(conn, message_id):
                    raise HoldListError(f"message id {message_id!r} was already used by a release")
            record = self._insert(conn, spec, message_id)
            self._changed(conn, changed=True)
            self._audit(conn, actor, "hold_place", str(record.id), {"hold": record.to_json(), "reason": why})
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
        spec = _check_release(
            hold_id=hold_id,
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
        )
        message_id = None if source_message_id is None else _source_id(source_message_id)
        why = _optional_text("reason", reason, MAX_NOTE)
        with self._writing("release holds") as conn:
            if message_id is not None:
                earlier = self._released_by(conn, message_id)
                if earlier:
                    return earlier
                if self._placed_by(conn, message_id) is not None:
                    raise HoldListError(f"message id {message_id!r} was already used to place a hold")
            released = self._release(conn, spec, message_id)
            if not released:
                raise HoldListError(f"no active hold matches ({_describe(spec)})")
            self._changed(conn, changed=True)
            self._audit(
                conn,
                actor,
                "hold_release",
                ",".join(str(record.id) for record in released)[:128],
                {"holds": [record.to_json() for record in released], "reason": why},
            )
            return released

    def _insert(self, conn: Connection, spec: _Place, message_id: str | None) -> HoldRecord:
        result = conn.execute(
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
        return _record(result.one())

    def _release(self, conn: Connection, spec: _Release, message_id: str | None) -> list[HoldRecord]:
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
        ids = list(conn.execute(select(holds.c.id).where(and_(*conditions)).order_by(holds.c.id)).scalars())
        if not ids:
            return []
        conn.execute(
            update(holds)
            .where(holds.c.id.in_(ids))
            .values(
                released_at=self._clock.now(),
                release_code=spec.code,
                release_reference=spec.reference,
                release_source_message_id=message_id,
            )
        )
        rows = conn.execute(select(holds).where(holds.c.id.in_(ids)).order_by(holds.c.id))
        return [_record(row) for row in rows]

    def _placed_by(self, conn: Connection, message_id: str) -> HoldRecord | None:
        row = conn.execute(select(holds).where(holds.c.source_message_id == message_id)).first()
        return _record(row) if row is not None else None

    def _released_by(self, conn: Connection, message_id: str) -> list[HoldRecord]:
        rows = conn.execute(
            select(holds).where(holds.c.release_source_message_id == message_id).order_by(holds.c.id)
        )
        return [_record(row) for row in rows]

    # -- reading

    def active_holds_for(self, container: str) -> list[HoldRecord]:
        """The active holds that stop ``container``: on the container itself, or on any B/L the
        manifest says it carries. Raises ``ContainerNumberError`` for text that is no container
        number (never an empty answer for a number it could not look up)."""
        number = normalise_container(container)
        bills = select(manifest.c.bill_of_lading).where(manifest.c.container == number)
        query = (
            select(holds)
            .where(
                holds.c.released_at.is_(None),
                or_(holds.c.container == number, holds.c.bill_of_lading.in_(bills)),
            )
            .order_by(holds.c.id)
        )
        with _storage("read holds"), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def bills_for(self, container: str) -> list[str]:
        """The B/Ls the manifest says ``container`` carries."""
        number = normalise_container(container)
        query = (
            select(manifest.c.bill_of_lading)
            .where(manifest.c.container == number)
            .order_by(manifest.c.bill_of_lading)
        )
        with _storage("read the manifest"), self._engine.connect() as conn:
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
        with _storage("list holds"), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def state(self) -> HoldListState:
        with _storage("read the hold list state"), self._engine.connect() as conn:
            return self.state_in(conn)

    @staticmethod
    def state_in(conn: Connection) -> HoldListState:
        """The state as ``conn``'s transaction sees it (with its own changes)."""
        row = conn.execute(select(holdlist_state).where(holdlist_state.c.id == _STATE_ID)).first()
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

    # -- files

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
    ) -> ImportResult:
        """Import a hold list or a manifest (CSV with a header, or JSON lines), audited with
        ``actor`` and ``reason``. Without ``kind``, a file whose only columns are container and
        bill_of_lading is a manifest. All or nothing: any bad line rejects the whole file with one
        "file:line: problem" per problem.

        A hold list is the operator's authenticated view: it makes the list loaded and fresh as of
        ``list_date`` (default now), unless customs' last sync said the list is out of step: then
        only a full list clears that. With ``replace`` it is the complete list of active holds of
        the agencies it names, and their active holds it does not list are released. Refused
        unless the operator says so: a list without holds (``allow_empty``: a truncated download
        must not clear every container), a full list less than half of what an agency it names
        holds now (``allow_shrink``), a list dated before the one it replaces or more than a day
        ago (``allow_old``)."""
        if kind not in (None, "holds", "manifest"):
            raise HoldListError(f"unknown import kind {kind!r}: use holds or manifest")
        file = Path(path)
        rows, columns = _read_rows(file)
        if kind is None:
            kind = _detect_kind(file, columns)
        why = _optional_text("reason", reason, MAX_NOTE)
        if kind == "manifest":
            if replace:
                raise HoldListError(f"{file}: a manifest only adds links; --replace is for hold lists")
            return self._import_manifest(file, rows, columns, actor, why)
        checks = _ImportChecks(allow_empty=allow_empty, allow_shrink=allow_shrink, allow_old=allow_old)
        return self._import_holds(file, rows, columns, actor, why, replace, list_date, checks)

    def import_holds(self, path: str | Path, **options: Any) -> ImportResult:
        return self.import_file(path, "holds", **options)

    def import_manifest(self, path: str | Path, **options: Any) -> ImportResult:
        return self.import_file(path, "manifest", **options)

    def _import_manifest(
        self, file: Path, rows: list[_FileRow], columns: set[str], actor: str, reason: str | None
    ) -> ImportResult:
        extra = columns - _MANIFEST_COLUMNS
        if extra or (rows and columns != _MANIFEST_COLUMNS):
            missing = _MANIFEST_COLUMNS - columns
            detail = ", ".join(
                [f"unexpected column {name}" for name in sorted(extra)]
                + [f"missing column {name}" for name in sorted(missing)]
            )
            raise HoldListError(f"{file}: a manifest has exactly container and bill_of_lading: {detail}")
        problems: list[str] = []
        lines: list[_ManifestLine] = []
        for row in rows:
            try:
                lines.append(
                    _ManifestLine(
                        container=_required_container(row.values.get("container")),
                        bill_of_lading=_required_bill(row.values.get("bill_of_lading")),
                    )
                )
            except (HoldListError, ContainerNumberError) as error:
                problems.append(f"{file}:{row.line}: {error}")
        _raise_problems(file, problems)
        added = 0
        with self._writing("import a manifest") as conn:
            now = self._clock.now()
            seen: set[tuple[str, str]] = set()
            for line in lines:
                key = (line.container, line.bill_of_lading)
                if key in seen:
                    continue
                seen.add(key)
                exists = conn.execute(
                    select(manifest.c.id).where(
                        manifest.c.container == line.container,
                        manifest.c.bill_of_lading == line.bill_of_lading,
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        insert(manifest).values(
                            container=line.container,
                            bill_of_lading=line.bill_of_lading,
                            source=str(file)[:1024],
                            imported_at=now,
                        )
                    )
                    added += 1
            version = self._changed(conn, changed=added > 0)
            result = ImportResult(
                path=str(file),
                kind="manifest",
                rows=len(lines),
                placed=0,
                released=0,
                manifest_added=added,
                unchanged=len(lines) - added,
                version=version,
            )
            self._audit(
                conn, actor, "manifest_import", file.name[:128], {**result.to_json(), "reason": reason}
            )
        return result

    def _import_holds(
        self,
        file: Path,
        rows: list[_FileRow],
        columns: set[str],
        actor: str,
        reason: str | None,
        replace: bool,
        list_date: datetime | None,
        checks: _ImportChecks,
    ) -> ImportResult:
        if not columns & {"container", "bill_of_lading"} and rows:
            raise HoldListError(f"{file}: a hold list needs a container or bill_of_lading column")
        problems: list[str] = []
        specs: list[tuple[int, _Place | _Release]] = []
        for row in rows:
            values = row.values
            try:
                action = str(values.get("action") or "place").strip().lower()
                spec: _Place | _Release
                if action == "place":
                    spec = _check_place(
                        container=values.get("container"),
                        bill_of_lading=values.get("bill_of_lading"),
                        agency=values.get("agency"),
                        hold_type=values.get("hold_type"),
                        code=values.get("code"),
                        reference=values.get("reference"),
                        note=values.get("note"),
                    )
                elif action == "release" and replace:
                    raise HoldListError("a full list (--replace) names the active holds only, not releases")
                elif action == "release":
                    spec = _check_release(
                        hold_id=None,
                        container=values.get("container"),
                        bill_of_lading=values.get("bill_of_lading"),
                        agency=_blank_to_none(values.get("agency")),
                        hold_type=_blank_to_none(values.get("hold_type")),
                        code=values.get("code"),
                        reference=values.get("reference"),
                    )
                else:
                    raise HoldListError(f"action {action!r} is neither place nor release")
                specs.append((row.line, spec))
            except HoldListError as error:
                problems.append(f"{file}:{row.line}: {error}")
        _raise_problems(file, problems)
        if not specs and not checks.allow_empty:
            raise HoldListError(
                f"{file}: no holds in the file: refused, since an empty or truncated list would clear "
                "every container; give --allow-empty if the hold list really is empty"
            )
        now = self._clock.now()
        as_of = list_date or now
        placed = released = unchanged = 0
        with self._writing("import holds") as conn:
            self._check_list_date(conn, file, as_of, now, checks.allow_old)
            if replace:
                self._check_shrink(conn, file, specs, checks.allow_shrink)
                released += self._release_absent(conn, file, [s for _, s in specs if isinstance(s, _Place)])
            for line, spec in specs:
                if isinstance(spec, _Place):
                    if self._same_active_hold(conn, spec):
                        unchanged += 1
                    else:
                        self._insert(conn, spec, None)
                        placed += 1
                else:
                    count = len(self._release(conn, spec, None))
                    if count == 0:
                        problems.append(f"{file}:{line}: no active hold matches ({_describe(spec)})")
                    released += count
            _raise_problems(file, problems)
            version = self._changed(conn, changed=placed + released > 0)
            # Customs' word that the list is out of step outweighs a partial file: only a full one clears it.
            confirmed = replace or not self._out_of_step(conn)
            if confirmed:
                self._confirm(conn, as_of, actor)
            result = ImportResult(
                path=str(file),
                kind="holds",
                rows=len(specs),
                placed=placed,
                released=released,
                manifest_added=0,
                unchanged=unchanged,
                version=version,
                confirmed=confirmed,
            )
            detail = {**result.to_json(), "replace": replace, "list_date": rfc3339(as_of), "reason": reason}
            self._audit(conn, actor, "holds_import", file.name[:128], detail)
        return result

    def _check_list_date(
        self, conn: Connection, file: Path, as_of: datetime, now: datetime, allow_old: bool
    ) -> None:
        if as_of - now > MAX_FUTURE:
            raise HoldListError(f"{file}: the list is dated {rfc3339(as_of)}, in the future: refused")
        if allow_old:
            return
        if now - as_of > MAX_IMPORT_AGE:
            raise HoldListError(
                f"{file}: the list is dated {rfc3339(as_of)}, more than a day ago: refused "
                "(give --allow-old to import it anyway)"
            )
        confirmed = conn.execute(
            select(holdlist_state.c.confirmed_at).where(holdlist_state.c.id == _STATE_ID)
        ).scalar()
        if confirmed is not None and as_of < confirmed:
            raise HoldListError(
                f"{file}: the list is dated {rfc3339(as_of)}, before the one it replaces "
                f"({rfc3339(confirmed)}): refused (give --allow-old to import it anyway)"
            )

    def _check_shrink(
        self, conn: Connection, file: Path, specs: list[tuple[int, _Place | _Release]], allow_shrink: bool
    ) -> None:
        """Per agency the full list names: it may not be less than half of what that agency holds."""
        wanted: dict[str, set[tuple[str | None, str | None, str, str]]] = {}
        for _, spec in specs:
            if isinstance(spec, _Place):
                wanted.setdefault(spec.agency, set()).add(_identity(spec))
        for agency, listed in sorted(wanted.items()):
            current = int(
                conn.execute(
                    select(func.count())
                    .select_from(holds)
                    .where(holds.c.released_at.is_(None), holds.c.agency == agency)
                ).scalar_one()
            )
            if not allow_shrink and current >= SHRINK_FLOOR and len(listed) * 2 < current:
                raise HoldListError(
                    f"{file}: the full list has {len(listed)} {agency} holds and would replace {current}: "
                    "refused, since a truncated list would clear containers; give --allow-shrink if customs "
                    "really released them"
                )

    def _release_absent(self, conn: Connection, file: Path, wanted: list[_Place]) -> int:
        """Release the active holds of the agencies a full list names that it does not list (another
        agency's holds are not this list's to end)."""
        keep = {_identity(spec) for spec in wanted}
        agencies = {spec.agency for spec in wanted}
        rows = conn.execute(
            select(
                holds.c.id, holds.c.container, holds.c.bill_of_lading, holds.c.agency, holds.c.hold_type
            ).where(holds.c.released_at.is_(None), holds.c.agency.in_(agencies))
        ).all()
        gone = [
            row.id
            for row in rows
            if (row.container, row.bill_of_lading, row.agency, row.hold_type) not in keep
        ]
        for chunk in range(0, len(gone), 500):
            conn.execute(
                update(holds)
                .where(holds.c.id.in_(gone[chunk : chunk + 500]))
                .values(
                    released_at=self._clock.now(), release_reference=f"not in {file.name}"[:MAX_REFERENCE]
                )
            )
        return len(gone)

    def _same_active_hold(self, conn: Connection, spec: _Place) -> bool:
        def same(column: Any, value: str | None) -> Any:
            return column.is_(None) if value is None else column == value

        row = conn.execute(
            select(holds.c.id).where(
                holds.c.released_at.is_(None),
                same(holds.c.container, spec.container),
                same(holds.c.bill_of_lading, spec.bill_of_lading),
                holds.c.agency == spec.agency,
                holds.c.hold_type == spec.hold_type,
                same(holds.c.code, spec.code),
                same(holds.c.reference, spec.reference),
            )
        ).first()
        return row is not None

    # -- customs' signed commands

    def apply_command(self, command: VerifiedCommand) -> HoldCommandResult:
        """``apply_command_in`` in a transaction of its own."""
        with self._writing("apply a hold command") as conn:
            return self.apply_command_in(conn, command)

    def apply_command_in(self, conn: Connection, command: VerifiedCommand) -> HoldCommandResult:
        """Validate and apply one command whose signature verified, inside ``conn``'s transaction
        (the caller stores the acknowledgement and the audit record in the same one). Its id is
        spent for its key whatever the outcome, so a replay changes nothing; invalid commands come
        back with ``applied=False`` and the reason. Only a storage failure raises."""
        payload = command.payload
        key = command.key_id
        raw_action = payload.get("action")
        action = raw_action if raw_action in ("place", "release", "sync") else None
        try:
            command_id = _message_id(payload.get("id"))
        except HoldListError as error:
            return HoldCommandResult(None, action, False, False, str(error), key=key)
        self.lock(conn)
        source = _source_id(f"{key}:{command_id}")
        earlier = conn.execute(
            select(hold_commands.c.applied, hold_commands.c.reason).where(
                hold_commands.c.key_id == key, hold_commands.c.command_id == command_id
            )
        ).first()
        if earlier is not None:
            if earlier.applied:
                placed = self._placed_by(conn, source)
                done = (placed,) if placed is not None else tuple(self._released_by(conn, source))
                return HoldCommandResult(
                    command_id, action, True, True, f"already applied: {earlier.reason}", done, key
                )
            reason = f"command id {command_id!r} of key {key!r} was used before (rejected: {earlier.reason})"
            return HoldCommandResult(command_id, action, False, False, reason[:MAX_REASON], key=key)
        newest = conn.execute(
            select(func.max(hold_commands.c.issued_at)).where(hold_commands.c.key_id == key)
        ).scalar()
        if newest is not None and command.issued_at < newest:
            # A key's commands take effect in the order they were made: an older release arriving
            # late must not end a newer hold, nor an older sync vouch for the list again.
            reason = (
                f"made {rfc3339(command.issued_at)}, before key {key!r}'s newest command "
                f"({rfc3339(newest)}): out of order; send it again with a new ts"
            )
            return HoldCommandResult(command_id, action, False, False, reason, key=key)
        try:
            spec = parse_command(payload)
            if spec.agency not in command.agencies:
                raise HoldListError(f"key {key!r} may not act for agency {spec.agency}")
            result = self._apply(conn, spec, command, command_id, source)
        except (HoldListError, ContainerNumberError) as error:
            result = HoldCommandResult(command_id, action, False, False, str(error), key=key)
        conn.execute(
            insert(hold_commands).values(
                key_id=key,
                command_id=command_id,
                action=action,
                issued_at=command.issued_at,
                received_at=self._clock.now(),
                applied=result.applied,
                reason=result.reason[:MAX_REASON],
            )
        )
        return result

    def _apply(
        self,
        conn: Connection,
        spec: _Place | _Release | _Sync,
        command: VerifiedCommand,
        command_id: str,
        source: str,
    ) -> HoldCommandResult:
        key = command.key_id
        if isinstance(spec, _Place):
            record = self._insert(conn, spec, source)
            self._changed(conn, changed=True)
            return HoldCommandResult(command_id, "place", True, False, "hold placed", (record,), key)
        if isinstance(spec, _Release):
            released = self._release(conn, spec, source)
            if not released:
                raise HoldListError(f"no active hold matches ({_describe(spec)})")
            self._changed(conn, changed=True)
            return HoldCommandResult(
                command_id, "release", True, False, f"{len(released)} hold(s) released", tuple(released), key
            )
        active = conn.execute(
            select(holds.c.container, holds.c.bill_of_lading, holds.c.hold_type).where(
                holds.c.released_at.is_(None), holds.c.agency == spec.agency
            )
        ).all()
        mine = [(row.container, row.bill_of_lading, row.hold_type) for row in active]
        if len(mine) != spec.count or (spec.digest is not None and spec.digest != holds_digest(mine)):
            # Customs' own word that the list is out of step: it is stale until a sync matches.
            conn.execute(
                update(holdlist_state).where(holdlist_state.c.id == _STATE_ID).values(out_of_step=True)
            )
            what = "count" if len(mine) != spec.count else "digest"
            reason = (
                f"out of step with customs ({what}): {spec.agency} has {spec.count} active holds, "
                f"gated has {len(mine)}; the hold list is stale until a sync matches"
            )
            return HoldCommandResult(command_id, "sync", False, False, reason, key=key, out_of_step=True)
        self._confirm(conn, min(command.issued_at, self._clock.now()), f"key:{key}")
        return HoldCommandResult(
            command_id,
            "sync",
            True,
            False,
            f"hold list confirmed: {len(mine)} active {spec.agency} holds",
            (),
            key,
        )


@dataclass(frozen=True, slots=True)
class _ImportChecks:
    allow_empty: bool
    allow_shrink: bool
    allow_old: bool


def _identity(spec: _Place) -> tuple[str | None, str | None, str, str]:
    """What makes two holds the same hold in a full list."""
    return (spec.container, spec.bill_of_lading, spec.agency, spec.hold_type)


def holds_digest(active: Sequence[tuple[str | None, str | None, str]]) -> str:
    """The digest a ``sync`` may carry: sha256 over the sorted lines "container|bill|hold_type" of
    the agency's active holds (empty for a missing field), joined by newlines, in UTF-8."""
    lines = sorted(f"{container or ''}|{bill or ''}|{hold_type}" for container, bill, hold_type in active)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _source_id(value: object) -> str:
    return _text("message id", value, MAX_SOURCE_ID)


_COMMAND_KEYS = frozenset(
    {
        "schema",
        "id",
        "action",
        "container",
        "bill_of_lading",
        "agency",
        "hold_type",
        "code",
        "reference",
        "note",
        "count",
        "digest",
        # the signature and its key (checked before the command gets here)
        "key",
        "sig",
        # envelope fields a sender may add
        "site",
        "node",
        "seq",
        "ts",
    }
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_SYNC_COUNT = 100_000_000


def parse_command(payload: Mapping[Any, Any]) -> _Place | _Release | _Sync:
    """The command's fields, checked (``HoldListError`` naming the first problem)."""
    unknown = sorted(str(key) for key in payload if key not in _COMMAND_KEYS)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise HoldListError(f"unknown field(s) {shown}")
    if payload.get("schema") != SCHEMA:
        raise HoldListError(f"schema must be {SCHEMA!r}")
    action = payload.get("action")
    if action == "place":
        return _check_place(
            container=payload.get("container"),
            bill_of_lading=payload.get("bill_of_lading"),
            agency=payload.get("agency"),
            hold_type=payload.get("hold_type"),
            code=payload.get("code"),
            reference=payload.get("reference"),
            note=payload.get("note"),
        )
    if action == "release":
        release = _check_release(
            hold_id=None,
            container=payload.get("container"),
            bill_of_lading=payload.get("bill_of_lading"),
            agency=_required("agency", payload),
            hold_type=_required("hold_type", payload),
            code=payload.get("code"),
            reference=payload.get("reference"),
        )
        assert release.agency is not None  # required above
        return release
    if action == "sync":
        count = payload.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SYNC_COUNT:
            raise HoldListError("count must be a whole number of active holds, 0 or more")
        digest = payload.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
            raise HoldListError("digest must be 'sha256:' and 64 lower-case hex digits")
        extra = sorted(
            {"container", "bill_of_lading", "hold_type", "code", "reference", "note"} & set(payload)
        )
        if extra:
            raise HoldListError(f"a sync names an agency and a count, not {', '.join(extra)}")
        return _Sync(agency=_agency(_required("agency", payload)), count=count, digest=digest)
    raise HoldListError("action must be 'place', 'release' or 'sync'")


def _required(key: str, payload: Mapping[Any, Any]) -> object:
    if payload.get(key) is None:
        raise HoldListError(f"{key} is required")
    return payload[key]


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _required_container(value: object) -> str:
    container = _optional_container(value)
    if container is None:
        raise HoldListError("container is empty")
    return container


def _required_bill(value: object) -> str:
    bill = _optional_bill(value)
    if bill is None:
        raise HoldListError("bill of lading is empty")
    return bill


def _describe(spec: _Release) -> str:
    parts = []
    if spec.hold_id is not None:
        parts.append(f"id {spec.hold_id}")
    if spec.container is not None:
        parts.append(f"container {spec.container}")
    if spec.bill_of_lading is not None:
        parts.append(f"B/L {spec.bill_of_lading}")
    if spec.agency is not None:
        parts.append(f"agency {spec.agency}")
    if spec.hold_type is not None:
        parts.append(f"type {spec.hold_type}")
    return ", ".join(parts)
