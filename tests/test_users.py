"""Console accounts on a real SQLite file: argon2 hashes, the lock after three failed logins (that
account only, 15 minutes or a supervisor's unlock), every step audited in the hash chain, and
`gated users add|passwd|unlock|list` as an administrator runs them."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, select

from gated.audit import verify
from gated.clock import ManualClock
from gated.db import open_engine
from gated.errors import AccountError
from gated.store import audit
from gated.users import Accounts, LoginOutcome, Role, users

PASSWORD = "correct horse battery"
# Cheap hashes for the logic tests (the CLI tests use argon2-cffi's defaults).
QUICK = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(tmp_path / "gated.db")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 12, 4, 8, 0, tzinfo=UTC))


@pytest.fixture
def accounts(engine: Engine, clock: ManualClock) -> Accounts:
    accounts = Accounts(engine, clock, QUICK)
    accounts.add("alice", Role.OPERATOR, PASSWORD, actor="operator:root")
    accounts.add("bob", Role.SUPERVISOR, PASSWORD, actor="operator:root")
    return accounts


def actions(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit.c.actor, audit.c.action, audit.c.subject).order_by(audit.c.seq)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_password_is_kept_only_as_an_argon2id_hash(accounts: Accounts, engine: Engine) -> None:
    with engine.connect() as connection:
        stored = connection.execute(
            select(users.c.password_hash).where(users.c.username == "alice")
        ).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.login("alice", PASSWORD, source="test").outcome is LoginOutcome.OK


def test_three_failures_in_15_minutes_lock_that_account_only(accounts: Accounts, clock: ManualClock) -> None:
    assert accounts.login("alice", "wrong one", source="10.0.0.9").outcome is LoginOutcome.WRONG
    clock.advance(600)
    assert accounts.login("alice", "wrong two", source="10.0.0.9").outcome is LoginOutcome.WRONG
    clock.advance(60)
    locked = accounts.login("alice", "wrong three", source="10.0.0.9")
    assert locked.outcome is LoginOutcome.LOCKED
    assert locked.locked_until == clock.now() + timedelta(minutes=15)
    # Even the right password is refused now; bob is not touched.
    assert accounts.login("alice", PASSWORD, source="10.0.0.9").outcome is LoginOutcome.LOCKED
    assert accounts.login("bob", PASSWORD, source="10.0.0.9").outcome is LoginOutcome.OK
    clock.advance(15 * 60 - 1)
    assert accounts.login("alice", PASSWORD, source="10.0.0.9").outcome is LoginOutcome.LOCKED
    clock.advance(1)
    assert accounts.login("alice", PASSWORD, source="10.0.0.9").outcome is LoginOutcome.OK


def test_failures_spread_over_more_than_15_minutes_do_not_lock(
    accounts: Accounts, clock: ManualClock
) -> None:
    for _ in range(6):
        assert accounts.login("alice", "wrong", source="t").outcome is LoginOutcome.WRONG
        clock.advance(8 * 60)  # never three within 15 minutes
    assert accounts.login("alice", PASSWORD, source="t").outcome is LoginOutcome.OK


def test_a_supervisor_unlocks_at_once(accounts: Accounts) -> None:
    for _ in range(3):
        accounts.login("alice", "wrong", source="t")
    assert accounts.get("alice") is not None and accounts.get("alice").locked(accounts.clock.now())  # type: ignore[union-attr]
    accounts.unlock("alice", actor="user:bob")
    assert accounts.login("alice", PASSWORD, source="t").outcome is LoginOutcome.OK


def test_an_unknown_user_is_a_wrong_login_and_locks_nobody(accounts: Accounts) -> None:
    for _ in range(5):
        assert accounts.login("mallory", PASSWORD, source="t").outcome is LoginOutcome.WRONG
    assert [a.username for a in accounts.list()] == ["alice", "bob"]
    assert all(not a.locked(accounts.clock.now()) for a in accounts.list())


def test_wrong_passwords_at_once_all_count(engine: Engine, clock: ManualClock) -> None:
    accounts = Accounts(engine, clock, QUICK)
    accounts.add("carol", Role.VIEWER, PASSWORD, actor="operator:root")
    outcomes: list[LoginOutcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(accounts.login("carol", "wrong", source="t").outcome))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(LoginOutcome.LOCKED) >= 4  # the third failure locks, the rest find it locked
    assert accounts.login("carol", PASSWORD, source="t").outcome is LoginOutcome.LOCKED


def test_every_step_is_audited_in_the_chain(accounts: Accounts, engine: Engine) -> None:
    accounts.login("alice", PASSWORD, source="10.0.0.9")
    for _ in range(3):
        accounts.login("alice", "nope", source="10.0.0.9")
    accounts.login("alice", PASSWORD, source="10.0.0.9")
    accounts.unlock("alice", actor="user:bob")
    accounts.passwd("alice", "another good one", actor="user:alice")
    assert actions(engine) == [
        ("operator:root", "user_add", "alice"),
        ("operator:root", "user_add", "bob"),
        ("user:alice", "login", "alice"),
        ("user:alice", "login_failed", "alice"),
        ("user:alice", "login_failed", "alice"),
        ("user:alice", "login_failed", "alice"),
        ("gated", "account_locked", "alice"),
        ("user:alice", "login_refused", "alice"),
        ("user:bob", "user_unlock", "alice"),
        ("user:alice", "user_passwd", "alice"),
    ]
    with engine.connect() as connection:
        assert verify(connection).intact


@pytest.mark.parametrize(
    ("username", "password", "problem"),
    [
        ("Alice", PASSWORD, "user name"),
        ("a" * 65, PASSWORD, "user name"),
        ("eve;drop", PASSWORD, "user name"),
        ("eve", "short", "at least 10"),
        ("eve", "x" * 1025, "at most 1024"),
    ],
)
def test_bad_names_and_passwords_are_refused(
    accounts: Accounts, username: str, password: str, problem: str
) -> None:
    with pytest.raises(AccountError, match=problem):
        accounts.add(username, Role.VIEWER, password, actor="operator:root")


def test_a_huge_password_at_login_is_refused_without_hashing_it_all(accounts: Accounts) -> None:
    started = time.monotonic()
    assert accounts.login("alice", "x" * 10_000_000, source="t").outcome is LoginOutcome.WRONG
    assert time.monotonic() - started < 30


# -- the command line, as an administrator runs it ----------------------------------------------------


def gated(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60, input=stdin
    )


@pytest.mark.subprocess
def test_the_users_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    secret = tmp_path / "alice.pw"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    added = gated("users", "add", "alice", "--role", "operator", "--db", db, "--password-file", str(secret))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added alice (operator)"
    again = gated("users", "add", "alice", "--role", "admin", "--db", db, "--password-file", str(secret))
    assert again.returncode == 1 and "exists already" in again.stderr
    engine = open_engine(db)
    accounts = Accounts(engine)
    for _ in range(3):
        accounts.login("alice", "wrong", source="test")
    listed = gated("users", "list", "--db", db, "--json")
    [alice] = json.loads(listed.stdout)
    assert alice["locked"] is True and alice["role"] == "operator"
    assert "locked until" in gated("users", "list", "--db", db).stdout
    unlocked = gated("users", "unlock", "alice", "--db", db)
    assert unlocked.returncode == 0 and unlocked.stdout.strip() == "alice unlocked"
    assert accounts.login("alice", PASSWORD, source="test").outcome is LoginOutcome.OK
    secret.write_text("a new long password\n", encoding="utf-8")
    changed = gated("users", "passwd", "alice", "--db", db, "--password-file", str(secret))
    assert changed.returncode == 0 and changed.stdout.strip() == "password of alice changed"
    assert accounts.login("alice", "a new long password", source="test").outcome is LoginOutcome.OK
    no_one = gated("users", "passwd", "nobody", "--db", db, "--password-file", str(secret))
    assert no_one.returncode == 1 and "no user 'nobody'" in no_one.stderr
    piped = gated("users", "passwd", "alice", "--db", db, stdin=PASSWORD + "\n")
    assert piped.returncode == 1 and "--password-file" in piped.stderr  # never read from a pipe
    engine.dispose()
    assert gated("audit", "verify", "--db", db).returncode == 0


@pytest.mark.subprocess
def test_the_password_is_asked_twice_at_the_terminal(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "gated", "users", "add", "dave", "--role", "viewer", "--db", db],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    said = b""
    for answer in (PASSWORD, PASSWORD):
        while b": " not in said.rsplit(b"\n", 1)[-1]:
            said += os.read(master, 1024)
        assert PASSWORD.encode() not in said  # not echoed
        os.write(master, answer.encode() + b"\n")
        said += b"\n"
    assert process.wait(timeout=60) == 0
    os.close(master)
    engine = open_engine(db)
    assert Accounts(engine).login("dave", PASSWORD, source="test").outcome is LoginOutcome.OK
    engine.dispose()
