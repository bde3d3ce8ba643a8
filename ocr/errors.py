"""Errors of the OCR package; defined in ``gated.errors`` with the rest of the one exception tree."""

from __future__ import annotations

from gated.errors import EngineUnavailable, OcrError

__all__ = ["EngineUnavailable", "OcrError"]
