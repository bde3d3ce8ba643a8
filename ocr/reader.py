"""One frame in, container-number candidates out: the one path the CLI, the benchmark and the
cameras read a frame by, so every path reads numbers the same way.

A quick look first, then a closer look round each serial it saw, and the full look and the
re-reads (check digit, tall boxes, re-cut boxes, the door's rods taken out) only while no number
is settled; README.md, "How a frame is read", lists the steps (eight). The check digit is never
chosen to make a number fit: it is read, and a read that does not fit is reported as not fitting."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from ocr.assemble import (
    DEFAULT_MIN_CONFIDENCE,
    SLASHED_ZEROS,
    Candidate,
    assemble,
    assemble_all,
    combine,
    completed,
    marks,
    partials,
    same_place,
    size_type_in,
)
from ocr.engine import Image, OcrEngine, check_image
from ocr.reread import check_digit_after, equalized, reread_boxes, reread_columns
from ocr.rods import without_rods
from ocr.textbox import Quad, TextBox

MAX_PARTIALS = 3
"""Owner code + serial candidates whose check digit is re-read (each costs one or two crops)."""
MAX_SECOND_LOOKS = 12
"""Boxes re-read in the last step (one recogniser call each, on frames nothing else could read)."""
CONTRADICTED = 0.5
"""What is left of a number's confidence when a second look reads one of its boxes differently."""
MAX_REGIONS = 3
"""Serial-like boxes of the quick look whose surroundings get a closer look before the full look."""
REGION_MARGIN = 1.0
"""How far round such a box its region reaches, in the box's longer side: an owner code before or
above a serial, its check digit's box after it and its size code below all lie within it."""
MAX_REGION_SHARE = 0.25
"""Regions covering more of the frame than this are left to the full look (as costly by then)."""
_SERIAL_LIKE = re.compile(r"(?<![\d.,])\d{6,7}(?![\d.,])")
"""Six or seven digits on their own (a serial, with or without its check digit); not a weight
(71.650, or 71650 read on into its unit as 71650185), not a phone number."""


def read_image(engine: OcrEngine, image: Image) -> Candidate:
    """The container number in ``image`` (``assemble``'s ``NOTHING`` when there is none); a frame
    showing two containers gives the better read with its confidence split (see ``read_all``).

    Raises ``OcrError`` when the image is not a BGR frame or the engine fails."""
    return combine(read_all(engine, image))


def read_all(engine: OcrEngine, image: Image, *, quick_only: bool = False) -> list[Candidate]:
    """Every container number in ``image``, in reading order (two 20 ft boxes on one chassis give
    two); an empty list when there is none.

    With ``quick_only`` (another frame of the same truck has already settled its number, and this
    one only confirms or contradicts it) the frame gets the quick look alone, whatever it finds.

    Raises ``OcrError`` when the image is not a BGR frame or the engine fails."""
    frame = check_image(image)
    # A quick look first: it reads most numbers at about 70% of the full look's cost. Only a frame
    # where it found no number that fits is looked at again in full (small or faint text), so the
    # quick look never decides alone that there is nothing to read.
    found: list[Candidate] = []
    if engine.quick_look:
        quick = engine.read(frame, coarse=True)
        found, unsettled = _numbers(engine, frame, quick)
        if quick_only or (found and unsettled == 0 and all(_settled(candidate) for candidate in found)):
            return found
        # What the quick look missed next to a serial it saw (an owner code, a misread letter, the
        # check digit's box) is mostly there at the frame's own resolution: the serial's surroundings
        # are looked at closely, at a fraction of a full look's cost, and settle the frame when they
        # settle every number found, as the quick look would have.
        closer = _region_look(engine, frame, quick)
        if closer is not None:
            near, unsettled = _numbers(engine, frame, closer)
            if near and unsettled == 0 and all(_settled(candidate) for candidate in near):
                return near
    # Anything left open (no number, one whose check digit does not fit or that is not sure, an
    # owner code and serial whose check digit could not be read: perhaps a second box on the
    # chassis) gets the full look, whose readings replace the quick look's in the same place.
    boxes = engine.read(frame)
    more, _ = _numbers(engine, frame, boxes)
    found = marks([*more, *(quick for quick in found if not any(same_place(quick, full) for full in more))])
    if not found and not partials(boxes):
        # Nothing like a number at all: paint faint at night or under dirt is often found once the
        # frame's contrast is evened out locally (CLAHE); the rest of the reading runs on that frame.
        even = equalized(frame)
        even_boxes = engine.read(even)
        even_found, _ = _numbers(engine, even, even_boxes)
        if even_found or partials(even_boxes):
            frame, boxes, found = even, even_boxes, even_found
    if not any(candidate.check_digit_valid for candidate in found):
        # Only now look again at tall boxes: the recogniser reads most columns well on its own,
        # and a second look at one that it read right can only add a rival reading.
        columns = reread_columns(engine, frame, boxes)
        if columns != boxes:
            found = marks([*found, *_numbers(engine, frame, columns)[0]])
    if not any(candidate.check_digit_valid for candidate in found):
        # Last, a second look at every box that could hold part of a number: re-cut with a wider
        # margin and even contrast, a box often gives the letter the first cut lost (CAU -> CAIU).
        # Its readings replace the first ones where both read.
        again = reread_boxes(
            engine, frame, [box for box in boxes if _could_be_number(box)][:MAX_SECOND_LOOKS]
        )
        if again:
            second, _ = _numbers(engine, frame, [again.get(box, box) for box in boxes])
            kept = [first for first in found if not any(same_place(first, other) for other in second)]
            found = marks([*second, *kept])
    if not any(_settled(candidate) for candidate in found):
        # A door's locking rod across the marks closes a 3 into a B or runs on from a check digit's
        # box; the frame with its rods taken out is looked at in full once more, and its readings
        # replace the others in the same place. Taking a rod out can also take part of a character
        # with it (a 7's stem read as 1), and a read that changed one character fits by chance one
        # time in ten, so every number read there must survive a second look, as a swap must.
        clean = without_rods(frame)
        unrodded, _ = _numbers(engine, clean, engine.read(clean), confirm_all=True)
        kept = [first for first in found if not any(same_place(first, other) for other in unrodded)]
        found = marks([*unrodded, *kept])
    return found


def _region_look(engine: OcrEngine, frame: Image, boxes: list[TextBox]) -> list[TextBox] | None:
    """``boxes`` with those round their serial-like boxes replaced by what a quick look at each
    serial's surroundings, cut from ``frame``, reads; None when there is no such box or the regions
    would cover too much of the frame."""
    rows, cols = frame.shape[:2]
    anchors = sorted(
        (box for box in boxes if _SERIAL_LIKE.search(_joined(box.text))), key=lambda box: -box.confidence
    )[:MAX_REGIONS]
    regions: list[tuple[int, int, int, int]] = []
    for box in anchors:
        x0, y0, x1, y1 = box.bbox
        margin = REGION_MARGIN * max(x1 - x0, y1 - y0)
        region = (
            max(0, int(x0 - margin)),
            max(0, int(y0 - margin)),
            min(cols, int(x1 + margin) + 1),
            min(rows, int(y1 + margin) + 1),
        )
        if region[2] - region[0] >= 16 and region[3] - region[1] >= 16:
            regions.append(region)
    area = sum((right - left) * (bottom - top) for left, top, right, bottom in regions)
    if not regions or area > MAX_REGION_SHARE * rows * cols:
        return None
    looked: list[TextBox] = []
    for left, top, right, bottom in regions:
        crop = np.ascontiguousarray(frame[top:bottom, left:right])
        looked.extend(
            TextBox(box.text, box.confidence, _shifted(box.quad, left, top))
            for box in engine.read(crop, coarse=True)
        )

    def outside(box: TextBox) -> bool:
        x0, y0, x1, y1 = box.bbox
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return not any(left <= cx < right and top <= cy < bottom for left, top, right, bottom in regions)

    return [*looked, *(box for box in boxes if outside(box))]


def _shifted(quad: Quad, dx: float, dy: float) -> Quad:
    p0, p1, p2, p3 = ((x + dx, y + dy) for x, y in quad)
    return p0, p1, p2, p3


def _joined(text: str) -> str:
    """``text`` without its spaces (a serial is often read with a gap before its check digit)."""
    return "".join(text.translate(SLASHED_ZEROS).split())


def _plain(text: str) -> str:
    """``text``'s ASCII letters and digits, upper case, slashed zeros as zeros."""
    return "".join(
        char for char in text.translate(SLASHED_ZEROS).upper() if char.isascii() and char.isalnum()
    )


def _could_be_number(box: TextBox) -> bool:
    characters = [char for char in box.text if char.isalnum()]
    return 3 <= len(characters) <= 14 and sum(char.isdigit() for char in characters) <= 8


def settled(found: list[Candidate]) -> bool:
    """True when ``found`` (one frame's read) holds numbers and every one is settled."""
    return bool(found) and all(_settled(candidate) for candidate in found)


def _settled(candidate: Candidate) -> bool:
    return candidate.check_digit_valid and candidate.confidence >= DEFAULT_MIN_CONFIDENCE


def _numbers(
    engine: OcrEngine, frame: Image, boxes: list[TextBox], *, confirm_all: bool = False
) -> tuple[list[Candidate], int]:
    """The containers in ``boxes``, and how many owner code + serial pieces were left without a
    check digit (neither part of a number read nor completed from a boxed digit). With
    ``confirm_all`` every fitting number must survive a second look (``_confirmed``), not only
    one made with look-alike swaps."""
    found = [
        _confirmed(engine, frame, boxes, candidate, always=confirm_all)
        if candidate.check_digit_valid
        else candidate
        for candidate in assemble_all(boxes)
    ]
    settled = {
        candidate.number[:10] for candidate in found if candidate.number and candidate.check_digit_valid
    }
    unsettled = 0
    for partial in partials(boxes)[:MAX_PARTIALS]:
        if partial.prefix in settled:
            continue
        digit = check_digit_after(engine, frame, partial.last)
        if digit is None:
            unsettled += 1
            continue
        number = completed(partial, digit.digit, digit.confidence, size_type_in(boxes, partial))
        if partial.letter_read:
            # The box read again replaces the letter swapped for a digit: a read beats a guess.
            found = [
                candidate
                for candidate in found
                if candidate.number is None or candidate.number[:10] != partial.prefix
            ]
        found.append(
            _confirmed(engine, frame, boxes, number, always=confirm_all)
            if number.check_digit_valid
            else number
        )
    return marks(found), unsettled


def _confirmed(
    engine: OcrEngine, frame: Image, boxes: list[TextBox], candidate: Candidate, *, always: bool = False
) -> Candidate:
    """``candidate`` as it is when it was read as painted; when it needed look-alike swaps (or with
    ``always``), only if a second look at its boxes does not read a different number.

    A swap is where misreads hide (a 3 read as B and swapped to 8 still makes a number, and one in
    ten of those has a fitting check digit), so a swapped number must survive a second look: the same
    boxes re-cut and re-read. If that look reads another number, the two readings stand against each
    other and the confidence is split between them; if it reads nothing usable, the first reading
    stands as it was."""
    if candidate.swaps == 0 and not always:
        return candidate
    again = reread_boxes(engine, frame, candidate.boxes)
    if not again:
        return candidate
    second = assemble([again.get(box, box) for box in boxes])
    if second.number is not None and second.number != candidate.number:
        return combine([candidate, second])
    if always and any(_contradicts(box.text, again[box].text) for box in candidate.boxes if box in again):
        # The second look read a box differently, not only less of it (7804 where 1804 was read):
        # too little to make a number of its own, enough to leave this one unsure.
        return replace(candidate, confidence=candidate.confidence * CONTRADICTED)
    return candidate


def _contradicts(first: str, second: str) -> bool:
    """True when ``second`` (a box read again) is not ``first`` or a part of it, letters and digits
    only."""

    kept = _plain(second)
    return bool(kept) and kept not in _plain(first)
