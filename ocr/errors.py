"""Errors of the OCR package, all under gated's one exception tree."""

from __future__ import annotations

from gated.errors import GatedError


class OcrError(GatedError):
    """An OCR engine could not be loaded or could not read a frame."""


class EngineUnavailable(OcrError):
    """The OCR engine asked for is unknown or not installed in this environment."""
