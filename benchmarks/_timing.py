"""Timing shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_seconds(function: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls of ``function``, after one untimed call that warms
    the thread pool and faults the pages in."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best
