"""The database: one SQLAlchemy engine, one MetaData, UTC everywhere.

SQLite is the embedded default (WAL, synchronous=FULL so a commit survives power loss);
PostgreSQL works through the same code with a ``postgresql+psycopg://`` URL.

The SQLite file holds every visit and decision: it is created ``0640`` whatever the umask, and an
existing one of ours that is more open (older versions made it ``0644``) is narrowed to that. SQLite
gives its ``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import URL, DateTime, Engine, MetaData, create_engine, event, inspect, make_url
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from gated.config import read_password_file
from gated.errors import ConfigError, StorageError
from gated.redact import redact, redact_url, url_secrets

metadata = MetaData()

FILE_MODE = 0o640
"""The most open mode a SQLite database file (and its -wal, -shm, -journal) is left with."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored and returned as UTC. SQLite drops tzinfo; this puts it back, so the
    rest of the code only ever sees aware datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StorageError("refusing to store a naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def database_url(path_or_url: str | Path) -> str:
    text = str(path_or_url)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _narrow(path: Path) -> None:
    """Take the bits beyond ``FILE_MODE`` off an existing file of ours; nothing when it is absent."""
    # By path, never through a descriptor: closing any descriptor of a SQLite file drops every
    # POSIX lock this process's open connections hold on it, and another process could then write.
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and mode & ~FILE_MODE:
        os.chmod(path, mode & FILE_MODE)


def _prepare_sqlite_file(url: str) -> None:
    """Create the database file (and its folder) before SQLite does, so the umask cannot make it
    more open than ``FILE_MODE``; narrow an existing one and its companions."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    # O_EXCL: only a file made here is opened (and closed), never one a connection may have locked.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    for name in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm", "-journal"))):
        _narrow(name)


def _require_sqlite_file(url: str) -> None:
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise StorageError(f"no database at {database} (check the path; this command creates none)")


def _target(url: str, password_file: str | Path | None) -> URL:
    """``url`` parsed, with the password in ``password_file`` set on it (never written into its text)."""
    try:
        target = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(f"not a database URL: {redact_url(url)}") from None
    if password_file is None:
        return target
    if target.get_backend_name() == "sqlite":
        raise ConfigError(["storage.database_password_file: SQLite has no password"])
    return target.set(password=read_password_file(password_file, "storage.database_password_file"))


def open_engine(
    path_or_url: str | Path,
    *,
    create: bool = True,
    password_file: str | Path | None = None,
    must_exist: bool = False,
) -> Engine:
    """Open (and by default create) the database. Raises ``StorageError`` with the path on failure
    (a password hidden), ``ConfigError`` when ``password_file`` cannot be read. With ``must_exist``
    (the read-only commands) a SQLite file that is not there is an error: a mistyped path creates
    no database and no folders."""
    url = database_url(path_or_url)
    target = _target(url, password_file)
    if must_exist:
        _require_sqlite_file(url)
    try:
        if url.startswith("sqlite"):
            _prepare_sqlite_file(url)
            engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(target, pool_pre_ping=True)
        if create:
            migrate(engine)
    except ModuleNotFoundError as error:
        # A URL whose driver is not installed (psycopg for PostgreSQL): say what to install.
        extra = " (pip install 'gated[postgres]')" if target.get_backend_name() == "postgresql" else ""
        raise StorageError(
            f"cannot open database {redact_url(target)}: its driver {error.name or 'module'} is not "
            f"installed{extra}"
        ) from None
    except (SQLAlchemyError, OSError, CommandError) as error:
        # Not chained: a driver's error may show the password, and a traceback would print it.
        detail = redact(str(error), url_secrets(target))
        raise StorageError(f"cannot open database {redact_url(target)}: {detail}") from None
    return engine


def schema_tables() -> MetaData:
    """``metadata`` with every table gated defines (importing the modules that define them)."""
    import gated.credentials
    import gated.holds
    import gated.leases
    import gated.preadvice
    import gated.store
    import gated.users  # noqa: F401

    return metadata


BASELINE = "0001"
"""The first revision: the schema as databases made before migrations existed already have it."""


def migrate(engine: Engine) -> None:
    """Bring the database's schema up to the newest revision (``gated/migrations``), in one
    transaction. A database made before migrations existed (gated's tables, no revision) is taken
    to be at ``BASELINE`` first."""
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None and inspect(connection).has_table("outbox"):
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
