"""The store and its outbox on a real SQLite file: seq without gaps across restarts, one
transaction per batch, the reading backlog cap, and delivered rows kept for replay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gated.clock import ManualClock
from gated.db import open_engine
from gated.errors import StorageError
from gated.messages import READING, Topics, decision_message, reading_message
from gated.model import Decision, Kind, Outcome, Reading, Reason
from gated.store import Batch, Message, Store

TOPICS = Topics("s")


def store_at(path: Path, clock: ManualClock | None = None) -> Store:
    return Store(open_engine(path), site="s", node="n", clock=clock or ManualClock())


def reading(clock: ManualClock, value: float = 1.0) -> Reading:
    return Reading("lane-1", Kind.RPM, "rpm-1", "gamma_background_cps", value, clock.now(), units="cps")


def test_seq_rises_by_one_per_message_across_restarts(tmp_path: Path) -> None:
    clock = ManualClock()
    first = store_at(tmp_path / "g.db", clock)
    rows = first.write(Batch(messages=[reading_message(TOPICS, reading(clock)) for _ in range(3)]))
    first.engine.dispose()
    again = store_at(tmp_path / "g.db", clock)
    more = again.write(Batch(messages=[Message("t", "gated.status/1", {"state": "x"})]))
    assert [row.seq for row in rows + more] == [1, 2, 3, 4]


def test_a_failed_batch_stores_nothing(tmp_path: Path) -> None:
    clock = ManualClock()
    store = store_at(tmp_path / "g.db", clock)
    good = reading(clock)
    store.write(Batch(readings=[good], messages=[reading_message(TOPICS, good)]))
    # The same reading id again violates the primary key: the whole batch is refused.
    fresh = reading(clock)
    with pytest.raises(StorageError, match="cannot store"):
        store.write(Batch(readings=[fresh, good], messages=[reading_message(TOPICS, fresh)]))
    assert store.outbox_depth() == 1
    assert store.counter("seq") == 1


def test_reading_backlog_cap_drops_only_readings_and_counts_them(tmp_path: Path) -> None:
    clock = ManualClock()
    store = store_at(tmp_path / "g.db", clock)
    decision = Decision(
        "lane-1", "v1", None, Outcome.MANUAL_REVIEW, (Reason("OCR_UNREAD", "x"),), (), (), clock.now()
    )
    messages = [reading_message(TOPICS, reading(clock, float(i))) for i in range(1500)]
    store.write(Batch(messages=[decision_message(TOPICS, decision), *messages]))
    assert store.pending_readings() == 1500
    assert store.drop_oldest_pending_readings(1000) == 500
    assert store.pending_readings() == 1000 and store.counter("dropped_readings") == 500
    kept = store.pending(0, 5000)
    assert kept[0].topic.endswith("/decision"), "the decision is never dropped"
    assert [row.seq for row in kept[1:]] == list(range(502, 1502)), "the oldest readings went first"
    assert all(row.payload.count(READING.encode()) == 1 for row in kept[1:])


def test_delivered_rows_are_kept_for_replay_then_purged(tmp_path: Path) -> None:
    clock = ManualClock()
    store = store_at(tmp_path / "g.db", clock)
    rows = store.write(Batch(messages=[reading_message(TOPICS, reading(clock)) for _ in range(10)]))
    store.mark_delivered([row.seq for row in rows[:4]] + [rows[6].seq])
    assert store.outbox_depth() == 5
    assert [row.seq for row in store.pending(0, 100)] == [5, 6, 8, 9, 10]
    since = clock.now() - timedelta(seconds=1)
    assert [row.seq for row in store.recently_delivered(since, 100)] == [1, 2, 3, 4, 7]
    clock.advance(120)
    assert store.purge_delivered(clock.now() - timedelta(seconds=60)) == 5
    assert store.recently_delivered(since, 100) == [] and store.outbox_depth() == 5


def test_writes_are_synchronous_full_in_wal_mode(tmp_path: Path) -> None:
    store = store_at(tmp_path / "g.db")
    seen: list[tuple[str, object]] = []
    with store.engine.connect() as conn:
        for pragma in ("journal_mode", "synchronous"):
            seen.append((pragma, conn.exec_driver_sql(f"PRAGMA {pragma}").scalar()))
    assert seen == [("journal_mode", "wal"), ("synchronous", 2)]
