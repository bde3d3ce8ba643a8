"""The customs hold list on real SQLite files: holds, manifest, imports, MQTT commands, the CLI."""

from __future__ import annotations

import argparse
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from gated.clock import ManualClock
from gated.db import metadata, open_engine
from gated.errors import ContainerNumberError, HoldListError, StorageError
from gated.holds import SCHEMA, HoldStore
from gated.holds_cli import register
from gated.iso6346 import check_digit
from gated.store import audit
from tests.customs import verified

CLEAN = "ABCU1234560"
HELD = "CSQU3054383"
OTHER = "BICU1234565"
SHIPPER_OWNED = "BICU1234566"  # well-formed, check digit does not fit
MADE = datetime(2026, 12, 1, tzinfo=UTC)


def make_engine(path: Path) -> Engine:
    try:
        return open_engine(path)
    except ModuleNotFoundError:
        engine = open_engine(path, create=False)
        metadata.create_all(engine)
        return engine


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gated.db"


@pytest.fixture
def engine(db_path: Path) -> Engine:
    return make_engine(db_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> HoldStore:
    return HoldStore(engine, clock)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def command(**fields: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, **fields}


# --- placing, releasing, history ------------------------------------------------------------------------


def test_place_and_release_keeps_history(store: HoldStore, clock: ManualClock) -> None:
    hold = store.place(container="csqu 305438-3", agency="cbp", hold_type="Customs", code="1h")
    assert (hold.container, hold.agency, hold.hold_type, hold.code) == (HELD, "CBP", "customs", "1H")
    assert hold.active
    assert [h.id for h in store.active_holds_for(HELD)] == [hold.id]
    assert store.active_holds_for(CLEAN) == []

    clock.advance(60)
    released = store.release(hold_id=hold.id, code="1I", reference="ENTRY-7")
    assert [h.id for h in released] == [hold.id]
    assert released[0].released_at == clock.now()
    assert released[0].placed_at == hold.placed_at
    assert (released[0].release_code, released[0].release_reference) == ("1I", "ENTRY-7")
    assert store.active_holds_for(HELD) == []

    assert store.list_holds() == []
    history = store.list_holds(active_only=False)
    assert [(h.id, h.active, h.code, h.release_code) for h in history] == [(hold.id, False, "1H", "1I")]


def test_releasing_nothing_is_an_error(store: HoldStore) -> None:
    hold = store.place(container=HELD, agency="CBP", hold_type="customs")
    store.release(hold_id=hold.id)
    with pytest.raises(HoldListError, match="no active hold"):
        store.release(hold_id=hold.id)
    with pytest.raises(HoldListError, match="no active hold"):
        store.release(container=CLEAN)
    with pytest.raises(HoldListError, match="needs a hold id"):
        store.release(agency="CBP")


def test_release_by_container_narrowed_by_agency_and_type(store: HoldStore) -> None:
    customs = store.place(container=HELD, agency="CBP", hold_type="customs")
    usda = store.place(container=HELD, agency="USDA", hold_type="usda")
    store.release(container=HELD, agency="cbp", hold_type="customs")
    assert [h.id for h in store.active_holds_for(HELD)] == [usda.id]
    assert not store.list_holds(active_only=False, container=HELD)[0].active
    assert store.list_holds(active_only=False, container=HELD)[0].id == customs.id


def test_hold_on_shipper_owned_box_with_wrong_check_digit(store: HoldStore) -> None:
    hold = store.place(container=SHIPPER_OWNED, agency="CBP", hold_type="exam")
    assert hold.container == SHIPPER_OWNED
    assert [h.id for h in store.active_holds_for(SHIPPER_OWNED)] == [hold.id]
    assert store.active_holds_for("BICU1234565") == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "container or a bill of lading"),
        ({"container": "NOT A BOX"}, "ISO 6346"),
        ({"bill_of_lading": "X" * 36}, "longer than 35"),
        ({"bill_of_lading": "   "}, "container or a bill of lading"),
        ({"container": HELD, "agency": " "}, "agency is empty"),
        ({"container": HELD, "hold_type": "two words"}, "hold type"),
    ],
)
def test_place_refuses_bad_holds(store: HoldStore, fields: dict[str, Any], problem: str) -> None:
    arguments: dict[str, Any] = {"agency": "CBP", "hold_type": "customs", **fields}
    with pytest.raises(HoldListError, match=problem):
        store.place(**arguments)
    assert store.list_holds(active_only=False) == []
    assert store.state().version == 0


def test_active_holds_for_refuses_text_that_is_no_container(store: HoldStore) -> None:
    with pytest.raises(ContainerNumberError):
        store.active_holds_for("HELLO")


def test_place_is_idempotent_by_message_id(store: HoldStore) -> None:
    first = store.place(container=HELD, agency="CBP", hold_type="customs", source_message_id="m-1")
    version = store.state().version
    again = store.place(container=HELD, agency="CBP", hold_type="customs", source_message_id="m-1")
    assert again == first
    assert len(store.list_holds(active_only=False)) == 1
    assert store.state().version == version


def test_release_is_idempotent_by_message_id(store: HoldStore) -> None:
    store.place(container=HELD, agency="CBP", hold_type="customs")
    first = store.release(container=HELD, source_message_id="r-1")
    again = store.release(container=HELD, source_message_id="r-1")
    assert again == first
    with pytest.raises(HoldListError, match="already used"):
        store.place(container=HELD, agency="CBP", hold_type="customs", source_message_id="r-1")


# --- B/L holds and the manifest --------------------------------------------------------------------------


def test_bill_of_lading_hold_reaches_every_container_on_it(store: HoldStore, tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "manifest.csv",
        f"container,bill_of_lading\n{HELD},mae-001\n{OTHER}, MAE-001\n{CLEAN},MAE-002\n",
    )
    result = store.import_file(manifest)
    assert (result.kind, result.manifest_added) == ("manifest", 3)
    assert store.bills_for(HELD) == ["MAE-001"]

    hold = store.place(bill_of_lading=" mae-001 ", agency="CBP", hold_type="customs", code="1H")
    assert hold.bill_of_lading == "MAE-001"
    assert [h.id for h in store.active_holds_for(HELD)] == [hold.id]
    assert [h.id for h in store.active_holds_for(OTHER)] == [hold.id]
    assert store.active_holds_for(CLEAN) == []

    released = store.release(bill_of_lading="MAE-001", code="1I")
    assert [h.id for h in released] == [hold.id]
    assert store.active_holds_for(HELD) == []
    assert store.active_holds_for(OTHER) == []


def test_container_on_two_bills_is_held_by_either(store: HoldStore, tmp_path: Path) -> None:
    store.import_manifest(write(tmp_path / "m.csv", f"container,bill_of_lading\n{HELD},B1\n{HELD},B2\n"))
    store.place(bill_of_lading="B2", agency="USDA", hold_type="usda")
    assert [h.bill_of_lading for h in store.active_holds_for(HELD)] == ["B2"]


def test_manifest_learned_after_the_hold_still_applies(store: HoldStore, tmp_path: Path) -> None:
    store.place(bill_of_lading="LATE-1", agency="CBP", hold_type="customs")
    assert store.active_holds_for(HELD) == []
    store.import_manifest(write(tmp_path / "m.jsonl", json.dumps({"container": HELD, "bl": "late-1"})))
    assert len(store.active_holds_for(HELD)) == 1


# --- imports --------------------------------------------------------------------------------------------


def test_import_holds_csv_with_release_rows(store: HoldStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "holds.csv",
        "Container,B/L,Agency,Hold Type,Code,Reference,Note,Action\n"
        f'{HELD},,CBP,customs,1H,R-1,"exam, then decide",\n'
        f"{OTHER},,USDA,usda,,,,place\n"
        ",MAE-9,LINE,freight,,,,\n"
        f"{OTHER},,,,1I,,,release\n",
    )
    result = store.import_file(path)
    assert (result.kind, result.rows, result.placed, result.released) == ("holds", 4, 3, 1)
    held = store.active_holds_for(HELD)
    assert [(h.agency, h.code, h.reference, h.note) for h in held] == [
        ("CBP", "1H", "R-1", "exam, then decide")
    ]
    assert store.active_holds_for(OTHER) == []
    assert [h.bill_of_lading for h in store.list_holds()] == [None, "MAE-9"]

    again = store.import_file(path, "holds")
    assert again.unchanged == 2
    assert len(store.list_holds()) == 2


def test_import_holds_json_lines(store: HoldStore, tmp_path: Path) -> None:
    lines = [
        {"container": HELD, "agency": "CBP", "hold_type": "vacis", "code": "1H"},
        {"bill_of_lading": "X-1", "agency": "CBP", "hold_type": "exam", "note": None},
        {"container": HELD, "agency": "CBP", "hold_type": "vacis", "action": "release", "code": "1I"},
    ]
    path = write(tmp_path / "holds.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = store.import_holds(path)
    assert (result.placed, result.released) == (2, 1)
    assert [h.bill_of_lading for h in store.list_holds()] == ["X-1"]


def test_a_bad_row_rejects_the_whole_file_with_line_numbers(store: HoldStore, tmp_path: Path) -> None:
    store.place(container=CLEAN, agency="CBP", hold_type="customs")
    before = store.state()
    path = write(
        tmp_path / "holds.csv",
        "container,bill_of_lading,agency,hold_type\n"
        f"{HELD},,CBP,customs\n"
        "NOTABOX,,CBP,customs\n"
        f"{OTHER},,,customs\n"
        f"{OTHER},,CBP,customs\n",
    )
    with pytest.raises(HoldListError) as caught:
        store.import_file(path)
    message = str(caught.value)
    assert f"{path}:3:" in message and "NOTABOX" in message
    assert f"{path}:4: agency is empty" in message
    assert ":2:" not in message and ":5:" not in message
    assert store.active_holds_for(HELD) == []
    assert store.state() == before


def test_a_release_that_matches_nothing_rolls_the_file_back(store: HoldStore, tmp_path: Path) -> None:
    path = write(
        tmp_path / "holds.jsonl",
        json.dumps({"container": HELD, "agency": "CBP", "hold_type": "customs"})
        + "\n"
        + json.dumps({"container": OTHER, "action": "release"})
        + "\n",
    )
    with pytest.raises(HoldListError, match=rf"{path}:2: no active hold matches"):
        store.import_file(path)
    assert store.list_holds(active_only=False) == []
    assert not store.state().loaded


def test_import_reports_at_most_twenty_problems(store: HoldStore, tmp_path: Path) -> None:
    rows = "".join(f"BAD{n},,CBP,customs\n" for n in range(30))
    path = write(tmp_path / "holds.csv", "container,bill_of_lading,agency,hold_type\n" + rows)
    with pytest.raises(HoldListError) as caught:
        store.import_file(path)
    lines = str(caught.value).splitlines()
    assert "30 problem" in lines[0]
    assert f"{path}:2:" in lines[1]
    assert lines[-1] == "... and 10 more problems"
    assert len(lines) == 22


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("container,colour\nABCU1234560,red\n", ":1: unknown column 'colour'"),
        ('{"container": "CSQU3054383", "agency": "CBP"\n', ":1: not valid JSON"),
        ('{"container": "CSQU3054383", "agency": 7, "hold_type": "exam"}\n', "agency must be text"),
        ('{"container": "CSQU3054383", "agency": "CBP", "hold_type": "exam"}\n[1]\n', ":2: expected a JSON"),
        ("container,agency,hold_type\nCSQU3054383,CBP,exam,extra\n", ":2: 4 fields"),
        ("container,agency,hold_type,action\nCSQU3054383,CBP,exam,delete\n", "neither place nor release"),
    ],
)
def test_import_refuses_malformed_files(store: HoldStore, tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "holds.txt", text)
    with pytest.raises(HoldListError, match=problem):
        store.import_file(path)
    assert store.list_holds(active_only=False) == []


def test_import_refuses_missing_and_non_utf8_files(store: HoldStore, tmp_path: Path) -> None:
    with pytest.raises(HoldListError, match="cannot read"):
        store.import_file(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"container\n\xff\xfe\n")
    with pytest.raises(HoldListError, match="not UTF-8"):
        store.import_file(binary)


def test_manifest_is_told_apart_and_kind_can_be_forced(store: HoldStore, tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", f"container,bill_of_lading\n{HELD},B1\n{HELD},B1\n")
    with pytest.raises(HoldListError, match=":2: agency"):
        store.import_file(path, "holds")
    result = store.import_file(path)
    assert (result.kind, result.rows, result.manifest_added, result.unchanged) == ("manifest", 2, 1, 1)
    assert store.import_file(path, "manifest").manifest_added == 0
    ambiguous = write(tmp_path / "a.csv", f"container\n{HELD}\n")
    with pytest.raises(HoldListError, match="cannot tell"):
        store.import_file(ambiguous)
    with pytest.raises(HoldListError, match="exactly container and bill_of_lading"):
        store.import_file(write(tmp_path / "h.csv", "container,agency\nX,Y\n"), "manifest")


# --- state ----------------------------------------------------------------------------------------------


def test_state_version_and_loaded(store: HoldStore, tmp_path: Path, clock: ManualClock) -> None:
    fresh = store.state()
    assert (fresh.version, fresh.active, fresh.loaded, fresh.updated_at) == (0, 0, False, None)

    clock.advance(5)
    store.import_file(
        write(tmp_path / "empty.csv", "container,agency,hold_type\n"), "holds", allow_empty=True
    )
    state = store.state()
    assert (state.version, state.loaded, state.loaded_at, state.updated_at) == (0, True, clock.now(), None)
    assert (state.confirmed_at, state.confirmed_by) == (clock.now(), "operator")

    store.place(container=HELD, agency="CBP", hold_type="customs")
    hold = store.place(container=OTHER, agency="CBP", hold_type="customs")
    store.release(hold_id=hold.id)
    state = store.state()
    assert (state.version, state.active, state.updated_at) == (3, 1, clock.now())
    assert state.confirmed_at == clock.now()  # single changes do not confirm the list
    assert state.to_json()["updated_at"] == "2026-01-01T00:00:05.000Z"


def test_manual_hold_does_not_mark_the_list_loaded(store: HoldStore) -> None:
    store.place(container=HELD, agency="CBP", hold_type="customs")
    assert not store.state().loaded
    assert store.apply_command(
        verified(command(id="c1", action="place", container=OTHER, agency="CBP", hold_type="exam"))
    ).applied
    assert not store.state().loaded  # a single command never makes the list loaded either


def test_record_json(store: HoldStore) -> None:
    hold = store.place(bill_of_lading="b-1", agency="CBP", hold_type="customs", code="1H", note="x")
    assert hold.to_json() == {
        "id": hold.id,
        "container": None,
        "bill_of_lading": "B-1",
        "agency": "CBP",
        "hold_type": "customs",
        "code": "1H",
        "reference": None,
        "note": "x",
        "placed_at": "2026-01-01T00:00:00.000Z",
        "released_at": None,
        "release_code": None,
        "release_reference": None,
        "active": True,
    }


# --- MQTT hold commands ---------------------------------------------------------------------------------


def test_commands_place_and_release(store: HoldStore) -> None:
    placed = store.apply_command(
        verified(
            command(id="c-1", action="place", container=HELD, agency="CBP", hold_type="customs", code="1H")
        )
    )
    assert (placed.applied, placed.duplicate, len(placed.holds)) == (True, False, 1)
    assert placed.holds[0].source_message_id == "cbp-test:c-1"

    released = store.apply_command(
        verified(
            command(id="c-2", action="release", container=HELD, agency="CBP", hold_type="customs", code="1I")
        )
    )
    assert released.applied and [h.id for h in released.holds] == [placed.holds[0].id]
    assert released.holds[0].release_code == "1I"
    assert store.active_holds_for(HELD) == []
    ack = released.to_json()
    assert ack["command"] == "c-2" and ack["applied"] is True and ack["holds"][0]["active"] is False


def test_commands_are_idempotent_by_id(store: HoldStore) -> None:
    place = command(id="c-1", action="place", container=HELD, agency="CBP", hold_type="customs")
    first = store.apply_command(verified(place))
    version = store.state().version
    again = store.apply_command(verified(place))
    assert (again.applied, again.duplicate, again.reason) == (True, True, "already applied: hold placed")
    assert again.holds == first.holds
    assert len(store.list_holds(active_only=False)) == 1

    release = command(id="c-2", action="release", container=HELD, agency="CBP", hold_type="customs")
    assert store.apply_command(verified(release)).applied
    store.place(container=HELD, agency="CBP", hold_type="customs")
    repeat = store.apply_command(verified(release))
    assert repeat.duplicate and repeat.applied
    assert len(store.active_holds_for(HELD)) == 1
    assert store.state().version == version + 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"id": "x", "action": "place", "container": HELD, "agency": "CBP", "hold_type": "c"}, "schema"),
        (command(action="place", container=HELD, agency="CBP", hold_type="c"), "message id"),
        (command(id="", action="place", container=HELD, agency="CBP", hold_type="c"), "message id"),
        (command(id=5, action="place", container=HELD, agency="CBP", hold_type="c"), "message id"),
        (command(id="x", action="delete", container=HELD, agency="CBP", hold_type="c"), "action"),
        (command(id="x", action="place", container=HELD, agency="LINE", hold_type="c"), "may not act for"),
        (command(id="x", action="sync", agency="CBP", count=-1), "count"),
        (command(id="x", action="sync", agency="CBP", count=True), "count"),
        (command(id="x", action="sync", agency="CBP", count=0, container=HELD), "not container"),
        (command(id="x", action="sync", agency="CBP", count=0, digest="md5:1"), "digest"),
        (command(id="x", action="place", agency="CBP", hold_type="c"), "container or a bill"),
        (command(id="x", action="place", container="HELLO", agency="CBP", hold_type="c"), "ISO 6346"),
        (command(id="x", action="place", container=HELD, agency=["CBP"], hold_type="c"), "agency"),
        (command(id="x", action="place", container=HELD, hold_type="c"), "agency"),
        (command(id="x", action="place", container=HELD, agency="C\x00BP", hold_type="c"), "control"),
        (command(id="x", action="place", container=HELD, agency="\ud800", hold_type="c"), "Unicode"),
        (command(id="x", action="place", container=HELD, agency="CBP", hold_type="c", typo=1), "unknown"),
        (command(id="x", action="release", container=HELD, agency="CBP"), "hold_type is required"),
        (command(id="x", action="release", container=HELD, agency="CBP", hold_type="c"), "no active hold"),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(
    store: HoldStore, payload: dict[str, Any], reason: str
) -> None:
    result = store.apply_command(verified(payload))
    assert not result.applied
    assert reason in result.reason
    assert result.holds == ()
    assert store.list_holds(active_only=False) == []
    assert store.state().version == 0 and not store.state().loaded


def test_release_command_must_name_the_agency_and_type_of_the_hold(store: HoldStore) -> None:
    store.place(container=HELD, agency="CBP", hold_type="customs")
    store.place(container=HELD, agency="USDA", hold_type="usda")
    wrong = store.apply_command(
        verified(command(id="r", action="release", container=HELD, agency="CBP", hold_type="usda"))
    )
    assert not wrong.applied
    assert len(store.active_holds_for(HELD)) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
valid_commands = st.fixed_dictionaries(
    {
        "schema": st.just(SCHEMA),
        "id": st.text(alphabet="abc", min_size=1, max_size=3),
        "action": st.sampled_from(["place", "release"]),
        "container": st.sampled_from([HELD, "csqu 305438-3", OTHER]),
        "agency": st.sampled_from(["CBP", "usda"]),
        "hold_type": st.sampled_from(["customs", "Exam"]),
    },
    optional={"code": st.sampled_from(["1H", "1I"]), "note": st.text(max_size=20)},
)
field_names = st.sampled_from(
    ["schema", "id", "action", "container", "bill_of_lading", "agency", "hold_type", "code", "note", "extra"]
)


@st.composite
def mutated_commands(draw: st.DrawFn) -> dict[str, Any]:
    """A valid command with a few fields replaced by arbitrary JSON or removed."""
    payload: dict[str, Any] = draw(valid_commands)
    for key, value in draw(st.dictionaries(field_names, json_values, max_size=2)).items():
        payload[key] = value
    for key in draw(st.lists(field_names, max_size=1)):
        payload.pop(key, None)
    return payload


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=mutated_commands())
def test_hostile_commands_never_raise_and_only_valid_ones_apply(
    store: HoldStore, payload: dict[str, Any]
) -> None:
    before = len(store.list_holds(active_only=False))
    result = store.apply_command(verified(payload))
    after = store.list_holds(active_only=False)
    assert isinstance(result.reason, str) and result.reason
    json.dumps(result.to_json())
    if not result.applied or result.duplicate:  # an id spent before changes nothing, whatever it carries
        assert len(after) == before
        return
    assert isinstance(payload, dict)
    assert payload.get("schema") == SCHEMA
    assert isinstance(payload.get("id"), str) and payload["id"].strip()
    assert payload.get("action") in ("place", "release")
    assert payload.get("agency", "").upper() in ("CBP", "USDA")
    assert set(payload) <= {
        "schema",
        "id",
        "action",
        "container",
        "bill_of_lading",
        "agency",
        "hold_type",
        "code",
        "reference",
        "note",
    }
    for hold in result.holds:
        assert hold.container is None or len(hold.container) == 11
        assert hold.bill_of_lading is None or 0 < len(hold.bill_of_lading) <= 35
        assert hold.container is not None or hold.bill_of_lading is not None
        assert hold.agency and hold.hold_type


# --- two processes on one file --------------------------------------------------------------------------


def test_two_stores_on_one_file_see_each_other(db_path: Path, tmp_path: Path) -> None:
    daemon = HoldStore(make_engine(db_path))
    cli = HoldStore(make_engine(db_path))
    cli.place(container=HELD, agency="CBP", hold_type="customs")
    assert len(daemon.active_holds_for(HELD)) == 1
    daemon.apply_command(
        verified(command(id="c", action="release", container=HELD, agency="CBP", hold_type="customs"))
    )
    assert cli.active_holds_for(HELD) == []
    cli.import_manifest(write(tmp_path / "m.csv", f"container,bill_of_lading\n{OTHER},B9\n"))
    daemon.place(bill_of_lading="B9", agency="CBP", hold_type="exam")
    assert len(cli.active_holds_for(OTHER)) == 1
    assert cli.state() == daemon.state()


def test_concurrent_writers_take_turns(db_path: Path) -> None:
    stores = [HoldStore(make_engine(db_path)) for _ in range(3)]
    errors: list[BaseException] = []

    def work(store: HoldStore, worker: int) -> None:
        try:
            for n in range(15):
                message = f"w{n}"  # every worker sends the same ids: each must land once
                store.apply_command(
                    verified(
                        command(
                            id=message, action="place", container=HELD, agency="CBP", hold_type=f"t{worker}"
                        ),
                        issued_at=MADE,  # one moment for all: the order the writers take turns in is free
                    )
                )
                store.place(bill_of_lading=f"B{worker}-{n}", agency="CBP", hold_type="exam")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(store, i)) for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = stores[0].state()
    assert state.active == 15 + 45
    assert state.version == 15 + 45


def test_missing_tables_are_a_storage_error(tmp_path: Path) -> None:
    engine = open_engine(tmp_path / "empty.db", create=False)
    with pytest.raises(StorageError, match="hold list"):
        HoldStore(engine)


# --- the CLI through argparse ---------------------------------------------------------------------------


def run_cli(engine: Engine, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gated")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args, engine)
    return result


def test_cli_add_check_release_list(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "manifest.csv", f"container,bill_of_lading\n{HELD},MAE-1\n")
    assert run_cli(engine, "holds", "import", str(manifest), "--reason", "line's manifest") == 0
    assert "imported manifest" in capsys.readouterr().out

    assert (
        run_cli(
            engine,
            "holds",
            "add",
            "--bl",
            "mae-1",
            "--agency",
            "CBP",
            "--type",
            "customs",
            "--code",
            "1H",
            "--reason",
            "phoned in by CBP",
        )
        == 0
    )
    assert "placed hold 1: B/L MAE-1 CBP customs 1H" in capsys.readouterr().out

    assert run_cli(engine, "holds", "check", HELD, "--json") == 3  # held
    report = json.loads(capsys.readouterr().out)
    assert report["held"] is True and report["eligible"] is False
    assert report["bills_of_lading"] == ["MAE-1"]
    assert [h["code"] for h in report["holds"]] == ["1H"]

    assert run_cli(engine, "holds", "check", "csqu 305438 3") == 3
    assert "HELD by 1 active hold" in capsys.readouterr().out

    assert run_cli(engine, "holds", "release", "--bl", "MAE-1", "--code", "1I", "--reason", "x") == 1
    assert "--all-agencies" in capsys.readouterr().err
    assert (
        run_cli(
            engine, "holds", "release", "--bl", "MAE-1", "--agency", "cbp", "--code", "1I", "--reason", "1I"
        )
        == 0
    )
    assert "released hold 1" in capsys.readouterr().out

    assert run_cli(engine, "holds", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["holds"] == []
    assert run_cli(engine, "holds", "list", "--all", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(h["id"], h["active"], h["release_code"]) for h in listed["holds"]] == [(1, False, "1I")]
    assert listed["state"]["version"] == 3

    assert run_cli(engine, "holds", "list", "--all") == 0
    text = capsys.readouterr().out
    assert re.search(r"released \d{4}-\d\d-\d\dT[\d:.]+Z 1I", text) and "1 hold(s) shown" in text


def test_cli_check_is_not_eligible_until_the_list_is_loaded(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(engine, "holds", "check", CLEAN, "--json") == 1  # not eligible: never loaded
    report = json.loads(capsys.readouterr().out)
    assert (report["held"], report["eligible"], report["hold_list"]["loaded"]) == (False, False, False)

    empty = str(write(tmp_path / "h.csv", "container,agency,hold_type\n"))
    assert run_cli(engine, "holds", "import", empty, "--kind", "holds", "--reason", "r") == 1
    assert "--allow-empty" in capsys.readouterr().err
    assert run_cli(engine, "holds", "import", empty, "--kind", "holds", "--reason", "r", "--allow-empty") == 0
    capsys.readouterr()
    assert run_cli(engine, "holds", "check", CLEAN, "--json") == 0
    assert json.loads(capsys.readouterr().out)["eligible"] is True
    assert run_cli(engine, "holds", "check", SHIPPER_OWNED) == 0
    assert "valid ISO 6346 check digit" in capsys.readouterr().out


def test_cli_sub_commands_take_the_parent_options(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--db")
    register(parser.add_subparsers(dest="command", required=True), parents=[database])
    args = parser.parse_args(
        [
            "holds",
            "add",
            "--db",
            "x.db",
            "--container",
            HELD,
            "--agency",
            "CBP",
            "--type",
            "exam",
            "--reason",
            "r",
        ]
    )
    assert args.db == "x.db"
    assert args.func(args, engine) == 0
    args = parser.parse_args(["holds", "check", HELD, "--json", "--db", "x.db"])
    assert args.db == "x.db"
    assert args.func(args, engine) == 3  # held
    assert "placed hold 1" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_exit_1(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(engine, "holds", "release", "--container", HELD, "--all-agencies", "--reason", "r") == 1
    err = capsys.readouterr().err
    assert err.startswith("gated holds release: no active hold matches") and err.count("\n") == 1

    assert run_cli(engine, "holds", "check", "HELLO") == 1
    assert "ISO 6346" in capsys.readouterr().err

    bad = write(tmp_path / "bad.csv", "container,agency,hold_type\nNOPE,CBP,customs\n")
    assert run_cli(engine, "holds", "import", str(bad), "--reason", "r") == 1
    assert f"{bad}:2:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["holds"],
        ["holds", "add", "--agency", "CBP", "--type", "customs"],
        ["holds", "add", "--container", HELD, "--bl", "B", "--agency", "CBP", "--type", "customs"],
        ["holds", "add", "--container", HELD, "--type", "customs"],
        ["holds", "release"],
        ["holds", "release", "--id", "one"],
        ["holds", "import", "f.csv", "--kind", "other", "--reason", "r"],
        ["holds", "add", "--container", HELD, "--agency", "CBP", "--type", "customs"],
        ["holds", "release", "--container", HELD, "--agency", "CBP", "--all-agencies", "--reason", "r"],
    ],
)
def test_cli_usage_errors_exit_2(engine: Engine, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(engine, *argv)
    assert exited.value.code == 2


# --- an import is the operator's view of the list: refused when it would clear containers ---------------


def twelve_holds(tmp_path: Path, count: int = 12, name: str = "full.csv") -> Path:
    rows = "".join(f"ABCU{n:06d}{check_digit(f'ABCU{n:06d}')},CBP,customs\n" for n in range(count))
    return write(tmp_path / name, "container,agency,hold_type\n" + rows)


def test_a_full_list_replaces_the_active_holds(store: HoldStore, tmp_path: Path, clock: ManualClock) -> None:
    store.import_file(twelve_holds(tmp_path), replace=True, reason="CBP list")
    assert store.state().active == 12
    clock.advance(60)
    smaller = twelve_holds(tmp_path, 8, "smaller.csv")
    result = store.import_file(smaller, replace=True, reason="CBP list, later")
    assert (result.placed, result.released, result.unchanged) == (0, 4, 8)
    released = [hold for hold in store.list_holds(active_only=False) if not hold.active]
    assert {hold.release_reference for hold in released} == {"not in smaller.csv"}
    assert store.state().confirmed_at == clock.now()


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        ("allow_empty", "no holds in the file"),
        ("allow_shrink", "would replace 12"),
        ("allow_old", "more than a day"),
    ],
)
def test_imports_that_would_clear_containers_need_the_operators_word(
    store: HoldStore, tmp_path: Path, clock: ManualClock, flag: str, problem: str
) -> None:
    store.import_file(twelve_holds(tmp_path), replace=True, reason="CBP list")
    before = store.state()
    clock.advance(60)
    path = {
        "allow_empty": write(tmp_path / "empty.csv", ""),
        "allow_shrink": twelve_holds(tmp_path, 3, "three.csv"),
        "allow_old": twelve_holds(tmp_path),
    }[flag]
    options: dict[str, Any] = {"replace": flag != "allow_old"}
    if flag == "allow_old":
        options["list_date"] = clock.now() - timedelta(days=2)
    with pytest.raises(HoldListError, match=problem):
        store.import_file(path, "holds", reason="r", **options)
    assert store.state() == before
    store.import_file(path, "holds", reason="r", **options, **{flag: True})
    assert store.state().confirmed_at == options.get("list_date", clock.now())


def test_a_list_older_than_the_current_one_is_refused(
    store: HoldStore, tmp_path: Path, clock: ManualClock
) -> None:
    store.import_file(twelve_holds(tmp_path), reason="today's list")
    clock.advance(60)
    with pytest.raises(HoldListError, match="before the one it replaces"):
        store.import_file(twelve_holds(tmp_path), reason="r", list_date=clock.now() - timedelta(minutes=5))
    with pytest.raises(HoldListError, match="in the future"):
        store.import_file(twelve_holds(tmp_path), reason="r", list_date=clock.now() + timedelta(hours=1))


def test_cli_import_flags(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = str(twelve_holds(tmp_path))
    assert run_cli(engine, "holds", "import", full, "--replace", "--reason", "CBP list") == 0
    three = str(twelve_holds(tmp_path, 3, "three.csv"))
    assert run_cli(engine, "holds", "import", three, "--replace", "--reason", "r") == 1
    assert "--allow-shrink" in capsys.readouterr().err
    assert run_cli(engine, "holds", "import", three, "--replace", "--allow-shrink", "--reason", "r") == 0
    old = ("--list-date", "2020-01-01T00:00:00Z")
    assert run_cli(engine, "holds", "import", full, *old, "--reason", "r") == 1
    assert "--allow-old" in capsys.readouterr().err
    assert run_cli(engine, "holds", "import", full, *old, "--allow-old", "--reason", "r") == 0
    assert run_cli(engine, "holds", "import", full, "--list-date", "yesterday", "--reason", "r") == 1
    assert "RFC 3339" in capsys.readouterr().err


def test_the_audit_names_the_operator_and_the_reason(engine: Engine, tmp_path: Path) -> None:
    assert (
        run_cli(
            engine,
            "holds",
            "add",
            "--container",
            HELD,
            "--agency",
            "CBP",
            "--type",
            "exam",
            "--reason",
            "tip-off",
        )
        == 0
    )
    assert (
        run_cli(engine, "holds", "release", "--container", HELD, "--all-agencies", "--reason", "cleared") == 0
    )
    with engine.connect() as conn:
        rows = list(conn.execute(select(audit.c.actor, audit.c.action, audit.c.detail).order_by(audit.c.ts)))
    assert [(actor.startswith("operator:"), action) for actor, action, _ in rows] == [
        (True, "hold_place"),
        (True, "hold_release"),
    ]
    assert [json.loads(detail)["reason"] for _, _, detail in rows] == ["tip-off", "cleared"]


def test_an_import_without_a_reason_is_audited_with_its_file(engine: Engine, tmp_path: Path) -> None:
    assert run_cli(engine, "holds", "import", str(twelve_holds(tmp_path))) == 0
    with engine.connect() as conn:
        actor, detail = conn.execute(select(audit.c.actor, audit.c.detail)).one()
    assert actor.startswith("operator:") and json.loads(detail)["reason"] == "import of full.csv"


# --- what a careless operator or a late command must not do ----------------------------------------


def test_a_full_list_of_one_agency_leaves_the_others_holds(store: HoldStore, tmp_path: Path) -> None:
    store.import_file(twelve_holds(tmp_path), replace=True, reason="CBP list")
    usda = store.place(container=HELD, agency="USDA", hold_type="usda", reason="plant quarantine")
    store.import_file(twelve_holds(tmp_path), replace=True, reason="CBP list again")
    assert [hold.id for hold in store.active_holds_for(HELD)] == [usda.id]


def test_customs_out_of_step_is_cleared_only_by_a_matching_sync_or_a_full_list(
    store: HoldStore, tmp_path: Path, clock: ManualClock
) -> None:
    store.import_file(twelve_holds(tmp_path), replace=True, reason="CBP list")
    says_13 = store.apply_command(verified(command(id="s-1", action="sync", agency="CBP", count=13)))
    assert says_13.out_of_step and store.state().out_of_step
    assert not store.state().fresh(clock.now(), 3600)
    one_more = write(tmp_path / "one.csv", f"container,agency,hold_type\n{HELD},CBP,customs\n")
    result = store.import_file(one_more, reason="phoned in")
    assert not result.confirmed and store.state().out_of_step  # a partial file proves nothing
    clock.advance(1)
    assert store.import_file(one_more, replace=True, allow_shrink=True, reason="full list").confirmed
    assert store.state().fresh(clock.now(), 3600)


def test_a_keys_commands_take_effect_in_the_order_they_were_made(store: HoldStore) -> None:
    early = datetime.now(UTC) - timedelta(minutes=2)
    release = command(id="r-1", action="release", container=HELD, agency="CBP", hold_type="exam")
    place = command(id="p-1", action="place", container=HELD, agency="CBP", hold_type="exam")
    assert store.apply_command(verified(place, issued_at=early + timedelta(minutes=1))).applied
    late = store.apply_command(verified(release, issued_at=early))  # made first, arrived last
    assert not late.applied and "out of order" in late.reason
    assert len(store.active_holds_for(HELD)) == 1
    # An old sync replayed after customs said the list is out of step vouches for nothing.
    assert not store.apply_command(verified(command(id="s-2", action="sync", agency="CBP", count=7))).applied
    replayed = store.apply_command(
        verified(command(id="s-0", action="sync", agency="CBP", count=1), issued_at=early)
    )
    assert "out of order" in replayed.reason and store.state().out_of_step


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            '{"container": "%s", "container_number": "ABCU1234560", "agency": "CBP", "hold_type": "x"}',
            "second time",
        ),
        ('{"container": "%s", "agency": "CBP", "hold_type": "x", "agency": "USDA"}', "duplicate key"),
        ('{"container": "%s", "agency": "CBP", "hold_type": "x", "note": NaN}', "NaN"),
        ('{"container": "%s", "agency": "CBP", "hold_type": "x", "code": ' + "9" * 5000 + "}", "digits"),
        (
            '{"container": "%s", "agency": "CBP", "hold_type": "x", "note": ' + "[" * 3000 + "]" * 3000 + "}",
            "deep",
        ),
    ],
)
def test_json_lines_files_are_parsed_strictly(
    store: HoldStore, tmp_path: Path, line: str, problem: str
) -> None:
    path = write(tmp_path / "holds.jsonl", line % HELD + "\n")
    with pytest.raises(HoldListError, match=problem):
        store.import_file(path, reason="r")
    assert store.list_holds(active_only=False) == []
