"""gated's own OCR: frame sources (``frames``), the engine seam (``engine``, ``rapid``) and
container-number assembly from text boxes (``assemble``). ``gated ocr`` reads image files; lanes
still take their numbers from smart cameras (``drivers.ocr_camera``) until the camera driver that
runs this OCR on live frames is built."""
