"""The customs hold list: holds per container and per bill of lading, the manifest that links them.

A container is gate-eligible only when no active hold exists on it or on any bill of lading (B/L) the
manifest says it carries. History is kept: a release stamps ``released_at`` on the hold, nothing is
deleted or overwritten. Holds arrive three ways: imported files (CSV or JSON lines), MQTT commands
(``gated.hold/1`` on ``holds/cmd``) and the operator's ``gated holds`` commands.

Every change bumps ``holdlist_state.version``. Every write transaction starts by writing that one
row, so writers (the daemon and a CLI at the same time) take turns and each check-then-write is
atomic, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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
from gated.errors import ContainerNumberError, HoldListError, StorageError
from gated.iso6346 import ContainerNumber, normalise

SCHEMA = "gated.hold/1"
MAX_BILL_OF_LADING = 35
MAX_AGENCY = 64
MAX_HOLD_TYPE = 32
MAX_CODE = 16
MAX_REFERENCE = 128
MAX_NOTE = 1000
MAX_MESSAGE_ID = 128
MAX_REPORTED_PROBLEMS = 20
_HOLD_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_STATE_ID = 1

ImportKind = Literal["holds", "manifest"]

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
    Column("source_message_id", String(MAX_MESSAGE_ID), nullable=True, unique=True),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("released_at", UTCDateTime(), nullable=True),
    Column("release_code", String(MAX_CODE), nullable=True),
    Column("release_reference", String(MAX_REFERENCE), nullable=True),
    Column("release_source_message_id", String(MAX_MESSAGE_ID), nullable=True),
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
    CheckConstraint(f"id = {_STATE_ID}", name="ck_holdlist_state_single_row"),
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
    """How current the hold list is. ``version`` counts changes. ``updated_at`` is the last change
    or confirmation (any import or hold command, even one that changed nothing); ``loaded_at`` the
    last import or hold command. ``loaded`` is False until one has arrived: an empty list that was
    never loaded must not release anything."""

    version: int
    active: int
    updated_at: datetime | None
    loaded: bool
    loaded_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "active": self.active,
            "updated_at": rfc3339(self.updated_at) if self.updated_at is not None else None,
            "loaded": self.loaded,
            "loaded_at": rfc3339(self.loaded_at) if self.loaded_at is not None else None,
        }


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

    def to_json(self) -> dict[str, Any]:
        return {
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
    """The answer to one ``gated.hold/1`` command (the body of a ``holds/ack`` message)."""

    command_id: str | None
    action: str | None
    applied: bool
    duplicate: bool
    reason: str
    holds: tuple[HoldRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command_id,
            "action": self.action,
            "applied": self.applied,
            "duplicate": self.duplicate,
            "reason": self.reason,
            "holds": [hold.to_json() for hold in self.holds],
        }


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
            value = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{path}:{number}: not valid JSON: {error.msg}")
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
        raise StorageError(f"hold list: cannot {what}: {error}") from error


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
                        id=_STATE_ID, version=0, updated_at=None, loaded=False, loaded_at=None
                    )
                )
        except IntegrityError:
            pass  # another process created it first

    @contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """A write transaction that first takes the hold-list lock (a write to the state row)."""
        with _storage(what), self._engine.begin() as conn:
            conn.execute(
                update(holdlist_state)
                .where(holdlist_state.c.id == _STATE_ID)
                .values(version=holdlist_state.c.version)
            )
            yield conn

    def _changed(self, conn: Connection, *, changed: bool, loaded: bool) -> int:
        now = self._clock.now()
        values: dict[str, Any] = {}
        if changed:
            values["version"] = holdlist_state.c.version + 1
        if changed or loaded:
            values["updated_at"] = now
        if loaded:
            values["loaded"] = True
            values["loaded_at"] = now
        if values:
            conn.execute(update(holdlist_state).where(holdlist_state.c.id == _STATE_ID).values(**values))
        version = conn.execute(
            select(holdlist_state.c.version).where(holdlist_state.c.id == _STATE_ID)
        ).scalar_one()
        return int(version)

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
    ) -> HoldRecord:
        """Place a hold on a container and/or a B/L. With ``source_message_id``, placing again with
        the same id returns the hold already placed and changes nothing."""
        spec = _check_place(
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
            note=note,
        )
        message_id = None if source_message_id is None else _message_id(source_message_id)
        with self._writing("place a hold") as conn:
            if message_id is not None:
                existing = self._placed_by(conn, message_id)
                if existing is not None:
                    return existing
                if self._released_by(conn, message_id):
                    raise HoldListError(f"message id {message_id!r} was already used by a release")
            record = self._insert(conn, spec, message_id)
            self._changed(conn, changed=True, loaded=False)
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
    ) -> list[HoldRecord]:
        """Release the active holds that match every field given: a hold id, or all holds placed on
        that container and/or B/L, optionally only those of one agency and hold type. ``code`` and
        ``reference`` are the release's own (e.g. 1I). Raises ``HoldListError`` when nothing matches.
        With ``source_message_id``, releasing again with the same id returns the holds it released."""
        spec = _check_release(
            hold_id=hold_id,
            container=container,
            bill_of_lading=bill_of_lading,
            agency=agency,
            hold_type=hold_type,
            code=code,
            reference=reference,
        )
        message_id = None if source_message_id is None else _message_id(source_message_id)
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
            self._changed(conn, changed=True, loaded=False)
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
        )

    # -- files

    def import_file(self, path: str | Path, kind: ImportKind | None = None) -> ImportResult:
        """Import a hold list or a manifest (CSV with a header, or JSON lines). Without ``kind``, a
        file whose only columns are container and bill_of_lading is a manifest. All or nothing: any
        bad line rejects the whole file with one "file:line: problem" per problem."""
        if kind not in (None, "holds", "manifest"):
            raise HoldListError(f"unknown import kind {kind!r}: use holds or manifest")
        file = Path(path)
        rows, columns = _read_rows(file)
        if kind is None:
            kind = _detect_kind(file, columns)
        if kind == "manifest":
            return self._import_manifest(file, rows, columns)
        return self._import_holds(file, rows, columns)

    def import_holds(self, path: str | Path) -> ImportResult:
        return self.import_file(path, "holds")

    def import_manifest(self, path: str | Path) -> ImportResult:
        return self.import_file(path, "manifest")

    def _import_manifest(self, file: Path, rows: list[_FileRow], columns: set[str]) -> ImportResult:
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
            version = self._changed(conn, changed=added > 0, loaded=True)
        return ImportResult(
            path=str(file),
            kind="manifest",
            rows=len(lines),
            placed=0,
            released=0,
            manifest_added=added,
            unchanged=len(lines) - added,
            version=version,
        )

    def _import_holds(self, file: Path, rows: list[_FileRow], columns: set[str]) -> ImportResult:
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
        placed = released = unchanged = 0
        with self._writing("import holds") as conn:
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
            version = self._changed(conn, changed=placed + released > 0, loaded=True)
        return ImportResult(
            path=str(file),
            kind="holds",
            rows=len(specs),
            placed=placed,
            released=released,
            manifest_added=0,
            unchanged=unchanged,
            version=version,
        )

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

    # -- MQTT commands

    def apply_command(self, payload: object) -> HoldCommandResult:
        """Validate and apply one ``gated.hold/1`` command (any JSON value may arrive). Invalid
        commands come back with ``applied=False`` and the reason; a command id seen before is
        acknowledged as already applied. Only a storage failure raises (``StorageError``)."""
        if not isinstance(payload, Mapping):
            return _rejected(None, None, f"a hold command is a JSON object, got {_json_type(payload)}")
        raw_id = payload.get("id")
        command_id = raw_id if isinstance(raw_id, str) else None
        raw_action = payload.get("action")
        action = raw_action if raw_action in ("place", "release") else None
        try:
            command_id = _message_id(raw_id)
            command = _parse_command(payload)
        except (HoldListError, ContainerNumberError) as error:
            return _rejected(command_id, action, str(error))
        try:
            with self._writing("apply a hold command") as conn:
                earlier_place = self._placed_by(conn, command_id)
                earlier_release = self._released_by(conn, command_id)
                if earlier_place is not None or earlier_release:
                    done = (earlier_place,) if earlier_place is not None else tuple(earlier_release)
                    return HoldCommandResult(command_id, action, True, True, "already applied", done)
                if isinstance(command, _Place):
                    record = self._insert(conn, command, command_id)
                    self._changed(conn, changed=True, loaded=True)
                    return HoldCommandResult(command_id, action, True, False, "hold placed", (record,))
                released = self._release(conn, command, command_id)
                if not released:
                    raise HoldListError(f"no active hold matches ({_describe(command)})")
                self._changed(conn, changed=True, loaded=True)
                reason = f"{len(released)} hold(s) released"
                return HoldCommandResult(command_id, action, True, False, reason, tuple(released))
        except HoldListError as error:
            return _rejected(command_id, action, str(error))


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
        # envelope fields a sender may add
        "site",
        "node",
        "seq",
        "ts",
    }
)


def _parse_command(payload: Mapping[Any, Any]) -> _Place | _Release:
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
        return _check_release(
            hold_id=None,
            container=payload.get("container"),
            bill_of_lading=payload.get("bill_of_lading"),
            agency=_required("agency", payload),
            hold_type=_required("hold_type", payload),
            code=payload.get("code"),
            reference=payload.get("reference"),
        )
    raise HoldListError("action must be 'place' or 'release'")


def _required(key: str, payload: Mapping[Any, Any]) -> object:
    if payload.get(key) is None:
        raise HoldListError(f"{key} is required")
    return payload[key]


def _rejected(command_id: str | None, action: str | None, reason: str) -> HoldCommandResult:
    return HoldCommandResult(command_id, action, False, False, reason)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


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
