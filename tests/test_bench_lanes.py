"""`gated bench lanes --quick`: one lane of real simulators, real OCR on four views, the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.system import require_tool


@pytest.mark.timeout(150)
def test_lanes_bench_decides_every_truck_right_and_reports_its_fixed_keys() -> None:
    require_tool("mosquitto")
    # A bound no busy test machine misses: the quick step must count as sustained, so the top-level
    # figures come from it (the default 5 s bound is for the full run).
    done = subprocess.run(
        [sys.executable, "-m", "gated", "bench", "lanes", "--quick", "--p99-bound", "60"],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "lanes"
    [step] = result["steps"]
    # Two clean boxes and a held one, each decided as scripted, stored and seen on MQTT.
    assert step["trucks"] == step["decided"] == step["mqtt_decisions"] == 3
    assert step["outcomes"] == {"RELEASE": 2, "HOLD": 1}
    assert step["wrong_decisions"] == 0 and result["wrong_decisions"] == 0
    assert step["undecided"] == 0 and step["sustained"] is True
    assert result["lanes"] == 1
    assert step["slowest_truck"]["seconds"] == step["decision_max_s"]
    assert 0 < result["trucks_per_hour"] == step["trucks_per_hour"] < 3600
    assert 0 < step["decision_p50_s"] <= result["decision_p99_s"] == step["decision_p99_s"] < 60
    assert result["views_per_truck"] == 4 and result["ocr_workers"] >= 1
    assert result["goal_trucks_per_hour"] == 1000 and result["goal_met"] is False
    assert "decision stored" in result["decision_measured"]
    assert result["machine"]["cpus"] >= 1
    assert "step 1" in done.stderr  # progress on stderr, the JSON alone last on stdout
