"""Container-number assembly from synthetic text boxes: layouts, look-alikes, refusals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gated.iso6346 import check_digit, is_valid
from ocr.assemble import NOTHING, Candidate, assemble, decide, read_container, vote
from ocr.textbox import TextBox

CHAR_W = 24.0
CHAR_H = 40.0


def line(text: str, x: float, y: float, confidence: float = 0.98) -> TextBox:
    """A horizontal box of ``text`` starting at (x, y), sized like painted characters."""
    return TextBox.from_bbox(text, confidence, x, y, x + CHAR_W * len(text), y + CHAR_H)


def column(text: str, x: float, y: float, confidence: float = 0.97) -> list[TextBox]:
    """One box per character down a door post."""
    step = CHAR_H * 1.15
    return [
        TextBox.from_bbox(char, confidence, x, y + i * step, x + CHAR_H * 0.8, y + i * step + CHAR_H)
        for i, char in enumerate(text)
    ]


def valid_number(rng: random.Random) -> str:
    owner = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3)) + rng.choice("UJZ")
    serial = "".join(rng.choice("0123456789") for _ in range(6))
    return f"{owner}{serial}{check_digit(owner + serial)}"


DOOR_NOISE = [
    line("MAX GROSS", 100, 400),
    line("30480 KG", 340, 400),
    line("67200 LBS", 340, 445),
    line("TARE", 100, 490),
    line("3750 KG", 340, 490),
    line("TEL +45 3363 3363", 100, 600),
]


def test_one_box_with_spaces() -> None:
    read = read_container([line("MSKU 413532 9", 100, 100), line("22G1", 220, 150)])
    assert read.container == "MSKU4135329"
    assert read.size_type == "22G1"
    assert read.check_digit_valid


def test_split_boxes_on_one_line_with_boxed_check_digit() -> None:
    boxes = [
        line("CSQU", 100, 100),
        line("305438", 100 + 5 * CHAR_W, 102),
        line("[3]", 100 + 12 * CHAR_W, 99),
    ]
    read = read_container(boxes)
    assert read.container == "CSQU3054383"


def test_split_boxes_in_any_order_and_skewed() -> None:
    def skewed(text: str, x: float, y: float) -> TextBox:
        width = CHAR_W * len(text)
        dy = width * 0.3
        return TextBox(
            text, 0.99, ((x, y), (x + width, y + dy), (x + width, y + dy + CHAR_H), (x, y + CHAR_H))
        )

    boxes = [skewed("4135329", 220, 130), skewed("MSKU", 100, 100)]
    assert read_container(boxes).container == "MSKU4135329"


def test_stacked_owner_code_above_serial() -> None:
    boxes = [line("BICU", 100, 100), line("1234565", 100, 150), line("45G1", 100, 205)]
    read = read_container(boxes)
    assert read.container == "BICU1234565"
    assert read.size_type == "45G1"


def test_vertical_one_character_per_box() -> None:
    read = read_container(column("ABCU1234560", 500, 50))
    assert read.container == "ABCU1234560"


def test_vertical_text_box_read_top_to_bottom() -> None:
    owner = TextBox("KMTU", 0.99, ((900, 100), (950, 100), (950, 300), (900, 300)))
    serial = TextBox("7206820", 0.99, ((900, 320), (950, 320), (950, 670), (900, 670)))
    expected = "KMTU7206820"
    assert is_valid(expected)
    assert read_container([owner, serial]).container == expected


def test_far_apart_pieces_are_not_joined() -> None:
    boxes = [line("MSKU", 100, 100), line("4135329", 900, 100)]
    assert read_container(boxes).raw is None


def test_door_text_alone_gives_nothing() -> None:
    assert assemble(DOOR_NOISE) == NOTHING


def test_door_text_does_not_disturb_the_number() -> None:
    read = read_container([*DOOR_NOISE, line("TGBU", 100, 100), line("7083337", 220, 100)])
    assert read.container == "TGBU7083337"


def test_number_inside_longer_text_is_not_cut_out() -> None:
    assert assemble([line("XMSKU4135329", 100, 100)]) == NOTHING
    assert assemble([line("TEL 0045MSKU4135329", 100, 100)]) == NOTHING


def test_look_alikes_swapped_only_by_class() -> None:
    read = read_container([line("MSKU 4I3532 9", 100, 100)])
    assert read.container == "MSKU4135329"
    assert read.confidence < 0.98
    read = read_container([line("C5QU 3O54383", 100, 100)], min_confidence=0.0)
    assert read.container == "CSQU3054383"
    assert read.confidence <= 0.98 * 0.9 * 0.9 + 1e-9
    assert read_container([line("C5QU 3O54383", 100, 100)]).container is None
    assert assemble([line("8SKU 4135329", 100, 100)]).number == "BSKU4135329"
    assert assemble([line("MSKU S135329", 100, 100)]).number == "MSKU5135329"


def test_too_many_look_alikes_are_refused() -> None:
    assert assemble([line("C5QU 3O5438B", 100, 100)]) == NOTHING


def test_category_must_be_u_j_or_z() -> None:
    number = "MSKA413532"
    assert assemble([line(number + str(0), 100, 100)]) == NOTHING


def test_invalid_check_digit_is_reported_raw_never_corrected() -> None:
    read = read_container([line("MSKU 413532 8", 100, 100)])
    assert read.container is None
    assert read.raw == "MSKU4135328"
    assert not read.check_digit_valid


def test_low_confidence_gives_no_number_but_keeps_raw() -> None:
    read = read_container([line("MSKU4135329", 100, 100, confidence=0.5)])
    assert read.container is None
    assert read.raw == "MSKU4135329"
    assert read.check_digit_valid


def test_two_different_numbers_in_one_frame_are_not_trusted() -> None:
    read = read_container([line("MSKU4135329", 100, 100), line("CSQU3054383", 100, 400)])
    assert read.container is None


def test_same_number_twice_in_one_frame_agrees() -> None:
    once = assemble([line("MSKU4135329", 100, 100, 0.85)])
    twice = assemble([line("MSKU4135329", 100, 100, 0.85), line("MSKU4135329", 100, 400, 0.85)])
    assert twice.number == "MSKU4135329"
    assert twice.confidence > once.confidence


def test_vote_agreement_raises_and_disagreement_lowers() -> None:
    a = Candidate("MSKU4135329", True, 0.75, "22G1")
    b = Candidate("MSKU4135329", True, 0.7, None)
    c = Candidate("CSQU3054383", True, 0.7, None)
    agreed = vote([a, b])
    assert agreed.number == "MSKU4135329"
    assert agreed.confidence > 0.9
    assert agreed.size_type == "22G1"
    split = vote([a, b, c])
    assert split.confidence < agreed.confidence
    assert decide(vote([a, c])).container is None
    assert vote([]) == NOTHING
    assert vote([NOTHING, a]).number == "MSKU4135329"


def test_vote_prefers_a_valid_check_digit() -> None:
    invalid = Candidate("MSKU4135328", False, 0.99, None)
    valid = Candidate("MSKU4135329", True, 0.9, None)
    result = vote([invalid, valid])
    assert result.number == "MSKU4135329"
    assert decide(result).container is None


LAYOUTS = ["one", "split", "split_boxed", "stacked", "column"]


def layout(number: str, kind: str, x: float, y: float) -> list[TextBox]:
    if kind == "one":
        return [line(f"{number[:4]} {number[4:10]} {number[10]}", x, y)]
    if kind == "split":
        return [line(number[:4], x, y), line(number[4:], x + 5 * CHAR_W, y + 2)]
    if kind == "split_boxed":
        return [
            line(number[:4], x, y),
            line(number[4:10], x + 5 * CHAR_W, y),
            line(number[10], x + 12 * CHAR_W, y),
        ]
    if kind == "stacked":
        return [line(number[:4], x, y), line(number[4:], x, y + CHAR_H * 1.3)]
    return column(number, x, y)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(LAYOUTS), noise=st.booleans())
def test_valid_numbers_in_every_layout_are_read_exactly(seed: int, kind: str, noise: bool) -> None:
    rng = random.Random(seed)
    number = valid_number(rng)
    x, y = rng.uniform(0, 300), rng.uniform(0, 150)
    boxes = layout(number, kind, x, y)
    if noise:
        boxes = [*boxes, *(TextBox.from_bbox(b.text, b.confidence, *shift(b, 900)) for b in DOOR_NOISE)]
    read = read_container(boxes)
    assert read.container == number


def shift(box: TextBox, dx: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box.bbox
    return x0 + dx, y0, x1 + dx, y1


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-"


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(st.text(ALPHABET, min_size=1, max_size=16), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_garbage_never_gives_a_number_with_a_failing_check_digit(texts: list[str], seed: int) -> None:
    rng = random.Random(seed)
    boxes = [line(text, rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(0.3, 1.0)) for text in texts]
    read = read_container(boxes)
    if read.container is not None:
        assert is_valid(read.container)
        assert read.check_digit_valid


def test_garbage_mostly_gives_none() -> None:
    rng = random.Random(6346)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    numbers = 0
    for _ in range(500):
        boxes = []
        for _ in range(rng.randint(1, 10)):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            boxes.append(line(text, rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(0.5, 1.0)))
        if read_container(boxes).container is not None:
            numbers += 1
    assert numbers <= 5


def test_text_box_validates_itself() -> None:
    with pytest.raises(ValueError):
        TextBox.from_bbox("A", 1.5, 0, 0, 1, 1)
    with pytest.raises(ValueError):
        TextBox("A", 0.5, ((0, 0), (1, 0), (1, 1)))  # type: ignore[arg-type]
