"""A trace in a screenful: what was traced, journeys per path, losses, the hottest
call paths, drops by reason (``skbpath replay --summary``; render/summary.py prints it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.latency import UNTIL_TEXT
from skbpath.tracer.model.replay import POINT_MODES, Replay

HOT_PATHS = 5
LATENCY_ROWS = 3  # the (direction, end) groups with most packets
DROP_REASONS = 5


@dataclass(frozen=True)
class HotPath:
    """A call path of the tree, ranked by the time spent in its last function."""

    direction: str
    names: tuple[str, ...]
    calls: int
    self_ns: int
    p50_ns: int | None
    p99_ns: int | None


@dataclass(frozen=True)
class PathCount:
    """Journeys and the skbs they followed, on one path (TX, RX, ...)."""

    journeys: int
    skbs: int


@dataclass
class Summary:
    """What ``replay --summary`` shows."""

    trace: str
    kernel: str
    attach: str
    recorded_with: str
    filters: dict[str, Any]
    duration_ns: int
    events: int
    paths: dict[str, PathCount]
    lost: dict[str, int]
    filtered: int
    lost_returns: int
    by_time: bool
    open_at_stop: int = 0  # calls still running when the trace stopped
    aggregate_paths: int | None = None  # --aggregate: call paths counted in the kernel
    hot: list[HotPath] = field(default_factory=list)
    drops: list[tuple[str, int]] = field(default_factory=list)
    slowest_journey: int | None = None
    hottest_function: str | None = None
    # (direction → end, packets, p50, p99) of the stack latency (tracer/model/latency.py).
    latency: list[tuple[str, int, int, int]] = field(default_factory=list)


def summarize(rep: Replay) -> Summary:
    """The summary of a replayed trace (``rep`` keeps its journeys)."""
    h = rep.contents.header
    end = rep.contents.end or {}
    lost_all = dict(end.get("lost") or rep.contents.stats.get("lost") or {})
    filtered = int(lost_all.pop("filtered", 0))
    open_at_stop = int(lost_all.pop("open_at_stop", 0))  # recorded: not a loss
    lost_all.pop("open_at_start", None)  # begun before the trace: not in it, not lost
    journeys = rep.model.journey_list
    counts: dict[str, list[int]] = {}
    for j in journeys:
        c = counts.setdefault(j.path, [0, 0])
        c[0] += 1
        c[1] += len(j.skbs)
    starts = [j.start for j in journeys if j.steps]
    ends = [j.start + j.duration for j in journeys if j.steps]
    by_time = h.get("attach") not in POINT_MODES
    model = rep.model.summary()
    s = Summary(
        trace=rep.path,
        kernel=str(h.get("kernel", "?")),
        attach=str(h.get("attach", "?")),
        recorded_with=str(h.get("recorded_with") or ""),
        filters=dict(h.get("filters") or {}),
        duration_ns=max(ends) - min(starts) if starts else 0,
        events=model["events"],
        paths={p: PathCount(c[0], c[1]) for p, c in sorted(counts.items())},
        lost={k: int(v) for k, v in sorted(lost_all.items())},
        filtered=filtered,
        lost_returns=model["lost_exits"],
        open_at_stop=open_at_stop,
        by_time=by_time,
    )
    agg = rep.contents.aggregate
    if rep.model.aggregate and agg is not None:
        s.aggregate_paths = len(agg.get("paths", []))
        s.events = model["calls"]
        s.duration_ns = int(agg.get("seconds", 0) * 1e9)
    s.hot = hot_paths(rep, by_time)
    if s.hot:
        s.hottest_function = s.hot[0].names[-1]
    s.drops = drops_by_reason(rep)
    if journeys:
        # The packet the stack held longest; by lifetime where none has a stack latency.
        s.slowest_journey = max(journeys, key=lambda j: (
            (j.stack_latency or (-1, ""))[0], j.lifetime, -j.id)).id
    for row in sorted(rep.model.latency.sorted_rows(), key=lambda r: -r.stack.count)[:LATENCY_ROWS]:
        s.latency.append((f"{row.path} to {UNTIL_TEXT.get(row.until, row.until)}",
                          row.stack.count, row.stack.percentile(50), row.stack.percentile(99)))
    return s


def hot_paths(rep: Replay, by_time: bool, n: int = HOT_PATHS) -> list[HotPath]:
    """The ``n`` call paths with most self time (most calls for tracepoint traces)."""
    tree = rep.model.calltree
    nodes = list(tree.nodes())
    if by_time:
        nodes.sort(key=lambda x: (-x.self_total, -x.count, x.path()))
    else:
        nodes.sort(key=lambda x: (-x.count, x.path()))
    out = []
    for node in nodes[:n]:
        path = node.path()
        root = tree.roots[path[0]]
        hist = node.hist
        out.append(HotPath(
            direction=tree.direction(root),
            names=tuple(tree.funcs.name_of(f) for f in path),
            calls=node.count,
            self_ns=node.self_total,
            p50_ns=hist.percentile(50) if hist.count and by_time else None,
            p99_ns=hist.percentile(99) if hist.count and by_time else None,
        ))
    return out


def drops_by_reason(rep: Replay, n: int = DROP_REASONS) -> list[tuple[str, int]]:
    """The ``n`` most frequent drop reasons, with their counts."""
    if not rep.model.drops.enabled:
        return []
    names = {int(k): v for k, v in (rep.contents.header.get("drop_reasons") or {}).items()}
    names.update({int(k): v for k, v in
                  ((rep.contents.end or {}).get("drop_reasons") or {}).items()})
    totals: Counter[str] = Counter()
    for row in drop_report(rep.model.drops, names, rep.contents.stacks):
        totals[row.reason] += row.count
    return sorted(totals.items(), key=lambda x: (-x[1], x[0]))[:n]
