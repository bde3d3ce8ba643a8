"""`gated bench ocr`: RapidOCR and EasyOCR side by side on the same generated camera frames.

Frames come from ``simulators.camera_frames`` (seeded, one container per frame, 1280x720), written
once as JPEG into a temporary folder and read back for each engine. Most numbers carry a fitting check
digit; a share carry one that does not, and for those the right answer is null (sent to review).

Per engine: ``read_exactly`` (the reported number is the right answer, null included for the
invalid ones), ``confidently_wrong`` (a number reported that is not the truth), ``sent_to_review``
(null reported for a frame whose number is valid); the three add up to 1. Seconds per frame are timed
with ``time.perf_counter`` around ``engine.read`` plus assembly, after one warm-up frame. Memory is
the growth of the process's peak resident set (``resource.getrusage`` ``ru_maxrss``) over loading and
running the engine; engines run one after the other, RapidOCR first, so EasyOCR's figure is what it
adds on top of RapidOCR's peak.

EasyOCR is roughly ten times slower on a CPU, so it reads only the first ``easyocr_frames`` frames;
the default engine is chosen on those frames, which both engines read.

Real photos are read in the same run, by the same RapidOCR engine, right after the generated frames:
the photos listed in ``labels.csv`` (columns ``image``, ``container_number``; files under ``images/``)
of the folder named by ``$GATED_REAL_PHOTOS``, or by default ``containers-real-dev`` in the shared
datasets folder beside the checkout. Each is read as a 1920x1080 gate camera delivers it (scaled to
fill the frame, aspect kept, the rest grey) and as taken. ``real_photos`` gives, for each, the right,
wrong and unread counts and the median and p90 seconds per photo; ``real_vs_generated`` puts them
beside the generated frames' figures. Without the folder, ``real_photos`` says ``absent`` and where
it looked: nothing is measured in its place."""

from __future__ import annotations

import csv
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gated.bench.common import machine
from ocr.assemble import NOTHING, decide, vote_containers
from ocr.engine import OcrEngine
from ocr.errors import OcrError
from ocr.reader import read_image
from simulators.camera_frames import encode_jpeg, random_spec, render_frame

SEED = 6346
FRAMES_FULL = 500
FRAMES_QUICK = 40
EASYOCR_FRAMES_FULL = 100
EASYOCR_FRAMES_QUICK = 20
INVALID_SHARE = 0.10
MAX_WRONG_SHARE = 0.001
ENGINE_ORDER = ("rapidocr", "easyocr")
REAL_PHOTOS_ENV = "GATED_REAL_PHOTOS"
REAL_PHOTOS_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "containers-real-dev"
GATE_FRAME = (1920, 1080)
REAL_MEDIAN_GOAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Frame:
    path: Path
    number: str
    valid: bool

    @property
    def answer(self) -> str | None:
        return self.number if self.valid else None


@dataclass(frozen=True, slots=True)
class _Photo:
    path: Path
    number: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    reported: str | None
    seconds: float


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def generate_frames(folder: Path, count: int, seed: int = SEED) -> list[_Frame]:
    """``count`` single-container frames as JPEG files in ``folder``, with their truth."""
    gen = np.random.default_rng(seed)
    frames: list[_Frame] = []
    for index in range(count):
        spec = random_spec(gen, two_containers=0.0, invalid=INVALID_SHARE)
        bgr, truth = render_frame(spec, gen)
        path = folder / f"frame-{index:05d}.jpg"
        path.write_bytes(encode_jpeg(bgr, quality=int(gen.integers(80, 95))))
        mark = truth.marks[0]
        frames.append(_Frame(path, mark.container_number, mark.check_digit_valid))
        if (index + 1) % 50 == 0:
            _progress(f"generated {index + 1}/{count} frames")
    return frames


def _load_frame(frame: _Frame) -> Any:
    image = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
    if image is None:
        raise OcrError(f"cannot read generated frame {frame.path}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def _load(name: str) -> OcrEngine:
    if name == "rapidocr":
        from ocr.rapid import RapidOcrEngine

        return RapidOcrEngine()
    from ocr.easy import EasyOcrEngine

    return EasyOcrEngine()


def _run(name: str, frames: list[_Frame]) -> tuple[list[_Outcome], dict[str, Any], OcrEngine]:
    gc.collect()
    peak_before = _peak_rss_mb()
    start = time.perf_counter()
    engine = _load(name)
    load_seconds = time.perf_counter() - start
    engine.read(_load_frame(frames[0]))
    outcomes: list[_Outcome] = []
    for index, frame in enumerate(frames):
        image = _load_frame(frame)
        start = time.perf_counter()
        try:
            reported = decide(read_image(engine, image)).container
        except OcrError as error:
            _progress(f"{name}: {frame.path.name}: {error}")
            reported = None
        outcomes.append(_Outcome(reported, time.perf_counter() - start))
        if (index + 1) % 10 == 0:
            _progress(f"{name}: {index + 1}/{len(frames)} frames")
    extra = {
        "load_seconds": round(load_seconds, 2),
        "peak_rss_growth_mb": round(_peak_rss_mb() - peak_before, 1),
    }
    return outcomes, extra, engine


def _p90(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]


def _summary(frames: list[_Frame], outcomes: list[_Outcome]) -> dict[str, Any]:
    count = len(outcomes)
    exact = wrong = review = 0
    wrong_reads: list[dict[str, Any]] = []
    for frame, outcome in zip(frames, outcomes, strict=False):
        if outcome.reported == frame.answer:
            exact += 1
        elif outcome.reported is not None:
            wrong += 1
            wrong_reads.append(
                {"frame": frame.path.name, "painted": frame.number, "reported": outcome.reported}
            )
        else:
            review += 1
    seconds = sorted(outcome.seconds for outcome in outcomes)
    p95 = seconds[min(count - 1, max(0, round(0.95 * count) - 1))]
    return {
        "frames": count,
        "read_exactly": round(exact / count, 4),
        "confidently_wrong": round(wrong / count, 4),
        "sent_to_review": round(review / count, 4),
        "right": exact,
        "wrong": wrong,
        "unread": review,
        "median_seconds": round(statistics.median(seconds), 4),
        "p90_seconds": round(_p90(seconds), 4),
        "p95_seconds": round(p95, 4),
        "wrong_reads": wrong_reads[:10],
    }


def real_photos_folder() -> Path:
    """Where the real photos are looked for: ``$GATED_REAL_PHOTOS``, else the shared dev set."""
    named = os.environ.get(REAL_PHOTOS_ENV)
    return Path(named) if named else REAL_PHOTOS_DEFAULT


def _real_photos(folder: Path) -> list[_Photo]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return [
            _Photo(folder / "images" / row["image"], row["container_number"].strip().upper())
            for row in csv.DictReader(handle)
        ]


def gate_frame(image: Any) -> Any:
    """``image`` as a 1920x1080 gate camera shows it: scaled to fill the frame, aspect kept, the
    rest grey."""
    rows, cols = image.shape[:2]
    width, height = GATE_FRAME
    scale = min(width / cols, height / rows)
    size = (min(width, round(cols * scale)), min(height, round(rows * scale)))
    scaled = image if size == (cols, rows) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    framed = cv2.copyMakeBorder(
        scaled,
        top,
        height - size[1] - top,
        left,
        width - size[0] - left,
        cv2.BORDER_CONSTANT,
        value=(128, 128, 128),
    )
    return np.ascontiguousarray(framed, dtype=np.uint8)


def _read_photos(engine: OcrEngine, photos: list[_Photo], images: list[Any]) -> dict[str, Any]:
    """Right / wrong / unread counts and seconds per photo (``read_image`` plus ``decide``)."""
    right = 0
    wrong_reads: list[dict[str, Any]] = []
    unread: list[str] = []
    seconds: list[float] = []
    for photo, image in zip(photos, images, strict=True):
        start = time.perf_counter()
        try:
            reported = decide(read_image(engine, image)).container
        except OcrError as error:
            _progress(f"real photos: {photo.path.name}: {error}")
            reported = None
        seconds.append(time.perf_counter() - start)
        if reported == photo.number:
            right += 1
        elif reported is None:
            unread.append(photo.path.name)
        else:
            wrong_reads.append({"photo": photo.path.name, "painted": photo.number, "reported": reported})
    ordered = sorted(seconds)
    return {
        "photos": len(photos),
        "right": right,
        "wrong": len(wrong_reads),
        "unread": len(unread),
        "median_seconds": round(statistics.median(ordered), 4),
        "p90_seconds": round(_p90(ordered), 4),
        "wrong_reads": wrong_reads,
        "unread_photos": unread,
    }


def measure_real_photos(engine: OcrEngine, folder: Path) -> dict[str, Any]:
    """The real photos in ``folder`` read at 1920x1080 and as taken; ``status`` ``absent`` (with
    the reason) when the folder holds no labelled photos."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        return {"status": "absent", "folder": str(folder), "reason": f"no {labels}"}
    photos = _real_photos(folder)
    loaded = [cv2.imread(str(photo.path), cv2.IMREAD_COLOR) for photo in photos]
    missing = [photo.path.name for photo, image in zip(photos, loaded, strict=True) if image is None]
    if missing or not photos:
        reason = f"cannot read {', '.join(missing)}" if missing else f"no photos listed in {labels}"
        return {"status": "absent", "folder": str(folder), "reason": reason}
    taken = [np.ascontiguousarray(image, dtype=np.uint8) for image in loaded]
    _progress(f"real photos: reading {len(photos)} at 1920x1080, then as taken")
    return {
        "status": "measured",
        "folder": str(folder),
        "photos": len(photos),
        "sizes_as_taken": sorted({f"{image.shape[1]}x{image.shape[0]}" for image in taken}),
        "at_1920x1080": _read_photos(engine, photos, [gate_frame(image) for image in taken]),
        "as_taken": _read_photos(engine, photos, taken),
    }


def _side_by_side(generated: dict[str, Any] | None, real: dict[str, Any]) -> dict[str, Any]:
    """The generated frames' and the real photos' figures under the same keys, and their ratio."""
    keys = ("right", "wrong", "unread", "median_seconds", "p90_seconds")
    rows: dict[str, Any] = {
        "generated_1280x720": {key: generated[key] for key in ("frames", *keys)}
        if generated
        else {"status": "not measured"},
        "real_1920x1080": {key: real["at_1920x1080"][key] for key in ("photos", *keys)}
        if real["status"] == "measured"
        else {"status": real["status"]},
    }
    if generated and real["status"] == "measured" and generated["median_seconds"] > 0:
        rows["real_over_generated_median_seconds"] = round(
            real["at_1920x1080"]["median_seconds"] / generated["median_seconds"], 2
        )
    return rows


def _visit_latency(frames: list[_Frame], *, workers: int, per_visit: int, visits: int) -> dict[str, Any]:
    """Seconds from a visit's last frame to its voted number, through the OCR process pool on the
    frames camera driver's schedule: the sharpest half of the frames from before the trigger go to
    the pool at the trigger, the rest once the window after it has passed (``post_trigger``), with
    the quick look only when an early frame settled the number; the clock starts then, when the
    last frame has been taken."""
    from drivers.ocr_frames import DEFAULT_POST_TRIGGER
    from ocr.pool import OcrPool, settled_by

    pool = OcrPool("rapidocr", workers=workers)
    try:
        pool.start().result(timeout=120)
        images = [_load_frame(frame) for frame in frames[: per_visit * visits]]
        seconds: list[float] = []
        for visit in range(visits):
            chosen = images[visit * per_visit : (visit + 1) * per_visit]
            early = per_visit // 2
            futures = [pool.submit(image) for image in chosen[:early]]
            time.sleep(DEFAULT_POST_TRIGGER)
            start = time.perf_counter()
            quick_only = any(settled_by(future) for future in futures)
            futures.extend(pool.submit(image, quick_only=quick_only) for image in chosen[early:])
            decide((vote_containers([future.result(timeout=120) for future in futures]) or [NOTHING])[0])
            seconds.append(time.perf_counter() - start)
    finally:
        pool.close()
    ordered = sorted(seconds)
    return {
        "workers": workers,
        "frames_per_visit": per_visit,
        "visits": visits,
        "median_seconds": round(statistics.median(ordered), 3),
        "max_seconds": round(ordered[-1], 3),
    }


def _default_engine(compared: dict[str, dict[str, Any]]) -> str | None:
    """The engine to use by default: the fewest confidently wrong reads first (at most the goal's
    share counts as none), then the most read exactly, then the faster."""
    if not compared:
        return None
    ranked = sorted(
        compared.items(),
        key=lambda item: (
            max(item[1]["confidently_wrong"], MAX_WRONG_SHARE),
            -item[1]["read_exactly"],
            item[1]["median_seconds"],
        ),
    )
    return ranked[0][0]


def _goals(row: dict[str, Any]) -> dict[str, bool]:
    return {
        "read_exactly_at_least_0.99": row["read_exactly"] >= 0.99,
        "confidently_wrong_at_most_0.001": row["confidently_wrong"] <= MAX_WRONG_SHARE,
        "median_seconds_at_most_0.35": row["median_seconds"] <= 0.35,
    }


def bench_ocr(
    quick: bool,
    *,
    frames: int | None = None,
    easyocr_frames: int | None = None,
    engines: tuple[str, ...] = ENGINE_ORDER,
    seed: int = SEED,
    visits: int | None = None,
    plates: int | None = None,
    real_photos: Path | None = None,
) -> dict[str, Any]:
    """Both engines on the same frames; ``easyocr_frames`` caps how many EasyOCR reads (the first ones).
    RapidOCR also reads the real photos in ``real_photos`` (default ``real_photos_folder()``);
    ``visits=0`` and ``plates=0`` leave out the pool latency and licence plates."""
    count = frames if frames is not None else FRAMES_QUICK if quick else FRAMES_FULL
    easy_count = (
        easyocr_frames
        if easyocr_frames is not None
        else EASYOCR_FRAMES_QUICK
        if quick
        else EASYOCR_FRAMES_FULL
    )
    if count < 1:
        raise ValueError("frames must be at least 1")
    easy_count = max(1, min(easy_count, count))
    result: dict[str, Any] = {"bench": "ocr", "frames": count, "seed": seed}
    engines_out: dict[str, Any] = {}
    per_engine: dict[str, list[_Outcome]] = {}
    real: dict[str, Any] = {"status": "not measured", "reason": "RapidOCR did not run"}
    with tempfile.TemporaryDirectory(prefix="gated-bench-ocr-") as folder:
        _progress(f"generating {count} frames")
        generated = generate_frames(Path(folder), count, seed)
        result["invalid_check_digit_frames"] = sum(not frame.valid for frame in generated)
        for name in ENGINE_ORDER:
            if name not in engines:
                engines_out[name] = {"status": "skipped"}
                continue
            chosen = generated if name == "rapidocr" else generated[:easy_count]
            _progress(f"{name}: loading, then reading {len(chosen)} frames")
            try:
                outcomes, extra, engine = _run(name, chosen)
            except OcrError as error:
                _progress(f"{name}: unavailable: {error}")
                engines_out[name] = {"status": "unavailable", "reason": str(error)}
                continue
            per_engine[name] = outcomes
            engines_out[name] = {"status": "measured", **_summary(chosen, outcomes), **extra}
            if name == "rapidocr":
                # The same warm engine, straight after the generated frames: one run, one machine load.
                real = measure_real_photos(engine, real_photos or real_photos_folder())
            del engine
    compared_count = min((len(outcomes) for outcomes in per_engine.values()), default=0)
    compared = {
        name: _summary(generated[:compared_count], outcomes[:compared_count])
        for name, outcomes in per_engine.items()
    }
    result["engines"] = engines_out
    result["compared_on_frames"] = compared_count
    result["compared"] = compared
    result["default_engine"] = _default_engine(compared)
    if result["default_engine"] in engines_out:
        result["goals_of_default_engine_on_all_its_frames"] = _goals(engines_out[result["default_engine"]])
    result["memory_method"] = "growth of resource.getrusage(RUSAGE_SELF).ru_maxrss over load and run"
    if "rapidocr" in compared and "easyocr" in compared:
        result["easyocr_over_rapidocr_median_seconds"] = round(
            compared["easyocr"]["median_seconds"] / compared["rapidocr"]["median_seconds"], 1
        )
    result["real_photos"] = real
    result["real_vs_generated"] = _side_by_side(
        engines_out["rapidocr"] if "rapidocr" in per_engine else None, real
    )
    result[f"goal_real_median_at_most_{REAL_MEDIAN_GOAL_SECONDS:g}s"] = (
        real["at_1920x1080"]["median_seconds"] <= REAL_MEDIAN_GOAL_SECONDS
        if real["status"] == "measured"
        else None
    )
    visit_count = visits if visits is not None else 4 if quick else 20
    if "rapidocr" in engines and "rapidocr" in per_engine and visit_count > 0:
        _progress("visit latency through the OCR process pool")
        pools = ((1, 2), (2, 2)) if quick else ((1, 2), (1, 3), (2, 2))
        with tempfile.TemporaryDirectory(prefix="gated-bench-ocr-") as folder:
            latency_frames = generate_frames(Path(folder), 3 * visit_count, seed + 1)
            result["visit_ready_after_last_frame"] = [
                _visit_latency(latency_frames, workers=workers, per_visit=per_visit, visits=visit_count)
                for workers, per_visit in pools
            ]
        default_pool = result["visit_ready_after_last_frame"][0]
        result["goal_visit_ready_at_most_1s_with_default_pool"] = default_pool["max_seconds"] <= 1.0
    plate_count = plates if plates is not None else 20 if quick else 150
    if "rapidocr" in engines and "rapidocr" in per_engine and plate_count > 0:
        _progress("licence plates (rendered truck fronts, RapidOCR)")
        from simulators.plate_frames import measure_plates

        result["plates"] = measure_plates(plate_count, seed)
    result["machine"] = machine()
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m gated.bench.ocr [--quick] [--frames N] ...``: the bench on its own (also in a
    smaller run than ``gated bench ocr --quick``), last stdout line JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m gated.bench.ocr", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short run's defaults")
    parser.add_argument("--frames", type=int, help="generated frames RapidOCR reads")
    parser.add_argument("--easyocr-frames", type=int, help="of those, how many EasyOCR reads")
    parser.add_argument("--engines", default=",".join(ENGINE_ORDER), help="comma-separated engines to run")
    parser.add_argument("--visits", type=int, help="visits through the OCR pool (0: none)")
    parser.add_argument("--plates", type=int, help="licence plate frames (0: none)")
    parser.add_argument(
        "--real-photos",
        type=Path,
        help=f"folder of labelled real photos (default ${REAL_PHOTOS_ENV} or the dev set)",
    )
    args = parser.parse_args(argv)
    engines = tuple(name.strip() for name in args.engines.split(",") if name.strip())
    unknown = sorted(set(engines) - set(ENGINE_ORDER))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINE_ORDER)}")
    result = bench_ocr(
        args.quick,
        frames=args.frames,
        easyocr_frames=args.easyocr_frames,
        engines=engines,
        visits=args.visits,
        plates=args.plates,
        real_photos=args.real_photos,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
