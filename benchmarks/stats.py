"""Summaries shared by the benchmarks: one result object per measured quantity."""

from __future__ import annotations

import statistics
from typing import Any


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(name: str, unit: str, values: list[float]) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "p95": percentile(values, 0.95),
        "n": len(values),
    }
