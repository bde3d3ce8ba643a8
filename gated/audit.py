"""The audit trail as a hash chain: each record carries the hash of the one before it.

Every record gets a position (``seq``, 1, 2, 3, ... with no gap) and ``hash`` = SHA-256 of the
previous record's hash and the record's own canonical text (``canonical``). Change a stored
record and its hash no longer fits; remove one and the next one's ``prev_hash`` names a record that
is not there; insert one and either its position is taken twice or the chain breaks after it.
The head (the last position and its hash) is kept in its own row, updated in the same transaction,
so records cut off the end are noticed too; ``gated audit verify`` walks the chain.

Someone who can write the database could rewrite the whole chain after an edit. That is what the
anchor is for: the daemon publishes the head on MQTT (``{prefix}/node/{node}/audit``, retained),
so a copy lives outside the database, and ``gated audit verify --anchor SEQ:HASH`` checks the
chain still holds that head.

Appending takes the head row's write lock first (an UPDATE, before it reads the head), so two
writers, in one process or several, never chain onto the same record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, String, Table, select, update
from sqlalchemy.engine import Connection

from gated.db import metadata
from gated.errors import StorageError

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record."""
PAGE = 5000
"""Records read at a time when verifying (a long trail is never held in memory at once)."""

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Link:
    """One record's place in the chain, as stored beside it."""

    seq: int
    prev_hash: str
    hash: str


def canonical(
    record_id: str, ts: datetime, actor: str, action: str, subject: str | None, detail: str
) -> bytes:
    """The text a record's hash covers: every stored field, ``detail`` as the stored JSON text."""
    fields = {
        "id": record_id,
        "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def link_hash(prev_hash: str, seq: int, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"{prev_hash}\n{seq}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def chain(conn: Connection, bodies: Sequence[bytes]) -> list[Link]:
    """Links for ``bodies`` appended after the head, the head moved past them, inside ``conn``'s
    transaction (the records must be inserted in the same one)."""
    if not bodies:
        return []
    # The UPDATE first: it takes the write lock before the head is read (SQLite begins its
    # transaction at the first write; PostgreSQL locks the row until commit).
    moved = conn.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq + len(bodies))
    )
    if moved.rowcount != 1:
        raise StorageError("the audit trail has no head row (a database not made by gated's migrations?)")
    end, prev = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    links = []
    for seq, body in enumerate(bodies, start=end - len(bodies) + 1):
        digest = link_hash(prev, seq, body)
        links.append(Link(seq, prev, digest))
        prev = digest
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(hash=prev))
    return links


@dataclass(frozen=True, slots=True)
class Problem:
    """The first place the chain does not hold, in words an auditor can act on."""

    seq: int
    record: str | None
    what: str

    def __str__(self) -> str:
        named = f" (id {self.record})" if self.record else ""
        return f"record {self.seq}{named}: {self.what}"


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    head_seq: int
    head_hash: str
    problem: Problem | None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "records": self.records,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problem": None if self.problem is None else str(self.problem),
        }


def _rows(conn: Connection) -> Iterator[Any]:
    from gated.store import audit

    last = 0
    while True:
        page = conn.execute(select(audit).where(audit.c.seq > last).order_by(audit.c.seq).limit(PAGE)).all()
        if not page:
            return
        yield from page
        last = page[-1].seq


def verify(conn: Connection, anchor: tuple[int, str] | None = None) -> Verdict:
    """Walk the whole chain: the first record that was edited, removed or inserted, if any."""
    from gated.store import audit

    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one_or_none()
    if head is None:
        return Verdict(0, 0, GENESIS, Problem(0, None, "the chain's head row is missing"))
    count = 0
    last: tuple[int, str, str] = (0, "", GENESIS)  # seq, id, hash of the record before
    before_last = GENESIS
    problem: Problem | None = None
    anchored = anchor is None
    for row in _rows(conn):
        count += 1
        seq, _, prev = last
        own = link_hash(
            row.prev_hash, row.seq, canonical(row.id, row.ts, row.actor, row.action, row.subject, row.detail)
        )
        if row.seq > head.seq:
            problem = Problem(row.seq, row.id, f"inserted after the head (the head is record {head.seq})")
        elif row.hash != own:
            problem = Problem(row.seq, row.id, "edited: its content does not match its hash")
        elif row.seq > seq + 1:
            gap = f"record {seq + 1}" if row.seq == seq + 2 else f"records {seq + 1} to {row.seq - 1}"
            problem = Problem(
                seq + 1, None, f"removed: {gap} missing between record {seq} and record {row.seq}"
            )
        elif row.prev_hash != prev:
            if row.prev_hash == before_last:
                problem = Problem(seq, last[1], "inserted: the record after it chains to the one before it")
            else:
                problem = Problem(
                    seq, last[1], "edited and its hash recomputed: the record after it chains to another hash"
                )
        elif anchor is not None and row.seq == anchor[0]:
            if row.hash != anchor[1]:
                problem = Problem(row.seq, row.id, "rewritten: its hash is not the anchored one")
            anchored = True
        if problem is not None:
            break
        before_last, last = prev, (row.seq, row.id, row.hash)
    if problem is None:
        unchained = conn.execute(select(audit.c.id).where(audit.c.seq.is_(None)).limit(1)).scalar()
        if unchained is not None:
            problem = Problem(0, unchained, "inserted: a record outside the chain (it has no position)")
        elif head.seq != last[0] or head.hash != last[2]:
            problem = Problem(
                last[0] + 1,
                None,
                f"removed from the end: the head is record {head.seq}, the chain ends at {last[0]}",
            )
        elif not anchored:
            assert anchor is not None
            problem = Problem(
                anchor[0], None, "the anchored record is not in the chain (removed from the end)"
            )
    return Verdict(count, head.seq, head.hash, problem)


def head(conn: Connection) -> tuple[int, str]:
    """The chain's head: the last record's position and hash (0 and ``GENESIS`` when empty)."""
    row = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one_or_none()
    return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))
