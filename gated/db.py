"""The database: one SQLAlchemy engine, one MetaData, UTC everywhere.

SQLite is the embedded default (WAL, synchronous=FULL so a commit survives power loss);
PostgreSQL works through the same code with a ``postgresql+psycopg://`` URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, inspect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from gated.errors import StorageError

metadata = MetaData()


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


def open_engine(path_or_url: str | Path, *, create: bool = True) -> Engine:
    """Open (and by default create) the database. Raises ``StorageError`` with the path on failure."""
    url = database_url(path_or_url)
    try:
        if url.startswith("sqlite"):
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        if create:
            migrate(engine)
    except (SQLAlchemyError, OSError, CommandError) as error:
        raise StorageError(f"cannot open database {url}: {error}") from error
    return engine


def schema_tables() -> MetaData:
    """``metadata`` with every table gated defines (importing the modules that define them)."""
    import gated.credentials
    import gated.holds
    import gated.preadvice
    import gated.store  # noqa: F401

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
