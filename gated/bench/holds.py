"""``gated bench holds``: a hold list of a million rows, imported, looked up and decided against.

On SQLite (a file in a temporary folder) and on a PostgreSQL server the bench starts itself:
- ``import_seconds``: ``gated holds import`` of the whole file (checked, staged, applied);
- ``lookup_ratio``: the p99 of gated's lookup (``HoldStore.active_holds_for``, what the pipeline
  asks for every truck) over the p99 of the same indexed SQL query on a plain DB-API
  connection, measured alternately on the same data;
- ``decision_p99_ms``: from a truck's last reading to its decision stored, through the real
  ``Pipeline`` and ``Store`` (no OCR: the number comes as a reading), with every hold active;
- ``decision_p99_during_import_ratio`` (SQLite): the same while another process imports a
  second list of as many holds into the same database, over the quiet figure.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gated.bench.common import free_port, machine, present_truck, progress
from gated.errors import GatedError

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 20_000
LOOKUPS = 3_000
TRUCKS = 300
QUICK_TRUCKS = 60
TRUCK_GAP = 0.02  # seconds between trucks: a busy gate, well above real traffic


def bench_holds(quick: bool, rows: int | None = None) -> dict[str, Any]:
    logging.getLogger("gated.pipeline").setLevel(logging.WARNING)  # not one line per truck
    count = rows if rows is not None else (QUICK_ROWS if quick else DEFAULT_ROWS)
    if count < 1:
        raise GatedError("--rows must be at least 1")
    trucks = QUICK_TRUCKS if quick or count < 100_000 else TRUCKS
    with tempfile.TemporaryDirectory(prefix="gated-bench-holds-") as name:
        folder = Path(name)
        listing = folder / "holds.csv"
        second = folder / "more-holds.csv"
        progress(f"writing {count:,} holds to {listing.name}")
        _write_list(listing, count, "ABC")
        _write_list(second, count, "DEF")
        sqlite_figures = _sqlite(folder, listing, second, count, trucks)
        try:
            with _postgres() as url:
                postgres: dict[str, Any] = _postgres_figures(url, listing, count, trucks)
        except GatedError as error:
            progress(f"PostgreSQL: {error}")
            postgres = {"error": str(error)}
    return {
        "bench": "holds",
        "rows": count,
        **sqlite_figures,
        "postgresql": postgres,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine(),
    }


def _write_list(path: Path, count: int, owner: str) -> None:
    """``count`` container holds with distinct valid numbers (owner code ``owner`` and a few more)."""
    from gated.iso6346 import check_digit

    with path.open("w", encoding="utf-8") as out:
        out.write("container,agency,hold_type,code,reference\n")
        for index in range(count):
            prefix = f"{owner}{'UJZ'[index // 1_000_000 % 3]}{index % 1_000_000:06d}"
            if index >= 3_000_000:
                raise GatedError("the bench writes at most 3,000,000 holds per list")
            out.write(f"{prefix}{check_digit(prefix)},CBP,customs,1H,R{index}\n")


def _number(owner: str, index: int) -> str:
    from gated.iso6346 import check_digit

    prefix = f"{owner}{'UJZ'[index // 1_000_000 % 3]}{index % 1_000_000:06d}"
    return f"{prefix}{check_digit(prefix)}"


def _sqlite(folder: Path, listing: Path, second: Path, count: int, trucks: int) -> dict[str, Any]:
    from gated.db import open_engine

    database = folder / "gated.db"
    # One engine for the whole run: opening the file again in this process while connections
    # are open would close descriptors SQLite holds its locks through.
    engine = open_engine(database)
    try:
        figures = _figures("sqlite", engine, listing, count, trucks)
        progress(f"SQLite: trucks while another process imports {count:,} more holds")
        quiet = figures["decision_p99_ms"]
        during, import_seconds = _decisions_during_import(engine, database, second, count)
    finally:
        engine.dispose()
    figures["decision_p99_during_import_ms"] = during
    figures["decision_p99_during_import_ratio"] = round(during / quiet, 2) if quiet > 0 else None
    figures["second_import_seconds"] = import_seconds
    return {
        "import_seconds": figures.pop("import_seconds"),
        "reimport_seconds": figures.pop("reimport_seconds"),
        "lookup_ratio": figures.pop("lookup_ratio"),
        "decision_p99_ms": figures.pop("decision_p99_ms"),
        "decision_p99_during_import_ratio": figures.pop("decision_p99_during_import_ratio"),
        "sqlite": figures,
    }


def _figures(label: str, engine: Any, listing: Path, count: int, trucks: int) -> dict[str, Any]:
    from gated.holds import HoldStore

    holds = HoldStore(engine)
    try:
        progress(f"{label}: importing {count:,} holds")
        started = time.perf_counter()
        result = holds.import_file(listing, "holds", actor="bench", reason="bench", progress=_progress(label))
        import_seconds = time.perf_counter() - started
        if result.placed != count or holds.state().active != count:
            raise GatedError(f"{label}: imported {result.placed} holds of {count}")
        progress(f"{label}: {import_seconds:.1f} s; importing the same list again")
        started = time.perf_counter()
        again = holds.import_file(listing, "holds", actor="bench", reason="bench again")
        reimport_seconds = time.perf_counter() - started
        if again.unchanged != count or again.placed != 0:
            raise GatedError(f"{label}: the same list again placed {again.placed} holds")
        progress(f"{label}: {reimport_seconds:.1f} s; {LOOKUPS} lookups, gated's and plain SQL's")
        gated_p99, raw_p99 = _lookups(holds, engine, count)
        progress(f"{label}: lookup p99 gated {gated_p99 * 1e6:.0f} us, plain {raw_p99 * 1e6:.0f} us")
        decisions = _decisions(engine, holds, trucks, count, "q")
        progress(f"{label}: {trucks} trucks decided, p99 {_ms(_p99(decisions))} ms")
    finally:
        holds.close()
    return {
        "import_seconds": round(import_seconds, 2),
        "reimport_seconds": round(reimport_seconds, 2),
        "lookup_ratio": round(gated_p99 / raw_p99, 2),
        "lookup_p99_us": round(gated_p99 * 1e6, 1),
        "plain_sql_p99_us": round(raw_p99 * 1e6, 1),
        "decision_p99_ms": _ms(_p99(decisions)),
        "decision_p50_ms": _ms(sorted(decisions)[len(decisions) // 2]),
    }


def _postgres_figures(url: str, listing: Path, count: int, trucks: int) -> dict[str, Any]:
    from gated.db import open_engine

    engine = open_engine(url)
    try:
        return _figures("postgresql", engine, listing, count, trucks)
    finally:
        engine.dispose()


def _progress(label: str) -> Callable[[str, int, int, int], None]:
    last = [time.monotonic()]

    def tell(phase: str, rows: int, _done: int, _total: int) -> None:
        if phase == "apply" or time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            progress(f"{label}: {rows:,} rows {'checked' if phase == 'check' else 'checked; applying'}")

    return tell


def _lookups(holds: Any, engine: Any, count: int) -> tuple[float, float]:
    """p99 of gated's lookup and of the same SQL on a plain connection, alternately, for held
    and unheld numbers."""
    from gated.holds.store import _LOOKUP

    chooser = random.Random(6346)  # which numbers to ask for: no secret
    numbers = [
        _number("ABC", chooser.randrange(count)) if i % 2 else _number("XYZ", chooser.randrange(10**6))
        for i in range(LOOKUPS)
    ]
    raw = _plain_connection(engine)
    sql = _LOOKUP.format(mark="?" if engine.dialect.name == "sqlite" else "%s")
    try:
        for number in numbers[:200]:  # warm both paths: caches, prepared statements, connections
            holds.active_holds_for(number)
            raw.execute(sql, (number, number)).fetchall()
        gated: list[float] = []
        plain: list[float] = []
        for number in numbers:
            started = time.perf_counter()
            found = holds.active_holds_for(number)
            gated.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = raw.execute(sql, (number, number)).fetchall()
            plain.append(time.perf_counter() - started)
            if len(found) != len(rows):
                raise GatedError(f"gated found {len(found)} holds for {number}, plain SQL {len(rows)}")
    finally:
        raw.close()
    return _p99(gated), _p99(plain)


def _plain_connection(engine: Any) -> Any:
    if engine.dialect.name == "sqlite":
        return sqlite3.connect(engine.url.database)
    import psycopg

    args, params = engine.dialect.create_connect_args(engine.url)
    return psycopg.connect(*args, **params, autocommit=True)


class _Gate:
    """One lane of the real pipeline and store on ``engine``, its thread running; ``truck`` sends
    one truck through it and returns the seconds from its last reading to its decision stored."""

    def __init__(self, engine: Any, holds: Any) -> None:
        from gated.clock import SystemClock
        from gated.config import validate
        from gated.model import DeviceState
        from gated.pipeline import Pipeline
        from gated.store import Store

        config = validate(
            {
                "site": "bench",
                "node": "bench-holds",
                "mqtt": {"host": "127.0.0.1", "port": 1883},
                "storage": {"database": "unused.db"},
                "holds": {"max_age_seconds": 3600},
                "lanes": [
                    {
                        "id": "lane-1",
                        "require": ["rfid"],
                        "settle_seconds": 0.0,
                        # Never started: the bench hands the readings to the pipeline as a driver would.
                        "devices": [{"id": "rfid-1", "driver": "rfid-serial", "url": "socket://127.0.0.1:9"}],
                    }
                ],
            },
            source="holds bench",
        )
        clock = SystemClock()
        self.pipeline = Pipeline(
            config, Store(engine, site=config.site, node=config.node, clock=clock), holds, clock
        )
        self._stored: dict[str, float] = {}
        self._arrived = threading.Condition()
        self.pipeline.listeners.append(self._on_decided)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.pipeline.run, args=(self._stop,), daemon=True)
        self._thread.start()
        self.pipeline.device_status("lane-1", "rfid-1", DeviceState.ONLINE, "bench")
        self.trucks = 0

    def _on_decided(self, _visit: Any, decisions: list[Any]) -> None:
        with self._arrived:
            for decision in decisions:
                self._stored[str(decision.container)] = time.perf_counter()
            self._arrived.notify_all()

    def truck(self, box: str) -> float:
        self.trucks += 1
        started = present_truck(self.pipeline, box, f"e2801160{self.trucks:016d}", time.perf_counter)
        deadline = time.monotonic() + 60
        with self._arrived:
            while box not in self._stored:
                if time.monotonic() > deadline:
                    raise GatedError(f"no decision for {box} within 60 s")
                self._arrived.wait(1.0)
            return self._stored.pop(box) - started

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _box(chooser: random.Random, count: int, index: int) -> str:
    """Every other truck carries a held container."""
    return _number("ABC", chooser.randrange(count)) if index % 2 else _number("XYZ", index % 3_000_000)


def _decisions(engine: Any, holds: Any, trucks: int, count: int, tag: str) -> list[float]:
    """``trucks`` trucks (after a few to warm up) through the real pipeline and store."""
    gate = _Gate(engine, holds)
    chooser = random.Random(tag)
    latencies: list[float] = []
    try:
        for index in range(trucks + 5):
            took = gate.truck(_box(chooser, count, index))
            if index >= 5:
                latencies.append(took)
            time.sleep(TRUCK_GAP)
    finally:
        gate.stop()
    return latencies


def _decisions_during_import(engine: Any, database: Path, second: Path, count: int) -> tuple[float, float]:
    """Trucks decided while ``gated holds import`` of ``second`` runs in another process; returns
    their p99 (ms) and how long that import took."""
    from gated.holds import HoldStore

    holds = HoldStore(engine)
    gate = _Gate(engine, holds)
    chooser = random.Random("during")
    for index in range(5):
        gate.truck(_box(chooser, count, index))
    started = time.perf_counter()
    command = [sys.executable, "-m", "gated", "holds", "import", str(second), "--kind", "holds"]
    importer = subprocess.Popen(
        [*command, "--db", str(database), "--reason", "bench: a second list"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    latencies: list[float] = []
    try:
        index = 5
        while importer.poll() is None or len(latencies) < 20:
            latencies.append(gate.truck(_box(chooser, count, index)))
            index += 1
            time.sleep(TRUCK_GAP)
        importer.wait()
        seconds = time.perf_counter() - started
        error = importer.stderr.read().decode(errors="replace") if importer.stderr else ""
        if importer.returncode != 0:
            raise GatedError(f"the concurrent import failed: {error[-500:]}")
    finally:
        gate.stop()
        holds.close()
        if importer.poll() is None:
            importer.kill()
            importer.wait(10)
    progress(f"SQLite: {len(latencies)} trucks decided during the import, p99 {_ms(_p99(latencies))} ms")
    return _ms(_p99(latencies)), round(seconds, 2)


@contextmanager
def _postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's server binaries; as ``postgres`` when run as
    root), on a Unix socket in a folder of its own, stopped and removed at the end. Raises
    ``GatedError`` when none can be started."""
    tools = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = tools[-1] if tools else shutil.which("initdb")
    if initdb is None:
        raise GatedError("no PostgreSQL server installed (Debian package postgresql): figures not measured")
    bin_dir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="gated-bench-pg-"))
    run_as: list[str] = []
    try:
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise GatedError("running as root and there is no postgres user to run the server") from None
            os.chown(folder, owner.pw_uid, owner.pw_gid)  # the server refuses to run as root
            run_as = ["runuser", "-u", "postgres", "--"]
        data, port = folder / "data", free_port()
        _run([*run_as, initdb, "-D", str(data), "-U", "gated", "--auth=trust", "-E", "UTF8", "--no-sync"])
        options = f"-k {folder} -p {port} -c listen_addresses=''"
        pg_ctl = str(bin_dir / "pg_ctl")
        _run([*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
        try:
            _run(
                [
                    *run_as,
                    str(bin_dir / "createdb"),
                    "-h",
                    str(folder),
                    "-p",
                    str(port),
                    "-U",
                    "gated",
                    "bench",
                ]
            )
            yield f"postgresql+psycopg://gated@/bench?host={folder}&port={port}"
        finally:
            subprocess.run(
                [*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or b"").decode(errors="replace").strip()[-300:]
        raise GatedError(f"PostgreSQL did not start: {Path(command[-1]).name}: {detail}") from None
    except OSError as error:
        raise GatedError(f"PostgreSQL did not start: {error}") from None


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
