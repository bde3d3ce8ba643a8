"""The store, the hold list and the schema's migrations on a real PostgreSQL server (the same code
as on SQLite, through a ``postgresql+psycopg://`` URL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gated.clock import ManualClock
from gated.db import open_engine, schema_tables
from gated.errors import StorageError
from gated.holds import HoldStore
from gated.messages import Topics, reading_message
from gated.model import Kind, Reading
from gated.store import Batch, Message, Store
from tests.postgres import PostgresServer, postgres_server

pytest.importorskip("psycopg")

TOPICS = Topics("s")
HELD = "CSQU3054383"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def _reading(clock: ManualClock) -> Reading:
    return Reading("lane-1", Kind.RPM, "rpm-1", "gamma_background_cps", 1.0, clock.now(), units="cps")


def test_migrations_make_the_schema_the_code_defines(server: PostgresServer) -> None:
    engine = open_engine(server.new_database())
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() is not None
        assert compare_metadata(context, schema_tables()) == []
    engine.dispose()


def test_seq_and_a_failed_batch_as_on_sqlite(server: PostgresServer) -> None:
    url, clock = server.new_database(), ManualClock()
    store = Store(open_engine(url), site="s", node="n", clock=clock)
    good = _reading(clock)
    rows = store.write(Batch(readings=[good], messages=[reading_message(TOPICS, good)]))
    fresh = _reading(clock)
    with pytest.raises(StorageError, match="cannot store"):
        store.write(Batch(readings=[fresh, good], messages=[reading_message(TOPICS, fresh)]))
    store.engine.dispose()
    again = Store(open_engine(url), site="s", node="n", clock=clock)
    more = again.write(Batch(messages=[Message("t", "gated.status/1", {"state": "x"})]))
    assert [row.seq for row in rows + more] == [1, 2]
    assert again.outbox_depth() == 2
    again.engine.dispose()


def test_a_hold_placed_is_found_and_released(server: PostgresServer) -> None:
    engine = open_engine(server.new_database())
    holds = HoldStore(engine, ManualClock())
    holds.place(container=HELD, agency="CBP", hold_type="customs", code="1H", reference="R-1")
    assert [hold.container for hold in holds.active_holds_for(HELD)] == [HELD]
    holds.release(container=HELD, agency="CBP", hold_type="customs", code="R1")
    assert holds.active_holds_for(HELD) == []
    engine.dispose()
