"""The database: one SQLAlchemy engine, one MetaData, UTC everywhere.

SQLite is the embedded default (WAL, synchronous=FULL so a commit survives power loss);
PostgreSQL works through the same code with a ``postgresql+psycopg://`` URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
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
            # Import the modules that define tables so create_all sees them all.
            import gated.holds
            import gated.store  # noqa: F401

            metadata.create_all(engine)
    except (SQLAlchemyError, OSError) as error:
        raise StorageError(f"cannot open database {url}: {error}") from error
    return engine
