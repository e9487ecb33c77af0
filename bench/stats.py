"""Summary figures and the printed table."""

from __future__ import annotations

from dataclasses import dataclass
import math
import statistics


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, 90th percentile (nearest rank) and maximum of a series of seconds."""

    n: int
    median: float
    p90: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        if not values:
            raise ValueError("no values to summarise")
        ordered = sorted(values)
        rank = max(1, math.ceil(0.9 * len(ordered)))
        return cls(len(ordered), statistics.median(ordered), ordered[rank - 1], ordered[-1])

    def row(self, label: str) -> str:
        return (f"  {label:<44} {self.median * 1000:8.0f} {self.p90 * 1000:8.0f} "
                f"{self.max * 1000:8.0f}   (n={self.n})")


def header() -> str:
    return f"  {'':<44} {'median':>8} {'p90':>8} {'max':>8}   ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"
