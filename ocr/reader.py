"""One frame in, one container-number candidate out: the engine's text boxes assembled by geometry.

This is the single entry point the CLI, the benchmark and the live camera driver use to read a frame,
so every path reads numbers the same way (``ocr.assemble`` does the number logic)."""

from __future__ import annotations

from ocr.assemble import Candidate, assemble
from ocr.engine import Image, OcrEngine, check_image


def read_image(engine: OcrEngine, image: Image) -> Candidate:
    """The best container number in ``image`` (``assemble``'s ``NOTHING`` when there is none).

    Raises ``OcrError`` when the image is not a BGR frame or the engine fails."""
    frame = check_image(image)
    return assemble(engine.read(frame))
