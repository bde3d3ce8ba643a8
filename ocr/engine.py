"""The OCR engine seam: what every engine does (``ocr.textbox`` holds what it returns) and how one
is chosen by name.

Engines only find and read text; turning text boxes into a container number is ``ocr.assemble``'s
job, so engines can be swapped (or faked in tests) without touching the number logic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ocr.errors import EngineUnavailable, OcrError
from ocr.textbox import Recognized, TextBox

Image = npt.NDArray[np.uint8]

ENGINES = ("rapidocr", "easyocr")


class OcrEngine(Protocol):
    """Finds and reads text in one BGR frame (``numpy`` array of shape (height, width, 3), uint8)."""

    @property
    def name(self) -> str: ...

    @property
    def quick_look(self) -> bool:
        """True when ``read(..., coarse=True)`` is a quicker look than the full one."""
        ...

    def read(self, image: Image, *, coarse: bool = False) -> list[TextBox]:
        """All text boxes in the frame; raises ``OcrError`` when the engine fails.

        ``coarse`` asks for a quicker look (the text detector at a lower resolution) that finds the
        bigger text; the reader takes it first and looks again in full only when it found no number.
        An engine without a quicker look gives its full one."""
        ...

    def recognize(self, crops: Sequence[Image]) -> list[Recognized]:
        """The text of each crop, read as one line without looking for text first (the reader
        re-reads parts of a frame this way); raises ``OcrError`` when the engine fails."""
        ...


_loaded: dict[tuple[str, int | None], OcrEngine] = {}


def load_engine(name: str, threads: int | None = None) -> OcrEngine:
    """The engine called ``name``, loaded once per process (models are big and slow to load).

    ``threads``: how many threads the engine spreads one frame over; None lets the runtime choose
    (every core: the quickest single frame). The OCR pool's workers use one each."""
    key = (name, threads)
    if key in _loaded:
        return _loaded[key]
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if name == "rapidocr":
        from ocr.rapid import RapidOcrEngine

        engine: OcrEngine = RapidOcrEngine(threads=threads)
    elif name == "easyocr":
        from ocr.easy import EasyOcrEngine

        engine = EasyOcrEngine(threads=threads)
    else:
        raise EngineUnavailable(f"unknown OCR engine {name!r}; known: {', '.join(ENGINES)}")
    _loaded[key] = engine
    return engine


def check_image(image: object) -> Image:
    """``image`` if it is a BGR uint8 frame; ``OcrError`` otherwise."""
    if not isinstance(image, np.ndarray):
        raise OcrError(f"an image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise OcrError(f"an image must be BGR uint8 of shape (h, w, 3), got {image.dtype} {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise OcrError(f"image too small to read: {image.shape[1]}x{image.shape[0]}")
    return image
