"""`gated bench ocr` in its smallest run: generated frames and real photos side by side, and a
real-photo part that says so when its photos are not there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REAL_PHOTOS = Path(__file__).parent / "data" / "real-photos"
SMALLEST = ["--frames", "2", "--engines", "rapidocr", "--visits", "0", "--plates", "0"]


def _bench(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gated.bench.ocr", *SMALLEST, *args],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_the_bench_reads_real_photos_beside_the_generated_frames() -> None:
    pytest.importorskip("rapidocr")
    result = _bench(env={"GATED_REAL_PHOTOS": str(REAL_PHOTOS)})
    # The keys the bench always had are still there.
    assert {"bench", "frames", "engines", "compared", "default_engine", "machine"} <= result.keys()
    assert result["bench"] == "ocr" and result["frames"] == 2
    generated = result["engines"]["rapidocr"]
    assert generated["right"] + generated["wrong"] + generated["unread"] == 2
    assert 0 < generated["median_seconds"] <= generated["p90_seconds"] <= generated["p95_seconds"]

    real = result["real_photos"]
    assert real["status"] == "measured" and real["folder"] == str(REAL_PHOTOS)
    assert real["photos"] == 5 and real["sizes_as_taken"] == ["960x540"]
    for look in ("at_1920x1080", "as_taken"):
        figures = real[look]
        assert figures["right"] + figures["wrong"] + figures["unread"] == 5
        assert figures["wrong"] == 0, figures["wrong_reads"]
        assert 0 < figures["median_seconds"] <= figures["p90_seconds"]
    side = result["real_vs_generated"]
    assert side["generated_1280x720"]["median_seconds"] == generated["median_seconds"]
    assert side["real_1920x1080"]["right"] == real["at_1920x1080"]["right"]
    assert side["real_over_generated_median_seconds"] == pytest.approx(
        real["at_1920x1080"]["median_seconds"] / generated["median_seconds"], abs=0.01
    )
    assert result["goal_real_median_at_most_1s"] in (True, False)


@pytest.mark.timeout(300)
def test_without_its_photos_the_real_part_says_absent(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr")
    missing = tmp_path / "no-such-set"
    result = _bench("--real-photos", str(missing))
    real = result["real_photos"]
    assert real["status"] == "absent" and real["folder"] == str(missing)
    assert "labels.csv" in real["reason"]
    assert "at_1920x1080" not in real and "as_taken" not in real
    assert result["real_vs_generated"]["real_1920x1080"] == {"status": "absent"}
    assert "real_over_generated_median_seconds" not in result["real_vs_generated"]
    assert result["goal_real_median_at_most_1s"] is None
    assert result["engines"]["rapidocr"]["status"] == "measured"
