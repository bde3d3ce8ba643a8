"""Pre-advice: which containers a truck (by its RFID tag) is announced to carry.

When a truck's tag has a pre-advice and the camera reads a container that is not on it, the
evidence contradicts itself and the visit goes to an operator. A tag without pre-advice
contradicts nothing. Imported from CSV (header: tag, container[, truck]) or JSON lines, as one
transaction: a bad line rejects the whole file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Integer, String, Table, UniqueConstraint, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import Clock, SystemClock
from gated.db import UTCDateTime, metadata
from gated.errors import ContainerNumberError, HoldListError, PayloadError, StorageError
from gated.iso6346 import ContainerNumber
from gated.jsonsafe import parse_json
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

MAX_PROBLEMS = 20
MAX_TRUCK = 64


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


def _row(record: dict[str, Any]) -> PreadviceRow:
    unknown = set(record) - {"tag", "container", "truck"}
    if unknown:
        raise ValueError(f"unknown column(s): {', '.join(shown(name, 80) for name in sorted(unknown))}")
    try:
        container = str(
            ContainerNumber.parse(str(record.get("container", "")), require_valid_check_digit=False)
        )
    except ContainerNumberError as error:
        raise ValueError(str(error)) from None
    truck = record.get("truck")
    if truck is not None and not isinstance(truck, str):
        raise ValueError("truck must be text")
    # `preadvice list` prints it: no control characters that could fake a line or move the cursor.
    if truck is not None and (len(truck.strip()) > MAX_TRUCK or not truck.isprintable()):
        raise ValueError(f"truck must be printable text of at most {MAX_TRUCK} characters")
    return PreadviceRow(_tag(record.get("tag")), container, (truck or "").strip() or None)


def read_file(path: Path) -> list[PreadviceRow]:
    """Parse a pre-advice file; raises ``HoldListError`` with one line per bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HoldListError(f"{path}: cannot read: {error}") from None
    records: list[tuple[int, Any]] = []
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((number, parse_json(line, max_bytes=16384, max_depth=4)))
                except PayloadError as error:
                    records.append((number, error))
    else:
        reader = csv.DictReader(io.StringIO(text))
        for number, record in enumerate(reader, start=2):
            records.append((number, {k.strip().lower(): (v or "").strip() for k, v in record.items() if k}))
    rows: list[PreadviceRow] = []
    problems: list[str] = []
    for number, record in records:
        try:
            if isinstance(record, Exception):
                raise ValueError(f"not JSON: {record}")
            if not isinstance(record, dict):
                raise ValueError("each line must be an object")
            rows.append(_row(record))
        except ValueError as error:
            problems.append(f"{path}:{number}: {error}")
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise HoldListError("\n".join(shown + ([f"... and {more} more"] if more else [])))
    return rows


class PreadviceStore:
    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()

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
        """The containers pre-advised for ``tag``, or None when the tag has no pre-advice."""
        with self.engine.connect() as conn:
            found = [
                row[0]
                for row in conn.execute(select(preadvice.c.container).where(preadvice.c.tag == tag.lower()))
            ]
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
