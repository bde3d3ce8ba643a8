"""gated's own OCR: frame sources, preprocessing, engines and container-number assembly.

Today's lanes take container numbers from smart cameras that read on board
(``drivers.ocr_camera``); reading raw camera frames here is the next capability."""
