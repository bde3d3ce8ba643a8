"""The second looks of ``ocr.reader`` / ``ocr.reread`` on the real RapidOCR engine, and the rule that a
look-alike swap must be vouched for by the check digit."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from gated.bench.ocr import gate_frame
from ocr import reader, reread
from ocr.assemble import Candidate, assemble, assemble_all, decide, partials, vote_containers
from ocr.engine import Image as Frame
from ocr.engine import OcrEngine, load_engine
from ocr.reader import read_all, read_image
from ocr.reread import check_digit_after
from ocr.rods import without_rods
from ocr.textbox import Recognized, TextBox

pytest.importorskip("rapidocr")

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
SIZE = 60
REAL_PHOTOS = Path(__file__).parent / "data" / "real-photos"


def _real_photos() -> list[tuple[str, str]]:
    with (REAL_PHOTOS / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return [(row["image"], row["container_number"]) for row in csv.DictReader(handle)]


def _photo(name: str) -> Frame:
    image = cv2.imread(str(REAL_PHOTOS / "images" / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return np.ascontiguousarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return load_engine("rapidocr")


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), SIZE) if FONT.exists() else ImageFont.load_default(SIZE)


def _door(
    serial_text: str, boxed: str | None, right_side: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, TextBox]:
    """A plain door with ``serial_text`` painted and, when given, ``boxed`` inside a drawn box after
    it; also the text box a detector would give for ``serial_text`` alone."""
    image = Image.new("RGB", (1280, 720), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    font = _font()
    x0, y0, x1, y1 = draw.textbbox((200, 300), serial_text, font=font)
    draw.text((200, 300), serial_text, fill="white", font=font)
    if boxed is not None:
        bx = x1 + 30
        dx0, dy0, dx1, dy1 = draw.textbbox((bx, 300), boxed, font=font)
        draw.text((bx, 300), boxed, fill="white", font=font)
        draw.rectangle((dx0 - 12, dy0 - 12, dx1 + 12, dy1 + 12), outline="white", width=5)
        if right_side is not None:
            draw.rectangle((dx1 + 8, dy0 - 12, dx1 + 12, dy1 + 12), fill=right_side)
    frame = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    pad = 6
    return frame, TextBox.from_bbox(serial_text, 0.99, x0 - pad, y0 - pad, x1 + pad, y1 + pad)


def test_reading_a_crop_does_not_switch_detection_off(engine: OcrEngine) -> None:
    # RapidOCR keeps the use_det/use_rec switches of its last call; a recognise-only call once left
    # every later full-frame read finding nothing.
    frame, _ = _door("MSKU 413532 9", None)
    before = engine.read(frame)
    engine.recognize([frame[280:400, 180:800]])
    after = engine.read(frame)
    assert before and [box.text for box in after] == [box.text for box in before]


def test_a_boxed_check_digit_is_read_from_inside_its_box(engine: OcrEngine) -> None:
    frame, serial = _door("TGHU 581511", "1")
    (partial,) = partials([serial])
    assert partial.prefix == "TGHU581511"
    digit = check_digit_after(engine, frame, partial.last)
    assert digit is not None and digit.digit == "1"


def test_no_box_after_the_serial_gives_no_digit(engine: OcrEngine) -> None:
    frame, serial = _door("TGHU 581511", None)
    (partial,) = partials([serial])
    assert check_digit_after(engine, frame, partial.last) is None


def test_a_box_with_nothing_in_it_gives_no_digit(engine: OcrEngine) -> None:
    frame, serial = _door("TGHU 581511", " ")
    (partial,) = partials([serial])
    assert check_digit_after(engine, frame, partial.last) is None


def test_read_image_completes_a_number_whose_box_the_detector_missed(engine: OcrEngine) -> None:
    frame, _ = _door("TGHU 581511", "1")
    read = decide(read_image(engine, frame))
    assert read.container == "TGHU5815111"


def test_a_wrong_check_digit_in_the_box_is_reported_not_corrected(engine: OcrEngine) -> None:
    frame, _ = _door("TGHU 581511", "4")
    read = decide(read_image(engine, frame))
    assert read.container is None
    assert read.raw == "TGHU5815114" and not read.check_digit_valid


def _box(text: str, confidence: float = 0.99) -> TextBox:
    return TextBox.from_bbox(text, confidence, 100, 100, 100 + 40 * len(text), 150)


def test_a_swap_the_check_digit_cannot_vouch_for_is_not_trusted() -> None:
    # DFSU7638990 (check digit 0) was read as DFSU76B8990; B -> 8 gives DFSU7688990, whose check
    # digit also fits, so the check digit cannot tell 8 from 3 there.
    read = decide(assemble([_box("DFSU76B8990", 0.96)]))
    assert read.container is None
    assert read.raw == "DFSU7688990"


def test_a_swap_the_check_digit_vouches_for_is_kept() -> None:
    read = decide(assemble([_box("MSKU41353Z9", 0.99)]))
    assert read.container == "MSKU4135329"


def test_zeros_in_the_owner_code_cost_little() -> None:
    read = decide(assemble([_box("00LU 6841558", 0.97)]))
    assert read.container == "OOLU6841558"


def test_a_stray_foreign_character_after_the_serial_is_dropped_and_placed_right() -> None:
    box = TextBox.from_bbox("286324回", 0.97, 100, 100, 380, 150)
    (partial,) = partials([TextBox.from_bbox("CSQU", 0.99, 100, 40, 260, 90), box])
    assert partial.prefix == "CSQU286324"
    # The serial ends where its sixth digit ends, not after the dropped character.
    assert partial.last.cx + partial.last.length / 2 == pytest.approx(100 + 280 * 6 / 7, abs=1.0)


def test_two_containers_on_one_chassis_are_both_reported_in_reading_order() -> None:
    left = TextBox.from_bbox("MSKU 413532 9", 0.99, 100, 300, 560, 350)
    right = TextBox.from_bbox("CSQU 305438 3", 0.98, 700, 305, 1160, 355)
    found = assemble_all([right, left])
    assert [candidate.number for candidate in found] == ["MSKU4135329", "CSQU3054383"]
    assert all(decide(candidate).container is not None for candidate in found)


def test_a_second_mark_that_does_not_fit_stays_a_container_to_review() -> None:
    left = TextBox.from_bbox("MSKU 413532 9", 0.99, 100, 300, 560, 350)
    right = TextBox.from_bbox("CSQU 305438 4", 0.98, 700, 305, 1160, 355)
    found = assemble_all([left, right])
    assert [decide(candidate).container for candidate in found] == ["MSKU4135329", None]
    assert found[1].number == "CSQU3054384" and not found[1].check_digit_valid


def test_the_same_number_painted_twice_is_one_container() -> None:
    door = TextBox.from_bbox("MSKU 413532 9", 0.99, 100, 100, 560, 150)
    roof = TextBox.from_bbox("MSKU 413532 9", 0.97, 600, 500, 1060, 550)
    (only,) = assemble_all([door, roof])
    assert only.number == "MSKU4135329" and only.confidence > 0.99


def test_read_all_reads_both_boxes_of_a_chassis(engine: OcrEngine) -> None:
    image = Image.new("RGB", (1280, 720), (150, 40, 30))
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 44) if FONT.exists() else ImageFont.load_default(44)
    draw.rectangle((620, 0, 660, 720), fill=(60, 60, 60))  # the gap between the two boxes
    draw.text((80, 300), "MSKU 413532 9", fill="white", font=font)
    draw.text((760, 310), "CSQU 305438 3", fill="white", font=font)
    frame = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    found = read_all(engine, frame)
    assert [decide(candidate).container for candidate in found] == ["MSKU4135329", "CSQU3054383"]
    # read_image keeps one number per frame: two different ones split its confidence.
    assert decide(read_image(engine, frame)).container is None


def _read(number: str, confidence: float) -> Candidate:
    return Candidate(number, True, confidence, None)


def test_a_truck_with_two_boxes_gives_two_containers_over_frames_and_views() -> None:
    side = [_read("MSKU4135329", 0.95), _read("CSQU3054383", 0.9)]
    rear = [_read("CSQU3054383", 0.97)]
    found = vote_containers([side, rear, []])
    assert [candidate.number for candidate in found] == ["CSQU3054383", "MSKU4135329"]
    assert all(decide(candidate).container for candidate in found)


def test_one_box_per_frame_is_the_plain_vote() -> None:
    found = vote_containers([[_read("MSKU4135329", 0.9)], [_read("MSKU4135329", 0.85)], []])
    assert [candidate.number for candidate in found] == ["MSKU4135329"]
    assert found[0].confidence > 0.9
    assert vote_containers([[], []]) == []


def test_a_third_number_for_two_boxes_sends_the_truck_to_a_clerk() -> None:
    frames = [
        [_read("MSKU4135329", 0.95), _read("CSQU3054383", 0.9)],
        [_read("MSKU4135329", 0.9), _read("CSQU3054383", 0.9)],
        [_read("TGHU5815111", 0.9)],
    ]
    found = vote_containers(frames)
    assert len(found) == 2
    assert all(decide(candidate).container is None for candidate in found)


def test_a_chain_never_jumps_over_text_in_its_way() -> None:
    # A column read in pieces: OOLU, 6, 23233, 5. Leaving out the 6 would make OOLU + 23233 + 5
    # + a check digit re-read below: another number, one in ten times with a fitting check digit.
    column = [
        TextBox.from_bbox("OOLU", 0.99, 350, 10, 410, 265),
        TextBox.from_bbox("6", 0.99, 355, 268, 415, 300),
        TextBox.from_bbox("23233", 0.99, 360, 304, 420, 630),
        TextBox.from_bbox("5", 0.98, 365, 632, 425, 700),
    ]
    assert all(not partial.prefix.startswith("OOLU23233") for partial in partials(column))
    assert all(candidate.number != "OOLU2323355" for candidate in assemble_all(column))


class _CountingEngine:
    """The real engine, counting its full-frame looks."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self.quick_look = engine.quick_look
        self.looks: list[bool] = []

    def read(self, image: np.ndarray, *, coarse: bool = False) -> list[TextBox]:
        self.looks.append(coarse)
        return self.engine.read(image, coarse=coarse)

    def recognize(self, crops: list[np.ndarray]) -> list[object]:
        return list(self.engine.recognize(crops))


def test_a_frame_that_only_confirms_gets_the_quick_look_alone(engine: OcrEngine) -> None:
    # A check digit that does not fit leaves the frame unsettled: in full it is looked at again.
    frame, _ = _door("TGHU 581511 4", None)
    counting = _CountingEngine(engine)
    in_full = read_all(counting, frame)  # type: ignore[arg-type]
    assert counting.looks[0] is True and False in counting.looks
    counting.looks.clear()
    quick = read_all(counting, frame, quick_only=True)  # type: ignore[arg-type]
    assert counting.looks == [True]
    # What the quick look read is still reported, not dropped: it contradicts the settled frame.
    assert [c.number for c in quick] == [c.number for c in in_full] == ["TGHU5815114"]
    assert not quick[0].check_digit_valid


def test_a_box_seen_at_an_angle_is_read_upright(engine: OcrEngine) -> None:
    frame, serial = _door("TGHU 581511", "0")
    # Shear the door as a camera looking along it does: verticals lean, the box is a parallelogram.
    shear = np.array([[1.0, -0.3, 0.3 * 360], [0.0, 1.0, 0.0]], dtype=np.float32)
    sheared = cv2.warpAffine(frame, shear, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    quad = tuple((float(shear[0, 0] * x + shear[0, 1] * y + shear[0, 2]), float(y)) for x, y in serial.quad)
    (partial,) = partials([TextBox(serial.text, serial.confidence, quad)])  # type: ignore[arg-type]
    digit = check_digit_after(engine, np.ascontiguousarray(sheared), partial.last)
    assert digit is not None and digit.digit == "0"


def test_a_box_with_one_faint_side_is_found_with_softer_edges(
    engine: OcrEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One side of the box in paint barely apart from the door (worn paint, glare), seen through a
    # slightly soft lens: the first edge thresholds lose that side, the softer ones still see a box
    # drawn on all four sides.
    frame, serial = _door("TGHU 581511", "0", right_side=(75, 120, 175))
    frame = np.ascontiguousarray(cv2.GaussianBlur(frame, (0, 0), 1.5))
    (partial,) = partials([serial])
    digit = check_digit_after(engine, frame, partial.last)
    assert digit is not None and digit.digit == "0"
    monkeypatch.setattr(reread, "EDGE_LOOKS", reread.EDGE_LOOKS[:1])
    assert check_digit_after(engine, frame, partial.last) is None


def test_a_box_at_night_is_found_once_the_crop_contrast_is_stretched(
    engine: OcrEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dark door at night: the whole crop spans a few dozen grey levels. Only the box path is
    # measured here (the unboxed re-read would also catch this plain layout).
    frame, serial = _door("TGHU 581511", "1")
    frame = np.ascontiguousarray(cv2.GaussianBlur((frame * 0.1).astype(np.uint8), (0, 0), 1.5))
    (partial,) = partials([serial])
    monkeypatch.setattr(reread, "_unboxed_digit_after", lambda *_: None)
    digit = check_digit_after(engine, frame, partial.last)
    assert digit is not None and digit.digit == "1"
    monkeypatch.setattr(reread, "EDGE_LOOKS", tuple(look for look in reread.EDGE_LOOKS if not look[0]))
    assert check_digit_after(engine, frame, partial.last) is None


def test_only_paint_standing_in_the_middle_of_a_box_is_a_character() -> None:
    # The rectangle between a door post and two stripes passes for a box; inside it is bare door,
    # perhaps with the edge of a character beside the post, never a digit in the middle.
    digit = np.zeros((40, 30), dtype=np.uint8)
    cv2.putText(digit, "3", (6, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1, 3)
    edge_of_another = np.zeros((40, 30), dtype=np.uint8)
    edge_of_another[8:34, 0:5] = 1
    stripe = np.zeros((40, 30), dtype=np.uint8)
    stripe[18:22, 8:22] = 1
    assert reread._holds_a_character(digit)
    assert not reread._holds_a_character(edge_of_another)
    assert not reread._holds_a_character(stripe)
    assert not reread._holds_a_character(np.zeros((40, 30), dtype=np.uint8))


def test_accents_and_a_bar_between_letters_are_what_an_owner_code_shows() -> None:
    assert assemble([_box("BIÇU 0444593")]).number == "BICU0444593"
    assert assemble([_box("CA|U 811431 [5]")]).number == "CAIU8114315"
    # A bar beside a digit stays a separator, never a 1 or an I.
    assert assemble([_box("CSQU|305438|3")]).number == "CSQU3054383"


def test_a_stroke_before_the_owner_code_is_left_out_at_a_cost() -> None:
    clean = assemble([_box("OOLU 8624377")])
    stroked = assemble([_box("1OOLU 8624377")])
    assert stroked.number == clean.number == "OOLU8624377" and stroked.check_digit_valid
    assert stroked.confidence < clean.confidence
    # Only in front of four letters ending in a category letter: a fifth letter is no stroke.
    assert assemble([_box("LOOLUX 8624377")]).number is None


def test_a_letter_where_the_check_digit_is_sends_its_box_to_be_read_again() -> None:
    owner = TextBox.from_bbox("GESU", 0.99, 100, 100, 260, 150)
    serial = TextBox.from_bbox("727528B", 0.99, 280, 100, 560, 150)
    (partial,) = partials([owner, serial])
    assert partial.prefix == "GESU727528" and partial.letter_read
    # The serial ends where its sixth digit ends, before the letter.
    assert partial.last.chars == 6
    assert partial.last.cx + partial.last.length / 2 == pytest.approx(280 + 280 * 6 / 7, abs=1.0)
    # A digit there is a check digit read: no second reading of the box.
    assert partials([owner, TextBox.from_bbox("7275283", 0.99, 280, 100, 560, 150)]) == []


def test_the_overlapping_boxes_of_a_column_make_one_number() -> None:
    # As the detector boxed GESU / 658838 / 6 down a door post: padded along the column, so the
    # first two overlap by half a character.
    boxes = [
        TextBox("45G1", 1.0, ((30.0, 34.0), (215.0, 43.0), (214.0, 70.0), (29.0, 61.0))),
        TextBox("GESU", 0.99983, ((341.0, 37.0), (397.0, 33.0), (413.0, 277.0), (357.0, 280.0))),
        TextBox("658838", 0.99917, ((358.0, 253.0), (414.0, 250.0), (438.0, 630.0), (383.0, 634.0))),
        TextBox("6", 0.88592, ((389.0, 633.0), (437.0, 631.0), (440.0, 703.0), (392.0, 705.0))),
    ]
    read = assemble(boxes)
    assert read.number == "GESU6588386" and read.check_digit_valid


def test_a_slashed_or_barred_zero_is_a_zero() -> None:
    assert assemble([_box("CSQU 72761Ø θ")]).number == "CSQU7276100"
    assert assemble([_box("ØOLU 123456 Θ")]).number == "OOLU1234560"


def test_a_slashed_zero_in_the_box_is_read_as_zero(engine: OcrEngine) -> None:
    frame, serial = _door("CSQU 727610", "Ø")
    (partial,) = partials([serial])
    digit = check_digit_after(engine, frame, partial.last)
    assert digit is not None and digit.digit == "0"


def test_a_rod_is_taken_out_and_the_paint_over_it_stays() -> None:
    door = np.full((720, 1280, 3), (160, 90, 40), dtype=np.uint8)
    door[::90] = (130, 70, 30)  # corrugation: a darker row every 90 rows, kept as it is
    door[:, 600:622] = (175, 175, 170)  # a light grey rod, lit evenly
    door[300:350, 590:632] = (240, 240, 240)  # paint across it
    door[300:350, 300:342] = (240, 240, 240)  # and paint on bare door
    cleaned = without_rods(door).astype(int)
    rod_away_from_paint = cleaned[500:600, 604:618]
    assert np.abs(rod_away_from_paint - (160, 90, 40)).max() <= 12
    assert np.abs(cleaned[310:340, 594:628] - (160, 90, 40)).min() >= 40
    assert np.array_equal(cleaned[300:350, 300:342], door[300:350, 300:342].astype(int))
    assert np.abs(cleaned[::90, 100:200] - door[::90, 100:200].astype(int)).max() <= 3


def test_a_number_whose_boxed_3_a_rod_closes_into_a_b_is_read_without_the_rod(
    engine: OcrEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A generated rear door (bench set seed 6346, frame 275; the part around the number, put back
    # where it was in the 1280x720 frame): a light locking rod runs down the left of the boxed 3,
    # and with its edges the 3 is read as a B and swapped to 8, a check digit that does not fit.
    crop = cv2.imread(str(Path(__file__).parent / "frames" / "rod-across-boxed-3.jpg"))
    frame = np.ascontiguousarray(cv2.copyMakeBorder(crop, 150, 250, 300, 460, cv2.BORDER_REPLICATE))
    assert frame.shape == (720, 1280, 3)
    read = decide(read_image(engine, frame))
    assert read.container == "GESU7275283"
    monkeypatch.setattr("ocr.reader.without_rods", lambda image: image)
    unchanged = decide(read_image(engine, frame))
    assert unchanged.container is None and unchanged.raw == "GESU7275288"


def test_a_second_look_that_reads_a_box_differently_leaves_a_number_unsure() -> None:
    assert reader._contradicts("1804035", "'780403[")  # the 7 its stem was taken from
    assert not reader._contradicts("1804035", "180403")  # less of the same box
    assert not reader._contradicts("TCNU 180403", "TCNU180403")
    assert not reader._contradicts("1804035", "")


def test_a_number_read_without_rods_must_survive_a_second_look(engine: OcrEngine) -> None:
    # A read that changed a character (7 read as 1 once a rod was taken out of it) and fits by
    # chance: the second look at the same paint reads the 7, and the number is left unsure.
    frame, serial = _door("TCNU 780403", None)
    misread = TextBox("TCNU 180403", 0.9, serial.quad)
    candidate = Candidate("TCNU1804035", True, 0.9, None, (misread,), 0)
    assert reader._confirmed(engine, frame, [misread], candidate) == candidate
    unsure = reader._confirmed(engine, frame, [misread], candidate, always=True)
    assert unsure.number == "TCNU1804035" and unsure.confidence < 0.5
    assert decide(unsure).container is None


class _Looks:
    """The engine, counting the full looks the reader takes (each costs a detector run)."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self.full = 0

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def quick_look(self) -> bool:
        return self.engine.quick_look

    def read(self, image: Frame, *, coarse: bool = False) -> list[TextBox]:
        self.full += not coarse
        return self.engine.read(image, coarse=coarse)

    def recognize(self, crops: Sequence[Frame]) -> list[Recognized]:
        return self.engine.recognize(crops)


@pytest.mark.parametrize(("name", "number"), _real_photos())
def test_a_real_gate_photo_at_1080p_is_read_with_one_full_look_at_most(
    engine: OcrEngine, name: str, number: str
) -> None:
    # Real gate photos (tests/data/real-photos) that the quick look alone does not settle once
    # scaled to a 1920x1080 camera's frame; the re-reads of a whole frame (contrast evened out,
    # rods taken out) are what made such frames take seconds.
    looks = _Looks(engine)
    assert decide(read_image(looks, gate_frame(_photo(name)))).container == number
    assert looks.full <= 1
    assert decide(read_image(engine, _photo(name))).container == number


@pytest.mark.parametrize("name", ["2010141557120080810.jpg", "2010141718465080810.jpg"])
def test_an_owner_code_the_quick_look_missed_is_found_round_its_serial(engine: OcrEngine, name: str) -> None:
    # At 1080p the quick look sees the serial but misses the owner code (CADU) or misreads it
    # (DRYI): a closer look round the serial settles the number without a full look.
    looks = _Looks(engine)
    found = read_all(looks, gate_frame(_photo(name)))
    assert [candidate.number for candidate in found] == [dict(_real_photos())[name]]
    assert reader.settled(found) and looks.full == 0


@pytest.mark.parametrize("name", ["2009251640292080810.jpg", "2010141712555080810.jpg"])
def test_the_full_look_at_a_1080p_photo_joins_its_owner_code_and_serial(engine: OcrEngine, name: str) -> None:
    # Run over the whole 1920x1080 frame, the detector drew an owner code's box into its serial's
    # and the two no longer made a number; at its own size the boxes stand apart again.
    number = dict(_real_photos())[name]
    found = assemble_all(engine.read(gate_frame(_photo(name))))
    assert [candidate.number for candidate in found if candidate.check_digit_valid] == [number]
