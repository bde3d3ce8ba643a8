"""A frame with its door's locking rods taken out.

The rods (and posts, and a door's middle seam) run upright across the marks: a rod's lit edges
crossing a 3 close it into a B, and a rod through a check digit's box makes the box's outline run
on above and below it. Each image column's background is what that column shows over a long
stretch above and below (a median: the marks cover less of it than the door does); what of that
background is narrower than a few rods, against its neighbours, is the rod, and is subtracted.
Paint over a rod keeps its difference from the rod, so the marks stay and the rod's edges go."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from ocr.engine import Image

ROW_STEP = 8
"""Rows are averaged in groups of this many before the medians (a rod changes little along itself)."""
UPRIGHT_WINDOW = 21
"""Groups of rows (of ``ROW_STEP``) each column's background is the median over: about 170 rows of
a 720-row frame, two or three times a number's character height."""
COLUMN_STEP = 4
ACROSS_WINDOW = 21
"""Groups of columns (of ``COLUMN_STEP``) a column's background is compared with: about 80 columns,
a few rods wide, so a rod stands out of it and a door's colour does not."""


def _median(values: npt.NDArray[Any], window: int, axis: int) -> npt.NDArray[np.float32]:
    half = window // 2
    padding = [(0, 0)] * values.ndim
    padding[axis] = (half, half)
    padded = np.pad(values, padding, mode="edge")
    return np.asarray(np.median(sliding_window_view(padded, window, axis=axis), axis=-1), dtype=np.float32)


def without_rods(image: Image) -> Image:
    """``image`` (BGR) with its narrow upright structures subtracted."""
    rows, cols = image.shape[:2]
    short_rows, short_cols = max(1, rows // ROW_STEP), max(1, cols // COLUMN_STEP)
    grouped = cv2.resize(image, (cols, short_rows), interpolation=cv2.INTER_AREA).astype(np.float32)
    background = _median(grouped, UPRIGHT_WINDOW, axis=0)
    narrow_cols = cv2.resize(background, (short_cols, short_rows), interpolation=cv2.INTER_AREA)
    wide = cv2.resize(
        _median(narrow_cols, ACROSS_WINDOW, axis=1), (cols, short_rows), interpolation=cv2.INTER_LINEAR
    )
    narrow = cv2.resize(background - wide, (cols, rows), interpolation=cv2.INTER_LINEAR)
    cleaned = np.clip(image.astype(np.float32) - narrow, 0, 255)
    return np.ascontiguousarray(cleaned, dtype=np.uint8)
