"""The failover store on a real PostgreSQL that is stopped and started, with a real SQLite file as
the node's local store: records written during the outage keep the node's seq going, and catching
up copies each of them exactly once, even when a catch-up is cut off after PostgreSQL committed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from gated.audit import verify
from gated.clock import ManualClock
from gated.db import open_engine
from gated.failover import FailoverStore
from gated.messages import Topics, reading_message
from gated.model import Kind, Reading
from gated.store import AuditRecord, Batch, Store, audit, outbox, readings
from tests.postgres import PostgresServer, postgres_server

pytest.importorskip("psycopg")

TOPICS = Topics("s")


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def batch(clock: ManualClock, index: int) -> Batch:
    reading = Reading(
        "lane-1", Kind.RPM, "rpm-1", "gamma_background_cps", float(index), clock.now(), units="cps"
    )
    record = AuditRecord(
        actor="gated", action="test", subject=str(index), detail={"i": index}, ts=clock.now()
    )
    return Batch(readings=[reading], messages=[reading_message(TOPICS, reading)], audit=[record])


def test_records_of_an_outage_reach_postgresql_once_with_the_seq_going_on(
    server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    url = server.new_database()
    local = Store(open_engine(tmp_path / "local.db"), site="s", node="gate-1", clock=clock)
    store = FailoverStore(open_engine(url), local, site="s", node="gate-1", clock=clock)
    events: list[tuple[bool, str]] = []
    store.on_outage = lambda down, detail: events.append((down, detail))
    store.next_boot()
    seqs = [row.seq for index in range(3) for row in store.write(batch(clock, index))]
    server.stop()
    seqs += [row.seq for index in range(3, 8) for row in store.write(batch(clock, index))]
    assert store.outage and [down for down, _ in events] == [True]
    assert seqs == list(range(1, 9))  # the node's seq goes on through the outage
    assert [row.seq for row in store.pending(0, 100)] == [4, 5, 6, 7, 8]  # published from the local store
    store.mark_delivered([4, 5])
    assert store.catch_up() is None  # still down
    server.start()
    # A catch-up cut off after PostgreSQL committed (the local copy not yet emptied): done again.
    real_delete = store.local.engine.begin
    calls = {"n": 0}

    def failing_begin() -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("DELETE", {}, Exception("disk gone"))
        return real_delete()

    monkeypatch.setattr(store.local.engine, "begin", failing_begin)
    assert store.catch_up() is None and store.outage
    monkeypatch.undo()
    copied = store.catch_up()
    assert copied is not None and not store.outage and events[-1][0] is False
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readings)).scalar() == 8
        rows = conn.execute(
            select(outbox.c.seq, outbox.c.delivered_at, outbox.c.payload).order_by(outbox.c.seq)
        ).all()
        trail = conn.execute(select(audit.c.subject).order_by(audit.c.seq)).scalars().all()
        assert verify(conn).intact  # the outage's audit records chained onto the shared trail
    assert [row.seq for row in rows] == list(range(1, 9))
    assert [row.seq for row in rows if row.delivered_at is not None] == [4, 5]
    assert len({json.loads(row.payload)["id"] for row in rows}) == 8
    assert trail == [str(index) for index in range(8)]
    # Back on PostgreSQL, the seq goes on from the outage's.
    assert [row.seq for row in store.write(batch(clock, 8))] == [9]
    with store.local.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readings)).scalar() == 0
