"""One reader for every import file: hold lists, pre-advice and the cancelled-card list each take a
spreadsheet's byte order mark, JSON lines with one, and refuse a CSV without a header and text that
is not UTF-8, naming the file and line; through the CLI, a refused file exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gated.clock import ManualClock
from gated.credentials import CancelledCardList, CancelledListError
from gated.db import metadata, open_engine
from gated.errors import HoldListError
from gated.holds import HoldStore
from gated.importfile import read_import_file
from gated.preadvice import PreadviceStore

BOM = "\ufeff"
CONTAINER = "CSQU3054383"
OTHER = "ABCU1234560"
TAG = "e2000017221101441890ab12"
CARD = "4f2a19c0d3e7b85a"
NOW = datetime(2026, 5, 3, 12, tzinfo=UTC)
LIST_DATE = "# list-date: 2026-05-03T00:00:00Z\n"
# A pre-advice file with a truck column: three fields a line, so no card list and no header.
HEADERLESS = f"{TAG},{CONTAINER},truck 7\n{TAG},{OTHER},truck 7\n"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = open_engine(tmp_path / "g.db")
    metadata.create_all(db)
    try:
        yield db
    finally:
        db.dispose()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def gated(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gated", *argv], capture_output=True, text=True, timeout=60, check=False
    )


# -- the reader --------------------------------------------------------------------------------------


def test_the_reader_tells_json_lines_from_csv_after_the_bom(tmp_path: Path) -> None:
    columns = {"tag": "tag", "container": "container"}
    read = read_import_file(
        write(tmp_path / "a.jsonl", f'{BOM}{{"tag": "{TAG}", "container": "{CONTAINER}"}}\n'),
        columns,
        HoldListError,
    )
    assert (read.format, read.columns) == ("jsonl", frozenset({"tag", "container"}))
    assert [(row.line, row.values) for row in read.rows] == [(1, {"tag": TAG, "container": CONTAINER})]
    read = read_import_file(
        write(tmp_path / "a.csv", f"{BOM}Tag,Container\n\n{TAG},{CONTAINER}\n"), columns, HoldListError
    )
    assert (read.format, [(row.line, row.values) for row in read.rows]) == (
        "csv",
        [(3, {"tag": TAG, "container": CONTAINER})],
    )


def test_bad_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"tag,container\n" + TAG.encode() + b",CSQU3054383\n\xff\xfe,x\n")
    with pytest.raises(HoldListError, match=r"bad\.csv:3: not UTF-8"):
        read_import_file(path, {"tag": "tag", "container": "container"}, HoldListError)


def test_a_quoted_line_break_keeps_the_line_numbers_after_it(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'tag,container\n"a\nb",x\n\nc,y\n')
    read = read_import_file(path, {"tag": "tag", "container": "container"}, HoldListError)
    assert [row.line for row in read.rows] == [2, 5]


# -- hold lists ---------------------------------------------------------------------------------------


def test_holds_import_a_bom_csv_and_bom_json_lines(engine: Engine, tmp_path: Path) -> None:
    store = HoldStore(engine, ManualClock(NOW))
    csv_file = write(tmp_path / "holds.csv", f"{BOM}container,agency,hold_type\n{CONTAINER},CBP,exam\n")
    assert store.import_file(csv_file, reason="r").placed == 1
    json_file = write(
        tmp_path / "holds.jsonl", f'{BOM}{{"container": "{OTHER}", "agency": "CBP", "hold_type": "x"}}\n'
    )
    assert store.import_file(json_file, reason="r").placed == 1
    assert sorted(hold.container or "" for hold in store.list_holds()) == [OTHER, CONTAINER]


def test_holds_import_refuses_a_headerless_csv_and_bad_utf8(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    headerless = write(tmp_path / "holds.csv", f"{CONTAINER},CBP,exam\n")
    refused = gated("holds", "import", str(headerless), "--reason", "r", "--db", db)
    assert refused.returncode != 0
    assert "holds.csv:1: no header" in refused.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"container,agency,hold_type,note\n" + CONTAINER.encode() + b",CBP,exam,caf\xe9\n")
    refused = gated("holds", "import", str(latin1), "--reason", "r", "--db", db)
    assert refused.returncode != 0
    assert "latin1.csv:2: not UTF-8" in refused.stderr
    assert json.loads(gated("holds", "list", "--json", "--db", db).stdout)["holds"] == []


# -- pre-advice ---------------------------------------------------------------------------------------


def test_preadvice_imports_a_bom_csv_and_bom_json_lines(engine: Engine, tmp_path: Path) -> None:
    store = PreadviceStore(engine, ManualClock(NOW))
    # What a spreadsheet saves: a byte order mark before the header ("unknown column" before).
    assert store.import_file(write(tmp_path / "pa.csv", f"{BOM}tag,container\n{TAG},{CONTAINER}\n")) == 1
    # Read as CSV before, since the mark hid the "{".
    json_file = write(tmp_path / "pa.jsonl", f'{BOM}{{"tag": "{TAG}", "container": "{OTHER}"}}\n')
    assert store.import_file(json_file) == 1
    assert store.expected_for(TAG) == frozenset({CONTAINER, OTHER})


def test_preadvice_import_refuses_a_headerless_csv_and_bad_utf8(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    headerless = write(tmp_path / "pa.csv", HEADERLESS)
    refused = gated("preadvice", "import", str(headerless), "--db", db)
    # Its first row was taken as the header before: nothing imported, exit 0.
    assert refused.returncode != 0
    assert "pa.csv:1: no header" in refused.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"tag,container,truck\n{TAG},{CONTAINER},ok\n".encode() + b"a,b,caf\xe9\n")
    refused = gated("preadvice", "import", str(latin1), "--db", db)
    assert refused.returncode != 0
    assert "latin1.csv:3: not UTF-8" in refused.stderr
    assert gated("preadvice", "list", "--db", db).stdout == ""


def test_preadvice_names_the_bad_line(engine: Engine, tmp_path: Path) -> None:
    store = PreadviceStore(engine, ManualClock(NOW))
    path = write(tmp_path / "pa.jsonl", f'{{"tag": "{TAG}", "container": "{CONTAINER}"}}\n{{"tag": 7}}\n')
    with pytest.raises(HoldListError, match=r"pa\.jsonl:2: tag must be text"):
        store.import_file(path)
    assert store.all() == []


# -- the cancelled-card list --------------------------------------------------------------------------


def test_cancelled_cards_import_a_bom_csv_and_bom_json_lines(engine: Engine, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, ManualClock(NOW))
    csv_file = write(tmp_path / "cards.csv", f"{BOM}{LIST_DATE}card_id,reason\n{CARD},lost\n")
    assert cards.import_file(csv_file).count == 1
    json_file = write(
        tmp_path / "cards.jsonl", f'{BOM}{LIST_DATE}{{"card_id": "{CARD.upper()}", "reason": "x"}}\n'
    )
    assert cards.import_file(json_file, allow_old=True).count == 1
    assert cards.cancelled_ids() == [CARD]


def test_cancelled_cards_refuse_a_file_whose_first_line_is_no_card_and_bad_utf8(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    # A list of cards may go without a header; a line that is neither a header nor a card may not.
    wrong = write(tmp_path / "cards.csv", LIST_DATE + HEADERLESS)
    refused = gated("credentials", "import", str(wrong), "--db", db)
    assert refused.returncode != 0
    assert "cards.csv:2: expected card_id[,reason], got 3 fields" in refused.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"{LIST_DATE}{CARD},".encode() + b"perdu caf\xe9\n")
    refused = gated("credentials", "import", str(latin1), "--db", db)
    assert refused.returncode != 0
    assert "latin1.csv:2: not UTF-8" in refused.stderr


def test_cancelled_cards_refuse_a_bad_json_line(engine: Engine, tmp_path: Path) -> None:
    cards = CancelledCardList(engine, ManualClock(NOW))
    path = write(tmp_path / "cards.jsonl", f'{LIST_DATE}{{"card_id": "{CARD}"}}\n{{"card": "x"}}\n')
    with pytest.raises(CancelledListError, match=r"cards\.jsonl:3: unknown key 'card'"):
        cards.import_file(path)
    assert cards.state() is None
