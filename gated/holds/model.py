"""The hold list's values: hold records, command results, what a place, release or sync asks for,
and the checks every value from outside passes through before it reaches the database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gated.clock import rfc3339
from gated.errors import ContainerNumberError, HoldListError
from gated.iso6346 import ContainerNumber, normalise
from gated.messages import HOLD

SCHEMA = HOLD  # what every hold command names as its schema
MAX_BILL_OF_LADING = 35
MAX_AGENCY = 64
MAX_HOLD_TYPE = 32
MAX_CODE = 16
MAX_REFERENCE = 128
MAX_NOTE = 1000
MAX_MESSAGE_ID = 128
MAX_KEY_ID = 64
MAX_SOURCE_ID = MAX_KEY_ID + 1 + MAX_MESSAGE_ID  # "key:command id": ids are unique per key
MAX_ACTOR = 64
MAX_DIGEST = 80
MAX_REASON = 512
_HOLD_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

ImportKind = Literal["holds", "manifest"]
CommandAction = Literal["place", "release", "sync"]


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """One hold as stored, active until ``released_at`` is set."""

    id: int
    container: str | None
    bill_of_lading: str | None
    agency: str
    hold_type: str
    code: str | None
    reference: str | None
    note: str | None
    source_message_id: str | None
    placed_at: datetime
    released_at: datetime | None
    release_code: str | None
    release_reference: str | None
    release_source_message_id: str | None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "container": self.container,
            "bill_of_lading": self.bill_of_lading,
            "agency": self.agency,
            "hold_type": self.hold_type,
            "code": self.code,
            "reference": self.reference,
            "note": self.note,
            "placed_at": rfc3339(self.placed_at),
            "released_at": rfc3339(self.released_at) if self.released_at is not None else None,
            "release_code": self.release_code,
            "release_reference": self.release_reference,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class HoldListState:
    """How current the hold list is. ``version`` counts changes; ``updated_at`` is the last change.
    ``loaded`` is False until an authenticated full view arrived (an operator's import or customs'
    matching sync): an empty list that was never loaded must not release anything. ``confirmed_at``
    is that view's as-of time (freshness is measured from it); ``confirmed_by`` says who (``key:ID``
    or ``operator:USER``). ``out_of_step``: customs' last sync did not match, so the list is stale
    until one does or an operator imports the full list."""

    version: int
    active: int
    updated_at: datetime | None
    loaded: bool
    loaded_at: datetime | None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    out_of_step: bool = False

    def fresh(self, now: datetime, max_age_seconds: float) -> bool:
        """Loaded, in step with customs, and confirmed no longer than ``max_age_seconds`` ago."""
        return (
            self.loaded
            and not self.out_of_step
            and self.confirmed_at is not None
            and (now - self.confirmed_at).total_seconds() <= max_age_seconds
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "active": self.active,
            "updated_at": _time(self.updated_at),
            "loaded": self.loaded,
            "loaded_at": _time(self.loaded_at),
            "confirmed_at": _time(self.confirmed_at),
            "confirmed_by": self.confirmed_by,
            "out_of_step": self.out_of_step,
        }


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one imported file did. ``unchanged`` counts holds already active as given and manifest
    lines already known."""

    path: str
    kind: ImportKind
    rows: int
    placed: int
    released: int
    manifest_added: int
    unchanged: int
    version: int
    confirmed: bool = False  # the import confirmed the hold list (loaded and fresh as of its date)

    def to_json(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "path": self.path,
            "kind": self.kind,
            "rows": self.rows,
            "placed": self.placed,
            "released": self.released,
            "manifest_added": self.manifest_added,
            "unchanged": self.unchanged,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class HoldCommandResult:
    """The answer to one ``gated.hold/1`` command (the body of a ``holds/ack`` message). ``key`` is
    the id of the key whose signature verified, None when none did."""

    command_id: str | None
    action: str | None
    applied: bool
    duplicate: bool
    reason: str
    holds: tuple[HoldRecord, ...] = ()
    key: str | None = None
    out_of_step: bool = False  # a sync that did not match: the list is stale until one does

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command_id,
            "key": self.key,
            "action": self.action,
            "applied": self.applied,
            "duplicate": self.duplicate,
            "reason": self.reason,
            "holds": [hold.to_json() for hold in self.holds],
        }


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A hold command whose signature verified with the key ``key_id`` (which may act for
    ``agencies``), made at ``issued_at``; ``payload`` is the command as received."""

    key_id: str
    agencies: frozenset[str]
    issued_at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Place:
    container: str | None
    bill_of_lading: str | None
    agency: str
    hold_type: str
    code: str | None
    reference: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class Release:
    hold_id: int | None
    container: str | None
    bill_of_lading: str | None
    agency: str | None
    hold_type: str | None
    code: str | None
    reference: str | None


@dataclass(frozen=True, slots=True)
class Sync:
    """Customs' signed statement: ``agency`` has exactly ``count`` active holds (and, with
    ``digest``, exactly these: see ``holds_digest``)."""

    agency: str
    count: int
    digest: str | None


@dataclass(frozen=True, slots=True)
class ManifestLine:
    container: str
    bill_of_lading: str


# --- validation: every value from outside passes through these -------------------------------------

# --- validation: every value from outside passes through these -------------------------------------


def _text(what: str, value: object, limit: int, *, multiline: bool = False) -> str:
    if value is None:
        raise HoldListError(f"{what} is required")
    if not isinstance(value, str):
        raise HoldListError(f"{what} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise HoldListError(f"{what} is empty")
    if len(text) > limit:
        raise HoldListError(f"{what} is longer than {limit} characters")
    allowed = "\t\n\r" if multiline else ""
    if any((ord(char) < 32 and char not in allowed) or ord(char) == 127 for char in text):
        raise HoldListError(f"{what} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HoldListError(f"{what} is not valid Unicode text") from None
    return text


def optional_text(what: str, value: object, limit: int, *, multiline: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text(what, value, limit, multiline=multiline)


def normalise_container(value: object) -> str:
    """An ISO 6346 number as stored: normalised, shape checked, check digit not required (some
    shipper-owned boxes carry a wrong one and can still be held)."""
    if not isinstance(value, str):
        raise ContainerNumberError(f"container number must be text, got {type(value).__name__}")
    return str(ContainerNumber.parse(normalise(value), require_valid_check_digit=False))


def normalise_bill_of_lading(value: object) -> str:
    """A B/L number as stored: stripped, upper-case, 1 to 35 characters."""
    text = _text("bill of lading", value, MAX_BILL_OF_LADING)
    return text.upper()


def optional_container(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return normalise_container(value)
    except ContainerNumberError as error:
        raise HoldListError(str(error)) from None


def optional_bill(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return normalise_bill_of_lading(value)


def check_agency(value: object) -> str:
    return _text("agency", value, MAX_AGENCY).upper()


def _hold_type(value: object) -> str:
    text = _text("hold type", value, MAX_HOLD_TYPE).lower()
    if not _HOLD_TYPE.fullmatch(text):
        raise HoldListError(f"hold type {text!r} must be a word such as customs, exam, vacis, usda")
    return text


def _code(value: object) -> str | None:
    text = optional_text("code", value, MAX_CODE)
    return text.upper() if text is not None else None


def check_message_id(value: object) -> str:
    return _text("message id", value, MAX_MESSAGE_ID)


def check_place(
    *,
    container: object,
    bill_of_lading: object,
    agency: object,
    hold_type: object,
    code: object,
    reference: object,
    note: object,
) -> Place:
    place = Place(
        container=optional_container(container),
        bill_of_lading=optional_bill(bill_of_lading),
        agency=check_agency(agency),
        hold_type=_hold_type(hold_type),
        code=_code(code),
        reference=optional_text("reference", reference, MAX_REFERENCE),
        note=optional_text("note", note, MAX_NOTE, multiline=True),
    )
    if place.container is None and place.bill_of_lading is None:
        raise HoldListError("a hold needs a container or a bill of lading")
    return place


def check_release(
    *,
    hold_id: object,
    container: object,
    bill_of_lading: object,
    agency: object,
    hold_type: object,
    code: object,
    reference: object,
) -> Release:
    if hold_id is not None and (isinstance(hold_id, bool) or not isinstance(hold_id, int) or hold_id < 1):
        raise HoldListError(f"hold id must be a positive whole number, got {hold_id!r}")
    release = Release(
        hold_id=hold_id,
        container=optional_container(container),
        bill_of_lading=optional_bill(bill_of_lading),
        agency=None if agency is None else check_agency(agency),
        hold_type=None if hold_type is None else _hold_type(hold_type),
        code=_code(code),
        reference=optional_text("reference", reference, MAX_REFERENCE),
    )
    if release.hold_id is None and release.container is None and release.bill_of_lading is None:
        raise HoldListError("a release needs a hold id, a container or a bill of lading")
    return release


# --- files --------------------------------------------------------------------------------------------


def source_id(value: object) -> str:
    return _text("message id", value, MAX_SOURCE_ID)


def describe(spec: Release) -> str:
    parts = []
    if spec.hold_id is not None:
        parts.append(f"id {spec.hold_id}")
    if spec.container is not None:
        parts.append(f"container {spec.container}")
    if spec.bill_of_lading is not None:
        parts.append(f"B/L {spec.bill_of_lading}")
    if spec.agency is not None:
        parts.append(f"agency {spec.agency}")
    if spec.hold_type is not None:
        parts.append(f"type {spec.hold_type}")
    return ", ".join(parts)
