"""The benchmark's arithmetic: percentiles, medians over repeats, ratios and the targets.

Pure functions over plain numbers; the targets are printed, never asserted.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: int) -> float | None:
    """The p-th percentile (1 to 99), interpolated between closest ranks as numpy's default
    does (`statistics.quantiles`, inclusive); None for no values."""
    if not 1 <= p <= 99:
        raise ValueError(f"percentile {p} is not within 1..99")
    if len(values) < 2:
        return float(values[0]) if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | None]:
    """{"p50_ms", "p95_ms", "p99_ms", "max_ms"} of latencies in milliseconds."""
    summary = {f"p{p}_ms": percentile(values_ms, p) for p in PERCENTILES}
    summary["max_ms"] = max(values_ms) if values_ms else None
    return summary


def rate(count: int, seconds: float | None) -> float | None:
    """count / seconds; None when the span is unknown or empty."""
    if seconds is None or seconds <= 0:
        return None
    return count / seconds


def median(values: Sequence[float | None]) -> float | None:
    """The median of the known values; None if none is known."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_of(runs: Sequence[Mapping[str, object]], key: str) -> float | None:
    """The median of ``run[key]`` over runs (missing or non-numeric values are unknown)."""
    values: list[float | None] = []
    for run in runs:
        value = run.get(key)
        values.append(float(value) if isinstance(value, int | float) else None)
    return median(values)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    description: str
    threshold: float
    higher_is_better: bool
    value: float | None

    @property
    def met(self) -> bool | None:
        """None when the value could not be measured."""
        if self.value is None:
            return None
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "NOT MEASURED"}[self.met]
