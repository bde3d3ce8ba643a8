"""The hold command's JSON Schema comes from the ``HoldCommand`` model: the shipped file is the
generated one, the model knows the fields the daemon's parser knows, and model and schema accept
and refuse the same commands."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from gated.holds import commands
from gated.holds.schema import SCHEMA_FILE, HoldCommand, hold_command_schema
from gated.payload_schemas import validate_payload

TOPIC = "gated/v1/terminal-a/holds/cmd"
SIGNED = {"ts": "2026-05-03T10:00:00Z", "key": "customs-1", "sig": "A" * 86 + "=="}
PLACE: dict[str, Any] = {
    "schema": "gated.hold/1",
    "id": "c-1",
    "action": "place",
    "container": "CSQU3054383",
    "agency": "CBP",
    "hold_type": "vacis",
    "code": "H1",
    "reference": "ENTRY-2026-0001",
    "note": "examine before release\nsecond line",
    **SIGNED,
}
RELEASE: dict[str, Any] = {
    "schema": "gated.hold/1",
    "id": "c-2",
    "action": "release",
    "bill_of_lading": "MAEU123456789",
    "agency": "CBP",
    "hold_type": "vacis",
    "code": None,
    **SIGNED,
}
SYNC: dict[str, Any] = {
    "schema": "gated.hold/1",
    "id": "c-3",
    "action": "sync",
    "agency": "CBP",
    "count": 0,
    "digest": "sha256:" + "0" * 64,
    "site": "terminal-a",
    "node": "customs-1",
    "seq": 7,
    **SIGNED,
}


def model_accepts(payload: dict[str, Any]) -> bool:
    try:
        HoldCommand.model_validate(payload)
    except ValidationError:
        return False
    return True


def test_the_shipped_schema_is_generated_from_the_model() -> None:
    shipped = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert shipped == hold_command_schema(), "run: python -m gated.holds.schema"


def test_the_model_knows_the_fields_the_parser_knows() -> None:
    fields = {field.alias or name for name, field in HoldCommand.model_fields.items()}
    assert fields == commands._COMMAND_KEYS


@pytest.mark.parametrize("command", [PLACE, RELEASE, SYNC], ids=["place", "release", "sync"])
def test_model_schema_and_parser_accept_a_canonical_command(command: dict[str, Any]) -> None:
    assert model_accepts(command)
    assert validate_payload(TOPIC, command) == []
    commands.parse_command(command)  # raises on a refusal


@pytest.mark.parametrize(
    "change",
    [
        {"agency": None},
        {"action": "seize"},
        {"container": None},
        {"hold_type": None},
        {"hold_type": "no spaces allowed"},
        {"schema": "gated.hold/2"},
        {"priority": "high"},
        {"id": ""},
        {"id": "x" * 129},
        {"note": "bell\a"},
        {"note": "   "},
        {"code": "tab\there"},
        {"container": "CSQU305438"},
        {"ts": "yesterday"},
        {"site": "Terminal A"},
        {"sig": "short"},
        {"action": "sync", "count": 1},
    ],
)
def test_model_and_schema_refuse_the_same_commands(change: dict[str, Any]) -> None:
    command = {**PLACE, **change}
    assert not model_accepts(command)
    assert validate_payload(TOPIC, command) != []


@pytest.mark.parametrize(
    "change",
    [{"count": -1}, {"count": None}, {"digest": "sha256:ABC"}, {"hold_type": "exam"}],
)
def test_model_and_schema_refuse_the_same_syncs(change: dict[str, Any]) -> None:
    command = {key: value for key, value in {**SYNC, **change}.items() if value is not None}
    assert not model_accepts(command)
    assert validate_payload(TOPIC, command) != []
