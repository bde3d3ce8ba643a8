"""``gated ocr IMAGE [IMAGE ...]``: read container numbers from image files (CONTRACT section 2);
with ``--plates``, licence plates instead (``ocr.plate``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ocr.assemble import DEFAULT_MIN_CONFIDENCE, decide
from ocr.engine import ENGINES, Image, OcrEngine, load_engine
from ocr.errors import OcrError
from ocr.plate import DEFAULT_MIN_CONFIDENCE as PLATE_MIN_CONFIDENCE
from ocr.plate import read_plate
from ocr.reader import read_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ocr`` sub-command to ``gated``'s sub-parsers; its handler is ``run``."""
    from gated.cli.common import examples

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ocr",
        help="read container numbers from image files (or folders of images)",
        **examples(
            "gated ocr photo.jpg                         # one image",
            "gated ocr gate-photos/ --json               # every image in a folder, JSON lines",
            "gated ocr --plates plate.jpg                # a licence plate instead",
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="an image file or a folder of images")
    parser.add_argument("--engine", default="rapidocr", choices=ENGINES, help="OCR engine (default rapidocr)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    parser.add_argument(
        "--plates", action="store_true", help="read licence plates instead of container numbers"
    )
    parser.add_argument(
        "--min-confidence",
        type=_fraction,
        default=None,
        help="report a number only at or above this confidence (default "
        f"{DEFAULT_MIN_CONFIDENCE}; {PLATE_MIN_CONFIDENCE} for plates, which have no check digit)",
    )
    parser.set_defaults(handler=run)
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def image_files(arguments: list[str]) -> list[Path]:
    """The files named, with folders replaced by the images in them (sorted by name)."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def read_file(engine: OcrEngine, path: Path, *, min_confidence: float) -> dict[str, Any]:
    """The CONTRACT object for one image; ``error`` is set when the file could not be read."""

    def number(image: Image) -> dict[str, Any]:
        result = decide(read_image(engine, image), min_confidence=min_confidence)
        return {
            "container": result.container,
            "confidence": result.confidence,
            "size_type": result.size_type,
            "raw": result.raw,
            "check_digit_valid": result.check_digit_valid,
        }

    empty = {"container": None, "confidence": 0.0, "size_type": None}
    return _record(engine, path, empty, number)


def read_plate_file(engine: OcrEngine, path: Path, *, min_confidence: float) -> dict[str, Any]:
    """The ``--plates`` object for one image; ``error`` is set when the file could not be read."""

    def plate(image: Image) -> dict[str, Any]:
        result = read_plate(engine.read(image), min_confidence=min_confidence, frame_width=image.shape[1])
        return {
            "plate": result.plate,
            "raw": result.raw,
            "confidence": result.confidence,
            "format": result.format,
        }

    empty = {"plate": None, "raw": None, "confidence": 0.0, "format": None}
    return _record(engine, path, empty, plate)


def _record(
    engine: OcrEngine, path: Path, empty: dict[str, Any], read: Callable[[Image], dict[str, Any]]
) -> dict[str, Any]:
    """One image's object: ``empty``'s fields, filled by ``read`` unless the file or the engine
    failed (then ``error`` says why), with the engine's name and the seconds it took."""
    started = time.perf_counter()
    record: dict[str, Any] = {"file": str(path), **empty, "engine": engine.name}
    image = _load(path)
    if isinstance(image, str):
        record["error"] = image
    else:
        try:
            record.update(read(image))
        except OcrError as error:
            record["error"] = str(error)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _load(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]] | str:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return f"{path} is not an image OpenCV can decode"
    return np.asarray(image, dtype=np.uint8)


def empty_folders(arguments: list[str]) -> list[str]:
    """The folders named that hold no image: a user who names one expects something read."""
    return [
        argument
        for argument in arguments
        if Path(argument).is_dir()
        and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(argument).iterdir())
    ]


def run(args: argparse.Namespace) -> int:
    """Read every image; exit 0, or 1 when the engine or any file could not be read, or a folder
    named holds no image."""
    empty = empty_folders(list(args.images))
    for folder in empty:
        print(f"gated ocr: no images in {folder}", file=sys.stderr)
    if empty and not image_files(list(args.images)):
        return 1
    try:
        engine = load_engine(args.engine)
    except OcrError as error:
        print(f"gated ocr: {error}", file=sys.stderr)
        return 1
    failed = False
    plates = bool(args.plates)
    default = PLATE_MIN_CONFIDENCE if plates else DEFAULT_MIN_CONFIDENCE
    min_confidence = default if args.min_confidence is None else args.min_confidence
    for path in image_files(list(args.images)):
        if plates:
            record = read_plate_file(engine, path, min_confidence=min_confidence)
        else:
            record = read_file(engine, path, min_confidence=min_confidence)
        failed = failed or "error" in record
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(_plate_line(record) if plates else _line(record), flush=True)
    return 1 if failed or empty else 0


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"{record['file']}: error: {record['error']}"
    size = f" {record['size_type']}" if record["size_type"] else ""
    timing = f"({record['confidence']:.2f}, {record['seconds']:.2f} s)"
    if record["container"]:
        return f"{record['file']}: {record['container']}{size} {timing}"
    if record.get("raw"):
        flag = "" if record["check_digit_valid"] else ", check digit does not fit"
        return f"{record['file']}: unread (saw {record['raw']}{flag}){size} {timing}"
    return f"{record['file']}: unread{size} {timing}"


def _plate_line(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"{record['file']}: error: {record['error']}"
    timing = f"({record['confidence']:.2f}, {record['seconds']:.2f} s)"
    if record["plate"]:
        return f"{record['file']}: {record['plate']} {record['format']} {timing}"
    if record["raw"]:
        return f"{record['file']}: unread (saw {record['raw']}) {timing}"
    return f"{record['file']}: unread {timing}"
