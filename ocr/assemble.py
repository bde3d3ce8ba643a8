"""Container numbers assembled from OCR text boxes by their geometry.

A number is read only from whole pieces of text that sit together the way numbers are painted: one
line ("MSKU 413532 9"), pieces on one line (owner code, serial, a boxed check digit), stacked lines
(owner code above the serial) or one character per box down a door post. The pieces must join into
exactly 11 characters; nothing is cut out of a longer text, so weight plates and phone numbers do not
turn into numbers.

Look-alike characters are swapped only where the character class is known (letters in the owner
code, digits in the serial and check digit), from a small fixed table, each swap lowering the
confidence. The check digit is never used to choose a swap: a number whose check digit does not fit is
reported as read (``raw``) and flagged, never corrected.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from gated.iso6346 import CATEGORIES, check_digit
from ocr.textbox import TextBox

NUMBER_LENGTH = 11
OWNER_LENGTH = 4
DEFAULT_MIN_CONFIDENCE = 0.8

TO_LETTER: dict[str, str] = {"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"}
"""Digits read where a letter must be (owner code and category)."""
TO_DIGIT: dict[str, str] = {
    "O": "0",
    "Q": "0",
    "D": "0",
    "I": "1",
    "L": "1",
    "S": "5",
    "B": "8",
    "Z": "2",
    "G": "6",
}
"""Letters read where a digit must be (serial and check digit)."""
SWAP_PENALTY = 0.9
MAX_SWAPS = 2
UNVOUCHED_SWAP_PENALTY = 0.5
LOOK_ALIKES: dict[str, str] = {
    "0": "ODQ",
    "1": "ILT",
    "2": "Z",
    "5": "S",
    "6": "GCB",
    "8": "BS",
    "O": "0",
    "Q": "0",
    "D": "08",
    "I": "17",
    "L": "17",
    "S": "58",
    "B": "836",
    "Z": "27",
    "G": "60",
}
"""What a character read where the other class belongs may really be: only used to ask whether the
check digit can tell the swap apart from a misread, never to choose a character."""
STRAY_STROKES = frozenset("1IL")
"""Characters a vertical stroke just before an owner code is read as."""
LIGHT_SWAP_PENALTY = 0.97
LIGHT_SWAPS = frozenset({("0", "O")})
"""Swaps that cost less: a zero in the owner code is almost always an O (OOLU, ONEU), painted in
fonts where the two differ by a hair. Still counted against ``MAX_SWAPS``."""

SIZE_TYPE_LENGTH = "1234ABCDEFGHKLMNP"
SIZE_TYPE_HEIGHT = "0123456789CDEFLMNP"
SIZE_TYPE_GROUP = "GVBSRHUPTAK"
SIZE_TYPE_TO_GROUP: dict[str, str] = {"6": "G", "8": "B", "5": "S", "0": "U"}

_SEPARATORS = re.compile(r"[\s.\-/\[\]()|]+")
_TOKENS = re.compile(r"\S+")
_FOREIGN_ENDS = re.compile(r"^[^\x00-\x7f]+|[^\x00-\x7f]+$")
_FOREIGN_START = re.compile(r"^[^\x00-\x7f]*")
_FOREIGN_END = re.compile(r"[^\x00-\x7f]*$")
_MAX_PIECES = NUMBER_LENGTH


@dataclass(frozen=True, slots=True)
class Candidate:
    """The best container number found in one frame (or agreed over several).

    ``number`` is the 11 characters as read (after class look-alike swaps), None when nothing
    shaped like a number was found; ``check_digit_valid`` says whether its check digit fits."""

    number: str | None
    check_digit_valid: bool
    confidence: float
    size_type: str | None
    boxes: tuple[TextBox, ...] = ()
    swaps: int = 0
    """Look-alike characters swapped to their class to make ``number`` (0 when read as painted)."""


NOTHING = Candidate(None, False, 0.0, None, ())


@dataclass(frozen=True, slots=True)
class ContainerRead:
    """What OCR reports: ``container`` only when read with confidence and a fitting check digit.

    ``raw`` is what was assembled even when it is not reported as the container (low confidence,
    or a check digit that does not fit: some shipper-owned boxes carry one)."""

    container: str | None
    raw: str | None
    check_digit_valid: bool
    confidence: float
    size_type: str | None


@dataclass(frozen=True, slots=True)
class _Piece:
    """A whitespace-separated token of a text box, placed along the box's reading direction."""

    index: int
    text: str
    confidence: float
    box: TextBox
    cx: float
    cy: float
    ux: float
    uy: float
    length: float
    thickness: float
    vertical: bool

    @property
    def corners(self) -> tuple[tuple[float, float], ...]:
        hx, hy = self.ux * self.length / 2, self.uy * self.length / 2
        nx, ny = -self.uy * self.thickness / 2, self.ux * self.thickness / 2
        return (
            (self.cx - hx - nx, self.cy - hy - ny),
            (self.cx + hx - nx, self.cy + hy - ny),
            (self.cx + hx + nx, self.cy + hy + ny),
            (self.cx - hx + nx, self.cy - hy + ny),
        )


_BAR_BETWEEN_LETTERS = re.compile(r"(?<=[A-Za-z])\|(?=[A-Za-z])")
SLASHED_ZEROS = str.maketrans(dict.fromkeys("ØøθΘ⊘", "0"))
"""Marks are often painted with a slashed or barred zero, which the recogniser reads as one of
these; none of them is a character an owner code, serial or size code can hold otherwise."""


def _latin(text: str) -> str:
    """``text`` with accented Latin letters as their base letter (the recogniser reads a dirty C as
    Ç), a slashed or barred zero as 0, and a bar between two letters as the I it is in a sans-serif
    owner code (CA|U is CAIU; a bar elsewhere stays a separator). Nothing else changes, so
    positions in the text still hold."""
    plain = "".join(
        base[0]
        if (base := unicodedata.normalize("NFKD", char)) and base[0].isascii() and base[0].isalpha()
        else char
        for char in text
    )
    return _BAR_BETWEEN_LETTERS.sub("I", plain.translate(SLASHED_ZEROS))


def _clean(text: str) -> str | None:
    """The token's characters without separators and frame marks; None if anything else is left.

    Stray non-Latin characters at either end are dropped too: the recogniser's alphabet includes
    CJK, and a boxed check digit it cannot make out comes back as one of those. What is left is
    still a whole piece; the check digit is then re-read from its own crop (``ocr.reader``)."""
    cleaned = _SEPARATORS.sub("", text).upper()
    cleaned = _FOREIGN_ENDS.sub("", cleaned)
    if not cleaned or not cleaned.isascii() or not cleaned.isalnum():
        return None
    return cleaned


def _has_stray_stroke(text: str) -> bool:
    """True when ``text`` is an owner code with a stroke read before it ("1OOLU", "IMSKU4135329"):
    a door's edge, a hinge or a streak of dirt just left of the first letter. An owner code is four
    letters ending in its category letter, so a fifth letter-like character in front of one can
    only be such a stroke; the check digit still has to fit the number without it."""
    return (
        len(text) >= OWNER_LENGTH + 1
        and text[0] in STRAY_STROKES
        and text[1 : OWNER_LENGTH + 1].isalpha()
        and text[OWNER_LENGTH] in CATEGORIES
        and (len(text) == OWNER_LENGTH + 1 or not text[OWNER_LENGTH + 1].isalpha())
    )


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _pieces(boxes: Iterable[TextBox]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for box in boxes:
        p0, p1, p2, p3 = box.quad
        across = (_distance(p0, p1) + _distance(p3, p2)) / 2
        down = (_distance(p0, p3) + _distance(p1, p2)) / 2
        if across < 1e-6 or down < 1e-6:
            continue
        stripped = _latin(box.text.strip())
        if not stripped:
            continue
        vertical = len(stripped) > 1 and down > 1.5 * across
        if vertical:
            ux, uy = ((p3[0] + p2[0]) - (p0[0] + p1[0])) / 2, ((p3[1] + p2[1]) - (p0[1] + p1[1])) / 2
            length, thickness = down, across
            if uy < 0:
                ux, uy = -ux, -uy
        else:
            ux, uy = ((p1[0] + p2[0]) - (p0[0] + p3[0])) / 2, ((p1[1] + p2[1]) - (p0[1] + p3[1])) / 2
            length, thickness = across, down
            if ux < 0:
                ux, uy = -ux, -uy
        norm = math.hypot(ux, uy)
        ux, uy = ux / norm, uy / norm
        cx = sum(point[0] for point in box.quad) / 4
        cy = sum(point[1] for point in box.quad) / 4
        total = len(stripped)
        for match in _TOKENS.finditer(stripped):
            cleaned = _clean(match.group())
            if cleaned is None:
                continue
            # Place the piece where its Latin characters are, without the stray ones dropped at its
            # ends (a misread boxed check digit), so the digit's own crop is looked for after it.
            token = match.group()
            start = match.start() + len(token) - len(_FOREIGN_START.sub("", token))
            end = match.end() - (len(token) - len(_FOREIGN_END.sub("", token)))
            confidence = box.confidence
            if _has_stray_stroke(cleaned):
                cleaned, start, confidence = cleaned[1:], start + 1, confidence * SWAP_PENALTY
            middle = (start + end) / 2 / total - 0.5
            pieces.append(
                _Piece(
                    index=len(pieces),
                    text=cleaned,
                    confidence=confidence,
                    box=box,
                    cx=cx + ux * middle * length,
                    cy=cy + uy * middle * length,
                    ux=ux,
                    uy=uy,
                    length=length * (end - start) / total,
                    thickness=thickness,
                    vertical=vertical,
                )
            )
    return pieces


def _extent(piece: _Piece, origin: _Piece, ax: float, ay: float) -> tuple[float, float]:
    values = [(x - origin.cx) * ax + (y - origin.cy) * ay for x, y in piece.corners]
    return min(values), max(values)


def _char_size(piece: _Piece) -> float:
    return piece.thickness


def _similar(a: _Piece, b: _Piece) -> bool:
    ratio = _char_size(a) / _char_size(b)
    return 0.5 <= ratio <= 2.0


def _follows(a: _Piece, b: _Piece) -> bool:
    """True when ``b`` can be the text right after ``a``: next on its line, or the line below."""
    if a.index == b.index or not _similar(a, b):
        return False
    size = max(_char_size(a), _char_size(b))
    nx, ny = -a.uy, a.ux
    along = (b.cx - a.cx) * a.ux + (b.cy - a.cy) * a.uy
    across = (b.cx - a.cx) * nx + (b.cy - a.cy) * ny
    b_along = _extent(b, a, a.ux, a.uy)
    gap = b_along[0] - a.length / 2
    # The detector pads a box along its text by a share of its length, so the boxes of a column
    # (long along the text) overlap more than those of a line.
    overlap_allowed = (0.6 if a.vertical else 0.3) * size
    if along > 0 and abs(across) <= 0.5 * _char_size(a) and -overlap_allowed <= gap <= 2.5 * size:
        return True
    if a.vertical:
        return False
    b_across = _extent(b, a, nx, ny)
    drop = b_across[0] - a.thickness / 2
    if across <= 0 or not -0.3 * size <= drop <= 1.2 * size:
        return False
    overlap = min(b_along[1], a.length / 2) - max(b_along[0], -a.length / 2)
    return overlap >= 0.5 * min(a.length, b_along[1] - b_along[0])


def _skips_over(a: _Piece, b: _Piece, pieces: Sequence[_Piece]) -> bool:
    """True when another piece lies between ``a`` and ``b`` on ``a``'s line: a number is painted
    in one run, so a chain that jumps over text in its way is not one (a column read as OOLU, 6,
    23233 must not make OOLU23233 by leaving out the 6)."""
    size = max(_char_size(a), _char_size(b))
    nx, ny = -a.uy, a.ux
    b_along = (b.cx - a.cx) * a.ux + (b.cy - a.cy) * a.uy
    for other in pieces:
        if other.index in (a.index, b.index) or other.box is a.box or other.box is b.box:
            continue
        along = (other.cx - a.cx) * a.ux + (other.cy - a.cy) * a.uy
        across = (other.cx - a.cx) * nx + (other.cy - a.cy) * ny
        if a.length / 2 <= along <= b_along and abs(across) <= 0.5 * size:
            return True
    return False


def _fits_class(text: str, start: int) -> bool:
    for offset, char in enumerate(text):
        position = start + offset
        if position >= NUMBER_LENGTH:
            return False
        if position < OWNER_LENGTH:
            if not (char.isalpha() or char in TO_LETTER):
                return False
        elif not (char.isdigit() or char in TO_DIGIT):
            return False
    return True


def _by_class(text: str) -> tuple[str, int] | None:
    """``text`` with look-alikes swapped to the class each position needs, and how many were swapped.

    ``text`` is the whole number, or its first ten characters (owner code and serial)."""
    chars: list[str] = []
    swaps = 0
    for position, char in enumerate(text):
        if position < OWNER_LENGTH:
            if char.isalpha():
                chars.append(char)
            else:
                chars.append(TO_LETTER[char])
                swaps += 1
        elif char.isdigit():
            chars.append(char)
        else:
            chars.append(TO_DIGIT[char])
            swaps += 1
    if chars[OWNER_LENGTH - 1] not in CATEGORIES or swaps > MAX_SWAPS:
        return None
    return "".join(chars), swaps


def _paths(pieces: Sequence[_Piece], length_wanted: int = NUMBER_LENGTH) -> list[tuple[_Piece, ...]]:
    """Every chain of whole pieces, linked by geometry, whose text makes ``length_wanted`` characters."""
    successors = {
        a.index: [b for b in pieces if _follows(a, b) and not _skips_over(a, b, pieces)] for a in pieces
    }
    found: list[tuple[_Piece, ...]] = []

    def extend(path: tuple[_Piece, ...], length: int) -> None:
        if length == length_wanted:
            found.append(path)
            return
        if len(path) >= _MAX_PIECES:
            return
        for following in successors[path[-1].index]:
            if following in path or not _fits_class(following.text, length):
                continue
            extend((*path, following), length + len(following.text))

    for piece in pieces:
        if _fits_class(piece.text, 0):
            extend((piece,), len(piece.text))
    return found


def _confidence(path: Sequence[_Piece], swapped: str, *, vouch: bool = True) -> float:
    """Per-character geometric mean of the engine's confidences, lowered for each swap that turned
    the text as read into ``swapped`` (and, with ``vouch``, for swaps the check digit cannot vouch
    for)."""
    total = sum(len(piece.text) for piece in path)
    logs = sum(len(piece.text) * math.log(max(piece.confidence, 1e-9)) for piece in path)
    read = "".join(piece.text for piece in path)
    penalty = math.prod(
        LIGHT_SWAP_PENALTY if (was, now) in LIGHT_SWAPS else SWAP_PENALTY
        for was, now in zip(read, swapped, strict=True)
        if was != now
    )
    if vouch and len(swapped) == NUMBER_LENGTH and not _swaps_vouched_for(read, swapped):
        penalty *= UNVOUCHED_SWAP_PENALTY
    return math.exp(logs / total) * penalty


def _swaps_vouched_for(read: str, swapped: str) -> bool:
    """True unless another look-alike of the character read, of the class its position needs,
    would also give a fitting check digit. The check digit catches almost every single wrong
    character, but not all: a remainder of 10 is written 0, so some numbers have a twin one
    character away, and 26 letters share 11 remainders. Where
    a swap sits on such a twin the check digit cannot tell the swap from a misread (a blurred 3 read
    as B, swapped to 8), so the swap is not trusted. This never picks a character: it only asks
    whether the check digit can vouch for the one that was read."""
    for position, (was, now) in enumerate(zip(read, swapped, strict=True)):
        if was == now or position == NUMBER_LENGTH - 1:
            continue
        if position < OWNER_LENGTH - 1:
            alphabet: Collection[str] = string.ascii_uppercase
        elif position == OWNER_LENGTH - 1:
            alphabet = CATEGORIES
        else:
            alphabet = string.digits
        for other in LOOK_ALIKES.get(was, ""):
            if other == now or other not in alphabet:
                continue
            twin = swapped[:position] + other + swapped[position + 1 :]
            if check_digit(twin[:10]) == int(twin[10]):
                return False
    return True


def _size_type_of(text: str) -> tuple[str, int] | None:
    if len(text) != 4:
        return None
    length, height, group, detail = text[0], text[1], text[2], text[3]
    swaps = 0
    if group in SIZE_TYPE_TO_GROUP:
        group = SIZE_TYPE_TO_GROUP[group]
        swaps += 1
    if detail in TO_DIGIT:
        detail = TO_DIGIT[detail]
        swaps += 1
    if (
        length not in SIZE_TYPE_LENGTH
        or height not in SIZE_TYPE_HEIGHT
        or group not in SIZE_TYPE_GROUP
        or not detail.isdigit()
        or swaps > 1
    ):
        return None
    return length + height + group + detail, swaps


def _size_type_near(path: Sequence[_Piece], pieces: Sequence[_Piece]) -> str | None:
    """The size/type code closest to the number, within a few character heights of it."""
    size = max(_char_size(piece) for piece in path)
    used = {piece.index for piece in path}
    best: tuple[float, str] | None = None
    for piece in pieces:
        if piece.index in used or not _similar(piece, path[-1]):
            continue
        code = _size_type_of(piece.text)
        if code is None:
            continue
        distance = min(math.hypot(piece.cx - near.cx, piece.cy - near.cy) for near in path)
        distance -= piece.length / 2
        if distance <= 3.0 * size and (best is None or distance < best[0]):
            best = (distance, code[0])
    return None if best is None else best[1]


def _options(pieces: Sequence[_Piece]) -> list[Candidate]:
    """Every number that whole pieces make, each with its own confidence."""
    options: list[Candidate] = []
    for path in _paths(pieces):
        swapped = _by_class("".join(piece.text for piece in path))
        if swapped is None:
            continue
        number, swaps = swapped
        options.append(
            Candidate(
                number=number,
                check_digit_valid=check_digit(number[:10]) == int(number[10]),
                confidence=_confidence(path, number),
                size_type=_size_type_near(path, pieces),
                boxes=tuple(dict.fromkeys(piece.box for piece in path)),
                swaps=swaps,
            )
        )
    return options


def assemble(boxes: Iterable[TextBox]) -> Candidate:
    """The container number in one frame's text boxes (``NOTHING`` when there is none).

    When the frame holds different numbers (two readings of the same mark that disagree, or two
    containers), the best one is returned with its confidence lowered accordingly."""
    return _combine(_options(_pieces(boxes)), same_frame=True)


def assemble_all(boxes: Iterable[TextBox]) -> list[Candidate]:
    """Every container in one frame, in reading order (left to right, then top to bottom).

    Readings that share a text box are rivals for one mark and are combined (a disagreement splits
    the confidence); readings of the same number are one container however often it is painted.
    A number whose check digit does not fit and that shares no box with another reading stays a
    container of its own (reported as not fitting): dropping it could let the second box on a
    chassis through unchecked, while keeping it sends the truck to a clerk."""
    return marks(_options(_pieces(boxes)))


def marks(options: Iterable[Candidate]) -> list[Candidate]:
    """``options`` (readings from one frame) grouped into containers, as ``assemble_all`` does."""
    groups: list[list[Candidate]] = []
    for option in sorted(options, key=lambda option: not option.check_digit_valid):
        home = [
            group
            for group in groups
            if any(member.number == option.number or same_place(member, option) for member in group)
        ]
        if home:
            merged = [member for group in home for member in group] + [option]
            groups = [group for group in groups if group not in home] + [merged]
        else:
            groups.append([option])
    found = [_combine(group, same_frame=True) for group in groups]
    return sorted(found, key=_reading_position)


def _reading_position(candidate: Candidate) -> tuple[float, float]:
    if not candidate.boxes:
        return (math.inf, math.inf)
    x0, y0, _, _ = candidate.boxes[0].bbox
    return (x0, y0)


@dataclass(frozen=True, slots=True)
class Span:
    """Where a piece of text lies in the frame: its centre, reading direction (unit vector), length
    along that direction and thickness across it, in pixels, and how many characters it holds."""

    cx: float
    cy: float
    ux: float
    uy: float
    length: float
    thickness: float
    chars: int
    vertical: bool


@dataclass(frozen=True, slots=True)
class Partial:
    """Owner code and serial (ten characters, after class swaps) read without their check digit.

    ``last`` is the piece that ends the serial: the check digit is painted just after it.
    ``letter_read`` is set when a letter was read where the check digit is painted (a boxed 3 read
    as B with its frame): that letter is no reading of a digit, the box is to be read again."""

    prefix: str
    swaps: int
    confidence: float
    last: Span
    boxes: tuple[TextBox, ...]
    letter_read: bool = False


def partials(boxes: Iterable[TextBox]) -> list[Partial]:
    """Every owner code + serial in the boxes that no check digit follows, most confident first;
    and every one followed by a letter where the check digit should be, without that letter."""
    pieces = _pieces(boxes)
    found: dict[str, Partial] = {}
    with_letter = [path for path in _paths(pieces) if path[-1].text[-1].isalpha() and len(path[-1].text) > 1]
    for path, letter_read in [
        *((path, False) for path in _paths(pieces, NUMBER_LENGTH - 1)),
        *((path, True) for path in with_letter),
    ]:
        read = "".join(piece.text for piece in path)
        swapped = _by_class(read[: NUMBER_LENGTH - 1])
        if swapped is None:
            continue
        prefix, swaps = swapped
        last = path[-1]
        span = Span(
            last.cx, last.cy, last.ux, last.uy, last.length, last.thickness, len(last.text), last.vertical
        )
        if letter_read:
            # The serial ends one character before the piece does.
            pitch = last.length / len(last.text)
            span = Span(
                last.cx - last.ux * pitch / 2,
                last.cy - last.uy * pitch / 2,
                last.ux,
                last.uy,
                last.length - pitch,
                last.thickness,
                len(last.text) - 1,
                last.vertical,
            )
        partial = Partial(
            prefix=prefix,
            swaps=swaps,
            # The letter read keeps its share of the confidence: it is where the digit is.
            confidence=_confidence(path, prefix + read[NUMBER_LENGTH - 1 :], vouch=False),
            last=span,
            boxes=tuple(dict.fromkeys(piece.box for piece in path)),
            letter_read=letter_read,
        )
        if prefix not in found or found[prefix].confidence < partial.confidence:
            found[prefix] = partial
    return sorted(found.values(), key=lambda partial: -partial.confidence)


def completed(partial: Partial, digit: str, digit_confidence: float, size_type: str | None) -> Candidate:
    """The candidate made of ``partial`` and a check digit re-read from its own crop."""
    number = partial.prefix + digit
    return Candidate(
        number=number,
        check_digit_valid=check_digit(number[:10]) == int(number[10]),
        confidence=math.exp(
            (10 * math.log(max(partial.confidence, 1e-9)) + math.log(max(digit_confidence, 1e-9))) / 11
        ),
        size_type=size_type,
        boxes=partial.boxes,
        swaps=partial.swaps,
    )


def size_type_in(boxes: Iterable[TextBox], near: Partial) -> str | None:
    """The size/type code within a few character heights of ``near``'s serial."""
    pieces = _pieces(boxes)
    last = near.last
    anchor = _Piece(
        -1,
        "0" * last.chars,
        near.confidence,
        near.boxes[-1],
        last.cx,
        last.cy,
        last.ux,
        last.uy,
        last.length,
        last.thickness,
        last.vertical,
    )
    return _size_type_near([anchor], pieces)


def combine(candidates: Iterable[Candidate]) -> Candidate:
    """The best of several candidates read from one frame (different boxes or re-reads)."""
    return _combine(list(candidates), same_frame=True)


def vote(candidates: Iterable[Candidate]) -> Candidate:
    """One candidate from several frames or camera views: agreement raises the confidence, a
    different reading lowers it, in proportion to how sure each reading was."""
    return _combine(list(candidates), same_frame=False)


def vote_containers(per_frame: Sequence[Sequence[Candidate]]) -> list[Candidate]:
    """The containers of one truck from every frame's containers (``read_all``), best first.

    A frame that shows two marks with different numbers shows two containers, so the truck carries
    as many containers as the most any frame read. With one, this is ``vote``. With more, each
    number is voted on its own over the frames that read it; numbers beyond that count have no
    container to belong to, so they stand against all of them and split every confidence (a truck
    whose frames disagree goes to a clerk)."""
    count = max((len(found) for found in per_frame), default=0)
    flat = [candidate for found in per_frame for candidate in found if candidate.number is not None]
    if count <= 1:
        voted = vote(flat)
        return [] if voted.number is None else [voted]
    groups: dict[str, list[Candidate]] = {}
    for candidate in flat:
        groups.setdefault(str(candidate.number), []).append(candidate)
    voted_groups = sorted(
        (_combine(members, same_frame=False) for members in groups.values()),
        key=lambda candidate: (candidate.check_digit_valid, candidate.confidence),
        reverse=True,
    )
    kept, extra = voted_groups[:count], voted_groups[count:]
    if not extra:
        return kept
    total = sum(candidate.confidence for candidate in voted_groups)
    return [
        Candidate(
            candidate.number,
            candidate.check_digit_valid,
            candidate.confidence * candidate.confidence / total if total > 0 else 0.0,
            candidate.size_type,
            candidate.boxes,
            candidate.swaps,
        )
        for candidate in kept
    ]


def _combine(candidates: Sequence[Candidate], *, same_frame: bool) -> Candidate:
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        if candidate.number is not None:
            groups.setdefault(candidate.number, []).append(candidate)
    if not groups:
        return NOTHING
    scores: dict[str, float] = {}
    for number, members in groups.items():
        distinct = _disjoint(members) if same_frame else members
        scores[number] = 1.0 - math.prod(1.0 - member.confidence for member in distinct)
    best = max(groups, key=lambda number: (groups[number][0].check_digit_valid, scores[number]))
    rivals = [scores[number] for number in groups if number != best]
    confidence = scores[best]
    if rivals:
        total = scores[best] + sum(rivals)
        confidence *= scores[best] / total
    members = groups[best]
    sizes = [member.size_type for member in members if member.size_type is not None]
    size_type = max(set(sizes), key=sizes.count) if sizes else None
    boxes = tuple(dict.fromkeys(box for member in members for box in member.boxes))
    swaps = min(member.swaps for member in members)
    return Candidate(best, members[0].check_digit_valid, confidence, size_type, boxes, swaps)


def _disjoint(members: Sequence[Candidate]) -> list[Candidate]:
    """The most confident readings of one number in a frame that were read in different places
    (two looks at the same paint are not two pieces of evidence)."""
    chosen: list[Candidate] = []
    for member in sorted(members, key=lambda member: -member.confidence):
        if not any(same_place(member, kept) for kept in chosen):
            chosen.append(member)
    return chosen


def same_place(a: Candidate, b: Candidate) -> bool:
    """True when a box of ``a`` and a box of ``b`` cover mostly the same pixels (the same box, or
    the same paint found again by another look at the frame)."""
    for box_a in a.boxes:
        ax0, ay0, ax1, ay1 = box_a.bbox
        for box_b in b.boxes:
            if box_a is box_b:
                return True
            bx0, by0, bx1, by1 = box_b.bbox
            width = min(ax1, bx1) - max(ax0, bx0)
            height = min(ay1, by1) - max(ay0, by0)
            if width <= 0 or height <= 0:
                continue
            smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
            if smaller > 0 and width * height >= 0.5 * smaller:
                return True
    return False


def decide(candidate: Candidate, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> ContainerRead:
    """Report the number only when its check digit fits and its confidence reaches the threshold."""
    accepted = candidate.number is not None and candidate.check_digit_valid
    accepted = accepted and candidate.confidence >= min_confidence
    return ContainerRead(
        container=candidate.number if accepted else None,
        raw=candidate.number,
        check_digit_valid=candidate.check_digit_valid,
        confidence=round(candidate.confidence, 4),
        size_type=candidate.size_type,
    )


def read_container(
    boxes: Iterable[TextBox], *, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> ContainerRead:
    """The container number in one frame's text boxes, or None with the reason in the fields."""
    return decide(assemble(boxes), min_confidence=min_confidence)
