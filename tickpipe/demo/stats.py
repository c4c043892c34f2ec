"""Small numeric helpers: percentiles of a latency sample, per-second rates."""

from __future__ import annotations

import random


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))   # ceil(n * p / 100), at least the first
    return ordered[int(rank) - 1]


class Reservoir:
    """A uniform sample of at most ``size`` values out of all ever added (Algorithm R), plus the max."""

    def __init__(self, size: int = 100_000, seed: int = 0) -> None:
        self.size, self.seen, self.values = size, 0, []
        self.max: float | None = None
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        self.max = value if self.max is None or value > self.max else self.max
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value

    def summary(self) -> dict:
        """``{"p50", "p99", "max"}`` in the values' unit, rounded to 0.1."""
        def r(v):
            return None if v is None else round(v, 1)
        return {"p50": r(percentile(self.values, 50)), "p99": r(percentile(self.values, 99)), "max": r(self.max)}


class Rate:
    """Per-second rate of a growing counter between two readings."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self.value = 0.0

    def update(self, count: float, now: float) -> float:
        if self._last is not None and now > self._last[1]:
            self.value = max(0.0, (count - self._last[0]) / (now - self._last[1]))
        self._last = (count, now)
        return self.value
