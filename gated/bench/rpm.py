"""`gated bench rpm`: false alarm rate and detection probability of gated's own RPM alarm check.

Both halves run simulated occupancies (exact Poisson counts, ``simulators.rpm_rapiscan``) through
``gated.radiation.analyse_occupancy`` with the rule the driver uses: one-second sums (five 200 ms
samples) against the background measured before the pass. n comes from
``n_sigma_for(1e-3, samples per occupancy)`` (Sidak over the 15 samples: more than the 11
overlapping one-second windows tested, so on the safe side) with its two corrections for real
counts: the noise of the 20 s background estimate and the Poisson tail (see
``gated.radiation.n_sigma_for``).

- False alarms: background-only passes with no baseline depression (the worst case: a vehicle
  that shields nothing), the background estimate itself drawn from 20 s of counting as a monitor
  does. Goal: at most 1 in 1,000 occupancies, with the one-sided 95% Clopper-Pearson upper bound.
- Detection: a reference point source of ``SOURCE_CPS`` above background at closest approach
  (all detectors together), driven past at 8 km/h with 10% baseline depression, 59 times.
  Goal: 59 of 59, which proves detection >= 95% at 95% confidence.
"""

from __future__ import annotations

import math
import random
import sys
import time
from typing import Any

from gated.radiation import (
    SAMPLE_INTERVAL_S,
    analyse_occupancy,
    clopper_pearson_lower,
    clopper_pearson_upper,
    n_sigma_for,
)

BACKGROUND_CPS = 1500.0  # four detectors of about 375 cps each
BACKGROUND_COUNT_S = 20.0  # how long the background estimate counts before a pass
PASS_S = 3.0
SPEED_KMH = 8.0
WINDOW = 5  # samples of 200 ms: one second
FALSE_ALARM_GOAL = 1e-3
SOURCE_CPS = 600.0
DETECTION_PASSES = 59
SEED = 20260301


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _estimated_background(rng: random.Random) -> float:
    """The monitor's background in cps after counting BACKGROUND_COUNT_S (normal approximation of a
    Poisson count with a mean of 30,000, where the two agree to well under 0.1%)."""
    mean = BACKGROUND_CPS * BACKGROUND_COUNT_S
    return max(0.0, rng.gauss(mean, math.sqrt(mean))) / BACKGROUND_COUNT_S


def bench_rpm(quick: bool) -> dict[str, Any]:
    from gated.bench.common import machine
    from simulators.rpm_rapiscan import simulate_occupancy

    occupancies = 5_000 if quick else 100_000
    samples = round(PASS_S / SAMPLE_INTERVAL_S)
    tests = samples - WINDOW + 1
    window_s = WINDOW * SAMPLE_INTERVAL_S
    n_sigma = n_sigma_for(
        FALSE_ALARM_GOAL,
        samples,
        background_counts=BACKGROUND_CPS * window_s,
        background_ratio=window_s / BACKGROUND_COUNT_S,
    )
    rng = random.Random(SEED)
    _progress(
        f"rpm: {occupancies} background occupancies of {samples} samples, {tests} one-second tests each, "
        f"n = {n_sigma:.3f}"
    )
    started = time.perf_counter()
    false_alarms = 0
    step = max(occupancies // 10, 1)
    for index in range(occupancies):
        background = _estimated_background(rng) * SAMPLE_INTERVAL_S
        counts = simulate_occupancy(
            rng, BACKGROUND_CPS, 0.0, duration_s=PASS_S, speed_kmh=SPEED_KMH, baseline_depression=0.0
        )
        if analyse_occupancy(counts, background, n_sigma, window=WINDOW).alarm:
            false_alarms += 1
        if (index + 1) % step == 0:
            _progress(f"rpm: {index + 1}/{occupancies} occupancies, {false_alarms} false alarms")
    detections = 0
    for _ in range(DETECTION_PASSES):
        background = _estimated_background(rng) * SAMPLE_INTERVAL_S
        counts = simulate_occupancy(
            rng, BACKGROUND_CPS, SOURCE_CPS, duration_s=PASS_S, speed_kmh=SPEED_KMH, baseline_depression=0.1
        )
        if analyse_occupancy(counts, background, n_sigma, window=WINDOW).alarm:
            detections += 1
    _progress(f"rpm: reference source {SOURCE_CPS:g} cps: {detections}/{DETECTION_PASSES} detected")
    elapsed = time.perf_counter() - started
    return {
        "bench": "rpm",
        "occupancies": occupancies,
        "samples_per_occupancy": samples,
        "window_samples": WINDOW,
        "n_sigma": round(n_sigma, 4),
        "false_alarms": false_alarms,
        "false_alarm_rate": false_alarms / occupancies,
        "false_alarm_rate_upper95": clopper_pearson_upper(false_alarms, occupancies),
        "false_alarm_goal": FALSE_ALARM_GOAL,
        "source_cps": SOURCE_CPS,
        "background_cps": BACKGROUND_CPS,
        "speed_kmh": SPEED_KMH,
        "baseline_depression": 0.1,
        "detections": f"{detections}/{DETECTION_PASSES}",
        "detection_lower95": clopper_pearson_lower(detections, DETECTION_PASSES),
        "seconds": round(elapsed, 2),
        "machine": machine(),
    }
