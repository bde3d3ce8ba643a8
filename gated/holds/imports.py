"""Importing an operator's hold list or manifest file (CSV with a header, or JSON lines): all or
nothing, with the refusals that keep a truncated or old list from clearing containers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select, update

from gated.clock import rfc3339
from gated.errors import ContainerNumberError, HoldListError
from gated.holds.model import (
    MAX_NOTE,
    MAX_REFERENCE,
    ImportKind,
    ImportResult,
    ManifestLine,
    Place,
    Release,
    check_place,
    check_release,
    describe,
    optional_bill,
    optional_container,
    optional_text,
)
from gated.holds.store import HoldStore, Transaction, holds, manifest
from gated.importfile import FileRow, raise_problems, read_import_file

SHRINK_FLOOR = 10
"""A full list replacing one of at least this many holds may not shrink below half of it unasked."""
MAX_IMPORT_AGE = timedelta(days=1)
"""An imported list dated longer ago than this is refused unless the operator says so."""
MAX_FUTURE = timedelta(minutes=10)
"""How far ahead of gated's clock a list's date may be (clock skew)."""

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


def _detect_kind(path: Path, columns: set[str]) -> ImportKind:
    if columns & _HOLD_COLUMNS:
        return "holds"
    if columns == _MANIFEST_COLUMNS:
        return "manifest"
    raise HoldListError(
        f"{path}: cannot tell a hold list from a manifest (columns: {', '.join(sorted(columns)) or 'none'});"
        " give the kind"
    )


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
    read = read_import_file(file, _COLUMN_ALIASES, HoldListError)
    rows, columns = read.rows, set(read.columns)
    if kind is None:
        kind = _detect_kind(file, columns)
    why = optional_text("reason", reason, MAX_NOTE)
    if kind == "manifest":
        if replace:
            raise HoldListError(f"{file}: a manifest only adds links; --replace is for hold lists")
        return _import_manifest(store, file, rows, columns, actor, why)
    checks = _ImportChecks(allow_empty=allow_empty, allow_shrink=allow_shrink, allow_old=allow_old)
    return _import_holds(store, file, rows, columns, actor, why, replace, list_date, checks)


def _import_manifest(
    store: HoldStore, file: Path, rows: list[FileRow], columns: set[str], actor: str, reason: str | None
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
    lines: list[ManifestLine] = []
    for row in rows:
        try:
            lines.append(
                ManifestLine(
                    container=_required_container(row.values.get("container")),
                    bill_of_lading=_required_bill(row.values.get("bill_of_lading")),
                )
            )
        except (HoldListError, ContainerNumberError) as error:
            problems.append(f"{file}:{row.line}: {error}")
    raise_problems(file, problems, HoldListError)
    added = 0
    with store.writing("import a manifest") as tx:
        now = store.clock.now()
        seen: set[tuple[str, str]] = set()
        for line in lines:
            key = (line.container, line.bill_of_lading)
            if key in seen:
                continue
            seen.add(key)
            exists = tx.conn.execute(
                select(manifest.c.id).where(
                    manifest.c.container == line.container,
                    manifest.c.bill_of_lading == line.bill_of_lading,
                )
            ).first()
            if exists is None:
                tx.conn.execute(
                    insert(manifest).values(
                        container=line.container,
                        bill_of_lading=line.bill_of_lading,
                        source=str(file)[:1024],
                        imported_at=now,
                    )
                )
                added += 1
        version = tx.changed(changed=added > 0)
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
        tx.audit(actor, "manifest_import", file.name[:128], {**result.to_json(), "reason": reason})
    return result


def _import_holds(
    store: HoldStore,
    file: Path,
    rows: list[FileRow],
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
    specs: list[tuple[int, Place | Release]] = []
    for row in rows:
        values = row.values
        try:
            action = str(values.get("action") or "place").strip().lower()
            spec: Place | Release
            if action == "place":
                spec = check_place(
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
                spec = check_release(
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
    raise_problems(file, problems, HoldListError)
    if not specs and not checks.allow_empty:
        raise HoldListError(
            f"{file}: no holds in the file: refused, since an empty or truncated list would clear "
            "every container; give --allow-empty if the hold list really is empty"
        )
    now = store.clock.now()
    as_of = list_date or now
    placed = released = unchanged = 0
    with store.writing("import holds") as tx:
        _check_list_date(tx, file, as_of, now, checks.allow_old)
        if replace:
            _check_shrink(tx, file, specs, checks.allow_shrink)
            released += _release_absent(tx, file, [s for _, s in specs if isinstance(s, Place)])
        for line, spec in specs:
            if isinstance(spec, Place):
                if _same_active_hold(tx, spec):
                    unchanged += 1
                else:
                    tx.insert(spec, None)
                    placed += 1
            else:
                count = len(tx.release(spec, None))
                if count == 0:
                    problems.append(f"{file}:{line}: no active hold matches ({describe(spec)})")
                released += count
        raise_problems(file, problems, HoldListError)
        version = tx.changed(changed=placed + released > 0)
        # Customs' word that the list is out of step outweighs a partial file: only a full one clears it.
        confirmed = replace or not tx.out_of_step()
        if confirmed:
            tx.confirm(as_of, actor)
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
        tx.audit(actor, "holds_import", file.name[:128], detail)
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


def _check_shrink(
    tx: Transaction, file: Path, specs: list[tuple[int, Place | Release]], allow_shrink: bool
) -> None:
    """Per agency the full list names: it may not be less than half of what that agency holds."""
    wanted: dict[str, set[tuple[str | None, str | None, str, str]]] = {}
    for _, spec in specs:
        if isinstance(spec, Place):
            wanted.setdefault(spec.agency, set()).add(_identity(spec))
    for agency, listed in sorted(wanted.items()):
        current = int(
            tx.conn.execute(
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


def _release_absent(tx: Transaction, file: Path, wanted: list[Place]) -> int:
    """Release the active holds of the agencies a full list names that it does not list (another
    agency's holds are not this list's to end)."""
    keep = {_identity(spec) for spec in wanted}
    agencies = {spec.agency for spec in wanted}
    rows = tx.conn.execute(
        select(
            holds.c.id, holds.c.container, holds.c.bill_of_lading, holds.c.agency, holds.c.hold_type
        ).where(holds.c.released_at.is_(None), holds.c.agency.in_(agencies))
    ).all()
    gone = [
        row.id for row in rows if (row.container, row.bill_of_lading, row.agency, row.hold_type) not in keep
    ]
    for chunk in range(0, len(gone), 500):
        tx.conn.execute(
            update(holds)
            .where(holds.c.id.in_(gone[chunk : chunk + 500]))
            .values(released_at=tx.now(), release_reference=f"not in {file.name}"[:MAX_REFERENCE])
        )
    return len(gone)


def _same_active_hold(tx: Transaction, spec: Place) -> bool:
    return tx.same_active(spec) is not None


@dataclass(frozen=True, slots=True)
class _ImportChecks:
    allow_empty: bool
    allow_shrink: bool
    allow_old: bool


def _identity(spec: Place) -> tuple[str | None, str | None, str, str]:
    """What makes two holds the same hold in a full list."""
    return (spec.container, spec.bill_of_lading, spec.agency, spec.hold_type)


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
