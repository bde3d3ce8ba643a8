"""What an OCR engine returns: text boxes and recognised crops. Plain data, no image library, so
the number and plate logic (and the config that names plate formats) load without NumPy."""

from __future__ import annotations

import math
from dataclasses import dataclass

Point = tuple[float, float]
Quad = tuple[Point, Point, Point, Point]


@dataclass(frozen=True, slots=True)
class TextBox:
    """One piece of text an engine found: what it reads, how sure it is (0..1), and where.

    ``quad`` holds the four corners in pixels, clockwise from the top-left of the text as read
    (for text read top to bottom the first edge is the short one across the column)."""

    text: str
    confidence: float
    quad: Quad

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be str, got {type(self.text).__name__}")
        if not (0.0 <= self.confidence <= 1.0) or math.isnan(self.confidence):
            raise ValueError(f"confidence must be within 0..1, got {self.confidence!r}")
        if len(self.quad) != 4 or any(len(point) != 2 for point in self.quad):
            raise ValueError(f"quad must be four (x, y) points, got {self.quad!r}")
        if not all(math.isfinite(coordinate) for point in self.quad for coordinate in point):
            raise ValueError(f"quad has a non-finite coordinate: {self.quad!r}")

    @classmethod
    def from_bbox(cls, text: str, confidence: float, x0: float, y0: float, x1: float, y1: float) -> TextBox:
        """An axis-aligned box from its top-left (x0, y0) and bottom-right (x1, y1) corners."""
        return cls(text, confidence, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """The axis-aligned bounds (x0, y0, x1, y1)."""
        xs = [point[0] for point in self.quad]
        ys = [point[1] for point in self.quad]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True, slots=True)
class Recognized:
    """The text read from one crop and the engine's confidence in it (0..1)."""

    text: str
    confidence: float
