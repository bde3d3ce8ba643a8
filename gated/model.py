"""The value types every part of gated speaks: readings, visits and decisions.

They are frozen and validate themselves on construction, so a bad value is caught where it is
made, not three modules later where it is published.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gated.clock import rfc3339

IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RESERVED_LANE_IDS = frozenset({"holds", "node"})

ReadingValue = str | int | float | bool | None | dict[str, Any]


def new_id() -> str:
    """A unique message id (consumers drop duplicates by it)."""
    return uuid.uuid4().hex


def check_identifier(what: str, value: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match [a-z0-9][a-z0-9_-]*")
    return value


class Kind(StrEnum):
    """Device kinds, as they appear in reading topics."""

    RFID = "rfid"
    OCR = "ocr"
    RPM = "rpm"
    NII = "nii"
    BARRIER = "barrier"
    PRINTER = "printer"
    CREDENTIAL = "credential"


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class DeviceState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class Outcome(StrEnum):
    RELEASE = "RELEASE"
    HOLD = "HOLD"
    SECONDARY_INSPECTION = "SECONDARY_INSPECTION"
    MANUAL_REVIEW = "MANUAL_REVIEW"


class Source(StrEnum):
    """What a reading measured. The correlator and the policy key on these."""

    EPC = "epc"  # RFID tag id (hex)
    CONTAINER_NUMBER = "container_number"  # OCR: one container's number as read
    PASSAGE_END = "passage_end"  # OCR: the camera finished a truck; value = containers seen
    LICENCE_PLATE = "licence_plate"  # OCR: the truck's plate, no separators; informational only
    OCCUPANCY = "occupancy"  # RPM: True when a vehicle enters, False when it leaves
    GAMMA_CPS = "gamma_cps"  # RPM: peak gross gamma counts per second in the pass
    GAMMA_BACKGROUND_CPS = "gamma_background_cps"
    NEUTRON_CPS = "neutron_cps"
    NEUTRON_BACKGROUND_CPS = "neutron_background_cps"
    SCREENING = "screening"  # RPM: verdict of one pass, a ScreeningVerdict value
    SCREENING_CHECK = "screening_check"  # RPM: gated's own check of the pass's counts (an object)
    RPM_PROFILE = "rpm_profile"  # RPM: the counts of the pass, for the console to plot
    SPEED_KMH = "speed_kmh"  # RPM: the truck's speed through the portal
    TAMPER = "tamper"  # RPM: True while the monitor reports tamper
    FAULT = "fault"  # RPM: the monitor's active faults, comma-separated ("" when none)
    SIZE_TYPE = "size_type"  # OCR: the ISO 6346 size-type code next to a number
    CARD = "card"  # credential reader: the driver's card (an object)
    SCAN_RESULT = "scan_result"  # NII: one scan's outcome (an object)
    BARRIER_STATE = "barrier_state"  # barrier: the PLC's state (an object)


class ScreeningVerdict(StrEnum):
    CLEAR = "clear"
    GAMMA_ALARM = "gamma_alarm"
    NEUTRON_ALARM = "neutron_alarm"
    FAULT = "fault"  # the monitor reported a fault or tamper: the truck was not screened


@dataclass(frozen=True, slots=True)
class Evidence:
    """A file that backs a reading (an image crop, a scan), referenced, never inlined."""

    uri: str
    media_type: str
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "media_type": self.media_type, "sha256": self.sha256, "bytes": self.bytes}


def _value_type(value: ReadingValue) -> str:
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    raise TypeError(f"unsupported reading value type {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalised measurement from one device (CONTRACT section 4, ``gated.reading/1``)."""

    lane: str
    kind: Kind
    device: str
    source: Source
    value: ReadingValue
    ts: datetime
    quality: Quality = Quality.GOOD
    units: str | None = None
    confidence: float | None = None
    visit: str | None = None
    evidence: tuple[Evidence, ...] = ()
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        check_identifier("lane", self.lane)
        check_identifier("device", self.device)
        if not isinstance(self.source, Source):
            # An untyped caller's plain string (a stored body, a test): known sources only.
            try:
                source = Source(self.source)
            except ValueError:
                raise ValueError(f"unknown reading source {self.source!r}") from None
            object.__setattr__(self, "source", source)
        if self.ts.tzinfo is None:
            raise ValueError("reading timestamp must be timezone-aware")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside 0..1")
        _value_type(self.value)

    @property
    def value_type(self) -> str:
        return _value_type(self.value)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Reading:
        """A reading back from its stored body (what ``body()`` wrote)."""
        return cls(
            lane=body["lane"],
            kind=Kind(body["kind"]),
            device=body["device"],
            source=Source(body["source"]),
            value=body["value"],
            ts=datetime.fromisoformat(body["ts"].replace("Z", "+00:00")),
            quality=Quality(body["quality"]),
            units=body.get("units"),
            confidence=body.get("confidence"),
            visit=body.get("visit"),
            evidence=tuple(Evidence(**item) for item in body.get("evidence", [])),
            id=body["id"],
        )

    def in_visit(self, visit_id: str) -> Reading:
        return replace(self, visit=visit_id)

    def body(self) -> dict[str, Any]:
        """The reading's own fields of the payload (the envelope adds schema, site, node, seq)."""
        return {
            "id": self.id,
            "ts": rfc3339(self.ts),
            "lane": self.lane,
            "kind": str(self.kind),
            "device": self.device,
            "source": str(self.source),
            "value": self.value,
            "value_type": self.value_type,
            "units": self.units,
            "quality": str(self.quality),
            "confidence": self.confidence,
            "visit": self.visit,
            "evidence": [item.to_json() for item in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision came out as it did: a stable code for machines, text for people."""

    code: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


@dataclass(frozen=True, slots=True)
class Visit:
    """One truck's pass through one lane: the readings gathered between trigger and close."""

    id: str
    lane: str
    opened_at: datetime
    trigger: str
    readings: tuple[Reading, ...] = ()
    closed_at: datetime | None = None
    close_cause: str | None = None  # "complete" or "timeout"

    def with_reading(self, reading: Reading) -> Visit:
        return replace(self, readings=(*self.readings, reading))

    def closed(self, at: datetime, cause: str) -> Visit:
        return replace(self, closed_at=at, close_cause=cause)

    def of_source(self, source: Source) -> list[Reading]:
        return [reading for reading in self.readings if reading.source == source]


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate decision for one container of one visit (``gated.decision/1``)."""

    lane: str
    visit: str
    container: str | None
    outcome: Outcome
    reasons: tuple[Reason, ...]
    holds: tuple[dict[str, Any], ...]
    inputs: tuple[str, ...]
    decided_at: datetime
    id: str = field(default_factory=new_id)

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": rfc3339(self.decided_at),
            "lane": self.lane,
            "visit": self.visit,
            "container": self.container,
            "outcome": str(self.outcome),
            "reasons": [reason.to_json() for reason in self.reasons],
            "holds": list(self.holds),
            "inputs": list(self.inputs),
            "decided_at": rfc3339(self.decided_at),
        }
