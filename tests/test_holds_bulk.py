"""Big hold lists: all or nothing, the same list twice, an import killed and run again, a daemon
deciding while an import runs, ``gated holds check``'s exit codes, on real SQLite files and a real
PostgreSQL server; and the row checks and the streaming reader against the model's own rules."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from gated.clock import ManualClock
from gated.db import open_engine
from gated.errors import ContainerNumberError, HoldListError, StorageError
from gated.holds import HoldStore
from gated.holds.imports import _COLUMN_ALIASES, RowChecker
from gated.holds.model import check_place, check_release
from gated.holds_cli import ProgressLine
from gated.importfile import Problems, read_import_file, stream_import_file
from gated.iso6346 import check_digit
from gated.model import Decision, Kind, Outcome, Reading, Reason, Source
from gated.store import Batch, Store, audit, decisions
from tests.postgres import PostgresServer, postgres_server

HEADER = "container,agency,hold_type,code,reference\n"


def number(index: int, owner: str = "ABC") -> str:
    prefix = f"{owner}{'UJZ'[index // 1_000_000]}{index % 1_000_000:06d}"
    return prefix + str(check_digit(prefix))


def big_list(path: Path, count: int, *, owner: str = "ABC", tail: str = "") -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for index in range(count):
            out.write(f"{number(index, owner)},CBP,customs,1H,R{index}\n")
        out.write(tail)
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = open_engine(tmp_path / "gated.db")
    yield made
    made.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> HoldStore:
    return HoldStore(engine, clock)


def holds_count(engine: Engine) -> int:
    from gated.holds import holds

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(holds)).scalar_one())


# --- all or nothing, twice, a full list -----------------------------------------------------------------


def test_a_bad_row_at_the_end_of_a_big_file_applies_nothing(store: HoldStore, tmp_path: Path) -> None:
    store.place(container=number(5, "XYZ"), agency="CBP", hold_type="exam")
    before = store.state()
    path = big_list(tmp_path / "big.csv", 30_000, tail="NOTABOX,CBP,customs,,\n")
    with pytest.raises(HoldListError) as caught:
        store.import_file(path, reason="r")
    message = str(caught.value)
    assert message.startswith(f"{path}: 1 problem(s), nothing imported")
    assert f"{path}:30002:" in message and "NOTABOX" in message
    assert store.state() == before
    assert holds_count(store.engine) == 1
    assert store.active_holds_for(number(29_999)) == []


def test_every_bad_row_is_reported_with_its_line(store: HoldStore, tmp_path: Path) -> None:
    path = big_list(tmp_path / "big.csv", 5_000, tail=f"{number(1)},,customs,,\n{number(2)},CBP,no such,,\n")
    lines = path.read_text().splitlines()
    lines[100] = "BAD,CBP,customs,,"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HoldListError) as caught:
        store.import_file(path, reason="r")
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert f"{path}:101:" in message
    assert f"{path}:5002: agency is empty" in message
    assert f"{path}:5003: hold type 'no such'" in message
    assert holds_count(store.engine) == 0 and not store.state().loaded


def test_the_same_big_file_twice_changes_nothing_the_second_time(
    store: HoldStore, tmp_path: Path, clock: ManualClock
) -> None:
    path = big_list(tmp_path / "big.csv", 20_000)
    first = store.import_file(path, reason="CBP list")
    assert (first.rows, first.placed, first.unchanged, first.version) == (20_000, 20_000, 0, 1)
    assert store.state().active == 20_000
    clock.advance(60)
    second = store.import_file(path, reason="CBP list again")
    assert (second.placed, second.released, second.unchanged, second.version) == (0, 0, 20_000, 1)
    assert holds_count(store.engine) == 20_000
    assert store.state().confirmed_at == clock.now()  # it still confirms the list as of now
    held = store.active_holds_for(number(12_345))
    assert [(h.agency, h.hold_type, h.code, h.reference) for h in held] == [
        ("CBP", "customs", "1H", "R12345")
    ]
    with store.engine.connect() as conn:
        details = [
            json.loads(d)
            for d in conn.execute(select(audit.c.detail).where(audit.c.action == "holds_import")).scalars()
        ]
    assert [(d["placed"], d["unchanged"], d["reason"]) for d in details] == [
        (20_000, 0, "CBP list"),
        (0, 20_000, "CBP list again"),
    ]


def test_repeated_rows_and_releases_keep_their_order(store: HoldStore, tmp_path: Path) -> None:
    a, b = number(1), number(2)
    path = tmp_path / "mixed.csv"
    path.write_text(
        "container,agency,hold_type,code,action\n"
        f"{a},CBP,customs,1H,\n{a},CBP,customs,1H,\n{b},CBP,exam,,\n"
        f"{a},CBP,customs,1I,release\n{a},CBP,customs,1H,\n{a},CBP,customs,1H,place\n"
    )
    result = store.import_file(path, reason="r")
    assert (result.rows, result.placed, result.released, result.unchanged) == (6, 3, 1, 2)
    assert [h.container for h in store.list_holds()] == [b, a]
    assert store.state().active == 2


def test_a_full_big_list_releases_what_it_no_longer_names(
    store: HoldStore, tmp_path: Path, clock: ManualClock
) -> None:
    store.import_file(big_list(tmp_path / "day1.csv", 10_000), replace=True, reason="day 1")
    usda = store.place(container=number(3), agency="USDA", hold_type="usda")
    clock.advance(60)
    day2 = big_list(tmp_path / "day2.csv", 8_000)
    result = store.import_file(day2, replace=True, reason="day 2")
    assert (result.placed, result.released, result.unchanged) == (0, 2_000, 8_000)
    assert store.state().active == 8_000 + 1
    assert store.active_holds_for(number(9_000)) == []
    assert [h.id for h in store.active_holds_for(number(3))][-1] == usda.id
    with pytest.raises(HoldListError, match="would replace 8000"):
        store.import_file(big_list(tmp_path / "day3.csv", 100), replace=True, reason="truncated")
    assert store.state().active == 8_001


def test_the_kept_count_of_active_holds_matches_the_table(store: HoldStore, tmp_path: Path) -> None:
    from gated.holds import holds

    store.import_file(big_list(tmp_path / "a.csv", 3_000), reason="r")
    store.release(container=number(7), agency="CBP")
    store.import_file(
        big_list(tmp_path / "b.csv", 1_000, owner="DEF"), replace=True, allow_shrink=True, reason="r"
    )
    with store.engine.connect() as conn:
        counted = conn.execute(select(func.count()).select_from(holds).where(holds.c.released_at.is_(None)))
        assert store.state().active == counted.scalar_one() == 1_000  # the full list ended the rest


# --- an interrupted import, and a daemon working while one runs -----------------------------------------


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "gated", *argv]


def wait_until_reading(process: subprocess.Popen[str], path: Path) -> None:
    """Until ``process`` has read a tenth of ``path`` (its open file's offset, from /proc)."""
    size = path.stat().st_size
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the import finished before it could be interrupted"
        try:
            for fd in Path(f"/proc/{process.pid}/fd").iterdir():
                if fd.resolve() == path.resolve():
                    info = Path(f"/proc/{process.pid}/fdinfo/{fd.name}").read_text()
                    position = int(info.split("pos:")[1].split()[0])
                    if size // 10 < position < size:
                        return
        except (OSError, IndexError, ValueError):
            pass  # a descriptor came or went while looking
        time.sleep(0.02)
    raise AssertionError("the import never got into the file")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_an_import_killed_halfway_changes_nothing_and_running_it_again_completes_it(
    tmp_path: Path, how: signal.Signals
) -> None:
    database = tmp_path / "gated.db"
    path = big_list(tmp_path / "big.csv", 300_000)
    command = cli("holds", "import", str(path), "--db", str(database), "--reason", "CBP list")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_reading(process, path)
    process.send_signal(how)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == (130 if how == signal.SIGINT else -signal.SIGKILL), err
    engine = open_engine(database)
    try:
        store = HoldStore(engine)
        assert holds_count(engine) == 0
        state = store.state()
        assert (state.version, state.active, state.loaded) == (0, 0, False)
    finally:
        engine.dispose()
    again = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "300000 row(s), 300000 placed" in again.stdout
    engine = open_engine(database)
    try:
        assert HoldStore(engine).state().active == 300_000
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_the_daemon_keeps_deciding_and_writing_while_a_big_import_runs(tmp_path: Path) -> None:
    database = tmp_path / "gated.db"
    engine = open_engine(database)
    holds = HoldStore(engine)
    holds.import_file(big_list(tmp_path / "first.csv", 1_000, owner="XYZ"), reason="first")
    store = Store(engine, site="s", node="n")
    path = big_list(tmp_path / "big.csv", 200_000)
    importer = subprocess.Popen(
        cli("holds", "import", str(path), "--db", str(database), "--reason", "big"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[BaseException] = []
    done = {"lookups": 0, "writes": 0, "decisions": 0}
    try:
        while importer.poll() is None:
            try:
                assert len(holds.active_holds_for(number(17, "XYZ"))) == 1
                done["lookups"] += 1
                placed = holds.place(container=number(done["writes"], "QRS"), agency="USDA", hold_type="usda")
                holds.release(hold_id=placed.id)
                done["writes"] += 1
                now = datetime.now(UTC)
                decision = Decision(
                    lane="lane-1",
                    visit=f"v{done['decisions']}",
                    container=number(17, "XYZ"),
                    outcome=Outcome.HOLD,
                    reasons=(Reason("HOLD", "held"),),
                    holds=(),
                    inputs=(),
                    decided_at=now,
                )
                reading = Reading("lane-1", Kind.RPM, "rpm-1", Source.GAMMA_CPS, 1.0, now)
                store.write(Batch(readings=[reading], decisions=[(decision, 0)]))
                done["decisions"] += 1
            except (StorageError, HoldListError, AssertionError) as error:
                errors.append(error)
                break
        _out, err = importer.communicate(timeout=240)
        assert importer.returncode == 0, err
        assert errors == [], errors
        assert done["decisions"] >= 3, done  # it did run alongside the import
        assert holds.state().active == 1_000 + 200_000
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(decisions)).scalar_one() == done["decisions"]
    finally:
        if importer.poll() is None:
            importer.kill()
        holds.close()
        engine.dispose()


# --- gated holds check: exit codes ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_holds_check_exits_3_when_held_0_when_clear_1_when_the_list_was_never_loaded(tmp_path: Path) -> None:
    database = str(tmp_path / "gated.db")
    add = cli("holds", "add", "--container", number(1), "--agency", "CBP", "--type", "exam", "--reason", "r")
    assert subprocess.run([*add, "--db", database], capture_output=True, timeout=60).returncode == 0
    never = subprocess.run(cli("holds", "check", number(2), "--db", database), capture_output=True, text=True)
    assert never.returncode == 1 and "never been loaded" in never.stdout
    listing = big_list(tmp_path / "list.csv", 10)
    loaded = subprocess.run(
        cli("holds", "import", str(listing), "--db", database), capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    held = subprocess.run(cli("holds", "check", number(1), "--db", database), capture_output=True, text=True)
    assert held.returncode == 3 and "HELD by 2 active hold(s)" in held.stdout
    as_json = subprocess.run(
        cli("holds", "check", number(1), "--db", database, "--json"), capture_output=True, text=True
    )
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["held"] is True
    clear = subprocess.run(
        cli("holds", "check", number(500), "--db", database), capture_output=True, text=True
    )
    assert clear.returncode == 0 and "no active hold" in clear.stdout
    bad = subprocess.run(cli("holds", "check", "HELLO", "--db", database), capture_output=True, text=True)
    assert bad.returncode == 1 and "ISO 6346" in bad.stderr


# --- progress -------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_rewritten_line_on_a_terminal_and_silent_in_a_short_log(
    store: HoldStore, tmp_path: Path
) -> None:
    path = big_list(tmp_path / "big.csv", 60_000)
    terminal = Terminal()
    meter = ProgressLine(terminal)
    store.import_file(path, reason="r", progress=meter)
    meter.done()
    shown = terminal.getvalue()
    assert "\r" in shown and "rows checked" in shown and "rows/s" in shown and "s left" in shown
    assert "applying them in one transaction" in shown
    log = io.StringIO()
    store.import_file(path, reason="r", progress=ProgressLine(log))
    assert log.getvalue() == ""  # under five seconds: nothing to say
    log_every = io.StringIO()
    ProgressLine(log_every, every=0.0)("check", 1_000, 10, 100)
    assert log_every.getvalue().startswith("1,000 rows checked") and log_every.getvalue().endswith("\n")


# --- PostgreSQL -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


@pytest.mark.timeout(300)
def test_bulk_import_on_postgresql(server: PostgresServer, tmp_path: Path) -> None:
    engine = open_engine(server.new_database())
    clock = ManualClock(datetime.now(UTC))
    store = HoldStore(engine, clock)
    try:
        bad = big_list(tmp_path / "bad.csv", 20_000, tail="NOTABOX,CBP,customs,,\n")
        with pytest.raises(HoldListError, match=rf"{bad}:20002:"):
            store.import_file(bad, reason="r")
        assert holds_count(engine) == 0 and not store.state().loaded
        path = big_list(tmp_path / "big.csv", 20_000)
        first = store.import_file(path, replace=True, reason="r")
        assert (first.placed, first.unchanged) == (20_000, 0)
        clock.advance(1)
        second = store.import_file(path, replace=True, reason="r")
        assert (second.placed, second.unchanged, second.released, second.version) == (0, 20_000, 0, 1)
        clock.advance(1)
        smaller = store.import_file(big_list(tmp_path / "small.csv", 15_000), replace=True, reason="r")
        assert (smaller.released, smaller.unchanged) == (5_000, 15_000)
        mixed = tmp_path / "mixed.jsonl"
        rows: list[dict[str, Any]] = [
            {"container": number(1, "XYZ"), "agency": "CBP", "hold_type": "vacis"},
            {"container": number(1, "XYZ"), "agency": "CBP", "hold_type": "vacis"},
            {"bill_of_lading": "mae-1", "agency": "LINE", "hold_type": "freight"},
            {"container": number(1, "XYZ"), "agency": "CBP", "hold_type": "vacis", "action": "release"},
        ]
        mixed.write_text("".join(json.dumps(row) + "\n" for row in rows))
        result = store.import_file(mixed, reason="r")
        assert (result.placed, result.released, result.unchanged) == (2, 1, 1)
        manifest = tmp_path / "manifest.csv"
        manifest.write_text(f"container,bill_of_lading\n{number(2, 'XYZ')},MAE-1\n{number(2, 'XYZ')},MAE-1\n")
        assert store.import_file(manifest).manifest_added == 1
        assert [h.bill_of_lading for h in store.active_holds_for(number(2, "XYZ"))] == ["MAE-1"]
        assert [h.reference for h in store.active_holds_for(number(14_999))] == ["R14999"]
        assert store.state().active == 15_000 + 1
    finally:
        store.close()
        engine.dispose()


# --- the row checks and the streaming reader, against the model's own rules ------------------------------

texts = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "CBP", " cbp ", "customs", "Exam", "1h", "CSQU3054383", "csqu 305438 3", "X\x01"]
    ),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -\t\n", max_size=40),
)


@given(
    container=texts,
    bill=texts,
    agency=texts,
    hold_type=texts,
    code=texts,
    reference=texts,
    note=texts,
    action=st.sampled_from([None, "", "place", " Release ", "release", "delete"]),
)
def test_row_checks_decide_and_word_exactly_as_the_model(
    container: str | None,
    bill: str | None,
    agency: str | None,
    hold_type: str | None,
    code: str | None,
    reference: str | None,
    note: str | None,
    action: str | None,
) -> None:
    values = {
        "container": container,
        "bill_of_lading": bill,
        "agency": agency,
        "hold_type": hold_type,
        "code": code,
        "reference": reference,
        "note": note,
        "action": action,
    }
    kind = str(action or "place").strip().lower()
    expected: Any
    try:
        if kind == "place":
            spec = check_place(
                container=container,
                bill_of_lading=bill,
                agency=agency,
                hold_type=hold_type,
                code=code,
                reference=reference,
                note=note,
            )
            expected = ("place", spec.container, spec.bill_of_lading, spec.agency, spec.hold_type, spec.code,
                        spec.reference, spec.note)  # fmt: skip
        elif kind == "release":
            spec_r = check_release(
                hold_id=None,
                container=container,
                bill_of_lading=bill,
                agency=_blank(agency),
                hold_type=_blank(hold_type),
                code=code,
                reference=reference,
            )
            expected = ("release", spec_r.container, spec_r.bill_of_lading, spec_r.agency, spec_r.hold_type,
                        spec_r.code, spec_r.reference, None)  # fmt: skip
        else:
            expected = HoldListError(f"action {kind!r} is neither place nor release")
    except (HoldListError, ContainerNumberError) as error:
        expected = error
    checker = RowChecker()
    for _ in range(2):  # the second time through its caches
        try:
            got: Any = checker.check(values, replace=False)
        except (HoldListError, ContainerNumberError) as error:
            got = error
        if isinstance(expected, Exception):
            assert isinstance(got, Exception) and str(got) == str(expected)
        else:
            assert got == expected


def _blank(value: str | None) -> str | None:
    return None if isinstance(value, str) and not value.strip() else value


cells = st.text(alphabet='ab,"\r\n {}:x\t', max_size=8)


@given(
    rows=st.lists(st.lists(cells, max_size=2), max_size=6),
    bom=st.booleans(),
    line_end=st.sampled_from(["\r\n", "\n"]),
    json_lines=st.booleans(),
)
def test_the_reader_gives_every_row_with_the_line_it_starts_on(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[list[str]],
    bom: bool,
    line_end: str,
    json_lines: bool,
) -> None:
    """Rows written by the standard library (quoted where needed, a BOM or not) come back whole and
    in order, blank CSV rows skipped, each with the file line it starts on, read whole or streamed."""
    path = tmp_path_factory.mktemp("reader") / "file.txt"
    names = ["container", "agency"]
    if json_lines:
        lines = [json.dumps(dict(zip(names, row, strict=False))) + line_end for row in rows]
        text = "".join(lines)
        starts = [sum(line.count("\n") for line in lines[:index]) + 1 for index in range(len(lines))]
        wanted = [(line, dict(zip(names, row, strict=False))) for line, row in zip(starts, rows, strict=True)]
        columns = {name for _line, values in wanted for name in values}
    else:
        buffer = io.StringIO(newline="")
        # Minimal quoting quotes a lone CR only when CR ends lines: with LF, every field is quoted.
        quoting = csv.QUOTE_MINIMAL if line_end == "\r\n" else csv.QUOTE_ALL
        writer = csv.writer(buffer, lineterminator=line_end, quoting=quoting)
        writer.writerow(names)
        offsets = []
        for row in rows:
            offsets.append(buffer.tell())
            writer.writerow(row)
        text = buffer.getvalue()
        starts = [len(re.findall(r"\r\n|\r|\n", text[:offset])) + 1 for offset in offsets]
        wanted = [
            (line, dict(zip(names, row, strict=False)))
            for line, row in zip(starts, rows, strict=True)
            if any(cell.strip() for cell in row)
        ]
        columns = set(names)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    whole = read_import_file(path, _COLUMN_ALIASES, HoldListError)
    assert [(row.line, row.values) for row in whole.rows] == wanted
    assert set(whole.columns) == columns
    problems = Problems(path)
    streamed = stream_import_file(path, _COLUMN_ALIASES, HoldListError, problems)
    try:
        assert [(row.line, row.values) for row in streamed.rows] == wanted
    finally:
        streamed.close()
    assert problems.count == 0


def test_an_unreadable_byte_is_named_by_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(HEADER.encode() + b"ABCU1234560,CBP,customs,,\n" * 5000 + b"\xff\n")
    problems = Problems(path)
    with pytest.raises(
        HoldListError, match=rf"{path}:5002: not UTF-8 text \(byte {len(HEADER) + 26 * 5000}\)"
    ):
        read = stream_import_file(path, _COLUMN_ALIASES, HoldListError, problems)
        for _row in read.rows:
            pass


def test_no_database_lock_is_held_while_the_file_is_checked(store: HoldStore, tmp_path: Path) -> None:
    """The staging table is the import's own: another writer is never kept waiting for the read."""
    path = big_list(tmp_path / "big.csv", 50_000)
    waits: list[float] = []

    def tell(phase: str, _rows: int, _done: int, _total: int) -> None:
        if phase == "check":
            started = time.monotonic()
            other = HoldStore(store.engine)
            placed = other.place(container=number(len(waits), "QRS"), agency="USDA", hold_type="usda")
            other.release(hold_id=placed.id)
            waits.append(time.monotonic() - started)

    store.import_file(path, reason="r", progress=tell)  # told on the import's own thread
    assert waits and max(waits) < 2.0
    assert store.state().active == 50_000


def test_the_per_thread_reads_answer_as_the_pooled_path(store: HoldStore, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"container,bill_of_lading\n{number(1)},MAE-1\n")
    store.import_file(manifest)
    store.import_file(big_list(tmp_path / "h.csv", 50), reason="r")
    store.place(bill_of_lading="MAE-1", agency="LINE", hold_type="freight", note="two\nlines")
    store.release(container=number(2), agency="CBP", code="1I")
    fast = (
        store.state(),
        store.active_holds_for(number(1)),
        store.active_holds_for("abcu 000001 " + number(1)[-1]),
    )
    with store.engine.connect() as conn:
        pooled_state = HoldStore.state_in(conn)
    store._lookups._usable = False  # the pooled path, as when the per-thread connection fails
    assert fast == (pooled_state, store.active_holds_for(number(1)), store.active_holds_for(number(1)))
    assert [h.bill_of_lading for h in fast[1]] == [None, "MAE-1"]


def test_the_import_command_yields_the_cpu_to_the_daemon() -> None:
    from gated.holds_cli import _background

    thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, thread)
    with _background():
        assert os.getpriority(os.PRIO_PROCESS, thread) == min(before + 10, 19)
    if os.geteuid() == 0:  # only a privileged process may take its priority back
        assert os.getpriority(os.PRIO_PROCESS, thread) == before
