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
    # No truck for a clerk in the quick run: the machines' p99 is every truck's.
    assert result["decision_p99_machine_decided_s"] == step["decision_p99_s"]
    assert result["decision_max_sent_to_clerk_s"] is None and result["clerk_bound_s"] == 120
    # Where a truck's CPU went: quick looks of six container frames, one plate look at least.
    assert step["ocr_per_truck"]["quick"]["tasks"] == 6 and step["ocr_per_truck"]["plate"]["tasks"] >= 1
    assert step["process_cpu_seconds_per_truck"] > 0
    assert result["views_per_truck"] == 4 and result["ocr_workers"] >= 1
    assert result["goal_trucks_per_hour"] == 1000 and result["goal_met"] is False
    assert "decision stored" in result["decision_measured"]
    assert result["machine"]["cpus"] >= 1
    assert "step 1" in done.stderr  # progress on stderr, the JSON alone last on stdout


def _step_of(times: list[tuple[str, float]]) -> object:
    """A step whose trucks (kind, seconds to decision) were each decided as scripted."""
    from gated.bench.lanes import _Passage, _Step, lane_script

    script = {scripted.truck.label: scripted for scripted in lane_script(0)}
    step = _Step(lanes=1, window=90.0)
    for kind, seconds in times:
        scripted = script[kind]
        step.passages.append(
            _Passage(
                scripted,
                "lane-1",
                started=0.0,
                late=0.0,
                decided=seconds,
                outcome=str(scripted.expected),
                container=scripted.container,
            )
        )
    step.mqtt_decisions = len(times)
    return step


def test_a_truck_for_a_clerk_is_held_to_twice_the_bound_and_the_rest_to_the_bound() -> None:
    from gated.bench.lanes import _summary

    quick = [("clean", 2.2), ("held", 2.4), ("radiation", 2.3)]
    row = _summary(_step_of([*quick, ("unreadable", 5.3)]), 5.0, 30.0)  # type: ignore[arg-type]
    assert row["sustained"] is True and row["decision_p99_s"] > 5.0
    assert row["decision_p99_machine_decided_s"] < 2.5 and row["decision_max_sent_to_clerk_s"] == 5.3
    row = _summary(_step_of([*quick, ("unreadable", 10.5)]), 5.0, 30.0)  # type: ignore[arg-type]
    assert row["sustained"] is False and "sent to a clerk after 10.5 s" in row["why_not"]
    row = _summary(_step_of([*quick, ("clean", 5.5), ("unreadable", 6.0)]), 5.0, 30.0)  # type: ignore[arg-type]
    assert row["sustained"] is False and "over 5.0 s" in row["why_not"]
