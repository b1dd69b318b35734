"""Human-readable units for latencies."""

from __future__ import annotations

_SCALES = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs"))


def _three_digits(v: float) -> str:
    # Three significant digits: 4.56, 12.3, 850.
    if v < 9.995:
        return f"{v:.2f}"
    if v < 99.95:
        return f"{v:.1f}"
    return f"{v:.0f}"


def fmt_ns(ns: float) -> str:
    """A latency in ns as a short string: "850 ns", "12.3 µs", "4.56 ms", "1.23 s"."""
    if ns < 0:
        return "-" + fmt_ns(-ns)
    if ns < 999.5:
        return f"{round(ns)} ns"
    # Largest unit in which the value rounds to at least 1.00; choosing after
    # rounding makes 999.96 µs read "1.00 ms", not "1000 µs".
    for scale, unit in _SCALES:
        v = ns / scale
        if v >= 0.9995:
            return f"{_three_digits(v)} {unit}"
    return f"{_three_digits(ns / 1_000)} µs"

def fmt_count(n: int) -> str:
    """An integer with thousands separators ("12,345")."""
    return f"{n:,}"
