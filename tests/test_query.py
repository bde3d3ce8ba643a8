"""`gated query NUMBER` on a real database filled through the real pipeline and store: every read of
the number is found, in whatever visit (decided, decided for another number, superseded, still
open, joined too late), with its visits, the decisions about it and its evidence files, in time
order, through indexes; on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text

from gated.cli import main
from gated.clock import ManualClock
from gated.config import GateConfig, validate
from gated.db import open_engine
from gated.evidence import EvidenceStore
from gated.holds import HoldStore
from gated.model import Evidence, Kind, Quality, Reading, ScreeningVerdict, Source
from gated.pipeline import Pipeline
from gated.query import query_container, render_text
from gated.store import Batch, Store

ROOT = Path(__file__).resolve().parent.parent
LANE = "lane-1"
NUMBER = "MSKU1000016"  # the number the demo read but `gated query` did not find
OTHER = "CSQU3054383"
NEVER = "TGHU1000026"  # read in a visit still open: never decided


def gate_config() -> GateConfig:
    return validate(
        {
            "site": "s",
            "holds": {"max_age_seconds": 3600},
            "lanes": [
                {
                    "id": LANE,
                    "require": ["rfid", "ocr", "rpm"],
                    "settle_seconds": 1.0,
                    "devices": [
                        {"id": "rfid-1", "driver": "rfid-serial", "url": "/dev/ttyUSB0"},
                        {
                            "id": "rpm-1",
                            "driver": "rpm-modbus",
                            "host": "192.0.2.10",
                            "profile": str(ROOT / "config" / "profiles" / "rpm-modbus.toml"),
                        },
                        {"id": "ocr-1", "driver": "ocr-camera", "host": "192.0.2.20", "port": 5300},
                    ],
                }
            ],
        }
    )


@dataclass
class Lane:
    """One lane of the real pipeline on a real database, driven reading by reading."""

    clock: ManualClock
    pipeline: Pipeline
    evidence: EvidenceStore

    def read(self, kind: Kind, device: str, source: Source, value: Any, **extra: Any) -> None:
        self.pipeline.reading(Reading(LANE, kind, device, source, value, self.clock.now(), **extra))
        self.pipeline.step()
        self.clock.advance(0.1)

    def number(self, value: str, quality: Quality = Quality.GOOD, **extra: Any) -> Evidence:
        """A camera's read of ``value`` with a crop stored as evidence (its bytes differ per read)."""
        crop = self.evidence.put_bytes(f"crop of {value} at {self.clock.now()}".encode(), "image/jpeg")
        self.read(
            Kind.OCR,
            "ocr-1",
            Source.CONTAINER_NUMBER,
            value,
            quality=quality,
            confidence=0.9,
            evidence=(crop,),
            **extra,
        )
        return crop

    def arrive(self, epc: str) -> None:
        self.read(Kind.RFID, "rfid-1", Source.EPC, epc)
        self.read(Kind.RPM, "rpm-1", Source.OCCUPANCY, True)

    def leave(self) -> None:
        self.read(Kind.OCR, "ocr-1", Source.PASSAGE_END, 1)
        self.read(Kind.RPM, "rpm-1", Source.OCCUPANCY, False)
        self.read(Kind.RPM, "rpm-1", Source.SCREENING, ScreeningVerdict.CLEAR)
        self.settle()

    def settle(self) -> None:
        self.clock.advance(2.0)
        self.pipeline.step()

    def open_visit(self) -> str:
        visit = self.pipeline.open_visit(LANE)
        assert visit is not None
        return visit.id


@dataclass
class Story:
    """What happened to NUMBER, to check the report against."""

    decided_visit: str  # decided for NUMBER
    other_visit: str  # NUMBER read uncertain; decided for OTHER
    late_visit: str  # NUMBER's read arrived after its visit was decided
    crops: list[Evidence]


def drive(engine: Engine, folder: Path) -> tuple[Lane, Story]:
    """Trucks through the lane on the real pipeline and store, the ways a number's reads end up."""
    clock = ManualClock(datetime(2026, 12, 4, 8, 0, tzinfo=UTC))
    config = gate_config()
    store = Store(engine, site="s", node="n", clock=clock)
    lane = Lane(clock, Pipeline(config, store, HoldStore(engine, clock), clock), EvidenceStore(folder))
    crops = []
    # 1. Read well and decided about.
    lane.arrive("e2801100000000000000a001")
    decided_visit = lane.open_visit()
    crops.append(lane.number(NUMBER))
    lane.leave()
    # 2. Read as uncertain next to a good read of another number: the visit is decided for that one.
    lane.arrive("e2801100000000000000a002")
    other_visit = lane.open_visit()
    crops.append(lane.number(NUMBER, Quality.UNCERTAIN))
    lane.number(OTHER)
    lane.leave()
    # 3. A slow camera's read naming a visit that was decided meanwhile (what the demo produced).
    lane.arrive("e2801100000000000000a003")
    late_visit = lane.open_visit()
    lane.leave()  # the camera saw one container, unread so far
    clock.advance(3.0)
    crops.append(lane.number(NUMBER, visit=late_visit))
    # 4. Another number, read and still in its open visit: never decided.
    lane.arrive("e2801100000000000000a004")
    lane.number(NEVER)
    return lane, Story(decided_visit, other_visit, late_visit, crops)


def cli(*args: str) -> int:
    """``gated ARGS`` in this process; the logging it sets up (on pytest's captured stderr, closed
    after the test) is put back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(list(args))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(tmp_path / "gated.db")
    yield engine
    engine.dispose()


def check_report(report: dict[str, Any], story: Story) -> None:
    reads = [r for r in report["readings"] if r["of_container"]]
    assert [r["value"] for r in reads] == [NUMBER] * 3
    assert [r["visit"] for r in reads] == [story.decided_visit, story.other_visit, story.late_visit]
    assert [v["id"] for v in report["visits"]] == [story.decided_visit, story.other_visit, story.late_visit]
    assert all(v["read_here"] and v["closed_at"] is not None for v in report["visits"])
    decided_for = {
        v["id"]: [(d["container"], d["outcome"]) for d in v["decisions"]] for v in report["visits"]
    }
    assert [container for container, _ in decided_for[story.other_visit]] == [OTHER]
    # The decisions about it: the one for its number, and the late visit's (nothing was read there).
    assert [(d["visit"], d["container"]) for d in report["decisions"]] == [
        (story.decided_visit, NUMBER),
        (story.late_visit, None),
    ]
    # Every reading of those visits, the other trucks' readings not, all in time order.
    times = [datetime.fromisoformat(r["ts"]) for r in report["readings"]]
    assert times == sorted(times)
    assert {r["visit"] for r in report["readings"]} == {
        story.decided_visit,
        story.other_visit,
        story.late_visit,
    }
    assert OTHER in [r["value"] for r in report["readings"]]  # the other truck's read, in its visit
    assert NEVER not in [r["value"] for r in report["readings"]]
    # Each crop of its reads as stored: its hash, its size, the reading it backs; and the crop of
    # the other number read on the same truck.
    own = [e for e in report["evidence"] if e["of_container"]]
    assert [(e["sha256"], e["bytes"], e["uri"]) for e in own] == [
        (c.sha256, c.bytes, c.uri) for c in story.crops
    ]
    assert [e["reading"] for e in own] == [r["id"] for r in reads]
    assert len(report["evidence"]) == 4


def test_every_read_of_a_number_is_found_whatever_became_of_its_visit(sqlite: Engine, tmp_path: Path) -> None:
    _, story = drive(sqlite, tmp_path / "evidence")
    report = query_container(sqlite, NUMBER.lower(), evidence_root=tmp_path / "evidence")
    check_report(report, story)
    own = [item for item in report["evidence"] if item["of_container"]]
    for item, crop in zip(own, story.crops, strict=True):
        assert item["present"] is True
        assert (
            Path(item["path"]).read_bytes()
            == (tmp_path / "evidence").joinpath(crop.sha256[:2], crop.sha256).read_bytes()
        )


def test_a_number_read_but_never_decided_is_found_with_its_open_visit(sqlite: Engine, tmp_path: Path) -> None:
    lane, _ = drive(sqlite, tmp_path / "evidence")
    open_visit = lane.open_visit()
    report = query_container(sqlite, NEVER)
    assert [v["id"] for v in report["visits"]] == [open_visit]
    assert report["visits"][0]["closed_at"] is None and report["visits"][0]["decisions"] == []
    assert report["decisions"] == []
    assert [r["value"] for r in report["readings"] if r["of_container"]] == [NEVER]
    assert len(report["evidence"]) == 1 and "path" not in report["evidence"][0]
    text = render_text(report)
    assert f"visit {open_visit} on {LANE}: still open; decided: nothing" in text
    assert "1 visits, 1 reads of the number" in text


def test_a_superseded_visit_is_found_through_its_read(sqlite: Engine, tmp_path: Path) -> None:
    lane, _ = drive(sqlite, tmp_path / "evidence")
    superseded = lane.open_visit()
    lane.read(Kind.OCR, "ocr-1", Source.PASSAGE_END, 1)
    lane.number(OTHER)  # a new number after the camera's end of passage: the next truck
    report = query_container(sqlite, NEVER)
    assert [(v["id"], v["close_cause"]) for v in report["visits"]] == [(superseded, "superseded")]
    assert [d["container"] for d in report["decisions"]] == [NEVER]


def test_the_text_report_lists_reads_decisions_and_files_in_time_order(
    sqlite: Engine, tmp_path: Path
) -> None:
    _, story = drive(sqlite, tmp_path / "evidence")
    text = render_text(query_container(sqlite, NUMBER, evidence_root=tmp_path / "evidence"))
    lines = text.splitlines()
    timeline = [line for line in lines if line.startswith("  2026-")]
    stamps = [datetime.fromisoformat(line.split()[0]) for line in timeline]
    assert stamps == sorted(stamps)
    assert sum(" read by ocr-1 " in line for line in timeline) == 3
    assert sum(" evidence " in line for line in timeline) == 4
    assert sum(", another reading of the same truck)" in line for line in timeline) == 1
    assert sum(line.endswith(f"in visit {story.late_visit} after it had closed") for line in timeline) == 1
    assert any(f"visit {story.late_visit}" in line and "unread MANUAL_REVIEW" in line for line in timeline)
    assert str(tmp_path / "evidence" / story.crops[0].sha256[:2] / story.crops[0].sha256) in text
    assert lines[-1] == "  3 visits, 3 reads of the number, 19 readings, 2 decisions, 4 evidence files"


def test_the_command_line_finds_it_in_text_and_json(
    sqlite: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, story = drive(sqlite, tmp_path / "evidence")
    database = str(tmp_path / "gated.db")
    assert cli("query", NUMBER, "--db", database, "--json", "--evidence", str(tmp_path / "evidence")) == 0
    report = json.loads(capsys.readouterr().out)
    check_report(report, story)
    assert all(item["present"] for item in report["evidence"])
    assert cli("query", NUMBER, "--db", database) == 0
    assert "3 visits, 3 reads of the number" in capsys.readouterr().out


def test_the_command_line_takes_the_evidence_folder_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(
        f'site = "s"\n[storage]\ndatabase = "gated.db"\nevidence = "crops"\n[holds]\nmax_age_seconds = 60\n'
        f'[[lanes]]\nid = "{LANE}"\nrequire = ["ocr"]\n[[lanes.devices]]\nid = "ocr-1"\n'
        f'driver = "ocr-camera"\nhost = "192.0.2.20"\nport = 5300\n',
        encoding="utf-8",
    )
    engine = open_engine(tmp_path / "gated.db")
    drive(engine, tmp_path / "crops")
    engine.dispose()
    assert cli("query", NUMBER, "--config", str(config), "--json") == 0
    paths = [item["path"] for item in json.loads(capsys.readouterr().out)["evidence"]]
    assert len(paths) == 4 and all(path.startswith(str(tmp_path / "crops")) for path in paths)


def test_reads_of_a_number_are_looked_up_through_an_index(sqlite: Engine, tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    store = Store(sqlite, site="s", node="n", clock=clock)
    # Many readings of other numbers and other sources around the few of NUMBER.
    for batch in range(20):
        rows = []
        for index in range(1000):
            clock.advance(0.01)
            value = f"ABCU{batch:02d}{index:04d}" if index % 4 else 12.5
            source = Source.CONTAINER_NUMBER if index % 4 else Source.GAMMA_CPS
            kind = Kind.OCR if index % 4 else Kind.RPM
            rows.append(Reading(LANE, kind, "dev-1", source, value, clock.now()))
        store.write(Batch(readings=rows))
    drive(sqlite, tmp_path / "evidence")
    with sqlite.connect() as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                text("EXPLAIN QUERY PLAN SELECT id FROM readings WHERE container = :c ORDER BY ts"),
                {"c": NUMBER},
            )
        )
    assert "ix_readings_container_ts" in plan, plan
    started = time.perf_counter()
    report = query_container(sqlite, NUMBER)
    took = time.perf_counter() - started
    assert len([r for r in report["readings"] if r["of_container"]]) == 3
    assert took < 2.0, f"{took:.3f} s for {NUMBER} among 20,000 readings"


def test_a_database_from_before_the_index_finds_its_old_reads(tmp_path: Path) -> None:
    """Readings stored before readings carried their number get it from their body on upgrade, page
    by page (more than one page here), text that is no number and other sources left without."""
    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    when = datetime(2026, 11, 1, tzinfo=UTC)
    values: list[tuple[Source, Any]] = [(Source.CONTAINER_NUMBER, "msku 100001-6")]
    values += [(Source.CONTAINER_NUMBER, f"ABCU{index:06d}0") for index in range(2400)]
    values += [
        (Source.CONTAINER_NUMBER, "#?7 X"),
        (Source.CONTAINER_NUMBER, None),
        (Source.SIZE_TYPE, NUMBER),
    ]
    bodies = [Reading(LANE, Kind.OCR, "ocr-1", source, found, when).body() for source, found in values]
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            text(
                "INSERT INTO readings (id, lane, kind, device, source, visit, ts, body)"
                " VALUES (:id, :lane, 'ocr', 'ocr-1', :source, NULL, :ts, :body)"
            ),
            [
                {"id": b["id"], "lane": LANE, "source": b["source"], "ts": when, "body": json.dumps(b)}
                for b in bodies
            ],
        )
    old.dispose()
    engine = open_engine(path)
    report = query_container(engine, NUMBER)
    with engine.connect() as conn:
        numbered = conn.execute(text("SELECT count(*) FROM readings WHERE container IS NOT NULL")).scalar()
    engine.dispose()
    assert [r["id"] for r in report["readings"] if r["of_container"]] == [bodies[0]["id"]]
    assert report["visits"] == []
    assert numbered == 2401


def test_text_that_is_no_container_number_is_not_indexed(sqlite: Engine) -> None:
    clock = ManualClock()
    store = Store(sqlite, site="s", node="n", clock=clock)
    garbage = Reading(LANE, Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, "#?7 X" * 40, clock.now())
    plate = Reading(LANE, Kind.OCR, "ocr-1", Source.LICENCE_PLATE, NUMBER, clock.now())
    store.write(Batch(readings=[garbage, plate]))
    with sqlite.connect() as conn:
        assert conn.execute(text("SELECT container FROM readings")).scalars().all() == [None, None]
    assert query_container(sqlite, NUMBER)["readings"] == []


@pytest.mark.timeout(120)
def test_the_same_on_postgresql(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    from tests.postgres import postgres_server

    with postgres_server() as server:
        engine = open_engine(server.new_database())
        try:
            _, story = drive(engine, tmp_path / "evidence")
            check_report(query_container(engine, NUMBER, evidence_root=tmp_path / "evidence"), story)
            never = query_container(engine, NEVER)
            assert [r["value"] for r in never["readings"] if r["of_container"]] == [NEVER]
            assert never["decisions"] == [] and never["visits"][0]["closed_at"] is None
        finally:
            engine.dispose()
