"""`gated bench holds`: a small list through the real import, lookup and pipeline, its JSON figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(600)
def test_holds_bench_reports_its_fixed_keys_with_sane_values() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gated", "bench", "holds", "--rows", "20000"],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "holds" and result["rows"] == 20_000
    assert 0 < result["import_seconds"] < 120
    assert 0 < result["reimport_seconds"] < 120
    assert 0 < result["lookup_ratio"] < 50
    assert 0 < result["decision_p99_ms"] < 5_000
    assert result["decision_p99_during_import_ratio"] > 0
    sqlite = result["sqlite"]
    assert sqlite["lookup_p99_us"] / sqlite["plain_sql_p99_us"] == pytest.approx(
        result["lookup_ratio"], rel=0.05
    )
    assert sqlite["decision_p99_during_import_ms"] > 0 and sqlite["second_import_seconds"] > 0
    postgres = result["postgresql"]
    if "error" in postgres:  # said, not faked: only when no server could be started here
        assert "PostgreSQL" in postgres["error"]
    else:
        assert 0 < postgres["import_seconds"] < 300 and 0 < postgres["lookup_ratio"] < 50
        assert 0 < postgres["decision_p99_ms"] < 5_000
    assert result["machine"]["cpus"] >= 1
    assert "rows checked" in done.stderr  # progress goes to stderr, the JSON alone to stdout's last line


@pytest.mark.timeout(600)
def test_holds_bench_quick_is_twenty_thousand_rows() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gated", "bench", "holds", "--quick"],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["bench"], result["rows"]) == ("holds", 20_000)
    assert result["lookup_ratio"] > 0 and result["decision_p99_ms"] > 0


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["bench", "store", "--rows", "10"], 1, "--rows is for `gated bench holds`"),
        (["bench", "holds", "--rows", "0"], 2, "at least 1 row"),
        (["bench", "holds", "--rows", "many"], 2, "not a whole number"),
    ],
)
def test_bench_rows_is_checked(argv: list[str], code: int, said: str) -> None:
    done = subprocess.run([sys.executable, "-m", "gated", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == code and said in done.stderr
