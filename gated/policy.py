"""The gate decision: a pure function from one closed visit and the hold facts to one decision per
container. No I/O, no clock of its own: everything it needs is passed in, so every rule can be
tested exhaustively and the daemon, the tests and a replay all decide the same way.

RELEASE needs every check to pass: the number read and valid, no active hold on a loaded and fresh
hold list, and the radiation portal monitor screened the truck clear. Anything else keeps the
barrier closed, with the reasons spelled out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gated.errors import ContainerNumberError
from gated.iso6346 import ContainerNumber
from gated.model import Decision, Outcome, Quality, Reason, ScreeningVerdict, Source, Visit

# Stable reason codes (consumers key on them; the text is for people).
CLEAR = "CLEAR"
HOLD_ACTIVE = "HOLD_ACTIVE"
HOLD_LIST_NOT_LOADED = "HOLD_LIST_NOT_LOADED"
HOLD_LIST_STALE = "HOLD_LIST_STALE"
OPERATOR_OVERRIDE = "OPERATOR_OVERRIDE"
RADIATION_ALARM = "RADIATION_ALARM"
RPM_NOT_SCREENED = "RPM_NOT_SCREENED"
RPM_FAULT = "RPM_FAULT"
OCR_UNREAD = "OCR_UNREAD"
OCR_UNCERTAIN = "OCR_UNCERTAIN"
CHECK_DIGIT_INVALID = "CHECK_DIGIT_INVALID"
OCR_CONFLICT = "OCR_CONFLICT"
RFID_MISSING = "RFID_MISSING"
VISIT_INCOMPLETE = "VISIT_INCOMPLETE"
DEVICE_OFFLINE = "DEVICE_OFFLINE"
EVIDENCE_MISMATCH = "EVIDENCE_MISMATCH"
STORAGE_FAILURE = "STORAGE_FAILURE"
DEVICE_TAMPER = "DEVICE_TAMPER"
CREDENTIAL_MISSING = "CREDENTIAL_MISSING"
PREADVISED_NOT_READ = "PREADVISED_NOT_READ"
OPERATOR_ENTRY = "OPERATOR_ENTRY"
RECOMPUTED = frozenset(
    {
        CLEAR,
        HOLD_ACTIVE,
        HOLD_LIST_NOT_LOADED,
        HOLD_LIST_STALE,
        RADIATION_ALARM,
        RPM_NOT_SCREENED,
        RPM_FAULT,
        OCR_UNREAD,
        OCR_UNCERTAIN,
        CHECK_DIGIT_INVALID,
        OCR_CONFLICT,
        RFID_MISSING,
        VISIT_INCOMPLETE,
        EVIDENCE_MISMATCH,
        PREADVISED_NOT_READ,
    }
)
"""The reasons ``decide`` works out from the visit and the hold list; the others (devices offline or
tampered with, a credential refused, storage) come from the moment and are carried over when a
visit is decided again."""

_SEVERITY = {
    Outcome.HOLD: 3,
    Outcome.SECONDARY_INSPECTION: 2,
    Outcome.MANUAL_REVIEW: 1,
    Outcome.RELEASE: 0,
}


@dataclass(frozen=True, slots=True)
class HoldListStatus:
    """What the policy needs to know about the hold list as a whole."""

    loaded: bool
    confirmed_at: datetime | None  # the last authenticated full view (customs' sync, an import)
    version: int = 0
    out_of_step: bool = False  # customs' last sync did not match what gated holds


@dataclass(frozen=True, slots=True)
class PolicySettings:
    hold_list_max_age_seconds: float | None = None
    require_rfid: bool = False
    preadvice_confirms_ocr_from: float | None = 0.5
    """An OCR read short of its camera's threshold still counts as read when its check digit fits,
    its confidence is at least this, and it is exactly a number the truck's tag was pre-advised to
    carry: two independent sources agreeing on eleven characters. None: never."""


@dataclass(frozen=True, slots=True)
class ContainerSlot:
    """One container the visit carried, as far as the readings tell."""

    number: str | None
    quality: Quality | None
    confidence: float | None
    check_digit_valid: bool
    preadvised_unread: bool = False  # the number is what the tag was pre-advised for; nobody read it


def container_slots(visit: Visit) -> tuple[list[ContainerSlot], list[Reason]]:
    """The containers of a visit from its OCR readings, and any reasons the reads raise.

    Only GOOD reads count as read numbers; a number seen only as UNCERTAIN is kept (never
    corrected) but goes to a person. The camera's container count makes up unread slots."""
    reads = visit.of_source(Source.CONTAINER_NUMBER)
    good: dict[str, ContainerSlot] = {}
    uncertain: dict[str, ContainerSlot] = {}
    for reading in reads:
        if not isinstance(reading.value, str):
            continue
        number = reading.value
        valid = _check_digit_ok(number)
        slot = ContainerSlot(number, reading.quality, reading.confidence, valid)
        if reading.quality is Quality.GOOD and valid:
            best = good.get(number)
            if best is None or (reading.confidence or 0) > (best.confidence or 0):
                good[number] = slot
        elif number not in uncertain:
            uncertain[number] = slot
    counts = [r.value for r in visit.of_source(Source.PASSAGE_END) if isinstance(r.value, int)]
    expected = max(counts) if counts else None
    reasons: list[Reason] = []
    slots = list(good.values())
    if expected is not None and len(slots) > expected:
        reasons.append(
            Reason(OCR_CONFLICT, f"camera saw {expected} container(s) but {len(slots)} different numbers")
        )
    wanted = expected if expected is not None else max(1, len(slots))
    for number, slot in uncertain.items():
        if len(slots) >= wanted:
            break
        if number not in good:
            slots.append(slot)
    while len(slots) < wanted:
        slots.append(ContainerSlot(None, None, None, False))
    return slots, reasons


def _with_preadvised(slots: list[ContainerSlot], expected: frozenset[str] | None) -> list[ContainerSlot]:
    """Every pre-advised number no read matched takes an unread slot, or a slot of its own."""
    if not expected:
        return slots
    read = {slot.number for slot in slots if slot.number is not None}
    missing = sorted(expected - read)
    result = []
    for slot in slots:
        if slot.number is None and missing:
            result.append(ContainerSlot(missing.pop(0), None, None, False, preadvised_unread=True))
        else:
            result.append(slot)
    result.extend(ContainerSlot(number, None, None, False, preadvised_unread=True) for number in missing)
    return result


def _check_digit_ok(number: str) -> bool:
    try:
        ContainerNumber.parse(number)
    except ContainerNumberError:
        return False
    return True


def _screening_reasons(visit: Visit) -> tuple[list[Reason], bool]:
    """Reasons from the RPM, and whether there was a radiation alarm."""
    verdicts = [r.value for r in visit.of_source(Source.SCREENING)]
    own_alarms = [
        r.value["verdict"]
        for r in visit.of_source(Source.SCREENING_CHECK)
        if isinstance(r.value, dict)
        and r.value.get("verdict") in (ScreeningVerdict.GAMMA_ALARM, ScreeningVerdict.NEUTRON_ALARM)
    ]
    if not verdicts:
        return [Reason(RPM_NOT_SCREENED, "the radiation portal monitor did not report on this truck")], False
    reasons: list[Reason] = []
    alarm = False
    for verdict in verdicts:
        if verdict in (ScreeningVerdict.GAMMA_ALARM, ScreeningVerdict.NEUTRON_ALARM):
            alarm = True
            kind = "gamma" if verdict == ScreeningVerdict.GAMMA_ALARM else "neutron"
            reasons.append(Reason(RADIATION_ALARM, f"radiation portal monitor {kind} alarm"))
        elif verdict != ScreeningVerdict.CLEAR:
            reasons.append(Reason(RPM_FAULT, f"radiation portal monitor reported {verdict!s}: not screened"))
    for verdict in own_alarms:
        # gated's own check of the counts alarms even when the monitor did not: never release.
        alarm = True
        reasons.append(Reason(RADIATION_ALARM, f"gated's own check of the counts: {verdict}"))
    return reasons, alarm


def decide(
    visit: Visit,
    holds: Mapping[str, Sequence[Mapping[str, Any]]],
    hold_list: HoldListStatus,
    settings: PolicySettings,
    *,
    now: datetime,
    offline_devices: Sequence[str] = (),
    expected_containers: frozenset[str] | None = None,
    tampered_devices: Sequence[str] = (),
    extra_reasons: Sequence[Reason] = (),
) -> list[Decision]:
    """One decision per container of a closed visit.

    ``holds`` maps each container number read in the visit to its active hold records (direct or
    through a bill of lading). ``offline_devices`` are the lane's devices that were not online at
    some point of the visit. ``expected_containers`` is what the truck's tag was pre-advised to
    carry, when a pre-advice exists: a number outside it contradicts the tag, and a number in it
    that nobody read gets a decision of its own (``PREADVISED_NOT_READ``: held if ``holds`` holds
    it, at best a person's call), so a box the camera missed is still checked."""
    common: list[Reason] = list(extra_reasons)  # e.g. the driver's credential was refused
    if tampered_devices:
        common.append(
            Reason(DEVICE_TAMPER, f"tamper reported during the visit: {', '.join(sorted(tampered_devices))}")
        )
    if offline_devices:
        common.append(
            Reason(DEVICE_OFFLINE, f"not online during the visit: {', '.join(sorted(offline_devices))}")
        )
    if not hold_list.loaded:
        common.append(Reason(HOLD_LIST_NOT_LOADED, "no hold list loaded: no automatic release"))
    elif hold_list.out_of_step:
        common.append(Reason(HOLD_LIST_STALE, "customs' last sync does not match the hold list: stale"))
    else:
        age = None if hold_list.confirmed_at is None else (now - hold_list.confirmed_at).total_seconds()
        limit = settings.hold_list_max_age_seconds
        if age is None or (limit is not None and age > limit):
            shown = "never" if age is None else f"{age:.0f} s ago"
            common.append(Reason(HOLD_LIST_STALE, f"hold list last confirmed {shown}: stale"))
    screening, radiation_alarm = _screening_reasons(visit)
    common.extend(screening)
    if settings.require_rfid and not visit.of_source(Source.EPC):
        common.append(Reason(RFID_MISSING, "no RFID tag read for this truck"))
    if visit.close_cause != "complete":
        common.append(
            Reason(VISIT_INCOMPLETE, f"visit closed ({visit.close_cause}) before every device reported")
        )

    slots, slot_reasons = container_slots(visit)
    slots = _with_preadvised(slots, expected_containers)
    inputs = tuple(reading.id for reading in visit.readings)
    decisions = []
    for slot in slots:
        reasons = list(common) + list(slot_reasons)
        matched: list[Mapping[str, Any]] = []
        if slot.preadvised_unread:
            # Announced but never seen: it is on the truck as far as anyone knows, so its holds count.
            matched = list(holds.get(slot.number or "", ()))
            reasons.append(
                Reason(PREADVISED_NOT_READ, f"{slot.number}: pre-advised for the truck's tag but not read")
            )
            reasons.extend(Reason(HOLD_ACTIVE, _hold_text(record)) for record in matched)
        elif slot.number is None:
            reasons.append(Reason(OCR_UNREAD, "container number could not be read"))
        else:
            matched = list(holds.get(slot.number, ()))
            if not slot.check_digit_valid:
                reasons.append(
                    Reason(CHECK_DIGIT_INVALID, f"{slot.number}: check digit does not fit (read as printed)")
                )
            elif slot.quality is not Quality.GOOD and not _confirmed_by_preadvice(
                slot, expected_containers, settings
            ):
                reasons.append(Reason(OCR_UNCERTAIN, f"{slot.number}: read with low confidence"))
            if expected_containers is not None and slot.number not in expected_containers:
                expected = ", ".join(sorted(expected_containers)) or "no container"
                reasons.append(
                    Reason(
                        EVIDENCE_MISMATCH,
                        f"camera read {slot.number}; the truck's tag is pre-advised for {expected}",
                    )
                )
            for record in matched:
                reasons.append(Reason(HOLD_ACTIVE, _hold_text(record)))
        outcome = _outcome(reasons, bool(matched), radiation_alarm)
        if outcome is Outcome.RELEASE:
            read = "number read"
            if slot.quality is not Quality.GOOD:
                read = f"number read with low confidence ({slot.confidence}) and pre-advised for the tag"
            reasons = [Reason(CLEAR, f"{read}, no active hold, radiation screening clear")]
        decisions.append(
            Decision(
                lane=visit.lane,
                visit=visit.id,
                container=slot.number,
                outcome=outcome,
                reasons=tuple(reasons),
                holds=tuple(dict(record) for record in matched),
                inputs=inputs,
                decided_at=now,
            )
        )
    return decisions


def _confirmed_by_preadvice(
    slot: ContainerSlot, expected: frozenset[str] | None, settings: PolicySettings
) -> bool:
    """True when the pre-advice vouches for an uncertain read (see ``PolicySettings``)."""
    floor = settings.preadvice_confirms_ocr_from
    return (
        floor is not None
        and expected is not None
        and slot.number in expected
        and slot.check_digit_valid
        and slot.confidence is not None
        and slot.confidence >= floor
    )


def _outcome(reasons: list[Reason], held: bool, radiation_alarm: bool) -> Outcome:
    # A held container is HOLD whatever else is true; a radiation alarm goes to officers next;
    # any other doubt goes to a person. Only a clean slate releases.
    if held:
        return Outcome.HOLD
    if radiation_alarm:
        return Outcome.SECONDARY_INSPECTION
    if reasons:
        return Outcome.MANUAL_REVIEW
    return Outcome.RELEASE


def _hold_text(record: Mapping[str, Any]) -> str:
    target = record.get("container") or f"B/L {record.get('bill_of_lading')}"
    code = f" {record['code']}" if record.get("code") else ""
    return f"active {record.get('agency', '?')} {record.get('hold_type', 'hold')}{code} hold on {target}"


def most_severe(decisions: Sequence[Decision]) -> Outcome:
    return max((d.outcome for d in decisions), key=lambda outcome: _SEVERITY[outcome])


def may_open(decisions: Sequence[Decision]) -> bool:
    """The barrier may open for a truck only when every container on it was RELEASEd."""
    return bool(decisions) and all(decision.outcome is Outcome.RELEASE for decision in decisions)
