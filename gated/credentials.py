"""Driver credentials (TWIC-style): the cancelled-card list and the check of one card read.

Electronic inspection of a credential is: the card passed its authentication challenge (the reader
does that), it has not expired, it is not on the cancelled list, and the cancelled list is recent
enough to trust: at most 7 days old at the normal security level, 1 day at raised levels. A list
that is missing or too old refuses every card, because "not on the list" then proves nothing.
(Identity, by biometric or PIN and a visual check, is a step after this one.)

The list keeps no history: an import replaces the whole list and its state row in one transaction,
so a reader sees either the old list or the new one, never a mix. The list's date is the
publisher's date of the list (when it was true), not when gated imported it: freshness is measured
from the publisher's date. An import that looks like a truncated download or a replayed old list
(no cards, fewer than half the cards it replaces, a date older than the current list's or than 7
days) is refused, because it would let cancelled cards through again; a flag overrides each check.

File format (UTF-8)::

    # list-date: 2026-05-01T00:00:00Z
    card_id,reason
    4f2a19c0d3e7b85a,lost
    0123456789abcdef0123456789ABCDEF

One card per line, ``card_id`` (8-32 hex digits, either case) optionally followed by a comma and a
reason (CSV quoting allowed). Lines starting with ``#`` are comments; ``# list-date: <RFC 3339>``
gives the list's date. An optional first line naming the columns (``card_id[,reason]``) is a
header. JSON lines (``{"card_id": ..., "reason": ...}``, with the same ``#`` lines) work too; the
file is read by ``gated.importfile`` (a byte order mark is dropped). Blank lines are ignored. Any
bad line rejects the whole file, with one "file:line: problem" per problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    CheckConstraint,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import Clock, SystemClock, rfc3339
from gated.db import UTCDateTime, metadata
from gated.errors import CancelledListError, StorageError
from gated.importfile import raise_problems, read_import_file
from gated.model import Reason
from gated.redact import error_text

SecurityLevel = Literal["normal", "raised"]

MAX_AGE = {"normal": timedelta(days=7), "raised": timedelta(days=1)}
"""How old the cancelled list may be, by security level."""

MAX_FUTURE_LIST_DATE = timedelta(minutes=10)
"""How far ahead of gated's clock a list's date may be (clock skew), before the file is refused."""

SHRINK_CHECK_MIN_CARDS = 10
"""A list of at least this many cards may only be replaced by one with at least half as many."""

CARD_ID_MIN_DIGITS = 8
CARD_ID_MAX_DIGITS = 32
MAX_REASON = 256
MAX_SOURCE = 1024
_STATE_ID = 1
_COLUMNS = {"card_id": "card_id", "reason": "reason"}
_COLUMN_ORDER = ("card_id", "reason")  # of a list without a header
_CARD_ID = re.compile(r"[0-9A-Fa-f]+")
_LIST_DATE = re.compile(r"#\s*list-date\s*:\s*(.*)$", re.IGNORECASE)

# Reason codes of a refused credential.
CARD_NOT_AUTHENTICATED = "CARD_NOT_AUTHENTICATED"
CARD_EXPIRED = "CARD_EXPIRED"
CARD_CANCELLED = "CARD_CANCELLED"
CANCELLED_LIST_MISSING = "CANCELLED_LIST_MISSING"
CANCELLED_LIST_STALE = "CANCELLED_LIST_STALE"
CARD_READ_INVALID = "CARD_READ_INVALID"

cancelled_cards = Table(
    "cancelled_cards",
    metadata,
    Column("card_id", String(CARD_ID_MAX_DIGITS), primary_key=True),
    Column("reason", String(MAX_REASON), nullable=True),
    Column("listed_at", UTCDateTime(), nullable=False),
)

cancelled_list_state = Table(
    "cancelled_list_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("list_date", UTCDateTime(), nullable=False),
    Column("imported_at", UTCDateTime(), nullable=False),
    Column("count", Integer, nullable=False),
    Column("source", String(MAX_SOURCE), nullable=True),
    CheckConstraint(f"id = {_STATE_ID}", name="ck_cancelled_list_state_single_row"),
)


def max_age_for(security_level: SecurityLevel) -> timedelta:
    """How old the cancelled list may be at ``security_level`` ("normal": 7 days, "raised": 1 day)."""
    try:
        return MAX_AGE[security_level]
    except (KeyError, TypeError):
        raise ValueError(f"security level {security_level!r} must be 'normal' or 'raised'") from None


def normalise_card_id(value: object) -> str:
    """A card id in lower case; ``ValueError`` unless it is 8-32 hex digits."""
    if not isinstance(value, str):
        raise ValueError(f"card id must be text, got {type(value).__name__}")
    text = value.strip()
    if not _CARD_ID.fullmatch(text) or not CARD_ID_MIN_DIGITS <= len(text) <= CARD_ID_MAX_DIGITS:
        raise ValueError(f"card id {value!r} must be {CARD_ID_MIN_DIGITS}-{CARD_ID_MAX_DIGITS} hex digits")
    return text.lower()


# --- the decision ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    """The outcome of checking one card read: ``ok`` only when there is no reason to refuse."""

    ok: bool
    reasons: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ok == bool(self.reasons):
            raise ValueError("a credential check is ok exactly when it has no reasons")

    @property
    def codes(self) -> list[str]:
        return [code for code, _ in self.reasons]

    def as_reasons(self) -> tuple[Reason, ...]:
        """The reasons as ``gated.model.Reason`` values, for a decision."""
        return tuple(Reason(code, text) for code, text in self.reasons)


def _expiry(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def check_card(
    read: Mapping[str, Any],
    *,
    cancelled: bool,
    list_date: datetime | None,
    now: datetime,
    max_age: timedelta,
) -> CredentialCheck:
    """Decide on one card read (a credential reading's value) against the cancelled list.

    Pure: ``cancelled`` says whether the card is on the list, ``list_date`` is the list's date
    (``None``: no list). A card is valid through its expiry date (UTC). Every reason that applies is
    given, in a fixed order; the read is ok only when none does."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if max_age < timedelta(0):
        raise ValueError(f"max_age {max_age} must not be negative")
    reasons: list[tuple[str, str]] = []
    fields: Mapping[str, Any] = read if isinstance(read, Mapping) else {}
    card_id = fields.get("card_id")
    raw_expires = fields.get("expires")
    expires = _expiry(raw_expires)
    authenticated = fields.get("authenticated")
    try:
        shown = normalise_card_id(card_id)
    except ValueError:
        shown = "?"
        reasons.append((CARD_READ_INVALID, f"card id {card_id!r} is not 8-32 hex digits"))
    if authenticated is not True:
        reasons.append((CARD_NOT_AUTHENTICATED, f"card {shown} did not pass card authentication"))
    today = now.astimezone(UTC).date()
    if expires is None:
        reasons.append((CARD_READ_INVALID, f"card {shown}: expiry {raw_expires!r} is not a date"))
    elif expires < today:
        reasons.append((CARD_EXPIRED, f"card {shown} expired on {expires.isoformat()}"))
    if cancelled:
        reasons.append((CARD_CANCELLED, f"card {shown} is on the cancelled list"))
    if list_date is None:
        reasons.append((CANCELLED_LIST_MISSING, "no cancelled-card list has been imported"))
    else:
        if list_date.tzinfo is None:
            raise ValueError("list_date must be timezone-aware")
        age = now - list_date
        if age > max_age:
            reasons.append(
                (
                    CANCELLED_LIST_STALE,
                    f"cancelled-card list of {rfc3339(list_date)} is {_days(age)} old,"
                    f" more than the {_days(max_age)} allowed",
                )
            )
    return CredentialCheck(ok=not reasons, reasons=reasons)


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:.1f} days"


# --- the list file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    card_id: str
    reason: str | None


def _parse_list_date(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("has no time zone")
    return moment.astimezone(UTC)


def _read_list(path: Path) -> tuple[list[_Entry], datetime | None]:
    read = read_import_file(path, _COLUMNS, CancelledListError, headerless=_COLUMN_ORDER, comments=True)
    problems: list[str] = []
    entries: list[_Entry] = []
    first_seen: dict[str, int] = {}
    list_date: datetime | None = None
    list_date_line = 0
    for number, text in read.comments:
        match = _LIST_DATE.match(text)
        if match is None:
            continue
        if list_date_line:
            problems.append(f"{path}:{number}: second list-date (the first is on line {list_date_line})")
            continue
        list_date_line = number
        try:
            list_date = _parse_list_date(match.group(1))
        except ValueError as error:
            problems.append(f"{path}:{number}: list-date {match.group(1).strip()!r} is not RFC 3339: {error}")
    for row in read.rows:
        number = row.line
        try:
            card_id = normalise_card_id(row.values.get("card_id"))
        except ValueError as error:
            problems.append(f"{path}:{number}: {error}")
            continue
        reason = (row.values.get("reason") or "").strip() or None
        if reason is not None and (len(reason) > MAX_REASON or not reason.isprintable()):
            problems.append(f"{path}:{number}: reason must be printable text of at most {MAX_REASON} chars")
            continue
        if card_id in first_seen:
            problems.append(
                f"{path}:{number}: card {card_id} is listed twice (first on line {first_seen[card_id]})"
            )
            continue
        first_seen[card_id] = number
        entries.append(_Entry(card_id, reason))
    raise_problems(path, problems, CancelledListError)
    return entries, list_date


# --- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelledListState:
    """What the current list is: its publisher's date, when it was imported, from where."""

    list_date: datetime
    imported_at: datetime
    count: int
    source: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "list_date": rfc3339(self.list_date),
            "imported_at": rfc3339(self.imported_at),
            "count": self.count,
            "source": self.source,
        }


def _read_state(conn: Connection) -> CancelledListState | None:
    row = conn.execute(select(cancelled_list_state).where(cancelled_list_state.c.id == _STATE_ID)).first()
    if row is None:
        return None
    return CancelledListState(
        list_date=row.list_date,
        imported_at=row.imported_at,
        count=int(row._mapping["count"]),
        source=row.source,
    )


def _same_state(current: CancelledListState | None) -> list[ColumnElement[bool]]:
    """The conditions that match the state row only while it is still ``current``."""
    if current is None:
        return [cancelled_list_state.c.id == _STATE_ID]
    return [
        cancelled_list_state.c.id == _STATE_ID,
        cancelled_list_state.c.list_date == current.list_date,
        cancelled_list_state.c.imported_at == current.imported_at,
        cancelled_list_state.c["count"] == current.count,
    ]


def _refuse_unsafe(
    file: Path,
    new: CancelledListState,
    current: CancelledListState | None,
    allow_empty: bool,
    allow_shrink: bool,
    allow_old: bool,
) -> None:
    """Raise ``CancelledListError`` naming every check ``new`` fails and the flag that allows it."""
    problems: list[str] = []
    if new.count == 0:
        if not allow_empty:
            problems.append(
                "it has no cards, so every cancelled card would be accepted (--allow-empty imports it anyway)"
            )
    elif (
        not allow_shrink
        and current is not None
        and current.count >= SHRINK_CHECK_MIN_CARDS
        and new.count * 2 < current.count
    ):
        problems.append(
            f"it has {new.count} cards, fewer than half the current list's {current.count}"
            " (--allow-shrink imports it anyway)"
        )
    if not allow_old:
        age, max_age = new.imported_at - new.list_date, MAX_AGE["normal"]
        if current is not None and new.list_date < current.list_date:
            problems.append(
                f"its date {rfc3339(new.list_date)} is older than the current list's,"
                f" {rfc3339(current.list_date)} (--allow-old imports it anyway)"
            )
        elif age > max_age:
            problems.append(
                f"its date {rfc3339(new.list_date)} is {_days(age)} old, more than the"
                f" {_days(max_age)} allowed (--allow-old imports it anyway)"
            )
    if problems:
        raise CancelledListError(f"{file}: refused, nothing imported: " + "; ".join(problems))


@contextmanager
def _storage(what: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as error:
        raise StorageError(f"cancelled-card list: cannot {what}: {error_text(error)}") from error


class CancelledCardList:
    """The cancelled-card list in the database, and the check of a card read against it."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()
        with _storage("create its tables"):
            metadata.create_all(engine, tables=[cancelled_cards, cancelled_list_state])

    def import_file(
        self,
        path: str | Path,
        *,
        list_date: datetime | None = None,
        allow_empty: bool = False,
        allow_shrink: bool = False,
        allow_old: bool = False,
    ) -> CancelledListState:
        """Replace the whole list with the file's, in one transaction. The list's date comes from the
        file's ``# list-date:`` line or ``list_date`` (if both are given they must agree).

        Refused unless allowed: a list with no cards (``allow_empty``, which also covers replacing a
        long list with nothing); fewer than half the cards of a current list of at least
        ``SHRINK_CHECK_MIN_CARDS`` (``allow_shrink``); a date older than the current list's or older
        than ``MAX_AGE["normal"]`` (``allow_old``). Raises ``CancelledListError`` for a bad or refused
        file (nothing changes) and ``StorageError``."""
        file = Path(path)
        entries, file_date = _read_list(file)
        if list_date is not None and list_date.tzinfo is None:
            raise CancelledListError(f"{file}: the list date {list_date.isoformat()} has no time zone")
        given = list_date.astimezone(UTC) if list_date is not None else None
        if file_date is not None and given is not None and file_date != given:
            raise CancelledListError(
                f"{file}: the file's list-date {rfc3339(file_date)} differs from the one given,"
                f" {rfc3339(given)}"
            )
        effective = file_date or given
        if effective is None:
            raise CancelledListError(
                f"{file}: no list date: add a '# list-date: <RFC 3339>' line or give one"
            )
        now = self._clock.now()
        if effective > now + MAX_FUTURE_LIST_DATE:
            raise CancelledListError(f"{file}: the list date {rfc3339(effective)} is in the future")
        state = CancelledListState(
            list_date=effective, imported_at=now, count=len(entries), source=str(file)[:MAX_SOURCE]
        )
        with _storage(f"import {file}"), self._engine.begin() as conn:
            # Read in the import's own transaction, so the checks judge the list this one replaces.
            current = _read_state(conn)
            _refuse_unsafe(file, state, current, allow_empty, allow_shrink, allow_old)
            replaced = conn.execute(delete(cancelled_list_state).where(*_same_state(current)))
            if replaced.rowcount != (0 if current is None else 1):
                # Another import committed since the read: its list was never checked against ours.
                raise CancelledListError(f"{file}: the list changed during the import, nothing imported")
            conn.execute(delete(cancelled_cards))
            if entries:
                conn.execute(
                    insert(cancelled_cards),
                    [{"card_id": e.card_id, "reason": e.reason, "listed_at": effective} for e in entries],
                )
            conn.execute(
                insert(cancelled_list_state).values(
                    id=_STATE_ID,
                    list_date=state.list_date,
                    imported_at=state.imported_at,
                    count=state.count,
                    source=state.source,
                )
            )
        return state

    def state(self) -> CancelledListState | None:
        """The current list's state; ``None`` when no list was ever imported."""
        with _storage("read the list state"), self._engine.connect() as conn:
            return _read_state(conn)

    def is_cancelled(self, card_id: str) -> bool:
        """Whether ``card_id`` is on the current list (``ValueError`` for a malformed id)."""
        normal = normalise_card_id(card_id)
        with _storage("look up a card"), self._engine.connect() as conn:
            found = conn.execute(select(cancelled_cards.c.card_id).where(cancelled_cards.c.card_id == normal))
            return found.first() is not None

    def cancelled_ids(self) -> Sequence[str]:
        """Every card on the current list, sorted."""
        with _storage("list the cards"), self._engine.connect() as conn:
            rows = conn.execute(select(cancelled_cards.c.card_id).order_by(cancelled_cards.c.card_id))
            return [str(row.card_id) for row in rows]

    def check(self, read: Mapping[str, Any], now: datetime, max_age: timedelta) -> CredentialCheck:
        """``check_card`` with the card's listing and the list's date read in one transaction."""
        try:
            card_id: str | None = normalise_card_id(read.get("card_id"))
        except (ValueError, AttributeError):
            card_id = None
        with _storage("check a card"), self._engine.begin() as conn:
            row = conn.execute(
                select(cancelled_list_state.c.list_date).where(cancelled_list_state.c.id == _STATE_ID)
            ).first()
            cancelled = False
            if card_id is not None:
                found = conn.execute(
                    select(cancelled_cards.c.card_id).where(cancelled_cards.c.card_id == card_id)
                )
                cancelled = found.first() is not None
        list_date = None if row is None else row.list_date
        return check_card(read, cancelled=cancelled, list_date=list_date, now=now, max_age=max_age)
