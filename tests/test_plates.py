"""Licence plates: ``ocr.plate`` on constructed text boxes (joining, distractors, swaps, disagreement,
voting, never raising), the truck-front simulator, and the real RapidOCR engine on rendered frames,
through ``read_plate`` and through ``gated ocr --plates --json``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gated.errors import GatedError
from ocr.engine import OcrEngine, load_engine
from ocr.plate import DEFAULT_MIN_CONFIDENCE, PlateFormat, PlateRead, read_plate, vote_plates
from ocr.textbox import TextBox
from simulators.plate_frames import STYLES, PlateSpec, random_spec, render_frame, write_dataset


def box(text: str, x: float, y: float, *, height: float = 40.0, confidence: float = 0.99) -> TextBox:
    """A horizontal box whose left end is at x, top at y, about 0.55 height per character wide."""
    return TextBox.from_bbox(text, confidence, x, y, x + 0.55 * height * len(text), y + height)


CAB = [
    box("KESTREL", 300, 40, height=90),
    box("UNIT 4821", 900, 160, height=60),
    box("USDOT 1234567", 80, 300, height=35),
    box("MC 123456", 100, 340, height=30),
    box("UNIT 701", 80, 160, height=60),  # plate length, and the UK-style 4+3 grouping
]


# --- reading one frame's boxes --------------------------------------------------------------------


def test_plate_in_one_box_is_read_with_separators_kept_in_raw() -> None:
    read = read_plate([*CAB, box("AB-123-CD", 500, 450)])
    assert read == PlateRead("AB123CD", "AB-123-CD", read.confidence, "eu-dash", "AB123CD")
    assert read.confidence >= DEFAULT_MIN_CONFIDENCE


def test_symbols_at_the_ends_of_a_box_are_dropped_like_separators() -> None:
    # RapidOCR reads an EU band's ring of stars as a glyph or a colon in front of the plate.
    assert read_plate([box("\u524dSR-392-RF", 500, 450)]).plate == "SR392RF"
    assert read_plate([box(":JX 998JZ*", 500, 450)]).plate == "JX998JZ"


def test_plate_split_into_two_boxes_on_one_line_is_joined() -> None:
    left = box("AB12", 500, 450)
    right = box("CDE", left.bbox[2] + 15, 452)
    read = read_plate([*CAB, right, left])
    assert (read.plate, read.raw, read.format) == ("AB12CDE", "AB12 CDE", "uk-style")


@pytest.mark.parametrize(
    "second",
    [
        box("CDE", 500, 500),  # the line below
        box("CDE", 625, 450, height=18),  # much smaller text
        box("CDE", 700, 450),  # too far along the line
    ],
)
def test_pieces_that_do_not_sit_together_like_a_plate_are_not_joined(second: TextBox) -> None:
    read = read_plate([box("AB12", 500, 450), second])
    assert read.plate is None and read.candidate is None


def test_dot_number_and_fleet_number_are_never_read_as_the_plate() -> None:
    assert read_plate(CAB).plate is None
    assert read_plate([*CAB, box("ABC 1234", 500, 450)]).plate == "ABC1234"


@pytest.mark.parametrize("text", ["XABC 1234", "ABC 12345", "USDOT ABC1234", "ABC 1234 TX", "ABC#1234"])
def test_a_plate_is_never_cut_out_of_longer_text(text: str) -> None:
    read = read_plate([box(text, 400, 450)])
    assert read.plate is None and read.candidate is None


def test_look_alikes_are_swapped_only_where_the_format_says_letter_or_digit() -> None:
    clean = read_plate([box("AB-120-CD", 500, 450)])
    swapped = read_plate([box("AB-12O-CD", 500, 450)], min_confidence=0.5)  # letter O where a digit goes
    assert clean.plate == swapped.plate == "AB120CD"
    assert swapped.confidence < clean.confidence
    two = read_plate([box("A8-12O-CD", 500, 450)], min_confidence=0.5)
    assert two.plate == "AB120CD" and two.confidence < swapped.confidence
    # A digit never becomes a letter the format does not issue (no O on eu-dash plates) ...
    assert read_plate([box("0B-123-CD", 500, 450)]).candidate is None
    # ... a letter is never swapped for another letter, and more than two swaps are refused.
    assert read_plate([box("AB-OIZ-CD", 500, 450)], min_confidence=0.0).candidate is None


def test_one_swap_is_not_enough_to_pass_the_default_threshold() -> None:
    read = read_plate([box("AB-12O-CD", 500, 450, confidence=1.0)])
    assert read.plate is None and read.candidate == "AB120CD" and read.raw == "AB-12O-CD"


def test_two_different_plates_in_one_frame_send_it_to_a_clerk() -> None:
    read = read_plate([box("ABC 1234", 500, 450), box("TRK 1042", 900, 160, height=45)])
    assert read.plate is None
    assert read.confidence < 0.6
    same_twice = read_plate([box("ABC 1234", 500, 450), box("ABC 1234", 500, 150)])
    assert same_twice.plate == "ABC1234"


def test_a_misread_plate_elsewhere_in_the_frame_lowers_the_confidence() -> None:
    alone = read_plate([box("ABC 1234", 500, 450)])
    # Letters and digits in place for "LL DDDLL", but no such plate has an I: most likely a J.
    with_near_miss = read_plate([box("ABC 1234", 500, 450), box("TI 612SN", 500, 150)])
    assert alone.plate == "ABC1234"
    assert with_near_miss.plate is None and with_near_miss.confidence < alone.confidence


def test_text_cut_off_by_the_frame_edge_is_not_used_when_the_width_is_known() -> None:
    cut = box("NIT 8252", 0, 150, height=60)
    assert read_plate([cut]).plate == "NIT8252"
    assert read_plate([cut], frame_width=1280).candidate is None


def test_formats_are_configurable_and_checked() -> None:
    dutch_like = PlateFormat("nl-like", "DD-LLL-D")
    assert read_plate([box("12-ABC-3", 500, 450)], formats=[dutch_like]).plate == "12ABC3"
    assert read_plate([box("ABC 1234", 500, 450)], formats=[dutch_like]).plate is None
    for bad in [dict(pattern="LLX 123"), dict(pattern="LD"), dict(pattern="LLL DDD", letters="abc")]:
        with pytest.raises(GatedError):
            PlateFormat(name="bad", **bad)  # type: ignore[arg-type]
    with pytest.raises(GatedError):
        read_plate([], formats=[])


# --- voting across frames -------------------------------------------------------------------------


def _read(plate: str, confidence: float) -> PlateRead:
    return PlateRead(None, plate, confidence, "us-style", plate)


def test_frames_that_agree_raise_the_confidence_modestly() -> None:
    voted = vote_plates([_read("ABC1234", 0.85), _read("ABC1234", 0.85)])
    assert voted.plate == "ABC1234" and 0.9 <= voted.confidence < 0.97
    # Correlated frames are not independent: two weak reads stay weak.
    assert vote_plates([_read("ABC1234", 0.6), _read("ABC1234", 0.6)]).plate is None


def test_frames_that_disagree_send_the_truck_to_a_clerk() -> None:
    voted = vote_plates([_read("ABC1234", 0.97), _read("ABC1234", 0.95), _read("ABG1234", 0.9)])
    assert voted.plate is None and voted.candidate == "ABC1234"
    assert vote_plates([]).plate is None
    assert vote_plates([PlateRead(None, None, 0.0, None)]).candidate is None


# --- never raising --------------------------------------------------------------------------------

coordinate = st.floats(-2000, 3000, allow_nan=False)
texts = st.one_of(
    st.text(max_size=14),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.", max_size=14),
)
boxes = st.builds(
    TextBox,
    texts,
    st.floats(0.0, 1.0),
    st.tuples(*[st.tuples(coordinate, coordinate) for _ in range(4)]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(boxes, max_size=12), st.one_of(st.none(), st.floats(1, 5000)))
def test_read_plate_never_raises_and_reports_only_format_shaped_plates(
    found: list[TextBox], frame_width: float | None
) -> None:
    read = read_plate(found, frame_width=frame_width)
    assert 0.0 <= read.confidence <= 1.0
    if read.plate is not None:
        assert read.confidence >= DEFAULT_MIN_CONFIDENCE
        assert read.plate.isascii() and read.plate.isalnum() and read.plate.isupper()
        assert read.format is not None


# --- the simulator --------------------------------------------------------------------------------


def test_frames_are_deterministic_and_the_plate_is_in_frame_at_the_asked_size() -> None:
    spec = random_spec(np.random.default_rng(3))
    first, truth = render_frame(spec, np.random.default_rng(1))
    again, _ = render_frame(spec, np.random.default_rng(1))
    assert first.shape == (720, 1280, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert truth.plate == spec.plate and truth.plate.isalnum()
    x0, y0, x1, y1 = truth.bbox
    assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
    # The plate's ink stands out from its surroundings inside the reported box.
    assert first[y0:y1, x0:x1].std() > 20
    with pytest.raises(ValueError, match="does not fit"):
        replace(spec, style="eu-dash", text="ABC 1234")


def test_dataset_is_written_with_labels(tmp_path: Path) -> None:
    labels = write_dataset(tmp_path, 3, seed=5)
    rows = list(csv.DictReader(labels.open()))
    assert len(rows) == 3 and all((tmp_path / row["file"]).stat().st_size > 10_000 for row in rows)
    assert all(row["style"] in {style.name for style in STYLES} for row in rows)


# --- the real engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    pytest.importorskip("rapidocr")
    return load_engine("rapidocr")


def _easy_specs() -> list[PlateSpec]:
    """One frame per style plus a few more, in fair conditions, and one with a plate-shaped fleet code."""
    gen = np.random.default_rng(2024)
    specs = [random_spec(gen, hard=0.0, plate_shaped_fleet=0.0, styles=(style.name,)) for style in STYLES]
    specs += [random_spec(gen, hard=0.0, plate_shaped_fleet=0.0, char_height=(16.0, 24.0)) for _ in range(3)]
    return specs


def test_rendered_plates_are_read_by_rapidocr_and_never_confidently_wrong(engine: OcrEngine) -> None:
    gen = np.random.default_rng(7)
    exact = 0
    for spec in _easy_specs():
        image, truth = render_frame(spec, gen)
        read = read_plate(engine.read(image), frame_width=image.shape[1])
        assert read.plate in (None, truth.plate), (truth, read)
        exact += read.plate == truth.plate
    assert exact >= 7
    # A fleet code shaped like a plate on the cab: two plates in one frame, so none is reported.
    spec = replace(_easy_specs()[0], fleet_number="TRK 1042", char_height_px=18.0, position=(0.5, 0.75))
    image, truth = render_frame(spec, gen)
    found = engine.read(image)
    assert "TRK 1042" in [found_box.text for found_box in found]  # the whole cab is in view
    read = read_plate(found, frame_width=image.shape[1])
    assert read.plate is None and read.candidate in (truth.plate, "TRK1042")


def test_gated_ocr_plates_json_on_a_folder(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr")
    labels = write_dataset(tmp_path, 3, seed=11)
    truth = {row["file"]: row["plate"] for row in csv.DictReader(labels.open())}
    result = subprocess.run(
        [sys.executable, "-m", "gated", "ocr", "--plates", "--json", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(record["file"]).name for record in records] == sorted(truth)
    for record in records:
        assert set(record) == {"file", "plate", "raw", "confidence", "format", "engine", "seconds"}
        assert record["engine"] == "rapidocr" and 0.0 <= record["confidence"] <= 1.0
        assert record["plate"] in (None, truth[Path(record["file"]).name])
    assert any(record["plate"] for record in records)
