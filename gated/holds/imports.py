"""Importing an operator's hold list or manifest file (CSV with a header, or JSON lines): all or
nothing, with the refusals that keep a truncated or old list from clearing containers.

Built for lists of a million rows imported into the database a running daemon uses:
1. the file is streamed, every row checked, and the checked rows written in batches to a
   temporary staging table of the import's own connection (SQLite: ``executemany`` into a TEMP
   table, which takes no lock on the daemon's database; PostgreSQL: ``COPY``). Any bad row: every
   problem is reported with its line and nothing is applied;
2. one transaction then merges the staging table into the hold list with a few set-based
   statements, so the daemon's writers wait for that transaction only (its readers never wait).
An import interrupted before step 2 commits (Ctrl-C, a crash) changes nothing: its staging table
dies with its connection, and running the same command again does the whole import.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import rfc3339
from gated.db import UTCDateTime
from gated.errors import ContainerNumberError, HoldListError
from gated.holds.model import (
    MAX_AGENCY,
    MAX_BILL_OF_LADING,
    MAX_CODE,
    MAX_NOTE,
    MAX_REFERENCE,
    ImportKind,
    ImportResult,
    Release,
    check_agency,
    check_place,
    check_release,
    describe,
    optional_bill,
    optional_container,
    optional_text,
)
from gated.holds.store import HoldStore, Transaction, holds, storage_errors
from gated.importfile import Problems, StreamedFile, stream_import_file

SHRINK_FLOOR = 10
"""A full list replacing one of at least this many holds may not shrink below half of it unasked."""
MAX_IMPORT_AGE = timedelta(days=1)
"""An imported list dated longer ago than this is refused unless the operator says so."""
MAX_FUTURE = timedelta(minutes=10)
"""How far ahead of gated's clock a list's date may be (clock skew)."""
STAGING_BATCH = 20_000
"""Rows written to the staging table per ``executemany`` (or per COPY flush)."""
PROGRESS_EVERY = 25_000
"""Rows between two calls of the progress callback."""

# The names a file may give each column (as importfile.column_key spells them).
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

Progress = Callable[[str, int, int, int], None]
"""``progress(phase, rows, bytes_read, bytes_total)``: told every ``PROGRESS_EVERY`` rows."""


def _no_progress(_phase: str, _rows: int, _done: int, _total: int) -> None:
    return None


def _detect_kind(path: Path, columns: set[str]) -> ImportKind:
    if columns & _HOLD_COLUMNS:
        return "holds"
    if columns == _MANIFEST_COLUMNS:
        return "manifest"
    raise HoldListError(
        f"{path}: cannot tell a hold list from a manifest (columns: {', '.join(sorted(columns)) or 'none'});"
        " give the kind"
    )


@dataclass(frozen=True, slots=True)
class _ImportChecks:
    allow_empty: bool
    allow_shrink: bool
    allow_old: bool


def import_file(
    store: HoldStore,
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
    progress: Progress | None = None,
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
    ago (``allow_old``). ``progress`` hears how far the import is."""
    if kind not in (None, "holds", "manifest"):
        raise HoldListError(f"unknown import kind {kind!r}: use holds or manifest")
    file = Path(path)
    why = optional_text("reason", reason, MAX_NOTE)
    tell = progress or _no_progress
    if kind is None:
        kind = _kind_of(file)
    checks = _ImportChecks(allow_empty=allow_empty, allow_shrink=allow_shrink, allow_old=allow_old)
    if kind == "manifest" and replace:
        raise HoldListError(f"{file}: a manifest only adds links; --replace is for hold lists")
    with storage_errors(f"import {file.name}"), store.engine.connect() as conn:
        staging = _Staging(conn, kind)
        try:
            problems = Problems(file)
            read = stream_import_file(file, _COLUMN_ALIASES, HoldListError, problems)
            try:
                plan = _Plan()
                if kind == "manifest":
                    rows = _stage_manifest(read, staging, problems, tell)
                else:
                    rows, plan = _stage_holds(read, staging, problems, replace, tell)
            finally:
                read.close()
            problems.raise_if_any(HoldListError)
            staging.finish(conn, repeats=plan.repeats, replace=replace)
            tell("apply", rows, read.size, read.size)
            if kind == "manifest":
                return _apply_manifest(store, conn, staging, file, rows, actor, why)
            if not rows and not checks.allow_empty:
                raise HoldListError(
                    f"{file}: no holds in the file: refused, since an empty or truncated list would clear "
                    "every container; give --allow-empty if the hold list really is empty"
                )
            return _apply_holds(
                store, conn, staging, plan, file, rows, actor, why, replace, list_date, checks
            )
        finally:
            staging.drop(conn)


def _kind_of(file: Path) -> ImportKind:
    """The kind the file's columns say (a CSV file's header, every key of a JSON-lines file)."""
    problems = Problems(file)
    read = stream_import_file(file, _COLUMN_ALIASES, HoldListError, problems)
    try:
        if read.format == "jsonl":
            for _row in read.rows:
                pass
    finally:
        read.close()
    problems.raise_if_any(HoldListError)
    return _detect_kind(file, read.columns)


# --- step 1: every row checked and staged -----------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What staging a hold list learned on the way: the place rows per run (a run is the places
    between two release rows), the release rows in order, and whether a place may repeat one."""

    sizes: dict[int, int] = field(default_factory=dict)
    releases: list[tuple[int, Release]] = field(default_factory=list)
    repeats: bool = False


def _stage_holds(
    read: StreamedFile, staging: _Staging, problems: Problems, replace: bool, tell: Progress
) -> tuple[int, _Plan]:
    if read.format == "csv" and not read.columns & {"container", "bill_of_lading"}:
        # A CSV header without either column: no row can name what it holds.
        for _row in read.rows:
            raise HoldListError(f"{read.path}: a hold list needs a container or bill_of_lading column")
    checker = RowChecker()
    plan = _Plan()
    seen: set[int] = set()  # hashes of the places so far: a repeat is confirmed in SQL
    count = 0
    for row in read.rows:
        count += 1
        if count % PROGRESS_EVERY == 0:
            tell("check", count, read.consumed(), read.size)
        try:
            staged = checker.check(row.values, replace)
        except HoldListError as error:
            problems.add(row.line, str(error))
            continue
        run = len(plan.releases)
        if staged[0] == "release":
            _, container, bill, agency, hold_type, code, reference, _note = staged
            plan.releases.append(
                (row.line, Release(None, container, bill, agency, hold_type, code, reference))
            )
            seen.clear()
            continue
        plan.sizes[run] = plan.sizes.get(run, 0) + 1
        identity = hash(staged[1:7])
        if identity in seen:
            plan.repeats = True
        seen.add(identity)
        staging.add((row.line, run, *staged[1:]))
    if read.format == "jsonl" and count and not read.columns & {"container", "bill_of_lading"}:
        raise HoldListError(f"{read.path}: a hold list needs a container or bill_of_lading column")
    staging.flush()
    return count, plan


def _stage_manifest(read: StreamedFile, staging: _Staging, problems: Problems, tell: Progress) -> int:
    count = 0
    for row in read.rows:
        count += 1
        if count % PROGRESS_EVERY == 0:
            tell("check", count, read.consumed(), read.size)
        try:
            container = _required_container(row.values.get("container"))
            staging.add((row.line, container, _required_bill(row.values.get("bill_of_lading"))))
        except (HoldListError, ContainerNumberError) as error:
            problems.add(row.line, str(error))
    extra = read.columns - _MANIFEST_COLUMNS
    if extra or (count and read.columns != _MANIFEST_COLUMNS):
        missing = _MANIFEST_COLUMNS - read.columns
        detail = ", ".join(
            [f"unexpected column {name}" for name in sorted(extra)]
            + [f"missing column {name}" for name in sorted(missing)]
        )
        raise HoldListError(f"{read.path}: a manifest has exactly container and bill_of_lading: {detail}")
    staging.flush()
    return count


# One line of text without control characters (a note may also hold tabs and line breaks), and
# no lone surrogates: what ``model._text`` lets through, as one regular expression.
_LINE = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]*")
_NOTE = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]*")
_CANONICAL_CONTAINER = re.compile(r"[A-Z]{3}[UJZ][0-9]{7}")
_CACHE_LIMIT = 10_000
_FULL_CHECK = "\x00"  # never a checked value (a control character): "ask the model"

StagedHold = tuple[str, str | None, str | None, str | None, str | None, str | None, str | None, str | None]
"""(action, container, bill_of_lading, agency, hold_type, code, reference, note) as stored."""


class RowChecker:
    """One file row to the values a hold stores: exactly what ``check_place`` and
    ``check_release`` decide and say, a few times faster. Plain, already tidy values take a short
    path; the few values a file repeats (agency, type, code) are checked once each; anything
    else goes through the model's own checks, which word the problem."""

    def __init__(self) -> None:
        self._agency: dict[object, str] = {}
        self._words: dict[tuple[object, object], tuple[str | None, str | None]] = {}

    def check(self, values: dict[str, str | None], replace: bool) -> StagedHold:
        action = str(values.get("action") or "place").strip().lower()
        if action == "place":
            fast = self._place(values)
            if fast is not None:
                return fast
            spec = check_place(
                container=values.get("container"),
                bill_of_lading=values.get("bill_of_lading"),
                agency=values.get("agency"),
                hold_type=values.get("hold_type"),
                code=values.get("code"),
                reference=values.get("reference"),
                note=values.get("note"),
            )
            return ("place", spec.container, spec.bill_of_lading, spec.agency, spec.hold_type, spec.code,
                    spec.reference, spec.note)  # fmt: skip
        if action == "release" and replace:
            raise HoldListError("a full list (--replace) names the active holds only, not releases")
        if action == "release":
            release = check_release(
                hold_id=None,
                container=values.get("container"),
                bill_of_lading=values.get("bill_of_lading"),
                agency=_blank_to_none(values.get("agency")),
                hold_type=_blank_to_none(values.get("hold_type")),
                code=values.get("code"),
                reference=values.get("reference"),
            )
            return ("release", release.container, release.bill_of_lading, release.agency,
                    release.hold_type, release.code, release.reference, None)  # fmt: skip
        raise HoldListError(f"action {action!r} is neither place nor release")

    def _place(self, values: dict[str, str | None]) -> StagedHold | None:
        """The short path: None when any value needs the model's full check."""
        raw = values.get("container")
        if raw is None or raw == "":
            container = None
        elif _CANONICAL_CONTAINER.fullmatch(raw):
            container = raw
        else:
            return None
        bill = _tidy(values.get("bill_of_lading"), MAX_BILL_OF_LADING, _LINE)
        if bill is _FULL_CHECK:
            return None
        if container is None and bill is None:
            return None
        agency = self._agency.get(values.get("agency"))
        if agency is None:
            agency = self._remember_agency(values.get("agency"))
            if agency is None:
                return None
        words = self._words.get((values.get("hold_type"), values.get("code")))
        if words is None:
            words = self._remember_words(values.get("hold_type"), values.get("code"))
            if words is None:
                return None
        reference = _tidy(values.get("reference"), MAX_REFERENCE, _LINE)
        note = _tidy(values.get("note"), MAX_NOTE, _NOTE)
        if reference is _FULL_CHECK or note is _FULL_CHECK:
            return None
        return ("place", container, None if bill is None else bill.upper(), agency, words[0], words[1],
                reference, note)  # fmt: skip

    def _remember_agency(self, raw: object) -> str | None:
        try:
            agency = check_agency(raw)
        except HoldListError:
            return None
        if len(self._agency) < _CACHE_LIMIT:
            self._agency[raw] = agency
        return agency

    def _remember_words(self, hold_type: object, code: object) -> tuple[str | None, str | None] | None:
        try:
            # A dummy container: only the hold type and code are looked at here.
            spec = check_place(
                container=None, bill_of_lading="X", agency="X", hold_type=hold_type, code=code,
                reference=None, note=None,
            )  # fmt: skip
        except HoldListError:
            return None
        words = (spec.hold_type, spec.code)
        if len(self._words) < _CACHE_LIMIT:
            self._words[(hold_type, code)] = words
        return words


def _tidy(value: str | None, limit: int, allowed: re.Pattern[str]) -> str | None:
    """An optional text as the model stores it (stripped; blank is None), or ``_FULL_CHECK`` when
    it needs the model's full check (too long, control characters)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit or not allowed.fullmatch(text):
        return _FULL_CHECK
    return text


# --- the staging table ---------------------------------------------------------------------------------

_HOLD_STAGING = (
    "line INTEGER PRIMARY KEY, run INTEGER NOT NULL, container VARCHAR(11),"
    f" bill_of_lading VARCHAR({MAX_BILL_OF_LADING}), agency VARCHAR({MAX_AGENCY}), hold_type VARCHAR(32),"
    f" code VARCHAR({MAX_CODE}), reference VARCHAR({MAX_REFERENCE}), note VARCHAR({MAX_NOTE}),"
    " dup INTEGER NOT NULL DEFAULT 0"
)
_HOLD_COLUMNS_STAGED = "line, run, container, bill_of_lading, agency, hold_type, code, reference, note"
_MANIFEST_STAGING = (
    "line INTEGER PRIMARY KEY, container VARCHAR(11) NOT NULL,"
    f" bill_of_lading VARCHAR({MAX_BILL_OF_LADING}) NOT NULL"
)
_MANIFEST_COLUMNS_STAGED = "line, container, bill_of_lading"


class _Staging:
    """A temporary table of the import's own connection holding the checked rows; gone when the
    connection closes, whatever happens (``drop`` removes it sooner)."""

    def __init__(self, conn: Connection, kind: ImportKind) -> None:
        self.postgres = conn.dialect.name == "postgresql"
        self.name = "holds_import" if kind == "holds" else "manifest_import"
        definition, self._columns = (
            (_HOLD_STAGING, _HOLD_COLUMNS_STAGED)
            if kind == "holds"
            else (_MANIFEST_STAGING, _MANIFEST_COLUMNS_STAGED)
        )
        self._raw: Any = conn.connection.dbapi_connection
        self._pending: list[tuple[Any, ...]] = []
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self._temp}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {self.name} ({definition})")
        conn.commit()
        self._copy: Any = None
        self._copy_context: Any = None

    @property
    def _temp(self) -> str:
        return self.name if self.postgres else f"temp.{self.name}"

    def add(self, row: tuple[Any, ...]) -> None:
        self._pending.append(row)
        if len(self._pending) >= STAGING_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        if self.postgres:
            # COPY, the fastest way in; one COPY for the whole file, inside one transaction.
            if self._copy is None:
                self._cursor = self._raw.cursor()
                self._copy_context = self._cursor.copy(f"COPY {self.name} ({self._columns}) FROM STDIN")
                self._copy = self._copy_context.__enter__()
            for row in rows:
                self._copy.write_row(row)
            return
        marks = ", ".join("?" for _ in self._columns.split(","))
        cursor = self._raw.cursor()
        try:
            # One transaction of the temp database only, committed in ``finish``: no lock on the
            # daemon's database is taken or held while the file is read.
            cursor.executemany(f"INSERT INTO {self._temp} ({self._columns}) VALUES ({marks})", rows)  # noqa: S608 (names are our constants)
        finally:
            cursor.close()

    def finish(self, conn: Connection, *, repeats: bool = False, replace: bool = False) -> None:
        """The rows are all in: mark repeated holds (the second of two identical places adds
        nothing; only when the file may have any) and index what a full list's release looks up,
        all before the apply takes the lock."""
        self.flush()
        if self._copy_context is not None:
            self._copy_context.__exit__(None, None, None)
            self._cursor.close()
            self._copy = self._copy_context = None
        self._raw.commit()
        if repeats:
            conn.exec_driver_sql(
                f"UPDATE {self._temp} SET dup = 1 WHERE line IN (SELECT line FROM (SELECT line, row_number()"  # noqa: S608 (names are our constants)
                " OVER (PARTITION BY run, container, bill_of_lading, agency, hold_type, code, reference"
                f" ORDER BY line) AS n FROM {self._temp}) AS ranked WHERE n > 1)"
            )
        if replace and not self.postgres:
            conn.exec_driver_sql(f"CREATE INDEX temp.ix_{self.name}_container ON {self.name} (container)")
            conn.exec_driver_sql(f"CREATE INDEX temp.ix_{self.name}_bill ON {self.name} (bill_of_lading)")
        if self.postgres:
            conn.exec_driver_sql(f"ANALYZE {self.name}")  # temp tables are never analysed by autovacuum
        conn.commit()

    def drop(self, conn: Connection) -> None:
        if self._copy_context is not None:
            # An unfinished COPY holds the connection: end it (as failed) before anything else.
            abort = HoldListError("import abandoned")
            with contextlib.suppress(Exception):
                self._copy_context.__exit__(HoldListError, abort, None)
            with contextlib.suppress(Exception):
                self._cursor.close()
                self._raw.rollback()
            self._copy = self._copy_context = None
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self._temp}")
            conn.commit()
        except SQLAlchemyError:  # the connection is going away: so is its temporary table
            return


# --- step 2: one transaction applies the staged rows ---------------------------------------------------


def _same_hold(postgres: bool, hold: str, staged: str, *, exact: bool) -> str:
    """SQL: the hold ``hold`` and the staged row ``staged`` are the same hold (``exact``: code
    and reference too, as ``Transaction.same_active`` compares them)."""
    columns = ["container", "bill_of_lading"] + (["code", "reference"] if exact else [])
    if postgres:
        # Equalities the planner can hash (a hash anti-join over the staging table).
        parts = [f"coalesce({hold}.{c}, '') = coalesce({staged}.{c}, '')" for c in columns]
    else:
        # The container (or, without one, the B/L) leads to an index; IS matches NULL with NULL.
        parts = [
            f"(({staged}.container IS NOT NULL AND {hold}.container = {staged}.container)"
            f" OR ({staged}.container IS NULL AND {hold}.container IS NULL"
            f" AND {hold}.bill_of_lading = {staged}.bill_of_lading))",
            *(f"{hold}.{c} IS {staged}.{c}" for c in columns),
        ]
    parts += [f"{hold}.agency = {staged}.agency", f"{hold}.hold_type = {staged}.hold_type"]
    return " AND ".join(parts)


def _apply_holds(
    store: HoldStore,
    conn: Connection,
    staging: _Staging,
    plan: _Plan,
    file: Path,
    rows: int,
    actor: str,
    reason: str | None,
    replace: bool,
    list_date: datetime | None,
    checks: _ImportChecks,
) -> ImportResult:
    table, postgres = staging._temp, staging.postgres
    wanted: dict[str, int] = {}
    if replace:
        wanted = {
            str(agency): int(count)
            for agency, count in conn.exec_driver_sql(
                "SELECT agency, count(*) FROM (SELECT DISTINCT agency, container, bill_of_lading, hold_type"  # noqa: S608 (names are our constants)
                f" FROM {table}) AS listed GROUP BY agency"
            )
        }
        conn.commit()
    now = store.clock.now()
    as_of = list_date or now
    placed = released = unchanged = 0
    problems = Problems(file)
    insert = (
        "INSERT INTO holds (container, bill_of_lading, agency, hold_type, code, reference, note, placed_at)"  # noqa: S608 (names are our constants)
        " SELECT s.container, s.bill_of_lading, s.agency, s.hold_type, s.code, s.reference, s.note, :now"
        f" FROM {table} s WHERE s.run = :run AND s.dup = 0 AND NOT EXISTS (SELECT 1 FROM holds h"
        f" WHERE h.released_at IS NULL AND {_same_hold(postgres, 'h', 's', exact=True)}) ORDER BY s.line"
    )
    if postgres:
        conn.exec_driver_sql("ANALYZE holds")  # a list just imported is not in the planner's figures yet
        conn.commit()
    with conn.begin():
        HoldStore.lock(conn)
        if postgres:
            # Set-based joins (hash or merge) between the list and the holds, never a loop of scans.
            conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
        tx = Transaction(conn, store.clock)
        _check_list_date(tx, file, as_of, now, checks.allow_old)
        if replace:
            _check_shrink(tx, file, wanted, checks.allow_shrink)
            released += _release_absent(tx, table, postgres, file, sorted(wanted))
        for run in range(len(plan.releases) + 1):
            if plan.sizes.get(run):
                added = _insert_run(conn, insert, run, now)
                tx.adjust_active(added)
                placed += added
                unchanged += plan.sizes[run] - added
            if run < len(plan.releases):
                line, spec = plan.releases[run]
                count = len(tx.release(spec, None))
                if count == 0:
                    problems.add(line, f"no active hold matches ({describe(spec)})")
                released += count
        problems.raise_if_any(HoldListError)
        version = tx.changed(changed=placed + released > 0)
        # Customs' word that the list is out of step outweighs a partial file: only a full one clears it.
        confirmed = replace or not tx.out_of_step()
        if confirmed:
            tx.confirm(as_of, actor)
        result = ImportResult(
            path=str(file),
            kind="holds",
            rows=rows,
            placed=placed,
            released=released,
            manifest_added=0,
            unchanged=unchanged,
            version=version,
            confirmed=confirmed,
        )
        detail = {**result.to_json(), "replace": replace, "list_date": rfc3339(as_of), "reason": reason}
        tx.audit(actor, "holds_import", file.name[:128], detail)
    return result


def _insert_run(conn: Connection, insert: str, run: int, now: datetime) -> int:
    statement = text(insert).bindparams(bindparam("now", type_=UTCDateTime()))
    return int(conn.execute(statement, {"run": run, "now": now}).rowcount or 0)


def _apply_manifest(
    store: HoldStore,
    conn: Connection,
    staging: _Staging,
    file: Path,
    rows: int,
    actor: str,
    reason: str | None,
) -> ImportResult:
    table = staging._temp
    now = store.clock.now()
    with conn.begin():
        HoldStore.lock(conn)
        tx = Transaction(conn, store.clock)
        added = int(
            conn.execute(
                text(
                    "INSERT INTO manifest (container, bill_of_lading, source, imported_at)"  # noqa: S608 (names are our constants)
                    " SELECT s.container, s.bill_of_lading, :source, :now FROM"
                    f" (SELECT container, bill_of_lading, min(line) AS line FROM {table}"
                    " GROUP BY container, bill_of_lading) AS s"
                    " WHERE NOT EXISTS (SELECT 1 FROM manifest m WHERE m.container = s.container"
                    " AND m.bill_of_lading = s.bill_of_lading) ORDER BY s.line"
                ).bindparams(bindparam("now", type_=UTCDateTime())),
                {"source": str(file)[:1024], "now": now},
            ).rowcount
            or 0
        )
        version = tx.changed(changed=added > 0)
        result = ImportResult(
            path=str(file),
            kind="manifest",
            rows=rows,
            placed=0,
            released=0,
            manifest_added=added,
            unchanged=rows - added,
            version=version,
        )
        tx.audit(actor, "manifest_import", file.name[:128], {**result.to_json(), "reason": reason})
    return result


def _check_list_date(tx: Transaction, file: Path, as_of: datetime, now: datetime, allow_old: bool) -> None:
    if as_of - now > MAX_FUTURE:
        raise HoldListError(f"{file}: the list is dated {rfc3339(as_of)}, in the future: refused")
    if allow_old:
        return
    if now - as_of > MAX_IMPORT_AGE:
        raise HoldListError(
            f"{file}: the list is dated {rfc3339(as_of)}, more than a day ago: refused "
            "(give --allow-old to import it anyway)"
        )
    confirmed = tx.confirmed_at()
    if confirmed is not None and as_of < confirmed:
        raise HoldListError(
            f"{file}: the list is dated {rfc3339(as_of)}, before the one it replaces "
            f"({rfc3339(confirmed)}): refused (give --allow-old to import it anyway)"
        )


def _check_shrink(tx: Transaction, file: Path, wanted: dict[str, int], allow_shrink: bool) -> None:
    """Per agency the full list names: it may not be less than half of what that agency holds."""
    if allow_shrink or not wanted:
        return
    current = {
        str(agency): int(count)
        for agency, count in tx.conn.execute(
            select(holds.c.agency, func.count())
            .where(holds.c.released_at.is_(None), holds.c.agency.in_(sorted(wanted)))
            .group_by(holds.c.agency)
        )
    }
    for agency, listed in sorted(wanted.items()):
        now_held = current.get(agency, 0)
        if now_held >= SHRINK_FLOOR and listed * 2 < now_held:
            raise HoldListError(
                f"{file}: the full list has {listed} {agency} holds and would replace {now_held}: "
                "refused, since a truncated list would clear containers; give --allow-shrink if customs "
                "really released them"
            )


def _release_absent(tx: Transaction, table: str, postgres: bool, file: Path, agencies: list[str]) -> int:
    """Release the active holds of the agencies a full list names that it does not list (another
    agency's holds are not this list's to end)."""
    if not agencies:
        return 0
    statement = text(
        "UPDATE holds SET released_at = :now, release_reference = :reference"  # noqa: S608 (names are our constants)
        " WHERE released_at IS NULL AND agency IN :agencies AND NOT EXISTS"
        f" (SELECT 1 FROM {table} s WHERE {_same_hold(postgres, 'holds', 's', exact=False)})"
    ).bindparams(bindparam("agencies", expanding=True), bindparam("now", type_=UTCDateTime()))
    gone = int(
        tx.conn.execute(
            statement,
            {"now": tx.now(), "reference": f"not in {file.name}"[:MAX_REFERENCE], "agencies": agencies},
        ).rowcount
        or 0
    )
    tx.adjust_active(-gone)
    return gone


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _required_container(value: object) -> str:
    container = optional_container(value)
    if container is None:
        raise HoldListError("container is empty")
    return container


def _required_bill(value: object) -> str:
    bill = optional_bill(value)
    if bill is None:
        raise HoldListError("bill of lading is empty")
    return bill
