"""The audit trail's hash chain on real databases: every change of a record is named by
`gated audit verify`, two writers never fork the chain, old trails are chained by the migration."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, delete, insert, select, update

from gated.audit import GENESIS, audit_head, canonical, link_hash, verify
from gated.db import open_engine
from gated.store import AuditRecord, audit, insert_audit

pytestmark = pytest.mark.subprocess  # most tests run `gated audit verify` as a user does

START = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def record(index: int) -> AuditRecord:
    return AuditRecord(
        actor=f"operator:{index % 3}",
        action="hold_place" if index % 2 else "decision",
        subject=f"subject-{index}",
        detail={"n": index, "reason": "ünïcode ✓"},
        ts=START + timedelta(seconds=index, microseconds=index),
    )


def write(engine: Engine, count: int, first: int = 0, per_transaction: int = 1) -> None:
    for start in range(first, first + count, per_transaction):
        with engine.begin() as connection:
            insert_audit(
                connection, [record(i) for i in range(start, min(first + count, start + per_transaction))]
            )


def gated_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gated", "audit", "verify", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    path = tmp_path / "gated.db"
    engine = open_engine(path)
    write(engine, 6, per_transaction=2)
    yield path, engine
    engine.dispose()


def ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(audit.c.id).order_by(audit.c.seq)).scalars())


def test_an_untouched_trail_verifies_and_prints_its_head(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    with engine.connect() as connection:
        verdict = verify(connection)
        head = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    assert verdict.intact and verdict.records == 6 and (verdict.head_seq, verdict.head_hash) == tuple(head)
    done = gated_audit("--db", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"audit trail intact: 6 records, head 6:{head.hash}"


def test_an_edited_record_is_named(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    victim = ids(engine)[2]
    with engine.begin() as connection:
        connection.execute(update(audit).where(audit.c.seq == 3).values(actor="operator:innocent"))
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    assert (
        done.stdout.strip()
        == f"audit trail broken at record 3 (id {victim}): edited: its content does not match its hash"
    )


def test_an_edited_time_is_named_to_the_microsecond(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    with engine.begin() as connection:
        connection.execute(
            update(audit).where(audit.c.seq == 4).values(ts=record(3).ts + timedelta(microseconds=1))
        )
    assert "record 4 " in gated_audit("--db", str(path)).stdout


def test_a_removed_record_is_named(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    with engine.begin() as connection:
        connection.execute(delete(audit).where(audit.c.seq == 4))
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    assert (
        done.stdout.strip()
        == "audit trail broken at record 4: removed: record 4 missing between record 3 and record 5"
    )


def test_records_removed_from_the_end_are_noticed(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    with engine.begin() as connection:
        connection.execute(delete(audit).where(audit.c.seq >= 5))
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    assert "removed from the end: the head is record 6, the chain ends at 4" in done.stdout


def test_an_inserted_record_is_named(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    forged = {"id": "forged", "ts": START, "actor": "operator:0", "action": "hold_release", "detail": "{}"}
    with engine.begin() as connection:
        connection.execute(insert(audit).values(**forged))  # as code that knows nothing of the chain would
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    assert done.stdout.strip() == (
        "audit trail broken at record 0 (id forged): inserted: a record outside the chain (it has no position)"
    )


def test_a_record_inserted_with_its_own_hash_in_the_middle_is_named(trail: tuple[Path, Engine]) -> None:
    # A careful forger: a record chained to record 3, everything after moved up by one (the later
    # records keep their hashes, which covered their old positions).
    path, engine = trail
    with engine.begin() as connection:
        rows = connection.execute(select(audit).order_by(audit.c.seq)).all()
        connection.execute(update(audit).where(audit.c.seq > 3).values(seq=audit.c.seq + 100))
        connection.execute(update(audit).where(audit.c.seq > 100).values(seq=audit.c.seq - 99))
        ts = START + timedelta(seconds=3, milliseconds=500)
        detail = '{"reason":"backdated release"}'
        body = canonical("forged", ts, "operator:1", "hold_release", "subject-x", detail)
        digest = link_hash(rows[2].hash, 4, body)
        connection.execute(
            insert(audit).values(
                id="forged",
                ts=ts,
                actor="operator:1",
                action="hold_release",
                subject="subject-x",
                detail=detail,
                seq=4,
                prev_hash=rows[2].hash,
                hash=digest,
            )
        )
        connection.execute(update(audit_head).values(seq=7))
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    # Record 5 (the old record 4) no longer fits its position: its hash covered position 4.
    assert done.stdout.startswith("audit trail broken at record 5 ")


def test_a_record_inserted_and_chained_is_caught_by_the_next_one(trail: tuple[Path, Engine]) -> None:
    # Record 3 replaced by a forged record with a valid hash of its own: record 4 chains to the
    # real record 3's hash, which the forgery does not have.
    path, engine = trail
    with engine.begin() as connection:
        rows = connection.execute(select(audit).order_by(audit.c.seq)).all()
        body = canonical(
            rows[2].id, rows[2].ts, "operator:9", rows[2].action, rows[2].subject, rows[2].detail
        )
        connection.execute(
            update(audit)
            .where(audit.c.seq == 3)
            .values(actor="operator:9", hash=link_hash(rows[1].hash, 3, body))
        )
    done = gated_audit("--db", str(path))
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"audit trail broken at record 3 (id {rows[2].id}): edited and its hash recomputed: "
        "the record after it chains to another hash"
    )


def test_a_rewritten_chain_passes_alone_but_not_against_its_anchor(trail: tuple[Path, Engine]) -> None:
    path, engine = trail
    with engine.connect() as connection:
        anchor = verify(connection)
    # Someone with the database edits record 2 and recomputes every hash after it, and the head.
    with engine.begin() as connection:
        connection.execute(update(audit).where(audit.c.seq == 2).values(actor="operator:innocent"))
        prev = GENESIS
        for row in connection.execute(select(audit).order_by(audit.c.seq)).all():
            digest = link_hash(
                prev, row.seq, canonical(row.id, row.ts, row.actor, row.action, row.subject, row.detail)
            )
            connection.execute(update(audit).where(audit.c.id == row.id).values(prev_hash=prev, hash=digest))
            prev = digest
        connection.execute(update(audit_head).values(hash=prev))
    assert gated_audit("--db", str(path)).returncode == 0
    done = gated_audit("--db", str(path), "--anchor", f"{anchor.head_seq}:{anchor.head_hash}")
    assert done.returncode == 1
    assert "record 6 " in done.stdout and "rewritten: its hash is not the anchored one" in done.stdout
    assert gated_audit("--db", str(path), "--anchor", f"9:{anchor.head_hash}").returncode == 1


def test_json_verdict_and_a_bad_anchor(trail: tuple[Path, Engine]) -> None:
    path, _ = trail
    done = gated_audit("--db", str(path), "--json")
    assert done.returncode == 0
    assert '"intact": true' in done.stdout and '"records": 6' in done.stdout
    bad = gated_audit("--db", str(path), "--anchor", "6:not-a-hash")
    assert bad.returncode == 2 and "is not SEQ:HASH" in bad.stderr


def _append_many(url: str, first: int, count: int) -> None:
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        from sqlalchemy import event

        from gated.db import _sqlite_pragmas

        event.listen(engine, "connect", _sqlite_pragmas)
    write(engine, count, first)
    engine.dispose()


def _append_concurrently(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(url, n * 1000, 150)) for n in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0


def test_two_processes_appending_at_once_never_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "gated.db"
    open_engine(path).dispose()
    _append_concurrently(f"sqlite:///{path}")
    engine = open_engine(path)
    with engine.connect() as connection:
        verdict = verify(connection)
    engine.dispose()
    assert verdict.intact, verdict.problem
    assert verdict.records == 300


def test_two_processes_appending_at_once_on_postgresql() -> None:
    pytest.importorskip("psycopg")
    from tests.postgres import postgres_server

    with postgres_server() as server:
        url = server.new_database()
        open_engine(url).dispose()
        _append_concurrently(url)
        engine = open_engine(url)
        with engine.connect() as connection:
            verdict = verify(connection)
        engine.dispose()
    assert verdict.intact, verdict.problem
    assert verdict.records == 300


def test_a_trail_written_before_the_chain_is_chained_by_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        old = [record(i) for i in range(5)]
        # Raw rows, newest first: the upgrade must chain them by time, not by the order they are in.
        for r in reversed(old):
            connection.exec_driver_sql(
                "INSERT INTO audit (id, ts, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (r.id, r.ts.strftime("%Y-%m-%d %H:%M:%S.%f"), r.actor, r.action, r.subject, "{}"),
            )
    engine.dispose()
    upgraded = open_engine(path)
    write(upgraded, 2, first=100)
    with upgraded.connect() as connection:
        verdict = verify(connection)
        order = list(connection.execute(select(audit.c.id).order_by(audit.c.seq)).scalars())
    upgraded.dispose()
    assert verdict.intact and verdict.records == 7
    assert order[:5] == [r.id for r in old]  # chained in the order they were written


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=2, max_value=12),
    tamper=st.sampled_from(["edit", "delete", "unchain", "swap"]),
    where=st.integers(min_value=0, max_value=100),
)
def test_any_single_change_is_found_at_the_record_changed(size: int, tamper: str, where: int) -> None:
    engine = open_engine("sqlite://")
    try:
        write(engine, size, per_transaction=3)
        seq = 1 + where % size
        with engine.begin() as connection:
            if tamper == "edit":
                connection.execute(update(audit).where(audit.c.seq == seq).values(detail='{"n":-1}'))
            elif tamper == "delete":
                connection.execute(delete(audit).where(audit.c.seq == seq))
            elif tamper == "unchain":
                connection.execute(update(audit).where(audit.c.seq == seq).values(seq=None))
            else:  # two records change places
                other = seq % size + 1
                connection.execute(update(audit).where(audit.c.seq == seq).values(seq=-1))
                connection.execute(update(audit).where(audit.c.seq == other).values(seq=seq))
                connection.execute(update(audit).where(audit.c.seq == -1).values(seq=other))
        with engine.connect() as connection:
            verdict = verify(connection)
    finally:
        engine.dispose()
    assert verdict.problem is not None
    if tamper in ("edit", "swap"):
        assert (
            verdict.problem.seq == min(seq, seq % size + 1)
            if tamper == "swap"
            else verdict.problem.seq == seq
        )


def test_the_database_is_taken_from_the_config(trail: tuple[Path, Engine], tmp_path: Path) -> None:
    path, _ = trail
    config = tmp_path / "gate.toml"
    config.write_text(
        f'site = "s"\n[storage]\ndatabase = "{path.name}"\nevidence = "crops"\n[holds]\nmax_age_seconds = 60\n'
        '[[lanes]]\nid = "lane-1"\nrequire = ["ocr"]\n[[lanes.devices]]\nid = "ocr-1"\n'
        'driver = "ocr-camera"\nhost = "192.0.2.20"\nport = 5300\n',
        encoding="utf-8",
    )
    done = gated_audit("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("audit trail intact: 6 records")


def test_the_head_is_stored_for_publishing_when_it_moves_and_anchors_the_trail(tmp_path: Path) -> None:
    from gated.anchor import AuditAnchor
    from gated.messages import Topics
    from gated.payload_schemas import validate_payload
    from gated.store import Store

    path = tmp_path / "gated.db"
    engine = open_engine(path)
    store = Store(engine, site="s", node="gate-1")
    woken: list[bool] = []
    anchor = AuditAnchor(engine, store, Topics("s"), "gate-1", on_stored=lambda: woken.append(True))
    assert anchor.step()  # at start: the empty chain's head
    assert not anchor.step()  # nothing new: nothing stored
    write(engine, 4)
    assert anchor.step()
    rows = [row for row in store.pending(0, 100) if row.topic == "gated/v1/s/node/gate-1/audit"]
    assert len(rows) == 2 and all(row.retain and row.qos == 1 for row in rows) and len(woken) == 2
    payload = json.loads(rows[-1].payload)
    assert validate_payload(rows[-1].topic, payload) == []
    assert payload["head_seq"] == 4
    engine.dispose()
    assert gated_audit("--db", str(path), "--anchor", payload["anchor"]).returncode == 0
