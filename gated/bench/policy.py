"""`gated bench policy`: how many visits per second the pure decision policy decides."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from gated.bench.common import machine, progress
from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source, Visit
from gated.policy import HoldListStatus, PolicySettings, decide


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
    status = HoldListStatus(loaded=True, confirmed_at=datetime.now(UTC), version=1)
    settings = PolicySettings(hold_list_max_age_seconds=3600)
    progress(f"deciding {count} visits")
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
