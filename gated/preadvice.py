"""Pre-advice: which containers a truck (by its RFID tag) is announced to carry.

When a truck's tag has a pre-advice and the camera reads a container that is not on it, the
evidence contradicts itself and the visit goes to an operator. A tag without pre-advice
contradicts nothing. Imported from CSV (header: tag, container[, truck]) or JSON lines, read by
``gated.importfile``, as one transaction: a bad line rejects the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Engine, Integer, String, Table, UniqueConstraint, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import Clock, SystemClock
from gated.db import UTCDateTime, metadata
from gated.errors import ContainerNumberError, HoldListError, StorageError
from gated.importfile import raise_problems, read_import_file
from gated.iso6346 import ContainerNumber
from gated.redact import error_text, shown

preadvice = Table(
    "preadvice",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tag", String(64), nullable=False, index=True),
    Column("container", String(11), nullable=False),
    Column("truck", String(64), nullable=True),
    Column("imported_at", UTCDateTime, nullable=False),
    Column("source", String(255), nullable=False),
    UniqueConstraint("tag", "container", name="uq_preadvice_tag_container"),
)

MAX_TRUCK = 64
_COLUMNS = {"tag": "tag", "container": "container", "truck": "truck"}


@dataclass(frozen=True, slots=True)
class PreadviceRow:
    tag: str
    container: str
    truck: str | None


def _tag(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("tag must be text")
    tag = value.strip().lower()
    if not tag or len(tag) > 64 or any(c not in "0123456789abcdef" for c in tag):
        raise ValueError(f"tag {shown(value, 80)} is not a hexadecimal EPC")
    return tag


def _row(record: dict[str, str | None]) -> PreadviceRow:
    try:
        container = str(ContainerNumber.parse(record.get("container") or "", require_valid_check_digit=False))
    except ContainerNumberError as error:
        raise ValueError(str(error)) from None
    truck = record.get("truck")
    # `preadvice list` prints it: no control characters that could fake a line or move the cursor.
    if truck is not None and (len(truck.strip()) > MAX_TRUCK or not truck.isprintable()):
        raise ValueError(f"truck must be printable text of at most {MAX_TRUCK} characters")
    return PreadviceRow(_tag(record.get("tag")), container, (truck or "").strip() or None)


def read_file(path: Path) -> list[PreadviceRow]:
    """Parse a pre-advice file (see ``gated.importfile``); raises ``HoldListError`` with one
    "file:line: problem" per bad line."""
    read = read_import_file(path, _COLUMNS, HoldListError)
    rows: list[PreadviceRow] = []
    problems: list[str] = []
    for row in read.rows:
        try:
            rows.append(_row({name: value.strip() if value else value for name, value in row.values.items()}))
        except ValueError as error:
            problems.append(f"{path}:{row.line}: {error}")
    raise_problems(path, problems, HoldListError)
    return rows


class PreadviceStore:
    def __init__(
        self, engine: Engine, clock: Clock | None = None, *, fallback: PreadviceStore | None = None
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.fallback = fallback

    def import_file(self, path: str | Path, *, replace: bool = False) -> int:
        """Import a file; with ``replace`` the old pre-advice goes first. Returns rows added."""
        file = Path(path)
        rows = read_file(file)
        now = self.clock.now()
        try:
            with self.engine.begin() as conn:
                if replace:
                    conn.execute(delete(preadvice))
                known = {
                    (tag, container)
                    for tag, container in conn.execute(select(preadvice.c.tag, preadvice.c.container))
                }
                fresh = [row for row in dict.fromkeys(rows) if (row.tag, row.container) not in known]
                if fresh:
                    conn.execute(
                        insert(preadvice),
                        [
                            {
                                "tag": r.tag,
                                "container": r.container,
                                "truck": r.truck,
                                "imported_at": now,
                                "source": str(file),
                            }
                            for r in fresh
                        ],
                    )
                return len(fresh)
        except SQLAlchemyError as error:
            raise StorageError(f"cannot import pre-advice {file}: {error_text(error)}") from error

    def expected_for(self, tag: str) -> frozenset[str] | None:
        """The containers pre-advised for ``tag``, or None when the tag has no pre-advice. With a
        ``fallback`` (the node's local replica: gated.failover) it answers when this database does
        not; without, ``StorageError``."""
        try:
            with self.engine.connect() as conn:
                found = [
                    row[0]
                    for row in conn.execute(
                        select(preadvice.c.container).where(preadvice.c.tag == tag.lower())
                    )
                ]
        except SQLAlchemyError as error:
            if self.fallback is not None:
                return self.fallback.expected_for(tag)
            raise StorageError(
                f"cannot read the pre-advice of tag {tag[:64]!r}: {error_text(error)}"
            ) from error
        return frozenset(found) if found else None

    def all(self) -> list[PreadviceRow]:
        with self.engine.connect() as conn:
            return [
                PreadviceRow(tag, container, truck)
                for tag, container, truck in conn.execute(
                    select(preadvice.c.tag, preadvice.c.container, preadvice.c.truck).order_by(
                        preadvice.c.tag
                    )
                )
            ]
