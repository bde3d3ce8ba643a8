"""A visit a frames camera is still reading when the next truck arrives waits for its read, within
``ocr_wait``; only readings that name it join it. Manual clock, the real correlator."""

from __future__ import annotations

from gated.clock import ManualClock
from gated.correlator import MAX_WAITING, LaneCorrelator, LaneRules
from gated.model import Kind, Reading, Source, Visit

RULES = LaneRules(
    lane="lane-1",
    require=frozenset({"ocr", "rpm"}),
    visit_timeout=60.0,
    settle=1.0,
    ocr_wait=20.0,
    named_readers=frozenset({"cam-1"}),
    named_triggers=frozenset({"rpm:occupancy", "rfid:epc"}),
)
BOX = "MSKU4135329"


def portal(clock: ManualClock, source: Source, value: object) -> Reading:
    return Reading("lane-1", Kind.RPM, "rpm-1", source, value, clock.now())  # type: ignore[arg-type]


def camera(clock: ManualClock, visit: str, source: Source, value: object) -> Reading:
    """What the frames camera reports: bound to the visit whose trigger it read."""
    return Reading("lane-1", Kind.OCR, "cam-1", source, value, clock.now(), visit=visit)  # type: ignore[arg-type]


def truck_passes(lane: LaneCorrelator, clock: ManualClock) -> Visit:
    """A truck through the portal (the camera's read still under way); returns its visit."""
    _, _, opened = lane.accept(portal(clock, Source.OCCUPANCY, True))
    assert opened is not None
    lane.accept(portal(clock, Source.SCREENING, "clear"))
    lane.accept(portal(clock, Source.OCCUPANCY, False))
    return opened


def test_a_superseded_visit_waits_for_its_read_and_closes_complete() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    first = truck_passes(lane, clock)
    clock.advance(3.0)
    _, closed, second = lane.accept(portal(clock, Source.OCCUPANCY, True))  # the next truck
    assert closed == [] and second is not None and lane.visit is not None and lane.visit.id == second.id
    assert list(lane.waiting) == [first.id]
    clock.advance(5.0)
    assert lane.tick() == []
    number, closed, opened = lane.accept(camera(clock, first.id, Source.CONTAINER_NUMBER, BOX))
    assert number.visit == first.id and closed == [] and opened is None
    lane.accept(camera(clock, first.id, Source.PASSAGE_END, 1))
    clock.advance(0.5)
    assert lane.tick() == []  # settling: its size/type or plate may still come
    clock.advance(0.6)
    [decided] = lane.tick()
    assert decided.id == first.id and decided.close_cause == "complete"
    assert [r.value for r in decided.of_source(Source.CONTAINER_NUMBER)] == [BOX]
    # The next truck's visit never saw the first one's read.
    assert lane.visit is not None and lane.visit.id == second.id
    assert not lane.visit.of_source(Source.CONTAINER_NUMBER) and not lane.waiting


def test_without_its_read_it_is_closed_superseded_once_the_wait_is_over() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    first = truck_passes(lane, clock)
    lane.accept(portal(clock, Source.OCCUPANCY, True))
    clock.advance(19.9)
    assert lane.tick() == []
    clock.advance(0.2)
    [decided] = lane.tick()
    assert decided.id == first.id and decided.close_cause == "superseded"
    # The read that comes after that joins no visit: not the closed one, not the next truck's.
    late, closed, opened = lane.accept(camera(clock, first.id, Source.CONTAINER_NUMBER, BOX))
    assert late.visit == first.id and closed == [] and opened is None
    assert lane.visit is not None and not lane.visit.of_source(Source.CONTAINER_NUMBER)


def test_a_read_without_the_rest_of_the_truck_closes_superseded_after_settling() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    _, _, first = lane.accept(portal(clock, Source.OCCUPANCY, True))  # no screening came
    assert first is not None
    lane.accept(portal(clock, Source.OCCUPANCY, False))
    lane.accept(portal(clock, Source.OCCUPANCY, True))
    lane.accept(camera(clock, first.id, Source.CONTAINER_NUMBER, BOX))
    lane.accept(camera(clock, first.id, Source.PASSAGE_END, 1))
    clock.advance(1.0)
    [decided] = lane.tick()
    assert decided.close_cause == "superseded" and decided.of_source(Source.CONTAINER_NUMBER)


def test_a_visit_already_read_or_not_read_by_a_frames_camera_closes_at_once() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    first = truck_passes(lane, clock)
    lane.accept(camera(clock, first.id, Source.PASSAGE_END, 1))
    _, closed, _ = lane.accept(portal(clock, Source.OCCUPANCY, True))
    assert [visit.id for visit in closed] == [first.id] and closed[0].close_cause == "superseded"
    # A visit the camera never reads (opened by a smart camera's read) has nothing to wait for.
    plain = LaneCorrelator(RULES, clock)
    _, _, by_read = plain.accept(
        Reading("lane-1", Kind.OCR, "ocr-2", Source.CONTAINER_NUMBER, BOX, clock.now())
    )
    plain.accept(Reading("lane-1", Kind.OCR, "ocr-2", Source.PASSAGE_END, 1, clock.now()))
    assert by_read is not None
    _, closed, _ = plain.accept(
        Reading("lane-1", Kind.OCR, "ocr-2", Source.CONTAINER_NUMBER, BOX, clock.now())
    )
    assert [visit.id for visit in closed] == [by_read.id]


def test_no_wait_when_ocr_wait_is_zero() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(
        LaneRules(
            lane="lane-1",
            require=RULES.require,
            visit_timeout=60.0,
            settle=1.0,
            ocr_wait=0.0,
            named_readers=RULES.named_readers,
            named_triggers=RULES.named_triggers,
        ),
        clock,
    )
    first = truck_passes(lane, clock)
    _, closed, _ = lane.accept(portal(clock, Source.OCCUPANCY, True))
    assert [visit.id for visit in closed] == [first.id] and not lane.waiting


def test_a_named_read_never_starts_a_new_truck() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    first = truck_passes(lane, clock)
    lane.accept(camera(clock, first.id, Source.PASSAGE_END, 1))
    # A second camera's read of the same truck after the first one's passage end joins it.
    again, closed, opened = lane.accept(camera(clock, first.id, Source.CONTAINER_NUMBER, BOX))
    assert again.visit == first.id and closed == [] and opened is None


def test_shutdown_closes_the_waiting_visit_too() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    waiting = truck_passes(lane, clock)
    _, _, second = lane.accept(portal(clock, Source.OCCUPANCY, True))
    assert second is not None
    closed = lane.close_open("shutdown")
    assert [(visit.id, visit.close_cause) for visit in closed] == [
        (waiting.id, "shutdown"),
        (second.id, "shutdown"),
    ]
    assert not lane.waiting and lane.visit is None


def test_a_burst_of_trucks_keeps_at_most_max_waiting_visits_and_closes_the_oldest() -> None:
    clock = ManualClock()
    lane = LaneCorrelator(RULES, clock)
    visits = [truck_passes(lane, clock)]
    superseded: list[Visit] = []
    for _ in range(MAX_WAITING + 3):  # each next truck sets the one before aside, unread
        clock.advance(0.1)
        _, closed, opened = lane.accept(portal(clock, Source.OCCUPANCY, True))
        assert opened is not None
        superseded.extend(closed)
        visits.append(opened)
        lane.accept(portal(clock, Source.OCCUPANCY, False))
    assert len(lane.waiting) == MAX_WAITING
    assert [visit.id for visit in superseded] == [visit.id for visit in visits[:3]]
    assert all(visit.close_cause == "superseded" for visit in superseded)
    assert list(lane.waiting) == [visit.id for visit in visits[3:-1]]
