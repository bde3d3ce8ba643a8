"""Counting statistics for radiation portal monitors: gated's own alarm check, with no I/O.

Units are the easy thing to get wrong here, so every function says which it takes:

- *cps*: counts per second, how monitors report background (the Rapiscan ``GB``/``NB`` records).
- *counts per sample*: the raw counts of one sample interval (``GS`` records: 200 ms, so a
  background of 1500 cps is 300 counts per sample).

The alarm rule is the one the monitors use: a sample (or a sum of ``window`` consecutive samples)
alarms when its gross counts exceed ``background + n * sqrt(background)``, both in counts over the
same time. Its sigma is ``(counts - background) / sqrt(background)``. Below one count the
variance is taken as one count, so a nearly empty neutron channel does not alarm on a single
count.

``n`` is chosen for a false alarm probability per *occupancy*. One occupancy makes several tests
(one per sample or window), so the per-test probability is smaller: the Sidak correction
``1 - (1 - p) ** (1 / tests)`` keeps the family-wise rate at ``p`` for independent tests and below
it for overlapping (positively correlated) windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

SAMPLE_INTERVAL_S = 0.2  # the Rapiscan line protocol sends one gamma scan sample every 200 ms
MIN_VARIANCE = 1.0  # counts; the floor under sqrt(background)


def counts_per_sample(cps: float, interval_s: float = SAMPLE_INTERVAL_S) -> float:
    """Expected counts in one sample interval for a rate in counts per second."""
    if cps < 0 or not math.isfinite(cps):
        raise ValueError(f"rate {cps} cps must be a finite number >= 0")
    if interval_s <= 0:
        raise ValueError(f"sample interval {interval_s} s must be > 0")
    return cps * interval_s


def _spread(background: float) -> float:
    return math.sqrt(max(background, MIN_VARIANCE))


def alarm_threshold(background_cps: float, n_sigma: float, interval_s: float = SAMPLE_INTERVAL_S) -> float:
    """The alarm level in counts per sample interval: ``bg + n * sqrt(bg)``, bg in counts per interval.

    ``background_cps`` is a rate (counts per second); it is first turned into the expected counts
    of one ``interval_s`` sample. At 1500 cps, n = 5 and 200 ms: 300 + 5 * sqrt(300) = 386.6."""
    background = counts_per_sample(background_cps, interval_s)
    return background + n_sigma * _spread(background)


def sigma(counts: float, background: float) -> float:
    """How many standard deviations ``counts`` lie above ``background`` (both counts, same interval)."""
    if background < 0:
        raise ValueError(f"background {background} counts must be >= 0")
    return (counts - background) / _spread(background)


def n_sigma_for(
    false_alarm_per_occupancy: float,
    samples_per_occupancy: int,
    *,
    background_counts: float | None = None,
    background_ratio: float = 0.0,
) -> float:
    """The n of the alarm rule giving ``false_alarm_per_occupancy`` over that many tests per occupancy.

    One-sided normal quantile of the Sidak-corrected per-test probability: 1e-3 and one test give
    3.09; 1e-3 over 15 tests gives 3.82. Two optional corrections make it hold for real counts:

    - ``background_ratio``: the test's duration over the time the background was counted. The
      background estimate is noisy too, which widens ``counts - background`` by
      ``sqrt(1 + ratio)`` (a one-second test against a 20 s background: 2.5%).
    - ``background_counts``: the expected counts of one test. Poisson counts have a longer upper
      tail than the normal curve; the Cornish-Fisher term ``(z**2 - 1) / (6 * sqrt(counts))``
      moves n to the Poisson quantile."""
    p = false_alarm_per_occupancy
    if not 0.0 < p < 1.0:
        raise ValueError(f"false alarm probability {p} must be between 0 and 1")
    if samples_per_occupancy < 1:
        raise ValueError(f"samples per occupancy {samples_per_occupancy} must be >= 1")
    if background_ratio < 0:
        raise ValueError(f"background ratio {background_ratio} must be >= 0")
    per_test = -math.expm1(math.log1p(-p) / samples_per_occupancy)
    z = NormalDist().inv_cdf(1.0 - per_test)
    n = z * math.sqrt(1.0 + background_ratio)
    if background_counts is not None:
        if background_counts <= 0:
            raise ValueError(f"background counts {background_counts} must be > 0")
        n += (z * z - 1.0) / (6.0 * math.sqrt(background_counts))
    return n


@dataclass(frozen=True, slots=True)
class OccupancyResult:
    """gated's check of one channel over one occupancy.

    ``profile`` holds the counts of every sample as received; ``peak_counts`` is the largest sum
    over ``window`` consecutive samples (the whole pass when it is shorter), compared with
    ``threshold`` (counts over the same window)."""

    profile: tuple[int, ...]
    background: float  # expected counts per sample interval
    window: int
    threshold: float  # counts per window
    peak_counts: int
    peak_sigma: float
    alarm: bool
    alarm_tests: int  # how many windows were over the threshold

    @property
    def tests(self) -> int:
        """How many windows the occupancy was tested on."""
        return max(len(self.profile) - self.window + 1, 1) if self.profile else 0


def analyse_occupancy(
    samples: Sequence[int], background: float, n_sigma: float, window: int = 1
) -> OccupancyResult:
    """Test each run of ``window`` consecutive samples against ``background + n * sqrt(background)``.

    ``background`` is the expected counts of one sample interval, measured before the vehicle
    came (a vehicle shields background, so counts measured during the pass would hide a source).
    ``window`` > 1 sums that many samples (5 samples of 200 ms: the one-second sums the monitors
    compare with their cps background), which gains sensitivity for a source passing in about a
    second. An empty pass has nothing to alarm on."""
    if window < 1:
        raise ValueError(f"window {window} must be >= 1")
    if background < 0 or not math.isfinite(background):
        raise ValueError(f"background {background} counts must be a finite number >= 0")
    profile = tuple(int(count) for count in samples)
    width = min(window, len(profile)) or window
    expected = background * width
    threshold = expected + n_sigma * _spread(expected)
    if not profile:
        return OccupancyResult(profile, background, width, threshold, 0, 0.0, False, 0)
    running = sum(profile[:width])
    peak = running
    over = 1 if running > threshold else 0
    for index in range(width, len(profile)):
        running += profile[index] - profile[index - width]
        if running > peak:
            peak = running
        if running > threshold:
            over += 1
    return OccupancyResult(
        profile=profile,
        background=background,
        window=width,
        threshold=threshold,
        peak_counts=peak,
        peak_sigma=sigma(peak, expected),
        alarm=over > 0,
        alarm_tests=over,
    )


# -- confidence bounds for counted outcomes (Clopper-Pearson, one-sided) ------------------------


def _log_binomial_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be in the millions)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    terms = [_log_binomial_pmf(i, n, p) for i in range(k + 1)]
    top = max(terms)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * math.fsum(math.exp(term - top) for term in terms))


def _bisect(function: Callable[[float], float], target: float, increasing: bool) -> float:
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        value = function(middle)
        if (value < target) == increasing:
            low = middle
        else:
            high = middle
        if high - low < 1e-15:
            break
    return (low + high) / 2


def _check_counts(successes: int, trials: int, confidence: float) -> None:
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials is not a valid count")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be between 0 and 1")


def clopper_pearson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of a proportion (the beta quantile, found by bisection).

    59 of 59 gives 0.0500 ** (1/59) = 0.9505: detection >= 95% at 95% confidence."""
    _check_counts(successes, trials, confidence)
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence
    # P(X >= successes | p) grows with p; the bound is where it reaches alpha.
    return _bisect(lambda p: 1.0 - binomial_cdf(successes - 1, trials, p), alpha, increasing=True)


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a proportion (0 of 3000 gives about 1e-3)."""
    _check_counts(successes, trials, confidence)
    if successes == trials:
        return 1.0
    alpha = 1.0 - confidence
    # P(X <= successes | p) falls with p; the bound is where it drops to alpha.
    return _bisect(lambda p: binomial_cdf(successes, trials, p), alpha, increasing=False)
