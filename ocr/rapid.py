"""RapidOCR (``rapidocr`` 3.x, ONNX Runtime) behind the ``OcrEngine`` seam.

The detection, direction and recognition models ship inside the ``rapidocr`` wheel, so nothing is
downloaded at start-up; the engine is built once and reused for every frame."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from ocr.engine import Image, Quad, TextBox, check_image
from ocr.errors import EngineUnavailable, OcrError

log = logging.getLogger(__name__)


class RapidOcrEngine:
    """Reads text with RapidOCR; one instance per process (see ``ocr.engine.load_engine``)."""

    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as error:
            raise EngineUnavailable(f"OCR engine 'rapidocr' is not installed: {error}") from error
        try:
            self._engine: Any = RapidOCR(params={"Global.log_level": "error"})
        except Exception as error:
            raise OcrError(f"RapidOCR could not be set up: {error}") from error
        self._lock = threading.Lock()

    def read(self, image: Image) -> list[TextBox]:
        frame = check_image(image)
        try:
            with self._lock:
                result = self._engine(frame)
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


def _quad(corners: Any) -> Quad | None:
    points = [(float(point[0]), float(point[1])) for point in corners]
    if len(points) != 4 or not all(math.isfinite(value) for point in points for value in point):
        return None
    return points[0], points[1], points[2], points[3]
