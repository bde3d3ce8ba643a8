"""`gated bench store`: readings stored durably one per transaction vs in batches."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gated.bench.common import machine, progress
from gated.model import Kind, Reading, Source


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
            progress(f"storing {count} readings, {batch_size} per transaction")
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
