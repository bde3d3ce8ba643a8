"""Visit correlation with a manual clock: open on a trigger, close when complete or on timeout."""

from __future__ import annotations

from typing import Any

from gated.clock import ManualClock
from gated.correlator import LaneCorrelator, LaneRules
from gated.model import Kind, Reading, Source

RULES = LaneRules(lane="lane-1", require=frozenset({"rfid", "ocr", "rpm"}), visit_timeout=30.0, settle=1.0)


def make(clock: ManualClock, source: Source, value: Any, kind: Kind = Kind.OCR) -> Reading:
    return Reading("lane-1", kind, "dev", source, value, clock.now())


def test_visit_opens_on_tag_and_closes_complete_after_settling() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    tag, closed, opened = lane.accept(make(clock, Source.EPC, "e2801", Kind.RFID))
    assert opened is not None and tag.visit == opened.id and not closed
    lane.accept(make(clock, Source.OCCUPANCY, True, Kind.RPM))
    lane.accept(make(clock, Source.CONTAINER_NUMBER, "MSKU4135329"))
    lane.accept(make(clock, Source.SCREENING, "clear", Kind.RPM))
    assert lane.tick() == []  # ocr has not finished its passage
    lane.accept(make(clock, Source.PASSAGE_END, 1))
    clock.advance(0.5)
    assert lane.tick() == []  # settling: late readings may still come
    late, _, _ = lane.accept(make(clock, Source.SIZE_TYPE, "22G1"))
    clock.advance(0.6)
    [visit] = lane.tick()
    assert visit.close_cause == "complete" and visit.id == opened.id
    assert late.visit == visit.id and len(visit.readings) == 6
    assert lane.visit is None


def test_incomplete_visit_closes_on_timeout() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    lane.accept(make(clock, Source.OCCUPANCY, True, Kind.RPM))
    clock.advance(29.9)
    assert lane.tick() == []
    clock.advance(0.2)
    [visit] = lane.tick()
    assert visit.close_cause == "timeout"


def test_readings_between_trucks_belong_to_no_visit() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    background, closed, opened = lane.accept(make(clock, Source.TAMPER, False, Kind.RPM))
    assert background.visit is None and opened is None and not closed
    end, _, opened = lane.accept(make(clock, Source.OCCUPANCY, False, Kind.RPM))
    assert end.visit is None and opened is None


def test_a_new_tag_closes_the_previous_truck() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    _, _, first = lane.accept(make(clock, Source.EPC, "aaaa", Kind.RFID))
    lane.accept(make(clock, Source.EPC, "aaaa", Kind.RFID))  # the same truck read again
    assert lane.visit is not None and lane.visit.id == first.id  # type: ignore[union-attr]
    _, closed, second = lane.accept(make(clock, Source.EPC, "bbbb", Kind.RFID))
    assert [v.id for v in closed] == [first.id] and closed[0].close_cause == "superseded"  # type: ignore[union-attr]
    assert second is not None and second.id != first.id  # type: ignore[union-attr]


def test_second_occupancy_after_a_finished_pass_is_the_next_truck() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    lane.accept(make(clock, Source.OCCUPANCY, True, Kind.RPM))
    lane.accept(make(clock, Source.OCCUPANCY, False, Kind.RPM))
    _, closed, opened = lane.accept(make(clock, Source.OCCUPANCY, True, Kind.RPM))
    assert len(closed) == 1 and opened is not None


def test_a_late_read_for_a_decided_visit_never_joins_the_next_truck() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    _, _, first = lane.accept(make(clock, Source.EPC, "e2801", Kind.RFID))
    _, closed, second = lane.accept(make(clock, Source.EPC, "e2802", Kind.RFID))
    assert first is not None and second is not None and [v.id for v in closed] == [first.id]
    # The frames camera's read of the first truck comes in while the second one is at the gate.
    late = make(clock, Source.CONTAINER_NUMBER, "MSKU4135329").in_visit(first.id)
    kept, closed, opened = lane.accept(late)
    assert kept.visit == first.id and not closed and opened is None
    assert lane.visit is not None and lane.visit.of_source(Source.CONTAINER_NUMBER) == []
    # A read for the open visit joins it as usual.
    own, _, _ = lane.accept(make(clock, Source.CONTAINER_NUMBER, "CSQU3054383").in_visit(second.id))
    assert own.visit == second.id and lane.visit.of_source(Source.CONTAINER_NUMBER) == [own]


def test_a_plate_joins_the_visit_it_names_but_never_opens_completes_or_ends_one() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    # Between trucks a plate (named or not) opens nothing: it cannot start a decision.
    alone, closed, opened = lane.accept(make(clock, Source.LICENCE_PLATE, "KX482TB"))
    assert alone.visit is None and not closed and opened is None and lane.visit is None
    _, _, visit = lane.accept(make(clock, Source.EPC, "e2801", Kind.RFID))
    assert visit is not None
    lane.accept(make(clock, Source.CONTAINER_NUMBER, "MSKU4135329").in_visit(visit.id))
    lane.accept(make(clock, Source.PASSAGE_END, 1).in_visit(visit.id))
    plate, closed, opened = lane.accept(make(clock, Source.LICENCE_PLATE, "KX482TB").in_visit(visit.id))
    assert plate.visit == visit.id and not closed and opened is None
    assert lane.visit is not None and lane.visit.of_source(Source.LICENCE_PLATE) == [plate]
    # Without the portal's screening the visit is not complete, plate or not.
    clock.advance(5.0)
    assert lane.tick() == []
    # A plate of another visit (decided already) joins no other truck.
    other, _, _ = lane.accept(make(clock, Source.LICENCE_PLATE, "AB123CD").in_visit("decided-visit"))
    assert other.visit == "decided-visit" and lane.visit.of_source(Source.LICENCE_PLATE) == [plate]
    clock.advance(30.0)
    [timed_out] = lane.tick()
    assert timed_out.close_cause == "timeout"
