"""Small statistics shared by the load clients and the report.

Percentiles use the nearest-rank method (the value at rank ceil(p/100 * n)),
the definition wrk and HdrHistogram report, so a p99 is always a latency
that some request really had.  Across rounds the report quotes the median
with the min and max: with 3 rounds the median is the middle run, which a
single disturbed run cannot move.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary_us(latencies_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of latencies given in seconds, in microseconds."""
    ordered = sorted(latencies_s)
    return {
        "p50": percentile(ordered, 50) * 1e6,
        "p90": percentile(ordered, 90) * 1e6,
        "p99": percentile(ordered, 99) * 1e6,
        "max": (ordered[-1] * 1e6) if ordered else math.nan,
    }


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of one figure over the rounds."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        finite = [value for value in values if not math.isnan(value)]
        if not finite:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def scaled(self, factor: float) -> "Spread":
        """The same spread with every value multiplied by `factor` (unit changes)."""
        return Spread(self.median * factor, self.low * factor, self.high * factor, self.count)
