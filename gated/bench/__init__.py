"""`gated bench NAME`: benchmarks that print progress to stderr and one JSON object last on stdout.

One module per benchmark, imported only when it runs: the OCR bench alone pulls in OpenCV and
both OCR engines. Comparisons run side by side in the same process and are reported as ratios,
since the machines they run on are shared and noisy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gated.errors import GatedError

# `gated bench NAME` runs `bench_NAME(quick)` from `gated.bench.NAME`.
BENCHES = ("policy", "store", "pipeline", "rpm", "ocr", "commands", "holds", "lanes")


def run_bench(name: str, *, quick: bool = False) -> dict[str, Any]:
    if name not in BENCHES:
        raise GatedError(f"no benchmark {name!r}; choose from {', '.join(BENCHES)}")
    module = importlib.import_module(f"gated.bench.{name}")
    bench: Callable[[bool], dict[str, Any]] = getattr(module, f"bench_{name}")
    return bench(quick)
