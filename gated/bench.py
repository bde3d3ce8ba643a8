"""`gated bench NAME`: benchmarks that print progress to stderr and one JSON object last on stdout.

Comparisons run side by side in the same process and are reported as ratios, since the machines
they run on are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gated.errors import GatedError
from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source, Visit
from gated.policy import HoldListStatus, PolicySettings, decide


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _visit(index: int) -> Visit:
    now = datetime.now(UTC)
    visit = Visit(id=f"v{index}", lane="lane-1", opened_at=now, trigger="rfid:epc", close_cause="complete")
    for reading in (
        Reading("lane-1", Kind.RFID, "rfid-1", Source.EPC, f"e28011{index:010x}", now),
        Reading("lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, "MSKU4135329", now, confidence=0.97),
        Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now),
        Reading(
            "lane-1", Kind.RPM, "rpm-1", Source.SCREENING, str(ScreeningVerdict.CLEAR), now, Quality.GOOD
        ),
    ):
        visit = visit.with_reading(reading)
    return visit


def bench_policy(quick: bool) -> dict[str, Any]:
    count = 2_000 if quick else 50_000
    visits = [_visit(i) for i in range(count)]
    status = HoldListStatus(loaded=True, updated_at=datetime.now(UTC), version=1)
    settings = PolicySettings(hold_list_max_age_seconds=3600)
    _progress(f"deciding {count} visits")
    start = time.perf_counter()
    for visit in visits:
        decide(visit, {}, status, settings, now=datetime.now(UTC))
    elapsed = time.perf_counter() - start
    return {
        "bench": "policy",
        "visits": count,
        "decisions_per_second": round(count / elapsed),
        "machine": machine(),
    }


def bench_store(quick: bool) -> dict[str, Any]:
    """Readings stored durably (SQLite, WAL, synchronous=FULL) one per transaction vs in batches."""
    from gated.db import open_engine
    from gated.messages import Topics, reading_message
    from gated.store import Batch, Store

    count = 500 if quick else 5_000
    topics = Topics("bench")
    now = datetime.now(UTC)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, batch_size in (("single", 1), ("batched", 200)):
            engine = open_engine(Path(folder) / f"{label}.db")
            store = Store(engine, site="bench", node="bench")
            readings = [
                Reading("lane-1", Kind.RPM, "rpm-1", Source.GAMMA_CPS, 250.0 + i, now, units="cps")
                for i in range(count)
            ]
            _progress(f"storing {count} readings, {batch_size} per transaction")
            start = time.perf_counter()
            for offset in range(0, count, batch_size):
                chunk = readings[offset : offset + batch_size]
                store.write(Batch(readings=chunk, messages=[reading_message(topics, r) for r in chunk]))
            results[label] = count / (time.perf_counter() - start)
            engine.dispose()
    return {
        "bench": "store",
        "readings": count,
        "single_per_second": round(results["single"]),
        "batched_per_second": round(results["batched"]),
        "batched_over_single": round(results["batched"] / results["single"], 2),
        "machine": machine(),
    }


BENCHES = {"policy": bench_policy, "store": bench_store}


def run_bench(name: str, *, quick: bool = False) -> dict[str, Any]:
    if name not in BENCHES:
        raise GatedError(f"no benchmark {name!r}; choose from {', '.join(BENCHES)}")
    return BENCHES[name](quick)
