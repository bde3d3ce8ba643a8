"""gated's own OCR: frame sources (``frames``), the engine seam (``engine``, ``rapid``),
container-number assembly from text boxes (``assemble``) and worker processes that run it
(``pool``). ``gated ocr`` reads image files; ``drivers.ocr_frames`` reads live camera frames."""
