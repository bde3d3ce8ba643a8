"""RapidOCR (``rapidocr`` 3.x, ONNX Runtime) behind the ``OcrEngine`` seam.

The detection, direction and recognition models ship inside the ``rapidocr`` wheel, so nothing is
downloaded at start-up; the engine is built once and reused for every frame.

A frame larger than the detector needs (a 1920x1080 gate camera) is looked for text at the
detector's size and the boxes it finds are recognised from the frame itself, so small print keeps
its pixels while the detector's cost stays that of a 720p frame."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ocr.engine import Image, check_image
from ocr.errors import EngineUnavailable, OcrError
from ocr.textbox import Quad, Recognized, TextBox

log = logging.getLogger(__name__)

MIN_CROP_PX = 8
TEXT_SCORE = 0.5
"""Recognised text below this confidence is dropped, as RapidOCR drops it (its own default)."""
PARAMS: dict[str, Any] = {
    "Global.log_level": "error",
    "Global.text_score": TEXT_SCORE,
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
FULL_SIDE = 736
"""The short side, in pixels, of the full look's detector input (RapidOCR's own default). RapidOCR
scales a smaller frame up to it but runs a larger one as it is: a 1920x1080 frame's detector took
about 2 s of CPU here against 0.4 s at 1312x736, and drew looser boxes round text bigger than it
was trained on (an owner code's box ran into its serial's, and the two no longer made a number).
Such a frame is scaled down to it for detection only (``_read_large``)."""


class RapidOcrEngine:
    """Reads text with RapidOCR; one instance per process (see ``ocr.engine.load_engine``)."""

    name = "rapidocr"
    quick_look = True

    def __init__(self, threads: int | None = None) -> None:
        params, coarse_params = PARAMS, COARSE_PARAMS
        if threads is not None:
            # ONNX Runtime's worker threads spin while they wait for work: a second thread took
            # 12.4 s for 36 frames against 15.9 s with one, for 23.9 s of CPU against 16.2 s.
            sized = {"EngineConfig.onnxruntime.intra_op_num_threads": threads}
            sized["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
            params, coarse_params = {**PARAMS, **sized}, {**COARSE_PARAMS, **sized}
        try:
            from rapidocr import RapidOCR
        except ImportError as error:
            raise EngineUnavailable(f"OCR engine 'rapidocr' is not installed: {error}") from error
        try:
            self._engine: Any = RapidOCR(params=params)
            self._coarse: Any = RapidOCR(params=coarse_params)
        except Exception as error:
            raise OcrError(f"RapidOCR could not be set up: {error}") from error
        self._lock = threading.Lock()

    def read(self, image: Image, *, coarse: bool = False) -> list[TextBox]:
        frame = check_image(image)
        if not coarse and min(frame.shape[:2]) > FULL_SIDE:
            return self._read_large(frame)
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

    def _read_large(self, frame: Image) -> list[TextBox]:
        """The full look at a frame whose short side exceeds ``FULL_SIDE``: text found on the frame
        scaled down to it, each box then recognised from the frame at its own resolution."""
        rows, cols = frame.shape[:2]
        scale = FULL_SIDE / min(rows, cols)
        small_cols, small_rows = max(1, round(cols * scale)), max(1, round(rows * scale))
        small = cv2.resize(frame, (small_cols, small_rows), interpolation=cv2.INTER_AREA)
        try:
            with self._lock:
                result = self._engine(small, use_det=True, use_cls=False, use_rec=False)
        except Exception as error:
            raise OcrError(f"RapidOCR failed to find text in a {cols}x{rows} frame: {error}") from error
        corners = getattr(result, "boxes", None)
        if corners is None or len(corners) == 0:
            return []
        quads = [
            quad
            for points in corners
            if (quad := _quad([(x * cols / small_cols, y * rows / small_rows) for x, y in points]))
        ]
        cut = [(quad, crop) for quad in quads if (crop := _line_crop(frame, quad)) is not None]
        reads = self.recognize([crop for _, crop in cut])
        # RapidOCR's own look drops empty and unsure text the same way.
        return [
            TextBox(read.text, read.confidence, quad)
            for (quad, _), read in zip(cut, reads, strict=True)
            if read.text.strip() and read.confidence >= TEXT_SCORE
        ]

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


def _line_crop(frame: Image, quad: Quad) -> Image | None:
    """The text in ``quad`` warped to an upright rectangle, as RapidOCR cuts a detected box (a box
    half again as tall as wide is a column and is turned to lie along its text)."""
    points = np.array(quad, dtype=np.float32)
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    if width < MIN_CROP_PX or height < MIN_CROP_PX:
        return None  # too few pixels to read, and smaller than the engine seam accepts
    target = np.array([(0, 0), (width, 0), (width, height), (0, height)], dtype=np.float32)
    crop = cv2.warpPerspective(
        frame,
        cv2.getPerspectiveTransform(points, target),
        (width, height),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if height >= 1.5 * width:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop, dtype=np.uint8)


def _quad(corners: Any) -> Quad | None:
    points = [(float(point[0]), float(point[1])) for point in corners]
    if len(points) != 4 or not all(math.isfinite(value) for point in points for value in point):
        return None
    return points[0], points[1], points[2], points[3]
