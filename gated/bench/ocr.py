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
the default engine is chosen on those frames, which both engines read."""

from __future__ import annotations

import gc
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


@dataclass(frozen=True, slots=True)
class _Frame:
    path: Path
    number: str
    valid: bool

    @property
    def answer(self) -> str | None:
        return self.number if self.valid else None


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


def _run(name: str, frames: list[_Frame]) -> tuple[list[_Outcome], dict[str, Any]]:
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
    return outcomes, extra


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
        "median_seconds": round(statistics.median(seconds), 4),
        "p95_seconds": round(p95, 4),
        "wrong_reads": wrong_reads[:10],
    }


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
) -> dict[str, Any]:
    """Both engines on the same frames; ``easyocr_frames`` caps how many EasyOCR reads (the first ones)."""
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
                outcomes, extra = _run(name, chosen)
            except OcrError as error:
                _progress(f"{name}: unavailable: {error}")
                engines_out[name] = {"status": "unavailable", "reason": str(error)}
                continue
            per_engine[name] = outcomes
            engines_out[name] = {"status": "measured", **_summary(chosen, outcomes), **extra}
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
    if "rapidocr" in engines and "rapidocr" in per_engine:
        _progress("visit latency through the OCR process pool")
        visit_count = visits if visits is not None else 4 if quick else 20
        pools = ((1, 2), (2, 2)) if quick else ((1, 2), (1, 3), (2, 2))
        with tempfile.TemporaryDirectory(prefix="gated-bench-ocr-") as folder:
            latency_frames = generate_frames(Path(folder), 3 * visit_count, seed + 1)
            result["visit_ready_after_last_frame"] = [
                _visit_latency(latency_frames, workers=workers, per_visit=per_visit, visits=visit_count)
                for workers, per_visit in pools
            ]
        default_pool = result["visit_ready_after_last_frame"][0]
        result["goal_visit_ready_at_most_1s_with_default_pool"] = default_pool["max_seconds"] <= 1.0
        _progress("licence plates (rendered truck fronts, RapidOCR)")
        from simulators.plate_frames import measure_plates

        result["plates"] = measure_plates(plates if plates is not None else 20 if quick else 150, seed)
    result["machine"] = machine()
    return result


def main() -> int:
    """``python -m gated.bench.ocr [--quick]``: the bench on its own, last stdout line JSON."""
    import json

    print(json.dumps(bench_ocr("--quick" in sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
