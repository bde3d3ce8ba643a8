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


@pytest.mark.timeout(300)
def test_commands_bench_measures_trucks_quiet_and_under_a_command_burst() -> None:
    require_tool("mosquitto")
    done = subprocess.run(
        [sys.executable, "-m", "gated", "bench", "commands", "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["bench"], result["burst"], result["trucks"]) == ("commands", 2_000, 10)
    for figures in (result["quiet_decision_ms"], result["flood_decision_ms"]):
        assert 0 < figures["p50"] <= figures["p95"] <= figures["max"]
    assert result["ratio_p95"] == pytest.approx(
        result["flood_decision_ms"]["p95"] / result["quiet_decision_ms"]["p95"], abs=0.02
    )
    commands = result["commands"]
    assert commands["sent"] == 2_000 and commands["signed"] == 200
    # Every command was taken in: applied, rejected or dropped as too many, and each counted.
    assert commands["received"] == commands["sent"]
    assert commands["applied"] + commands["rejected"] + commands["dropped"] <= commands["received"]
    assert commands["applied"] > 0 and commands["rejected"] > 0
