"""The hold command (``gated.hold/1`` on ``holds/cmd``) as a pydantic model, and the JSON Schema
shipped in ``gated/schemas/hold-command.json``, generated from it.

``gated.holds.commands.parse_command`` is what the daemon applies: it accepts numbers with spaces
or dashes and any letter case and names the first problem in its own words. ``HoldCommand`` is the
canonical form a sender should produce, the contract customs' systems are written against; a test
keeps its fields equal to the ones the parser knows and the shipped file equal to
``hold_command_schema()``. Write the file with ``python -m gated.holds.schema``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gated.holds.model import (
    MAX_AGENCY,
    MAX_BILL_OF_LADING,
    MAX_CODE,
    MAX_HOLD_TYPE,
    MAX_KEY_ID,
    MAX_MESSAGE_ID,
    MAX_NOTE,
    MAX_REFERENCE,
    SCHEMA,
)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "hold-command.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
COMMON = "common.json#/$defs/"
# Pydantic resolves every "$ref" it meets itself: refs into common.json are written under this key
# and become "$ref"s after generation.
_COMMON_KEY = "x-common-def"

DESCRIPTION = (
    "Inbound: customs places or releases a hold, or confirms the hold list (sync). Topic:"
    " gated/v1/{site}/holds/cmd, QoS 1. Every command is signed: Ed25519 by a customs key whose public"
    " half is in gated's configuration, over the command without 'sig' as JSON with sorted keys, no"
    " spaces, UTF-8 ('gated holds send' does this). Unsigned, badly signed, wrong-agency, replayed or"
    " stale commands are rejected on holds/ack and change nothing. Command ids are unique per key: a"
    " repeated command is acknowledged as a duplicate and changes nothing, so a sender may repeat a"
    " command safely. The daemon accepts numbers with spaces or dashes and any letter case; this"
    " schema describes the canonical form to send."
)

# A note: no control characters but tab and line breaks; at least one character that is not blank.
_NOTE_LINE = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"
_NOTE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_CONTAINER = r"^[A-Z]{3}[UJZ][0-9]{7}$"
_HOLD_TYPE = r"^[a-z0-9][a-z0-9_-]*$"
_DIGEST = r"^sha256:[0-9a-f]{64}$"
_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SIG = r"^[A-Za-z0-9+/]{86}==$"


def _text(limit: int) -> dict[str, Any]:
    """Shared text rules (common.json's ``text``: no control characters, not blank) and a length."""
    return {"allOf": [_envelope("text"), {"maxLength": limit}]}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _envelope(definition: str) -> dict[str, Any]:
    """A definition of common.json (see ``_COMMON_KEY``)."""
    return {_COMMON_KEY: definition}


def _refs(value: Any) -> Any:
    """``value`` with every ``_COMMON_KEY`` marker turned into a ``$ref`` into common.json."""
    if isinstance(value, dict):
        return {
            ("$ref" if key == _COMMON_KEY else key): (COMMON + item if key == _COMMON_KEY else _refs(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_refs(item) for item in value]
    return value


# common.json's rules, checked by the model too: one line, not blank, no control characters; ids; times.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Timestamp = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
    ),
]
CommandId = Annotated[
    Text, StringConstraints(max_length=MAX_MESSAGE_ID), WithJsonSchema(_text(MAX_MESSAGE_ID))
]
Agency = Annotated[Text, StringConstraints(max_length=MAX_AGENCY), WithJsonSchema(_text(MAX_AGENCY))]
Count = Annotated[Annotated[int, Field(ge=0)] | None, WithJsonSchema({"type": "integer", "minimum": 0})]


class HoldCommand(BaseModel):
    """One ``gated.hold/1`` command in canonical form, signed."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="gated.hold/1 (command)")

    schema_: Annotated[Literal["gated.hold/1"], WithJsonSchema({"const": SCHEMA})] = Field(alias="schema")
    id: Annotated[
        Text, StringConstraints(max_length=MAX_MESSAGE_ID), WithJsonSchema(_text(MAX_MESSAGE_ID))
    ] = Field(
        description="The sender's command id, unique per signing key: the key that makes a repeated"
        " command harmless."
    )
    action: Annotated[
        Literal["place", "release", "sync"], WithJsonSchema({"enum": ["place", "release", "sync"]})
    ] = Field(
        description="sync: 'as of ts, agency has exactly count active holds' (sent at start and as a"
        " heartbeat); it is what makes the hold list loaded and fresh."
    )
    container: Annotated[
        Annotated[str, StringConstraints(pattern=_CONTAINER)] | None,
        WithJsonSchema(_nullable(_envelope("containerNumber"))),
    ] = Field(
        default=None,
        description="The container held or released; a hold needs a container or a bill of lading.",
    )
    bill_of_lading: Annotated[
        Annotated[Text, StringConstraints(max_length=MAX_BILL_OF_LADING)] | None,
        WithJsonSchema(_nullable(_text(MAX_BILL_OF_LADING))),
    ] = Field(
        default=None,
        description="The bill of lading held or released: every container the manifest links to it is held.",
    )
    agency: Agency = Field(
        description="The agency placing, releasing or confirming holds, e.g. CBP; the signing key must"
        " act for it."
    )
    hold_type: Annotated[
        Annotated[str, StringConstraints(pattern=_HOLD_TYPE, max_length=MAX_HOLD_TYPE)] | None,
        WithJsonSchema({"type": "string", "pattern": _HOLD_TYPE, "maxLength": MAX_HOLD_TYPE}),
    ] = Field(default=None, description="A word such as customs, exam, vacis, usda.")
    code: Annotated[
        Annotated[Text, StringConstraints(max_length=MAX_CODE)] | None,
        WithJsonSchema(_nullable(_text(MAX_CODE))),
    ] = Field(default=None, description="The agency's hold code (place) or release code (release).")
    reference: Annotated[
        Annotated[Text, StringConstraints(max_length=MAX_REFERENCE)] | None,
        WithJsonSchema(_nullable(_text(MAX_REFERENCE))),
    ] = Field(default=None, description="The agency's reference (place) or release reference (release).")
    note: Annotated[
        Annotated[str, StringConstraints(max_length=MAX_NOTE, pattern=_NOTE)] | None,
        WithJsonSchema(
            _nullable(
                {
                    "type": "string",
                    "maxLength": MAX_NOTE,
                    "allOf": [{"pattern": r"\S"}, {"pattern": _NOTE_LINE}],
                }
            )
        ),
    ] = Field(default=None, description="Free text for officers (place only; several lines allowed).")
    site: Annotated[Identifier | None, WithJsonSchema(_envelope("identifier"))] = Field(
        default=None, description="Optional envelope field; not checked."
    )
    node: Annotated[Identifier | None, WithJsonSchema(_envelope("identifier"))] = Field(
        default=None, description="Optional envelope field; not checked."
    )
    seq: Annotated[int | None, WithJsonSchema({"type": ["integer", "null"]})] = Field(
        default=None, description="Optional envelope field; not checked."
    )
    ts: Annotated[Timestamp, WithJsonSchema(_envelope("timestamp"))] = Field(
        description="When the command was made (RFC 3339); older than a few minutes is refused as a replay."
    )
    count: Annotated[
        Annotated[int, Field(ge=0)] | None, WithJsonSchema({"type": "integer", "minimum": 0})
    ] = Field(default=None, description="sync: how many active holds the agency has.")
    digest: Annotated[
        Annotated[str, StringConstraints(pattern=_DIGEST)] | None,
        WithJsonSchema({"type": "string", "pattern": _DIGEST}),
    ] = Field(
        default=None,
        description="sync, optional: sha256 over the sorted lines 'container|bill_of_lading|hold_type'"
        " of the agency's active holds, joined by newlines.",
    )
    key: Annotated[str, StringConstraints(pattern=_KEY, max_length=MAX_KEY_ID)] = Field(
        description="The id of the customs key that signed the command."
    )
    sig: Annotated[str, StringConstraints(pattern=_SIG)] = Field(
        description="Base64 of the 64-byte Ed25519 signature over the canonical form of everything else."
    )

    @model_validator(mode="after")
    def _shape(self) -> HoldCommand:
        """A sync names an agency and a count; a place or release a hold type and a container or B/L."""
        if self.action == "sync":
            if self.count is None:
                raise ValueError("a sync needs a count")
            if self.container is not None or self.bill_of_lading is not None or self.hold_type is not None:
                raise ValueError("a sync names an agency and a count, not a container, B/L or hold type")
        else:
            if self.hold_type is None:
                raise ValueError(f"a {self.action} needs a hold_type")
            if self.container is None and self.bill_of_lading is None:
                raise ValueError(f"a {self.action} needs a container or a bill_of_lading")
        return self


# The model validator above, as JSON Schema: a sync has a count and no hold fields; a place or a
# release has a hold type and a container or a B/L.
_SHAPE: dict[str, Any] = {
    "if": {"properties": {"action": {"const": "sync"}}, "required": ["action"]},
    "then": {
        "required": ["count"],
        "not": {
            "anyOf": [
                {"required": ["container"]},
                {"required": ["bill_of_lading"]},
                {"required": ["hold_type"]},
            ]
        },
    },
    "else": {
        "required": ["hold_type"],
        "anyOf": [
            {"required": ["container"], "properties": {"container": {"type": "string"}}},
            {"required": ["bill_of_lading"], "properties": {"bill_of_lading": {"type": "string"}}},
        ],
    },
}


class _Generator(GenerateJsonSchema):
    """Pydantic's generator without its per-field titles and defaults: the shipped file describes
    the wire form, where a field left out and a null mean the same."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def hold_command_schema() -> dict[str, Any]:
    """The JSON Schema of a hold command, as shipped in ``gated/schemas/hold-command.json``."""
    generated = HoldCommand.model_json_schema(by_alias=True, schema_generator=_Generator)
    properties = generated["properties"]
    return {
        "$schema": DIALECT,
        "title": generated["title"],
        "description": DESCRIPTION,
        "type": "object",
        "properties": _refs(properties),
        "required": generated["required"],
        "additionalProperties": False,
        "allOf": [_SHAPE],
    }


def schema_text() -> str:
    """``hold_command_schema()`` as the shipped file's text."""
    return json.dumps(hold_command_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Write the shipped schema file (``python -m gated.holds.schema``)."""
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
