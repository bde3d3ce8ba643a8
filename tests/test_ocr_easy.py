"""The real EasyOCR engine on a plate these tests render, its refusal of weights that do not match
their known MD5, and the side-by-side OCR benchmark."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr.assemble import decide, read_container
from ocr.easy import WEIGHTS_MD5, EasyOcrEngine, default_model_dir
from ocr.errors import EngineUnavailable, OcrError
from ocr.reader import read_image
from ocr.textbox import TextBox

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _easyocr_importable() -> str | None:
    """None when easyocr imports; otherwise why not."""
    try:
        importlib.import_module("easyocr")
        importlib.import_module("easyocr_en_models")
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def _require_easyocr() -> None:
    """Skip without torch; with torch installed but easyocr broken, fail under GATED_REQUIRE_SYSTEM=1."""
    try:
        importlib.import_module("torch")
    except Exception as error:
        pytest.skip(f"torch is not installed: {error}")
    problem = _easyocr_importable()
    if problem is None:
        return
    message = f"torch is installed but easyocr does not import: {problem}"
    if os.environ.get("GATED_REQUIRE_SYSTEM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def engine() -> EasyOcrEngine:
    _require_easyocr()
    return EasyOcrEngine()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT.exists():
        return ImageFont.truetype(str(FONT), size)
    return ImageFont.load_default(size)


def plate(lines: list[str], *, width: int = 1280, height: int = 720, size: int = 80) -> np.ndarray:
    """A white plate with black text, one entry per line, as a BGR frame."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = 120
    for text in lines:
        draw.text((160, y), text, fill="black", font=_font(size))
        y += int(size * 1.4)
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def test_horizontal_number_is_read_exactly(engine: EasyOcrEngine) -> None:
    boxes = engine.read(plate(["MSKU 413532 9", "22G1"]))
    assert boxes and all(isinstance(box, TextBox) for box in boxes)
    read = read_container(boxes)
    assert read.container == "MSKU4135329"
    assert read.size_type == "22G1"


def test_the_reader_and_its_crop_rereads_work_on_easyocr(engine: EasyOcrEngine) -> None:
    frame = plate(["MSKU 413532 9", "22G1"])
    assert decide(read_image(engine, frame)).container == "MSKU4135329"
    (line,) = engine.recognize([frame[100:230, 120:1100]])
    assert "MSKU" in line.text.replace(" ", "") and 0.0 <= line.confidence <= 1.0


def test_blank_frame_gives_nothing(engine: EasyOcrEngine) -> None:
    blank = np.full((720, 1280, 3), 255, dtype=np.uint8)
    assert read_container(engine.read(blank)).container is None


def test_bad_input_raises_our_error(engine: EasyOcrEngine) -> None:
    with pytest.raises(OcrError):
        engine.read(np.zeros((10, 10), dtype=np.uint8))


def test_weights_with_a_changed_byte_are_refused(tmp_path: Path) -> None:
    _require_easyocr()
    for name in WEIGHTS_MD5:
        shutil.copyfile(default_model_dir() / name, tmp_path / name)
    target = tmp_path / "english_g2.pth"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(OcrError) as caught:
        EasyOcrEngine(model_dir=tmp_path)
    message = str(caught.value)
    assert not isinstance(caught.value, EngineUnavailable)
    assert "english_g2.pth" in message
    assert WEIGHTS_MD5["english_g2.pth"] in message
    assert "md5" in message


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    _require_easyocr()
    with pytest.raises(OcrError, match=r"craft_mlt_25k\.pth"):
        EasyOcrEngine(model_dir=tmp_path)


@pytest.mark.timeout(600)
def test_bench_ocr_reports_both_engines_side_by_side(tmp_path: Path) -> None:
    """A short run: RapidOCR on every frame, EasyOCR on the first (or reported unavailable).
    The real photos have their own test (tests/test_bench_ocr.py); here they are left out."""
    pytest.importorskip("rapidocr")
    from gated.bench.ocr import bench_ocr

    result = bench_ocr(
        quick=True, frames=6, easyocr_frames=1, visits=1, plates=2, real_photos=tmp_path / "no-photos"
    )
    assert result["real_photos"]["status"] == "absent"
    assert result["bench"] == "ocr"
    assert result["frames"] == 6
    assert {"machine", "default_engine", "engines", "compared", "memory_method"} <= result.keys()
    rapid = result["engines"]["rapidocr"]
    assert rapid["status"] == "measured"
    assert rapid["frames"] == 6
    shares = ("read_exactly", "confidently_wrong", "sent_to_review")
    assert sum(rapid[key] for key in shares) == pytest.approx(1.0, abs=1e-3)
    assert 0 < rapid["median_seconds"] <= rapid["p95_seconds"]
    assert "peak_rss_growth_mb" in rapid
    latency = result["visit_ready_after_last_frame"]
    assert [row["workers"] for row in latency] == [1, 2] and all(row["median_seconds"] > 0 for row in latency)
    assert result["plates"]["frames"] == 2
    easy = result["engines"]["easyocr"]
    if _easyocr_importable() is None:
        assert easy["status"] == "measured"
        assert easy["frames"] == 1
        assert result["compared_on_frames"] == 1
        assert set(result["compared"]) == {"rapidocr", "easyocr"}
    else:
        assert easy["status"] == "unavailable"
        assert "easyocr" in easy["reason"]
        assert result["compared_on_frames"] == 6
    assert result["default_engine"] in (None, *result["compared"])
