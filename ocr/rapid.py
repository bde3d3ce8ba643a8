"""RapidOCR (``rapidocr`` 3.x, ONNX Runtime) behind the ``OcrEngine`` seam.

The detection, direction and recognition models ship inside the ``rapidocr`` wheel, so nothing is
downloaded at start-up; the engine is built once and reused for every frame."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from ocr.engine import Image, check_image
from ocr.errors import EngineUnavailable, OcrError
from ocr.textbox import Quad, Recognized, TextBox

log = logging.getLogger(__name__)

PARAMS: dict[str, Any] = {
    "Global.log_level": "error",
    # The text-direction classifier only tells upright from upside-down lines; container marks are
    # never painted upside down, and skipping it took 10% off the time per frame and misread less.
    "Global.use_cls": False,
    # ONNX Runtime's memory arena keeps buffers between frames instead of allocating them anew:
    # about 10% faster per frame here, for a few tens of MB held.
    "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
}
COARSE_SIDE = 832
"""The long side, in pixels, of the quick look's detector input (the full look scales the short side
up to 736, about 1309x736 for a 720p frame): text detection costs in proportion to the pixels. At
832 px a 1280x720 frame's median read took 0.31 s against 0.37 s at 960 px, read as many numbers
exactly (the full look still catches what the quick look misses) and had a shorter p95."""
COARSE_PARAMS: dict[str, Any] = {**PARAMS, "Det.limit_type": "max", "Det.limit_side_len": COARSE_SIDE}


class RapidOcrEngine:
    """Reads text with RapidOCR; one instance per process (see ``ocr.engine.load_engine``)."""

    name = "rapidocr"
    quick_look = True

    def __init__(self) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as error:
            raise EngineUnavailable(f"OCR engine 'rapidocr' is not installed: {error}") from error
        try:
            self._engine: Any = RapidOCR(params=PARAMS)
            self._coarse: Any = RapidOCR(params=COARSE_PARAMS)
        except Exception as error:
            raise OcrError(f"RapidOCR could not be set up: {error}") from error
        self._lock = threading.Lock()

    def read(self, image: Image, *, coarse: bool = False) -> list[TextBox]:
        frame = check_image(image)
        engine = self._coarse if coarse else self._engine
        try:
            with self._lock:
                # RapidOCR remembers the use_* switches of its last call: name them on every call.
                result = engine(frame, use_det=True, use_cls=False, use_rec=True)
        except Exception as error:
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            raise OcrError(f"RapidOCR failed on a {size} frame: {error}") from error
        boxes = getattr(result, "boxes", None)
        texts = getattr(result, "txts", None)
        scores = getattr(result, "scores", None)
        if boxes is None or texts is None or scores is None:
            return []
        found: list[TextBox] = []
        for corners, text, score in zip(boxes, texts, scores, strict=True):
            quad = _quad(corners)
            confidence = float(score)
            if quad is None or not math.isfinite(confidence):
                continue
            found.append(TextBox(str(text), min(1.0, max(0.0, confidence)), quad))
        return found

    def recognize(self, crops: Sequence[Image]) -> list[Recognized]:
        read: list[Recognized] = []
        for crop in crops:
            frame = check_image(crop)
            try:
                with self._lock:
                    result = self._engine(frame, use_det=False, use_cls=False, use_rec=True)
            except Exception as error:
                size = f"{frame.shape[1]}x{frame.shape[0]}"
                raise OcrError(f"RapidOCR failed to recognise a {size} crop: {error}") from error
            texts = getattr(result, "txts", None) or ("",)
            scores = getattr(result, "scores", None) or (0.0,)
            confidence = float(scores[0])
            if not math.isfinite(confidence):
                confidence = 0.0
            read.append(Recognized(str(texts[0]), min(1.0, max(0.0, confidence))))
        return read


def _quad(corners: Any) -> Quad | None:
    points = [(float(point[0]), float(point[1])) for point in corners]
    if len(points) != 4 or not all(math.isfinite(value) for point in points for value in point):
        return None
    return points[0], points[1], points[2], points[3]
