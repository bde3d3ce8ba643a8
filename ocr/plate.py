"""Licence plates read from OCR text boxes, as honestly as container numbers.

A plate has no check digit, so nothing in the text itself says a reading is right: what keeps wrong
plates out is the set of configured formats, a conservative confidence threshold and agreement (within
a frame and across frames). The rules follow ``ocr.assemble``:

- plate text is taken from whole boxes; a plate split into two or three boxes is joined only by
  geometry (same line, similar height, small gap), never cut out of longer text, so ``USDOT 1234567``
  or ``UNIT 4821`` painted nearby never yields a plate;
- look-alike characters are swapped only where the format says letter or digit, from a small fixed
  table, into letters the format issues, at most two per plate, each lowering the confidence;
- every other plate-shaped reading in the frame (a second plate that disagrees, another format the
  same text also fits, text of a plate's length that almost fits a format) lowers the confidence, so
  a frame that could be read two ways is sent to a clerk rather than guessed.

The default formats are generic shapes modelled on common layouts, not any authority's specification:
a site configures the formats of the plates it actually sees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gated.errors import ConfigError
from ocr.textbox import TextBox

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class PlateFormat:
    """One plate layout. ``pattern``: ``L`` a letter, ``D`` a digit, a space or dash between groups
    (``"LL-DDD-LL"``). ``letters`` are the letters the format issues: a look-alike is never swapped
    into a letter outside them, and a reading with one is not this format."""

    name: str
    pattern: str
    letters: str = _ALPHABET

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("a plate format needs a name")
        if not re.fullmatch(r"[LD]+([ -][LD]+)*", self.pattern):
            problems.append(f"plate format {self.name!r}: pattern {self.pattern!r} is not groups of L and D")
        elif not 4 <= len(self.classes) <= 10:
            problems.append(f"plate format {self.name!r}: a plate has 4 to 10 characters")
        if not self.letters or not set(self.letters) <= set(_ALPHABET):
            problems.append(f"plate format {self.name!r}: letters must be capital A-Z")
        if problems:
            raise ConfigError(problems)

    @property
    def classes(self) -> str:
        """The pattern without separators: one ``L`` or ``D`` per character."""
        return self.pattern.replace(" ", "").replace("-", "")

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(len(group) for group in re.split(r"[ -]", self.pattern))


DEFAULT_FORMATS: tuple[PlateFormat, ...] = (
    PlateFormat("us-style", "LLL DDDD"),
    PlateFormat("us-digit-first", "DLLLDDD"),
    PlateFormat("eu-dash", "LL-DDD-LL", "ABCDEFGHJKLMNPQRSTVWXYZ"),
    PlateFormat("uk-style", "LLDD LLL", "ABCDEFGHJKLMNOPRSTUVWXY"),
    PlateFormat("digits-first", "DDDD LLL", "BCDFGHJKLMNPRSTVWXYZ"),
    PlateFormat("eu-space", "LL DDDLL", "ABCDEFGHJKLMNPRSTVWXYZ"),
)
"""Generic shapes (US-style ``ABC 1234`` and ``7ABC123``, EU-style ``AB-123-CD`` and ``AB 123CD``,
``AB12 CDE``, ``1234 BCD``); the letter sets leave out letters such series commonly avoid."""

DEFAULT_MIN_CONFIDENCE = 0.9
"""Higher than for container numbers (0.8): a plate has no check digit to catch a misread."""

TO_LETTER: dict[str, str] = {"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"}
"""Digits read where the format has a letter."""
TO_DIGIT: dict[str, str] = {"O": "0", "Q": "0", "D": "0", "I": "1", "Z": "2", "S": "5", "G": "6", "B": "8"}
"""Letters read where the format has a digit."""
SWAP_PENALTY = 0.85
MAX_SWAPS = 2
LAYOUT_PENALTY = 0.9
"""Applied when the text was read with group separators that are not the format's (``AB 12CDE``)."""
LAYOUT_COST = 2
"""Separators read between groups are good evidence of the format: a reading that contradicts them
counts as two swaps when choosing between formats the same text fits."""
ALTERNATIVE_WEIGHT = 0.1
"""How much a reading of the same text as another format, needing more swaps, counts as a rival."""
NEAR_MISS_WEIGHT = 0.5
"""How much a near miss counts as a rival: text with a format's letters and digits in place but a
letter or two the format never issues (``TI-612-SN``: a plate misread, most likely J as I)."""
MAX_UNISSUED = 2
MAX_BOXES = 3
EDGE_MARGIN = 0.3
"""A box this share of its height or closer to the frame's left or right edge may be cut off there:
``UNIT 8252`` half out of view reads ``NIT 8252``, a plate-shaped fragment, so it is not used."""

_SEPARATORS = re.compile(r"[\s\-.:_\u00b7\u2022]+")
_END_JUNK = re.compile(r"^[^A-Z0-9]+|[^A-Z0-9]+$")
# Joining boxes on one line: heights within this ratio, centre off the line by at most this share
# of the height, gap between them within these shares of the height (box height ~ 1.5 characters).
_HEIGHT_RATIO = 1.35
_OFF_LINE = 0.35
_GAP = (-0.25, 1.0)


@dataclass(frozen=True, slots=True)
class PlateRead:
    """What OCR reports. ``plate`` (upper case, no separators) only when read with confidence; ``raw``
    is the text as read, separators kept, even when not reported (for a clerk); ``format`` names the
    format ``raw`` fits; ``candidate`` is the plate ``raw`` would be, reported or not (for voting);
    ``boxes`` are the text boxes ``raw`` was read from (where to crop the plate for evidence)."""

    plate: str | None
    raw: str | None
    confidence: float
    format: str | None
    candidate: str | None = None
    # Where the text was is not part of what was read: two reads of one plate are equal.
    boxes: tuple[TextBox, ...] = field(default=(), compare=False)


NO_PLATE = PlateRead(None, None, 0.0, None, None)


@dataclass(frozen=True, slots=True)
class _Piece:
    """One text box on a line: its text, and where its left and right ends and centre are."""

    index: int
    raw: str
    compact: str
    confidence: float
    left: tuple[float, float]
    right: tuple[float, float]
    height: float
    box: TextBox

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left[0] + self.right[0]) / 2, (self.left[1] + self.right[1]) / 2


@dataclass(frozen=True, slots=True)
class _Reading:
    """One interpretation of a chain of pieces as a plate of one format."""

    plate: str
    raw: str
    format: str
    cost: int
    """Swaps, plus ``LAYOUT_COST`` when the text's groups are not the format's."""
    confidence: float
    boxes: tuple[TextBox, ...]


def _piece(index: int, box: TextBox, width: float | None) -> _Piece | None:
    # Symbols at the ends are what else the box caught (the star ring of an EU band read as a glyph,
    # a quote mark): dropped like separators. Inside the text they make it no plate at all.
    raw = _END_JUNK.sub("", " ".join(box.text.upper().split()))
    compact = _SEPARATORS.sub("", raw)
    if not compact or not compact.isascii() or not compact.isalnum():
        return None
    p0, p1, p2, p3 = box.quad
    left = ((p0[0] + p3[0]) / 2, (p0[1] + p3[1]) / 2)
    right = ((p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2)
    height = (math.dist(p0, p3) + math.dist(p1, p2)) / 2
    if math.dist(left, right) < 1e-6 or height < 1e-6:
        return None
    if right[0] < left[0]:  # a quad listed from the right: read it left to right
        left, right = right, left
    if width is not None:
        x0, _, x1, _ = box.bbox
        if x0 <= EDGE_MARGIN * height or x1 >= width - EDGE_MARGIN * height:
            return None
    return _Piece(index, raw, compact, box.confidence, left, right, height, box)


def _follows(a: _Piece, b: _Piece) -> bool:
    """True when ``b`` is the next text on ``a``'s line: similar height, on the line, a small gap."""
    if max(a.height, b.height) > _HEIGHT_RATIO * min(a.height, b.height):
        return False
    length = math.dist(a.left, a.right)
    ux, uy = (a.right[0] - a.left[0]) / length, (a.right[1] - a.left[1]) / length
    gap = (b.left[0] - a.right[0]) * ux + (b.left[1] - a.right[1]) * uy
    off_line = (b.centre[0] - a.centre[0]) * -uy + (b.centre[1] - a.centre[1]) * ux
    size = max(a.height, b.height)
    return abs(off_line) <= _OFF_LINE * size and _GAP[0] * size <= gap <= _GAP[1] * size


def _chains(pieces: Sequence[_Piece], longest: int) -> list[tuple[_Piece, ...]]:
    """Every run of up to ``MAX_BOXES`` whole pieces joined left to right on one line."""
    successors = {a.index: [b for b in pieces if b.index != a.index and _follows(a, b)] for a in pieces}
    found: list[tuple[_Piece, ...]] = []

    def extend(chain: tuple[_Piece, ...], length: int) -> None:
        found.append(chain)
        if len(chain) >= MAX_BOXES:
            return
        for following in successors[chain[-1].index]:
            if following not in chain and length + len(following.compact) <= longest:
                extend((*chain, following), length + len(following.compact))

    for piece in pieces:
        if len(piece.compact) <= longest:
            extend((piece,), len(piece.compact))
    return found


def _fit(text: str, plate_format: PlateFormat) -> tuple[str, int, int, int]:
    """``text`` as ``plate_format`` (look-alikes swapped by class), the swaps made, the characters of
    the wrong class that no swap fits, and the letters the format does not issue. ``text`` must be as
    long as the format."""
    chars: list[str] = []
    swaps = wrong_class = unissued = 0
    for char, kind in zip(text, plate_format.classes, strict=True):
        swapped = char
        if kind == "L" and char.isalpha():
            unissued += char not in plate_format.letters
        elif kind == "L":
            swapped = TO_LETTER.get(char, char)
            wrong_class += swapped not in plate_format.letters
        elif not char.isdigit():
            swapped = TO_DIGIT.get(char, char)
            wrong_class += not swapped.isdigit()
        chars.append(swapped)
        swaps += swapped != char
    return "".join(chars), swaps, wrong_class, unissued


def _groups(raw: str) -> tuple[int, ...]:
    return tuple(len(group) for group in _SEPARATORS.split(raw) if group)


def _confidence(chain: Sequence[_Piece]) -> float:
    """Per-character geometric mean of the engine's confidences."""
    total = sum(len(piece.compact) for piece in chain)
    logs = sum(len(piece.compact) * math.log(max(piece.confidence, 1e-9)) for piece in chain)
    return math.exp(logs / total)


def _interpret(chain: Sequence[_Piece], formats: Sequence[PlateFormat]) -> tuple[list[_Reading], float]:
    """The chain's readings as each format it fits, and its weight as a near miss (0: not one)."""
    compact = "".join(piece.compact for piece in chain)
    raw = " ".join(piece.raw for piece in chain)
    base = _confidence(chain)
    readings: list[_Reading] = []
    near_miss = 0.0
    mixed = any(char.isalpha() for char in compact) and any(char.isdigit() for char in compact)
    for plate_format in formats:
        if len(compact) != len(plate_format.classes):
            continue
        plate, swaps, wrong_class, unissued = _fit(compact, plate_format)
        if wrong_class or swaps > MAX_SWAPS:
            continue
        if unissued == 0:
            confidence = base * SWAP_PENALTY**swaps
            groups = _groups(raw)
            cost = swaps
            if len(groups) > 1 and groups != plate_format.groups:
                confidence *= LAYOUT_PENALTY
                cost += LAYOUT_COST
            boxes = tuple(piece.box for piece in chain)
            readings.append(_Reading(plate, raw, plate_format.name, cost, confidence, boxes))
        elif mixed and unissued <= MAX_UNISSUED:
            near_miss = max(near_miss, base * NEAR_MISS_WEIGHT)
    return readings, (0.0 if readings else near_miss)


def read_plate(
    boxes: Iterable[TextBox],
    *,
    formats: Sequence[PlateFormat] = DEFAULT_FORMATS,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    frame_width: float | None = None,
) -> PlateRead:
    """The licence plate in one frame's text boxes; ``plate`` is None unless it was read with
    ``min_confidence`` and nothing else in the frame could be a different plate. With
    ``frame_width``, text touching the frame's left or right edge is left out (it may be cut off)."""
    if not formats:
        raise ConfigError(["no plate formats configured"])
    pieces = [
        piece for index, box in enumerate(boxes) if (piece := _piece(index, box, frame_width)) is not None
    ]
    longest = max(len(plate_format.classes) for plate_format in formats)
    readings: list[_Reading] = []
    near_misses: list[tuple[float, str, tuple[TextBox, ...]]] = []
    for chain in _chains(pieces, longest):
        found, near_miss = _interpret(chain, formats)
        if found:
            cheapest = min(reading.cost for reading in found)
            # Another format the same text fits only with more swaps is a weaker rival, not an equal.
            readings.extend(
                reading
                if reading.cost == cheapest
                else _weaker(reading, ALTERNATIVE_WEIGHT ** (reading.cost - cheapest))
                for reading in found
            )
        elif near_miss > 0:
            text = " ".join(piece.raw for piece in chain)
            near_misses.append((near_miss, text, tuple(piece.box for piece in chain)))
    if not readings:
        if not near_misses:
            return NO_PLATE
        _, raw, boxes = max(near_misses, key=lambda miss: (miss[0], miss[1]))
        return PlateRead(None, raw, 0.0, None, None, boxes)
    scores: dict[str, float] = {}
    best_of: dict[str, _Reading] = {}
    for reading in readings:
        if reading.plate not in scores or reading.confidence > scores[reading.plate]:
            scores[reading.plate] = reading.confidence
            best_of[reading.plate] = reading
    best = max(scores, key=lambda plate: scores[plate])
    rivals = sum(score for plate, score in scores.items() if plate != best)
    rivals += sum(weight for weight, _, _ in near_misses)
    confidence = scores[best] * scores[best] / max(scores[best] + rivals, 1e-12)
    return _decide(best_of[best], confidence, min_confidence)


def _weaker(reading: _Reading, factor: float) -> _Reading:
    return _Reading(
        reading.plate, reading.raw, reading.format, reading.cost, reading.confidence * factor, reading.boxes
    )


def _decide(reading: _Reading, confidence: float, min_confidence: float) -> PlateRead:
    accepted = confidence >= min_confidence
    return PlateRead(
        plate=reading.plate if accepted else None,
        raw=reading.raw,
        confidence=round(confidence, 4),
        format=reading.format,
        candidate=reading.plate,
        boxes=reading.boxes,
    )


VOTE_INDEPENDENCE = 0.5
"""Frames of one truck share its dirt, angle and font, so their misreads repeat: each further
agreeing frame counts as this much of an independent reading."""


def vote_plates(reads: Iterable[PlateRead], *, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> PlateRead:
    """One plate from several frames (or cameras) of one truck: agreement raises the confidence,
    modestly; a frame that read a different plate lowers it in proportion to how sure it was."""
    groups: dict[str, list[PlateRead]] = {}
    for read in reads:
        if read.candidate is not None:
            groups.setdefault(read.candidate, []).append(read)
    if not groups:
        return NO_PLATE
    scores: dict[str, float] = {}
    for plate, members in groups.items():
        ordered = sorted((member.confidence for member in members), reverse=True)
        doubt = (1.0 - ordered[0]) * math.prod((1.0 - other) ** VOTE_INDEPENDENCE for other in ordered[1:])
        scores[plate] = 1.0 - doubt
    best = max(scores, key=lambda plate: scores[plate])
    rivals = sum(score for plate, score in scores.items() if plate != best)
    confidence = scores[best] * scores[best] / (scores[best] + rivals)
    example = max(groups[best], key=lambda member: member.confidence)
    accepted = confidence >= min_confidence
    return PlateRead(best if accepted else None, example.raw, round(confidence, 4), example.format, best)
