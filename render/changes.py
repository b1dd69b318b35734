"""Two traces' call paths side by side: per-path statistics, changes, and the table of the
paths whose latency changed most.

:class:`Side` holds one trace's paths (calls, inclusive time, latency
histogram per frame path, as the flame graphs name them); the differential
flame graph (:mod:`.diff`) colours by these changes, and :func:`change_table`
is the terminal's list of the paths whose p50 and p99 moved most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.table import Table
from skbpath.tracer.model.calltree import CallTree
from skbpath.tracer.model.stats import Histogram

from .folded import node_paths
from .units import fmt_ns

METRICS = ("per-call", "total", "calls")
NS_PER_S = 1_000_000_000


@dataclass
class PathStat:
    """One call path's calls in one trace (nodes of the same frame path merged)."""

    calls: int = 0
    total: int = 0  # inclusive ns of the calls that returned
    hist: Histogram = field(default_factory=Histogram)

    @property
    def per_call(self) -> float | None:
        """Mean inclusive ns of the calls that returned, None if none did."""
        return self.total / self.hist.count if self.hist.count else None


@dataclass
class Side:
    """One trace of the comparison: its call paths, its length, and whether calls are points."""

    tree: CallTree
    duration_ns: int
    points: bool = False
    paths: dict[tuple[str, ...], PathStat] = field(init=False)

    def __post_init__(self) -> None:
        self.paths = path_stats(self.tree)

    def value(self, path: tuple[str, ...], metric: str, normalize: bool) -> float | None:
        """A path's measure in this trace (None if it has no such path or no returned call)."""
        st = self.paths.get(path)
        if st is None:
            return None
        if metric == "per-call":
            return st.per_call
        raw = float(st.calls if metric == "calls" else st.total)
        if normalize and self.duration_ns > 0:
            raw *= NS_PER_S / self.duration_ns
        return raw


def path_stats(tree: CallTree) -> dict[tuple[str, ...], PathStat]:
    """Calls, inclusive time and latency histogram per frame path; direction frames sum roots."""
    out: dict[tuple[str, ...], PathStat] = {}
    for path, node in node_paths(tree):
        keys = [path, path[:1]] if len(path) == 2 else [path]
        for key in keys:
            st = out.get(key)
            if st is None:
                st = out[key] = PathStat()
            st.calls += node.count
            st.total += node.total
            st.hist.merge(node.hist)
    return out


def relative_change(before: float, after: float) -> float:
    """Signed change, symmetric: +1.0 is twice as much, -1.0 half as much."""
    if before == after:
        return 0.0
    if before <= 0 or after <= 0:
        return math.inf if after > before else -math.inf
    return after / before - 1 if after > before else -(before / after - 1)


def conventional(change: float) -> float:
    """A symmetric change (:func:`relative_change`) as the usual percentage: -1.0 is -50 %."""
    return change if change >= 0 else -(1 - 1 / (1 - change))


def pct(change: float) -> str:
    """A change as text: "+72%", "-43%", "±0%", or "new"/"gone" for paths in one trace only."""
    if math.isinf(change):
        return "new" if change > 0 else "gone"
    pct = 100 * conventional(change)
    return f"{pct:+.0f}%" if abs(pct) >= 0.5 else "±0%"


def metric_label(metric: str, normalize: bool) -> str:
    """How the colour's measure is named in the legend and the table title."""
    label = {"per-call": "inclusive time per call", "total": "total inclusive time",
             "calls": "calls"}[metric]
    return label + (" per second of trace" if normalize and metric != "per-call" else "")


@dataclass(frozen=True)
class ChangeRow:
    """One call path in both traces: its calls and p50/p99 before and after."""

    path: tuple[str, ...]
    calls_before: int
    calls_after: int
    p50_before: int
    p50_after: int
    p99_before: int
    p99_after: int
    score: float  # how much it changed: the larger |log ratio| of p50 and p99 (or of calls)


def _log_ratio(b: float, a: float) -> float:
    return abs(math.log(max(a, 1.0) / max(b, 1.0)))


def change_rows(before: Side, after: Side, *, top: int = 20, min_calls: int = 5,
                normalize: bool = False) -> list[ChangeRow]:
    """The ``top`` paths in both traces whose p50 and p99 changed most.

    A path needs ``min_calls`` returned calls on each side, so that a single
    slow call does not top the list.  Point-only traces have no latencies:
    their paths are ranked by the change of their calls (per second with
    ``normalize``).
    """
    by_calls = before.points or after.points
    rows = []
    for path, a in after.paths.items():
        b = before.paths.get(path)
        if b is None or len(path) < 2:
            continue
        if by_calls:
            if min(a.calls, b.calls) < min_calls:
                continue
            score = _log_ratio(before.value(path, "calls", normalize) or 0,
                               after.value(path, "calls", normalize) or 0)
        else:
            if min(a.hist.count, b.hist.count) < min_calls:
                continue
            score = max(_log_ratio(b.hist.percentile(50), a.hist.percentile(50)),
                        _log_ratio(b.hist.percentile(99), a.hist.percentile(99)))
        rows.append(ChangeRow(path, b.calls, a.calls, b.hist.percentile(50),
                              a.hist.percentile(50), b.hist.percentile(99),
                              a.hist.percentile(99), score))
    rows.sort(key=lambda r: (-r.score, r.path))
    return rows[:top]


def _short_path(path: tuple[str, ...], keep: int = 3) -> str:
    if len(path) <= keep + 1:
        return ";".join(path)
    return f"{path[0]};…;" + ";".join(path[-keep:])


def _change_cell(b: int, a: int) -> str:
    return f"{fmt_ns(b)} → {fmt_ns(a)} {pct(relative_change(b, a))}"


def change_table(rows: list[ChangeRow], *, by_calls: bool, before: str, after: str) -> Table:
    """The rows as a terminal table: path, calls before → after, p50 and p99 before → after."""
    what = "calls" if by_calls else "p50 and p99"
    table = Table(title=f"{len(rows)} call paths whose {what} changed most: "
                        f"{before} → {after}")
    table.add_column("call path")
    table.add_column("calls", justify="right")
    if not by_calls:
        table.add_column("p50", justify="right")
        table.add_column("p99", justify="right")
    for r in rows:
        calls = f"{r.calls_before:,} → {r.calls_after:,}"
        if by_calls:
            change = pct(relative_change(r.calls_before, r.calls_after))
            table.add_row(_short_path(r.path), f"{calls} {change}")
        else:
            table.add_row(_short_path(r.path), calls, _change_cell(r.p50_before, r.p50_after),
                          _change_cell(r.p99_before, r.p99_after))
    return table
