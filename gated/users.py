"""Console accounts: roles, argon2 password hashes, and the lock after failed logins.

- Roles, each allowed what the one before it is and more: ``viewer`` (looks), ``operator`` (works
  the exception queue), ``supervisor`` (overrides decisions, unlocks accounts, holds), ``admin``
  (accounts).
- Passwords are kept only as argon2id hashes (argon2-cffi's defaults); at least
  ``MIN_PASSWORD`` characters.
- ``LOCK_AFTER`` failed logins (a wrong password, or a wrong password when asked again before an
  override) within ``LOCK_WINDOW`` lock that account, and only that account, for ``LOCK_FOR`` or
  until a supervisor unlocks it. While it is locked even the right password is refused, and
  nothing else changes: a lockout never touches a gate.
- Every login, failed login, lock, unlock, new account and new password is an audit record in the
  same transaction as the change (``gated.audit``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, Engine, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from gated.clock import Clock, SystemClock, rfc3339
from gated.db import UTCDateTime, metadata
from gated.errors import AccountError
from gated.store import AuditRecord, insert_audit

LOCK_AFTER = 3
LOCK_WINDOW = timedelta(minutes=15)
LOCK_FOR = timedelta(minutes=15)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything; a megabyte "password" is only a way to burn CPU
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("password_changed_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=True),
    # Times of the failed logins still inside the window (JSON list of RFC 3339 strings).
    Column("failures", Text, nullable=False),
)


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    locked_until: datetime | None
    recent_failures: int

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "username": self.username,
            "role": str(self.role),
            "locked": self.locked(now),
            "locked_until": None
            if not self.locked(now) or self.locked_until is None
            else rfc3339(self.locked_until),
            "recent_failures": self.recent_failures,
        }


class LoginOutcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # unknown user or wrong password: the caller cannot tell which
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class Login:
    outcome: LoginOutcome
    account: Account | None = None
    locked_until: datetime | None = None


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise AccountError(
            f"user name {username[:80]!r}: 1-64 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password may have at most {MAX_PASSWORD} characters")
    return password


class Accounts:
    """The accounts in one database. Thread-safe (each call is its own transaction)."""

    def __init__(
        self, engine: Engine, clock: Clock | None = None, hasher: PasswordHasher | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.hasher = hasher or PasswordHasher()
        # Checked against when the user does not exist, so an unknown name costs what a wrong
        # password does (no telling names apart by the time an answer takes).
        self._decoy = self.hasher.hash("not a password of anyone's")

    # -- administration (the CLI, an admin in the console) ----------------------------------------
    def add(self, username: str, role: Role, password: str, *, actor: str) -> Account:
        check_username(username)
        digest = self.hasher.hash(check_password(password))
        now = self.clock.now()
        with self.engine.begin() as conn:
            if self._row(conn, username) is not None:
                raise AccountError(f"user {username} exists already (gated users passwd changes a password)")
            self._audit(conn, actor, "user_add", username, {"role": str(role)})
            conn.execute(
                insert(users).values(
                    username=username,
                    role=str(role),
                    password_hash=digest,
                    created_at=now,
                    password_changed_at=now,
                    locked_until=None,
                    failures="[]",
                )
            )
        return Account(username, role, None, 0)

    def passwd(self, username: str, password: str, *, actor: str) -> None:
        digest = self.hasher.hash(check_password(password))
        with self.engine.begin() as conn:
            self._audit(conn, actor, "user_passwd", username, {})
            changed = conn.execute(
                update(users)
                .where(users.c.username == username)
                .values(password_hash=digest, password_changed_at=self.clock.now())
            )
            if changed.rowcount != 1:
                raise AccountError(f"no user {username[:80]!r}")

    def unlock(self, username: str, *, actor: str) -> Account:
        with self.engine.begin() as conn:
            row = self._row(conn, username)
            if row is None:
                raise AccountError(f"no user {username[:80]!r}")
            self._audit(conn, actor, "user_unlock", username, {"was_locked_until": _when(row.locked_until)})
            conn.execute(
                update(users).where(users.c.username == username).values(locked_until=None, failures="[]")
            )
        return Account(username, Role(row.role), None, 0)

    def list(self) -> list[Account]:
        now = self.clock.now()
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.username)).all()
        return [self._account(row, now) for row in rows]

    def get(self, username: str) -> Account | None:
        with self.engine.connect() as conn:
            row = self._row(conn, username)
        return None if row is None else self._account(row, self.clock.now())

    # -- logging in ------------------------------------------------------------------------------
    def login(self, username: str, password: str, *, source: str, action: str = "login") -> Login:
        """Check a password; audited whatever the outcome. ``action`` names why it was asked
        (``login``, or ``reauth`` before an override); a wrong one counts towards the lock either way."""
        now = self.clock.now()
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD]  # still wrong, still counted, never hashed in full
        with self.engine.begin() as conn:
            # Take the row's write lock first: two wrong passwords at once both count.
            conn.execute(update(users).where(users.c.username == username).values(username=users.c.username))
            row = self._row(conn, username)
            if row is None:
                self._matches(self._decoy, password)
                self._audit(
                    conn,
                    f"user:{username[:56]}",
                    f"{action}_failed",
                    username[:128],
                    {"source": source, "why": "unknown user"},
                )
                return Login(LoginOutcome.WRONG)
            actor = f"user:{username}"
            if row.locked_until is not None and now < row.locked_until:
                self._audit(
                    conn, actor, f"{action}_refused", username, {"source": source, "why": "account locked"}
                )
                return Login(LoginOutcome.LOCKED, locked_until=row.locked_until)
            if self._matches(row.password_hash, password):
                values: dict[str, Any] = {"failures": "[]", "locked_until": None}
                if self.hasher.check_needs_rehash(row.password_hash):
                    values["password_hash"] = self.hasher.hash(password)
                self._audit(conn, actor, action, username, {"source": source})
                conn.execute(update(users).where(users.c.username == username).values(**values))
                return Login(LoginOutcome.OK, Account(username, Role(row.role), None, 0))
            failures = [t for t in _times(row.failures) if now - t < LOCK_WINDOW] + [now]
            locked_until = now + LOCK_FOR if len(failures) >= LOCK_AFTER else None
            self._audit(
                conn, actor, f"{action}_failed", username, {"source": source, "why": "wrong password"}
            )
            if locked_until is not None:
                self._audit(
                    conn,
                    "gated",
                    "account_locked",
                    username,
                    {"failures": len(failures), "until": rfc3339(locked_until), "source": source},
                )
                failures = []
            conn.execute(
                update(users)
                .where(users.c.username == username)
                .values(failures=json.dumps([rfc3339(t) for t in failures]), locked_until=locked_until)
            )
            if locked_until is not None:
                return Login(LoginOutcome.LOCKED, locked_until=locked_until)
            return Login(LoginOutcome.WRONG)

    # -- helpers ---------------------------------------------------------------------------------
    def _matches(self, digest: str, password: str) -> bool:
        try:
            return self.hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False

    def _audit(self, conn: Connection, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        insert_audit(
            conn,
            [
                AuditRecord(
                    actor=actor[:64], action=action, subject=subject[:128], detail=detail, ts=self.clock.now()
                )
            ],
        )

    @staticmethod
    def _row(conn: Connection, username: str) -> Any:
        return conn.execute(select(users).where(users.c.username == username)).one_or_none()

    @staticmethod
    def _account(row: Any, now: datetime) -> Account:
        recent = sum(1 for t in _times(row.failures) if now - t < LOCK_WINDOW)
        return Account(row.username, Role(row.role), row.locked_until, recent)


def _times(text: str) -> list[datetime]:
    return [datetime.fromisoformat(item.replace("Z", "+00:00")) for item in json.loads(text)]


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)
