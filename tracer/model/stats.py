"""Latency statistics in bounded memory: a log-linear histogram.

Each power of two is split into 16 buckets, so a percentile is known to
within about 4.4 % however long the trace runs, and two runs over the same
data give the same numbers.
"""

from __future__ import annotations

SUB_BITS = 4
SUB = 1 << SUB_BITS


def bucket_of(ns: int) -> int:
    """The histogram bucket of a latency in ns (exact below 16 ns)."""
    if ns < SUB:
        return max(ns, 0)
    bl = ns.bit_length()
    return ((bl - SUB_BITS) << SUB_BITS) | ((ns >> (bl - SUB_BITS - 1)) & (SUB - 1))


def bucket_value(b: int) -> int:
    """A representative latency for bucket ``b``: the middle of its range."""
    if b < SUB:
        return b
    shift = (b >> SUB_BITS) - 1
    low = (SUB | (b & (SUB - 1))) << shift
    return low + ((1 << shift) >> 1)


class Histogram:
    """Counts of latencies per log-linear bucket, with exact count, sum, min and max."""

    __slots__ = ("buckets", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def add(self, ns: int) -> None:
        """Record one latency."""
        b = bucket_of(ns)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        if not self.count or ns < self.min:
            self.min = ns
        if ns > self.max:
            self.max = ns
        self.count += 1
        self.total += ns

    def merge(self, other: Histogram) -> None:
        """Add another histogram's samples to this one."""
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        if other.count:
            self.min = other.min if not self.count else min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        """Exact mean latency in ns (0 if empty)."""
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> int:
        """The q-th percentile (0-100) in ns, clamped to the exact min and max."""
        if not self.count:
            return 0
        rank = max(1, -(-self.count * q // 100))  # ceil, at least the first sample
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return int(min(max(bucket_value(b), self.min), self.max))
        return self.max
