"""`gated bench pipeline`: gated's durable path and plain paho side by side on a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.system import require_tool


@pytest.mark.timeout(300)
def test_pipeline_bench_delivers_every_reading_and_reports_the_comparison() -> None:
    require_tool("mosquitto")
    done = subprocess.run(
        [sys.executable, "-m", "gated", "bench", "pipeline", "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    for key in (
        "bench",
        "readings",
        "rounds",
        "gated_per_second",
        "plain_paho_per_second",
        "ratio",
        "received",
        "missing",
        "peak_rss_mb",
        "machine",
    ):
        assert key in result, f"{key} missing from {result}"
    assert result["bench"] == "pipeline"
    assert result["readings"] == 2_000
    assert result["missing"] == 0
    assert result["received"] == result["readings"]
    assert result["plain_paho_missing"] == 0
    assert result["gated_per_second"] > 0 and result["plain_paho_per_second"] > 0
    assert len(result["gated_rounds"]) == len(result["plain_paho_rounds"]) == result["rounds"]
    assert result["ratio"] == pytest.approx(
        result["gated_per_second"] / result["plain_paho_per_second"], abs=0.01
    )
