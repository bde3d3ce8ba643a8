"""Several gate nodes on one database, on real SQLite and a real PostgreSQL: each node has its own
boot counter, its own outbox and its own gap-free seq, whatever the others write at the same time;
a database from before (one outbox, one set of counters) is carried over to the first node that
starts on it, its boot and seq going on where they were."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text

from gated.clock import ManualClock
from gated.db import open_engine
from gated.messages import Topics, alarm_message
from gated.store import Batch, Message, Store, counters
from tests.postgres import database as database
from tests.postgres import server as server

TOPICS = Topics("s")
PER_NODE = 120


def status(text: str) -> Message:
    return Message("s/node/x/status", "gated.status/1", {"state": text})


def test_two_nodes_write_at_once_each_with_its_own_gap_free_seq_and_outbox(database: str) -> None:
    clock = ManualClock()
    nodes = {
        name: Store(open_engine(database), site="s", node=name, clock=clock) for name in ("gate-1", "gate-2")
    }
    assert [nodes["gate-1"].next_boot(), nodes["gate-2"].next_boot(), nodes["gate-1"].next_boot()] == [
        1,
        1,
        2,
    ]
    failures: list[BaseException] = []

    def write(store: Store) -> None:
        try:
            for index in range(PER_NODE):
                alarm = alarm_message(TOPICS, lane="lane-1", alarm="tamper", text=f"{index}", ts=clock.now())
                store.write(Batch(messages=[status(f"{store.node} {index}"), alarm]))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(store,)) for store in nodes.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    for name, store in nodes.items():
        rows = store.pending(0, 10_000)
        assert [row.seq for row in rows] == list(range(1, 2 * PER_NODE + 1))  # no gap, no other node's
        payloads = [json.loads(row.payload) for row in rows]
        assert {payload["node"] for payload in payloads} == {name}
        assert [p["seq"] for p in payloads] == [row.seq for row in rows]
        assert store.outbox_depth() == 2 * PER_NODE and store.counter("seq") == 2 * PER_NODE
    # The broker's acknowledgements of one node's messages leave the other's waiting.
    nodes["gate-1"].mark_delivered(range(1, 2 * PER_NODE + 1))
    assert nodes["gate-1"].outbox_depth() == 0 and nodes["gate-2"].outbox_depth() == 2 * PER_NODE
    ids = [json.loads(row.payload)["id"] for store in nodes.values() for row in store.pending(0, 10_000)]
    assert len(ids) == len(set(ids))
    for store in nodes.values():
        store.engine.dispose()


def test_a_database_from_before_goes_on_with_the_first_node_that_starts(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        connection.execute(text("INSERT INTO node_counters (name, value) VALUES ('boot', 5), ('seq', 3)"))
        for seq in (1, 2, 3):
            connection.execute(
                text(
                    "INSERT INTO outbox (seq, topic, payload, qos, retain, created_at, delivered_at, is_reading)"
                    " VALUES (:seq, 't', :payload, 1, 0, '2026-12-01 00:00:00', :delivered, 0)"
                ),
                {
                    "seq": seq,
                    "payload": json.dumps({"seq": seq}),
                    "delivered": "2026-12-01 00:00:01" if seq == 1 else None,
                },
            )
    old.dispose()
    clock = ManualClock()
    first = Store(open_engine(path), site="s", node="gate-7", clock=clock)
    assert first.next_boot() == 6  # its boot goes on
    assert [row.seq for row in first.pending(0, 10)] == [2, 3]  # what waited still waits
    [row] = first.write(Batch(messages=[status("after")]))
    assert row.seq == 4
    second = Store(open_engine(path), site="s", node="gate-8", clock=clock)
    assert second.next_boot() == 1 and second.pending(0, 10) == []
    assert [row.seq for row in second.write(Batch(messages=[status("new node")]))] == [1]
    assert first.next_boot() == 7
    with first.engine.connect() as connection:
        names = set(connection.execute(select(counters.c.name)).scalars())
    assert {"boot@gate-7", "seq@gate-7", "boot@gate-8", "seq@gate-8"} <= names
    assert not names & {"boot", "seq"}
    first.engine.dispose()
    second.engine.dispose()


def test_a_postgresql_url_without_its_driver_says_what_to_install() -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if psycopg were not installed
        "from gated.cli import main\n"
        "sys.exit(main(['query', 'MSKU4135329', '--db', 'postgresql+psycopg://gate:secret@db.example/gated']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gated: cannot open database postgresql+psycopg://gate:***@db.example/gated: its driver psycopg "
        "is not installed (pip install 'gated[postgres]')"
    ]
