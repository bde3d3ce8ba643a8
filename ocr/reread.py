"""Second looks at parts of a frame the text detector got wrong.

Two layouts defeat a detector + line recogniser built for horizontal text:

- a check digit painted inside a box: the box is often not detected at all, or its frame is read as
  another character ("55" for a boxed 5). The digit is re-read from the crop just after the serial,
  with the box's frame lines painted over first.
- a number painted down a door post, one character under the other: the detector returns one tall
  box and the recogniser reads it as a garbled line. The column is cut into characters by its row
  profile and the characters are laid side by side, so the recogniser sees an ordinary line.

Crops are cut with a perspective warp along the text's own direction, so slanted views stay upright.
Nothing here guesses: a re-read that does not give exactly what the layout needs is dropped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ocr.assemble import SLASHED_ZEROS, Span
from ocr.engine import Image, OcrEngine
from ocr.textbox import TextBox

COLUMN_RATIO = 2.5
"""A box at least this many times taller than wide is read as a column of characters."""
MIN_CROP_PX = 8
MIN_DIGIT_CONFIDENCE = 0.75
EDGE_LOOKS = ((False, 40, 120), (False, 20, 60), (True, 40, 120))
"""How the edges of a check digit box are looked for, in turn: (contrast stretched first, Canny low
and high threshold). A side painted close to the door's colour is too faint for the first pair; at
night the whole crop spans a few dozen grey levels until it is stretched to the full range."""
STRETCH_PERCENTILES = (1.0, 99.0)
FRAME_INSET = (0.18, 0.14)
"""At most how much of a check digit box's width and height is cut off each side as its frame."""
FRAME_LINE_SHARE = 0.4
"""A column (row) of a box painted along at least this share of its length is a line of its frame."""
MIN_CHARACTER_HEIGHT = 0.5
"""The least share of a box's inside height the paint of a digit in it reaches over."""
MIN_FRAME_FILL = 0.8
"""How much of a check digit box's outline its four corners must cover (a round digit: about 2/3)."""
RIVAL_READ_CONFIDENCE = 0.3
"""A read of a box's inside at least this sure counts as a rival when it differs from the other."""
MIN_UNBOXED_DIGIT_CONFIDENCE = 0.9
"""A re-read check digit below this is no reading: the recogniser says "1" at 0.5 for bare paint."""


@dataclass(frozen=True, slots=True)
class Digit:
    """A check digit re-read from its crop."""

    digit: str
    confidence: float


def _crop(
    image: Image, cx: float, cy: float, x_axis: tuple[float, float], half_w: float, half_h: float
) -> Image | None:
    """The rectangle centred on (cx, cy) whose width runs along ``x_axis``, warped upright."""
    width, height = round(2 * half_w), round(2 * half_h)
    if width < MIN_CROP_PX or height < MIN_CROP_PX:
        return None
    ax, ay = x_axis
    bx, by = -ay, ax
    corners = np.array(
        [
            (cx - ax * half_w - bx * half_h, cy - ay * half_w - by * half_h),
            (cx + ax * half_w - bx * half_h, cy + ay * half_w - by * half_h),
            (cx + ax * half_w + bx * half_h, cy + ay * half_w + by * half_h),
        ],
        dtype=np.float32,
    )
    rows, cols = image.shape[:2]
    inside = (corners[:, 0] > -half_w) & (corners[:, 0] < cols + half_w)
    inside &= (corners[:, 1] > -half_h) & (corners[:, 1] < rows + half_h)
    if not inside.all():
        return None
    target = np.array([(0, 0), (width, 0), (width, height)], dtype=np.float32)
    matrix = cv2.getAffineTransform(corners, target)
    warped = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(warped, dtype=np.uint8)


def _upright_axis(span: Span) -> tuple[float, float]:
    """The image direction that should run left to right in a crop of ``span``'s surroundings."""
    if span.vertical:
        # Characters stacked down a post stand upright: the crop's x runs across the column.
        return span.uy, -span.ux
    return span.ux, span.uy


def _ink_mask(grey: Image) -> Image:
    """Pixels of paint that differ from the background, whichever is darker (Otsu threshold)."""
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([binary[0, :], binary[-1, :], binary[:, 0], binary[:, -1]])
    background_is_white = np.count_nonzero(border) * 2 > border.size
    ink = binary == 0 if background_is_white else binary == 255
    return np.asarray(ink, dtype=np.uint8)


def _inside_frame(crop: Image, char_height: float, serial_end: tuple[int, float]) -> Image | None:
    """What lies inside the box drawn round a check digit, or None when no such box is in ``crop``.

    The box is the four-cornered outline about one and a half character heights tall whose centre
    lies past the serial's end (``serial_end``: the crop's axis, 0 for x or 1 for y, and where on
    it the serial surely ends), so no round digit of the serial is taken for it; its inside is cut where
    its frame's lines end so none of the frame is left for the recogniser to read as another character."""
    grey = np.asarray(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    looks = {False: cv2.GaussianBlur(grey, (3, 3), 0)}
    corners = None
    for stretch, low, high in EDGE_LOOKS:
        if stretch not in looks:
            looks[stretch] = cv2.GaussianBlur(_stretched(grey), (3, 3), 0)
        edges = cv2.dilate(cv2.Canny(looks[stretch], low, high), np.ones((2, 2), np.uint8))
        corners = _frame_corners(edges, char_height, serial_end)
        if corners is not None:
            break
    if corners is None:
        return None
    return _upright_inside(crop, grey, corners)


def _stretched(grey: Image) -> Image:
    """``grey`` with its darkest and brightest percent pulled out to black and white."""
    low, high = np.percentile(grey, STRETCH_PERCENTILES)
    scaled = (grey.astype(np.float32) - low) * (255.0 / max(1.0, float(high - low)))
    return np.ascontiguousarray(np.clip(scaled, 0, 255), dtype=np.uint8)


def _frame_corners(
    edges: npt.NDArray[Any], char_height: float, serial_end: tuple[int, float]
) -> npt.NDArray[Any] | None:
    """The four corners of the largest drawn box outline in ``edges`` past ``serial_end``."""
    axis, end = serial_end
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    best: tuple[float, npt.NDArray[Any]] | None = None
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if not (0.7 * char_height <= h <= 2.2 * char_height and 0.45 * h <= w <= 1.3 * h):
            continue
        if (x + w / 2, y + h / 2)[axis] < end:
            continue
        hull = cv2.convexHull(contour)
        approx = cv2.approxPolyDP(hull, 0.08 * cv2.arcLength(hull, True), True)
        # A drawn box (even sheared by the view, or with the digit's edges run into its frame) is
        # nearly its own four-cornered outline; four corners put on a round digit (0, 8, 6) cover
        # only about two thirds of it.
        hull_area = cv2.contourArea(hull)
        fill = cv2.contourArea(approx) / hull_area if hull_area > 0 else 0.0
        if len(approx) != 4 or fill < MIN_FRAME_FILL or not _sides_drawn(edges, approx.reshape(4, 2)):
            continue
        if best is None or fill * w * h > best[0]:
            best = (fill * w * h, approx.reshape(4, 2))
    return None if best is None else best[1]


def _upright_inside(crop: Image, grey: Image, corners: npt.NDArray[Any]) -> Image | None:
    """The inside of the box with ``corners`` in ``crop`` (``grey``: the crop in grey), upright and
    without its frame, or None when no character stands in it."""
    _, _, w, h = cv2.boundingRect(corners.astype(np.int32))
    # The box seen at an angle is a sheared quadrilateral, and so is the digit in it: warped back to
    # a rectangle, the digit stands upright again (a sheared 0 is read at 0.65, upright at 0.8).
    matrix = cv2.getPerspectiveTransform(
        _clockwise_from_top_left(corners), np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float32)
    )
    upright = cv2.warpPerspective(
        crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    # Paint is told from door on the whole crop (mostly door, with the serial's digits in it), then
    # seen through the same warp; the frame is cut off where its lines end on each side, so a digit
    # painted close to its frame keeps its edges (cut at a fixed inset, a 3 lost its arcs' ends
    # and was read as B).
    paint = np.asarray(
        cv2.warpPerspective(
            _ink_mask(grey),
            matrix,
            (w, h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_REPLICATE,
        ),
        dtype=np.uint8,
    )
    left, top, right, bottom = _frame_widths(paint)
    if not _holds_a_character(paint[top : h - bottom, left : w - right]):
        return None
    inside = upright[top : h - bottom, left : w - right]
    if inside.shape[0] < MIN_CROP_PX // 2 or inside.shape[1] < MIN_CROP_PX // 2:
        return None
    edge = np.concatenate([inside[0], inside[-1], inside[:, 0], inside[:, -1]])
    background = [int(value) for value in np.median(edge, axis=0)]
    pad = max(4, round(0.3 * inside.shape[0]))
    framed = cv2.copyMakeBorder(inside, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=background)
    return np.ascontiguousarray(framed, dtype=np.uint8)


def _holds_a_character(paint: Image) -> bool:
    """True when the paint inside a box stands in its middle and reaches over most of its height,
    as a painted digit does. The rectangle between a door post and two stripes looks like a box
    too; inside it is bare door, perhaps with the edge of a character beside the post."""
    rows, cols = paint.shape[:2]
    ys, xs = np.nonzero(paint)
    if rows == 0 or cols == 0 or len(xs) == 0:
        return False
    middle = (int(xs.min()) + int(xs.max())) / 2 / cols
    height = int(ys.max()) - int(ys.min()) + 1
    return bool(0.25 <= middle <= 0.75 and height >= MIN_CHARACTER_HEIGHT * rows)


def _frame_widths(paint: Image) -> tuple[int, int, int, int]:
    """How far the frame's lines reach in from the left, top, right and bottom of an upright box
    (``paint``: 1 where paint is), each with a small margin and within ``FRAME_INSET`` at most.

    A line of the frame is a column (or row) painted along most of its length; the frame ends at
    the first one inward that is not. With the box's corners found inside its frame, no column is,
    and only the margin is cut."""
    rows, cols = paint.shape[:2]
    down_columns = paint.mean(axis=0)
    along_rows = paint.mean(axis=1)

    def reach(profile: npt.NDArray[Any], limit: int) -> int:
        depth = 0
        while depth < limit and profile[depth] >= FRAME_LINE_SHARE:
            depth += 1
        return min(limit, depth + max(1, round(0.03 * len(profile))))

    max_x, max_y = round(FRAME_INSET[0] * cols), round(FRAME_INSET[1] * rows)
    return (
        reach(down_columns, max_x),
        reach(along_rows, max_y),
        reach(down_columns[::-1], max_x),
        reach(along_rows[::-1], max_y),
    )


def _clockwise_from_top_left(corners: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """The four ``corners`` of a quadrilateral ordered top left, top right, bottom right, bottom left."""
    points = corners.astype(np.float32)
    total = points.sum(axis=1)
    difference = np.diff(points, axis=1).ravel()
    return np.array(
        [
            points[np.argmin(total)],
            points[np.argmin(difference)],
            points[np.argmax(total)],
            points[np.argmax(difference)],
        ],
        dtype=np.float32,
    )


def _sides_drawn(
    edges: npt.NDArray[Any], corners: npt.NDArray[Any], samples: int = 24, share: float = 0.75
) -> bool:
    """True when each side between ``corners`` runs along edge pixels for most of its length: a
    drawn frame does, while the outline put round a glyph (a bold 1 with its flag and foot) crosses
    empty paint on at least one side."""
    rows, cols = edges.shape[:2]
    near = cv2.dilate(edges, np.ones((5, 5), np.uint8))
    for index in range(4):
        (x0, y0), (x1, y1) = corners[index], corners[(index + 1) % 4]
        hits = 0
        for step in range(samples):
            t = (step + 0.5) / samples
            x = min(cols - 1, max(0, round(x0 + (x1 - x0) * t)))
            y = min(rows - 1, max(0, round(y0 + (y1 - y0) * t)))
            hits += bool(near[y, x])
        if hits < share * samples:
            return False
    return True


def _pad(crop: Image, fraction: float = 0.25) -> Image:
    pad = max(2, round(fraction * crop.shape[0]))
    return np.asarray(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE), dtype=np.uint8)


def check_digit_after(engine: OcrEngine, image: Image, last: Span) -> Digit | None:
    """The single digit painted inside a box just after the serial ``last`` ends (or, with no box
    there, painted on its own just after it), or None when there is no clear digit."""
    pitch = last.length / max(1, last.chars)
    # From inside the last serial character (piece lengths are estimated from character counts)
    # to well past where the box usually sits; the box is then found by its outline.
    along_start = last.length / 2 - 2.0 * pitch
    along_end = last.length / 2 + 3.0 * pitch
    middle = (along_start + along_end) / 2
    cx, cy = last.cx + last.ux * middle, last.cy + last.uy * middle
    half_along = (along_end - along_start) / 2
    half_across = 0.85 * last.thickness
    if last.vertical:
        crop = _crop(image, cx, cy, _upright_axis(last), half_across, half_along)
    else:
        crop = _crop(image, cx, cy, _upright_axis(last), half_along, half_across)
    if crop is None:
        return None
    # The crop starts two characters before the serial's end, along x (or y down a post). Where
    # the piece holds several characters its end is estimated from their count and may be one
    # character off; a piece of one character ends where its box does (and a box round that one
    # character is the piece itself, never the check digit's box after it).
    slack = pitch if last.chars > 1 else 0.0
    serial_end = (1 if last.vertical else 0, 2.0 * pitch - slack)
    inside = _inside_frame(crop, char_height=0.8 * last.thickness, serial_end=serial_end)
    if inside is None:
        return _unboxed_digit_after(engine, image, last)
    # Read in colour and in even grey: paint on a coloured door often reads surer without its hue.
    # Both must agree on the digit (or one read nothing at all) for either read to count.
    grey = cv2.cvtColor(cv2.cvtColor(inside, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    reads = engine.recognize([inside, np.ascontiguousarray(grey, dtype=np.uint8)])
    digits = {
        (text, read.confidence)
        for read in reads
        if (text := "".join(char for char in read.text.translate(SLASHED_ZEROS) if char.isalnum()))
        and read.confidence >= RIVAL_READ_CONFIDENCE
    }
    if len({text for text, _ in digits}) != 1:
        return None
    text, confidence = max(digits, key=lambda item: item[1])
    if len(text) != 1 or not text.isdigit() or confidence < MIN_DIGIT_CONFIDENCE:
        return None
    return Digit(text, confidence)


def _unboxed_digit_after(engine: OcrEngine, image: Image, last: Span) -> Digit | None:
    """A check digit painted without a box, a little apart from the serial (the detector left it
    out): the one character in the space of about two characters just after the serial. Only a
    sure single digit counts; the check digit itself then tells whether the number fits."""
    pitch = last.length / max(1, last.chars)
    along_start = last.length / 2 + 0.15 * pitch
    along_end = last.length / 2 + 2.4 * pitch
    middle = (along_start + along_end) / 2
    cx, cy = last.cx + last.ux * middle, last.cy + last.uy * middle
    half_along = (along_end - along_start) / 2
    half_across = 0.6 * last.thickness
    axis = _upright_axis(last)
    crop = (
        _crop(image, cx, cy, axis, half_across, half_along)
        if last.vertical
        else _crop(image, cx, cy, axis, half_along, half_across)
    )
    if crop is None:
        return None
    (read,) = engine.recognize([_pad(crop)])
    text = "".join(char for char in read.text.translate(SLASHED_ZEROS) if not char.isspace())
    if len(text) != 1 or not text.isdigit() or read.confidence < MIN_UNBOXED_DIGIT_CONFIDENCE:
        return None
    return Digit(text, read.confidence)


def _rows_of_characters(ink: Image) -> list[tuple[int, int]]:
    """Row ranges holding one character each, from the column's row profile."""
    rows, cols = ink.shape
    inked = ink.sum(axis=1) > max(1, 0.06 * cols)
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for row, on in enumerate(inked):
        if on and start is None:
            start = row
        elif not on and start is not None:
            runs.append((start, row))
            start = None
    if start is not None:
        runs.append((start, rows))
    merged: list[tuple[int, int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < max(1, round(0.06 * cols)):
            merged[-1] = (merged[-1][0], run[1])
        else:
            merged.append(run)
    return [run for run in merged if run[1] - run[0] >= 0.3 * cols]


def column_as_line(image: Image, box: TextBox) -> Image | None:
    """The characters of a tall box laid side by side as one line, or None if it does not split."""
    p0, p1, p2, p3 = box.quad
    across = (math.dist(p0, p1) + math.dist(p3, p2)) / 2
    down = (math.dist(p0, p3) + math.dist(p1, p2)) / 2
    if down < COLUMN_RATIO * across:
        return None
    ux, uy = ((p3[0] + p2[0]) - (p0[0] + p1[0])) / 2, ((p3[1] + p2[1]) - (p0[1] + p1[1])) / 2
    norm = math.hypot(ux, uy)
    ux, uy = ux / norm, uy / norm
    if uy < 0:
        ux, uy = -ux, -uy
    cx = sum(point[0] for point in box.quad) / 4
    cy = sum(point[1] for point in box.quad) / 4
    column = _crop(image, cx, cy, (uy, -ux), 0.6 * across, 0.52 * down)
    if column is None:
        return None
    ink = _ink_mask(np.asarray(cv2.cvtColor(column, cv2.COLOR_BGR2GRAY), dtype=np.uint8))
    runs = _rows_of_characters(ink)
    if len(runs) < 2:
        return None
    width = column.shape[1]
    gap = np.empty((0, 0, 3), dtype=np.uint8)
    height = max(end - start for start, end in runs)
    background = np.median(column[ink == 0], axis=0) if np.any(ink == 0) else np.array([127, 127, 127])
    gap = np.full((height, max(2, round(0.3 * width)), 3), background, dtype=np.uint8)
    cells: list[Image] = []
    for start, end in runs:
        cell = np.full((height, width, 3), background, dtype=np.uint8)
        offset = (height - (end - start)) // 2
        cell[offset : offset + end - start] = column[start:end]
        if cells:
            cells.append(gap)
        cells.append(cell)
    return _pad(np.ascontiguousarray(np.hstack(cells), dtype=np.uint8))


def reread_columns(engine: OcrEngine, image: Image, boxes: list[TextBox]) -> list[TextBox]:
    """``boxes`` with every tall box's text replaced by a re-read of its characters side by side."""
    tall = [
        (index, strip) for index, box in enumerate(boxes) if (strip := column_as_line(image, box)) is not None
    ]
    if not tall:
        return boxes
    reads = engine.recognize([strip for _, strip in tall])
    replaced = list(boxes)
    for (index, _), read in zip(tall, reads, strict=True):
        text = "".join(read.text.split())
        if len(text) >= 2:
            replaced[index] = TextBox(text, read.confidence, boxes[index].quad)
    return replaced


def _second_look(image: Image, box: TextBox) -> Image | None:
    """``box``'s text cut out again with a wider margin and its contrast evened out (CLAHE), so the
    recogniser sees the same paint through different pixels."""
    p0, p1, p2, p3 = box.quad
    across = (math.dist(p0, p1) + math.dist(p3, p2)) / 2
    down = (math.dist(p0, p3) + math.dist(p1, p2)) / 2
    cx = sum(point[0] for point in box.quad) / 4
    cy = sum(point[1] for point in box.quad) / 4
    ux, uy = ((p1[0] + p2[0]) - (p0[0] + p3[0])) / 2, ((p1[1] + p2[1]) - (p0[1] + p3[1])) / 2
    norm = math.hypot(ux, uy)
    if norm < 1e-6:
        return None
    crop = _crop(image, cx, cy, (ux / norm, uy / norm), 0.5 * across + 0.2 * down, 0.65 * down)
    if crop is None:
        return None
    return equalized(crop, tiles=4)


def equalized(image: Image, tiles: int = 8) -> Image:
    """``image`` with its lightness evened out in ``tiles`` x ``tiles`` regions (CLAHE), hue kept."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles))
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), dtype=np.uint8)


def reread_boxes(engine: OcrEngine, image: Image, boxes: Sequence[TextBox]) -> dict[TextBox, TextBox]:
    """A second, independent reading of each box (same place, re-cut crop), keyed by the original."""
    looks = [(box, crop) for box in boxes if (crop := _second_look(image, box)) is not None]
    if not looks:
        return {}
    reads = engine.recognize([crop for _, crop in looks])
    return {
        box: TextBox(read.text, read.confidence, box.quad)
        for (box, _), read in zip(looks, reads, strict=True)
        if read.text.strip()
    }
