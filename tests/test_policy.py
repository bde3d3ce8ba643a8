"""The decision policy: RELEASE only when every check passed; every doubt keeps the barrier closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gated import policy
from gated.model import Kind, Outcome, Quality, Reading, Reason, ScreeningVerdict, Source, Visit
from gated.policy import HoldListStatus, PolicySettings, decide

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FRESH = HoldListStatus(loaded=True, confirmed_at=NOW - timedelta(minutes=5), version=3)
SETTINGS = PolicySettings(hold_list_max_age_seconds=3600)
CLEAN = "MSKU4135329"
OTHER = "CSQU3054383"
HOLD = {
    "id": 1,
    "container": CLEAN,
    "bill_of_lading": None,
    "agency": "CBP",
    "hold_type": "customs",
    "code": "1H",
}


def reading(
    source: Source, value: Any, quality: Quality = Quality.GOOD, confidence: float | None = None
) -> Reading:
    kind = {Source.EPC: Kind.RFID, Source.SCREENING: Kind.RPM}.get(source, Kind.OCR)
    return Reading("lane-1", kind, "dev-1", source, value, NOW, quality, confidence=confidence)


def visit(*readings: Reading, cause: str = "complete") -> Visit:
    result = Visit(id="v1", lane="lane-1", opened_at=NOW, trigger="rfid:epc", close_cause=cause)
    for item in readings:
        result = result.with_reading(item.in_visit("v1"))
    return result


def truck(number: str | None = CLEAN, screening: str | None = "clear", **kwargs: Any) -> Visit:
    items = [reading(Source.EPC, "e280aa")]
    if number is not None:
        items.append(reading(Source.CONTAINER_NUMBER, number, confidence=0.97))
    items.append(reading(Source.PASSAGE_END, 1))
    if screening is not None:
        items.append(reading(Source.SCREENING, screening))
    return visit(*items, **kwargs)


def codes(decision: Any) -> set[str]:
    return {reason.code for reason in decision.reasons}


def test_clean_truck_is_released_with_its_inputs() -> None:
    v = truck()
    [decision] = decide(v, {}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.RELEASE
    assert decision.container == CLEAN
    assert decision.inputs == tuple(r.id for r in v.readings)
    assert codes(decision) == {policy.CLEAR}


def test_active_hold_gives_hold_with_the_record() -> None:
    [decision] = decide(truck(), {CLEAN: [HOLD]}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.HOLD
    assert decision.holds == (HOLD,)
    assert policy.HOLD_ACTIVE in codes(decision)


def test_hold_wins_over_radiation_alarm_and_both_reasons_are_given() -> None:
    [decision] = decide(truck(screening="gamma_alarm"), {CLEAN: [HOLD]}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.HOLD
    assert {policy.HOLD_ACTIVE, policy.RADIATION_ALARM} <= codes(decision)


def test_radiation_alarm_goes_to_secondary_inspection() -> None:
    for verdict in ("gamma_alarm", "neutron_alarm"):
        [decision] = decide(truck(screening=verdict), {}, FRESH, SETTINGS, now=NOW)
        assert decision.outcome is Outcome.SECONDARY_INSPECTION


def test_not_screened_or_faulty_rpm_never_releases() -> None:
    [missing] = decide(truck(screening=None), {}, FRESH, SETTINGS, now=NOW)
    [fault] = decide(truck(screening="fault"), {}, FRESH, SETTINGS, now=NOW)
    assert missing.outcome is Outcome.MANUAL_REVIEW and policy.RPM_NOT_SCREENED in codes(missing)
    assert fault.outcome is Outcome.MANUAL_REVIEW and policy.RPM_FAULT in codes(fault)


def test_unread_number_goes_to_manual_review_with_null_container() -> None:
    [decision] = decide(truck(number=None), {}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.MANUAL_REVIEW
    assert decision.container is None
    assert policy.OCR_UNREAD in codes(decision)


def test_wrong_check_digit_is_reported_as_read_not_corrected() -> None:
    v = visit(
        reading(Source.CONTAINER_NUMBER, "MSKU4135328", Quality.UNCERTAIN, 0.97),
        reading(Source.PASSAGE_END, 1),
        reading(Source.SCREENING, "clear"),
    )
    [decision] = decide(v, {}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.MANUAL_REVIEW
    assert decision.container == "MSKU4135328"
    assert policy.CHECK_DIGIT_INVALID in codes(decision)


def test_hold_list_not_loaded_or_stale_never_releases() -> None:
    [unloaded] = decide(truck(), {}, HoldListStatus(False, None), SETTINGS, now=NOW)
    stale = HoldListStatus(True, NOW - timedelta(hours=2), 1)
    [old] = decide(truck(), {}, stale, SETTINGS, now=NOW)
    assert unloaded.outcome is Outcome.MANUAL_REVIEW and policy.HOLD_LIST_NOT_LOADED in codes(unloaded)
    assert old.outcome is Outcome.MANUAL_REVIEW and policy.HOLD_LIST_STALE in codes(old)


def test_two_containers_give_two_decisions() -> None:
    v = visit(
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.95),
        reading(Source.CONTAINER_NUMBER, OTHER, confidence=0.95),
        reading(Source.PASSAGE_END, 2),
        reading(Source.SCREENING, "clear"),
    )
    held_other = {**HOLD, "container": OTHER}
    decisions = decide(v, {OTHER: [held_other]}, FRESH, SETTINGS, now=NOW)
    assert {(d.container, d.outcome) for d in decisions} == {(CLEAN, Outcome.RELEASE), (OTHER, Outcome.HOLD)}


def test_camera_count_above_reads_adds_an_unread_slot() -> None:
    v = visit(
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.95),
        reading(Source.PASSAGE_END, 2),
        reading(Source.SCREENING, "clear"),
    )
    decisions = decide(v, {}, FRESH, SETTINGS, now=NOW)
    assert sorted((d.container or "", d.outcome) for d in decisions) == [
        ("", Outcome.MANUAL_REVIEW),
        (CLEAN, Outcome.RELEASE),
    ]


def test_more_numbers_than_containers_is_a_conflict() -> None:
    v = visit(
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.95),
        reading(Source.CONTAINER_NUMBER, OTHER, confidence=0.95),
        reading(Source.PASSAGE_END, 1),
        reading(Source.SCREENING, "clear"),
    )
    assert all(d.outcome is Outcome.MANUAL_REVIEW for d in decide(v, {}, FRESH, SETTINGS, now=NOW))


def test_incomplete_visit_and_missing_required_rfid_never_release() -> None:
    [timed_out] = decide(truck(cause="timeout"), {}, FRESH, SETTINGS, now=NOW)
    assert timed_out.outcome is Outcome.MANUAL_REVIEW
    no_tag = visit(
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.97),
        reading(Source.PASSAGE_END, 1),
        reading(Source.SCREENING, "clear"),
    )
    [decision] = decide(no_tag, {}, FRESH, PolicySettings(require_rfid=True), now=NOW)
    assert decision.outcome is Outcome.MANUAL_REVIEW and policy.RFID_MISSING in codes(decision)


@given(
    number=st.sampled_from([CLEAN, OTHER, "MSKU4135328", None]),
    quality=st.sampled_from(list(Quality)),
    screening=st.sampled_from([*[str(v) for v in ScreeningVerdict], None]),
    held=st.booleans(),
    loaded=st.booleans(),
    age_minutes=st.integers(0, 180),
    cause=st.sampled_from(["complete", "timeout", "superseded", "shutdown"]),
)
def test_release_only_when_every_check_passed(
    number: str | None,
    quality: Quality,
    screening: str | None,
    held: bool,
    loaded: bool,
    age_minutes: int,
    cause: str,
) -> None:
    items = [reading(Source.PASSAGE_END, 1)]
    if number is not None:
        items.append(reading(Source.CONTAINER_NUMBER, number, quality, 0.97))
    if screening is not None:
        items.append(reading(Source.SCREENING, screening))
    v = visit(*items, cause=cause)
    holds = {number: [HOLD]} if held and number else {}
    status = HoldListStatus(loaded, NOW - timedelta(minutes=age_minutes), 1)
    for decision in decide(v, holds, status, SETTINGS, now=NOW):
        if decision.outcome is Outcome.RELEASE:
            assert number in (CLEAN, OTHER) and quality is Quality.GOOD
            assert screening == "clear" and not held and loaded and age_minutes <= 60
            assert cause == "complete"
        if held and number is not None:
            assert decision.outcome is Outcome.HOLD


def test_gateds_own_radiation_check_overrides_a_clear_monitor() -> None:
    check = {"verdict": "gamma_alarm", "device_verdict": "clear", "agrees": False}
    v = visit(
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.97),
        reading(Source.PASSAGE_END, 1),
        reading(Source.SCREENING, "clear"),
        reading(Source.SCREENING_CHECK, check),
    )
    [decision] = decide(v, {}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.SECONDARY_INSPECTION
    assert any("own check" in reason.text for reason in decision.reasons)


def test_extra_reasons_such_as_a_refused_credential_never_release() -> None:
    refused = Reason("CARD_CANCELLED", "card is on the cancelled list")
    [decision] = decide(truck(), {}, FRESH, SETTINGS, now=NOW, extra_reasons=[refused])
    assert decision.outcome is Outcome.MANUAL_REVIEW and "CARD_CANCELLED" in codes(decision)


def test_a_licence_plate_neither_releases_nor_blocks() -> None:
    # The plate is informational: read, unsure or unread, the decision is the one without it.
    for quality, value in [(Quality.GOOD, "KX482TB"), (Quality.UNCERTAIN, "KX482T8"), (Quality.BAD, None)]:
        plate = reading(Source.LICENCE_PLATE, value, quality)
        with_plate = truck().with_reading(plate.in_visit("v1"))
        [decision] = decide(with_plate, {}, FRESH, SETTINGS, now=NOW)
        assert decision.outcome is Outcome.RELEASE and codes(decision) == {policy.CLEAR}
    unread = truck(number=None).with_reading(reading(Source.LICENCE_PLATE, "KX482TB").in_visit("v1"))
    [decision] = decide(unread, {}, FRESH, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.MANUAL_REVIEW and decision.container is None


def _uncertain_truck(number: str, confidence: float) -> Visit:
    return visit(
        reading(Source.EPC, "e280aa"),
        reading(Source.CONTAINER_NUMBER, number, Quality.UNCERTAIN, confidence=confidence),
        reading(Source.PASSAGE_END, 1),
        reading(Source.SCREENING, "clear"),
    )


def test_an_uncertain_read_the_pre_advice_names_counts_as_read() -> None:
    [decision] = decide(
        _uncertain_truck(CLEAN, 0.6), {}, FRESH, SETTINGS, now=NOW, expected_containers=frozenset({CLEAN})
    )
    assert decision.outcome is Outcome.RELEASE
    assert "pre-advised" in decision.reasons[0].text


def test_pre_advice_does_not_vouch_for_a_weak_read_another_number_or_a_held_box() -> None:
    weak = decide(
        _uncertain_truck(CLEAN, 0.3), {}, FRESH, SETTINGS, now=NOW, expected_containers=frozenset({CLEAN})
    )
    other = decide(
        _uncertain_truck(CLEAN, 0.7), {}, FRESH, SETTINGS, now=NOW, expected_containers=frozenset({OTHER})
    )
    unadvised = decide(_uncertain_truck(CLEAN, 0.7), {}, FRESH, SETTINGS, now=NOW)
    held = decide(
        _uncertain_truck(CLEAN, 0.7),
        {CLEAN: [HOLD]},
        FRESH,
        SETTINGS,
        now=NOW,
        expected_containers=frozenset({CLEAN}),
    )
    switched_off = decide(
        _uncertain_truck(CLEAN, 0.7),
        {},
        FRESH,
        PolicySettings(hold_list_max_age_seconds=3600, preadvice_confirms_ocr_from=None),
        now=NOW,
        expected_containers=frozenset({CLEAN}),
    )
    assert weak[0].outcome is Outcome.MANUAL_REVIEW and "OCR_UNCERTAIN" in codes(weak[0])
    assert other[0].outcome is Outcome.MANUAL_REVIEW and {"OCR_UNCERTAIN", "EVIDENCE_MISMATCH"} <= codes(
        other[0]
    )
    assert unadvised[0].outcome is Outcome.MANUAL_REVIEW
    assert held[0].outcome is Outcome.HOLD
    assert switched_off[0].outcome is Outcome.MANUAL_REVIEW


def test_a_preadvised_box_nobody_read_is_checked_and_never_released() -> None:
    announced = frozenset({CLEAN, OTHER})
    read_one = decide(truck(CLEAN), {}, FRESH, SETTINGS, now=NOW, expected_containers=announced)
    by_box = {d.container: d for d in read_one}
    assert by_box[CLEAN].outcome is Outcome.RELEASE
    assert by_box[OTHER].outcome is Outcome.MANUAL_REVIEW and codes(by_box[OTHER]) == {"PREADVISED_NOT_READ"}
    assert not policy.may_open(read_one)

    other_hold = {**HOLD, "container": OTHER}
    held = decide(
        truck(CLEAN), {OTHER: [other_hold]}, FRESH, SETTINGS, now=NOW, expected_containers=announced
    )
    held_box = next(d for d in held if d.container == OTHER)
    assert held_box.outcome is Outcome.HOLD and {"PREADVISED_NOT_READ", "HOLD_ACTIVE"} <= codes(held_box)
    assert held_box.holds == (other_hold,)


def test_a_preadvised_box_fills_the_slot_the_camera_counted_but_could_not_read() -> None:
    two_boxes = visit(
        reading(Source.EPC, "e280aa"),
        reading(Source.CONTAINER_NUMBER, CLEAN, confidence=0.97),
        reading(Source.PASSAGE_END, 2),
        reading(Source.SCREENING, "clear"),
    )
    decisions = decide(two_boxes, {}, FRESH, SETTINGS, now=NOW, expected_containers=frozenset({CLEAN, OTHER}))
    assert [(d.container, d.outcome) for d in decisions] == [
        (CLEAN, Outcome.RELEASE),
        (OTHER, Outcome.MANUAL_REVIEW),
    ]
    assert "OCR_UNREAD" not in codes(decisions[1])


@given(
    read=st.sets(st.sampled_from([CLEAN, OTHER, "TGHU9000011"]), max_size=3),
    announced=st.sets(st.sampled_from([CLEAN, OTHER, "TGHU9000011"]), max_size=3),
    held=st.sets(st.sampled_from([CLEAN, OTHER, "TGHU9000011"]), max_size=3),
)
def test_no_held_box_the_truck_is_known_to_carry_ever_opens_the_barrier(
    read: set[str], announced: set[str], held: set[str]
) -> None:
    items = [reading(Source.EPC, "e280aa"), reading(Source.SCREENING, "clear")]
    items += [reading(Source.CONTAINER_NUMBER, number, confidence=0.97) for number in sorted(read)]
    items.append(reading(Source.PASSAGE_END, len(read)))
    holds = {number: [{**HOLD, "container": number}] for number in held}
    decisions = decide(
        visit(*items), holds, FRESH, SETTINGS, now=NOW, expected_containers=frozenset(announced)
    )
    carried = read | announced
    if carried & held:
        assert not policy.may_open(decisions)
        assert {d.container for d in decisions if d.outcome is Outcome.HOLD} == carried & held


def test_a_list_customs_called_out_of_step_is_stale() -> None:
    out_of_step = HoldListStatus(loaded=True, confirmed_at=NOW, out_of_step=True)
    [decision] = decide(truck(), {}, out_of_step, SETTINGS, now=NOW)
    assert decision.outcome is Outcome.MANUAL_REVIEW and "HOLD_LIST_STALE" in codes(decision)
    assert "does not match" in decision.reasons[-1].text or any("match" in r.text for r in decision.reasons)
