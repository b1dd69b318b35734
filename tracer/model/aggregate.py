"""Call paths counted in the kernel (``--aggregate``): the call tree without per-call records.

In aggregation mode the BPF program adds each call to its call path's
counters (probes/skbpath.bpf.c, ``agg_paths``) and nothing else leaves the
kernel.  A path is a row: its id (a hash of the caller's path and the
function), its parent's id (0 for a root), the function, the calls that
returned and those whose return never came, inclusive and self time, min,
max and a histogram in the model's own buckets (tracer/model/stats.py).

This module turns rows into the same :class:`~.calltree.CallTree` that
replaying per-call records builds, so every renderer draws both alike, and
compares two snapshots of the rows for the live view (:func:`hottest`).
A path whose parent is not in the trace (the kernel's map was full when
the parent came, or the parent's entry program was skipped) is a root of
its own and counted, as replay counts a call whose enclosing call was not
recorded (``orphans``).  Rows come from an untrusted trace too: a path
listed twice, or a chain of parents that loops or runs deeper than a real
stack, is a bad record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.model.calltree import CallTree, Node
from skbpath.tracer.model.stats import Histogram

# No real call path is deeper: the kernel's frame stacks hold 64 frames.
MAX_PATH_DEPTH = 256


@dataclass(frozen=True)
class PathRow:
    """One call path's counters, as the kernel counted them (all CPUs together)."""

    id: int
    parent: int
    func: int
    calls: int
    no_return: int = 0
    total_ns: int = 0
    self_ns: int = 0
    min_ns: int = 0
    max_ns: int = 0
    hist: tuple[tuple[int, int], ...] = ()  # (bucket, count), by bucket

    def to_json(self) -> dict[str, Any]:
        """The AGGREGATE record's form of the row (tracer/traces/tracefile.py)."""
        return {"id": self.id, "parent": self.parent, "func": self.func, "calls": self.calls,
                "no_return": self.no_return, "total_ns": self.total_ns,
                "self_ns": self.self_ns, "min_ns": self.min_ns, "max_ns": self.max_ns,
                "hist": {str(b): n for b, n in self.hist}}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PathRow:
        """A row from a record the schema has checked."""
        return cls(obj["id"], obj["parent"], obj["func"], obj["calls"],
                   obj.get("no_return", 0), obj.get("total_ns", 0), obj.get("self_ns", 0),
                   obj.get("min_ns", 0), obj.get("max_ns", 0),
                   tuple(sorted(obj.get("hist", {}).items())))

    def histogram(self) -> Histogram:
        """The row's latencies as a :class:`Histogram` (exact count, sum, min and max)."""
        h = Histogram()
        h.buckets = dict(self.hist)
        h.count = self.calls
        h.total = self.total_ns
        h.min, h.max = (self.min_ns, self.max_ns) if self.calls else (0, 0)
        return h


def rows_of(record: dict[str, Any]) -> list[PathRow]:
    """The rows of a checked AGGREGATE record."""
    return [PathRow.from_json(p) for p in record.get("paths", [])]


def _chains(rows: Iterable[PathRow]) -> list[list[PathRow]]:
    """Each row's chain from its root (or the first row whose parent is missing) down to it.

    TraceFormatError for a row listed twice or a chain that loops.
    """
    by_id: dict[int, PathRow] = {}
    for r in rows:
        if r.id in by_id:
            raise TraceFormatError(f"aggregate: call path {r.id:#x} is listed twice")
        by_id[r.id] = r
    out = []
    for r in by_id.values():
        chain = [r]
        while chain[-1].parent:
            parent = by_id.get(chain[-1].parent)
            if parent is None:
                break  # an orphan: see the module docstring
            if len(chain) >= MAX_PATH_DEPTH:
                raise TraceFormatError(f"aggregate: call path {r.id:#x} is more than "
                                       f"{MAX_PATH_DEPTH} calls deep (or its parents loop)")
            chain.append(parent)
        out.append(chain[::-1])
    return out


def add_rows(tree: CallTree, rows: Iterable[PathRow]) -> int:
    """Add the call paths to ``tree`` as replaying their calls would have; return the orphans.

    Distinct paths that end in the same function under the same node (a hash
    collision, or a filtered call between them) are one node, as in replay.
    An orphan (its parent is not in the rows) is a root, with the paths
    below it under it.
    """
    chains = _chains(rows)
    for chain in chains:
        node = tree.roots.get(chain[0].func)
        if node is None:
            node = tree.roots[chain[0].func] = Node(chain[0].func, None)
        for r in chain[1:]:
            child = node.children.get(r.func)
            if child is None:
                child = node.children[r.func] = Node(r.func, node)
            node = child
        _add(tree, node, chain[-1])
    return sum(1 for c in chains if len(c) == 1 and c[0].parent)


def _add(tree: CallTree, node: Node, r: PathRow) -> None:
    node.count += r.calls + r.no_return
    node.lost += r.no_return
    node.total += r.total_ns
    node.self_total += r.self_ns
    h = r.histogram()
    node.hist.merge(h)
    f = r.func
    tree.count_by_func[f] = tree.count_by_func.get(f, 0) + r.calls + r.no_return
    tree.self_by_func[f] = tree.self_by_func.get(f, 0) + r.self_ns
    by_func = tree.by_func.get(f)
    if by_func is None:
        by_func = tree.by_func[f] = Histogram()
    by_func.merge(h)


@dataclass(frozen=True)
class HotPath:
    """A call path in the live view: its functions, rate and latency over the last interval."""

    funcs: tuple[int, ...]
    calls: int  # in the interval
    per_second: float
    total_ns: int  # inclusive, in the interval
    p50: int
    p99: int
    calls_so_far: int
    seconds: float  # the interval's length

    @property
    def busy(self) -> float:
        """Inclusive ns spent in the path per second of the interval."""
        return self.total_ns / self.seconds if self.seconds > 0 else 0.0


def hottest(before: Iterable[PathRow], now: Iterable[PathRow], seconds: float,
            limit: int = 20) -> list[HotPath]:
    """The paths with most inclusive time between two snapshots, hottest first.

    Counters only grow, so a path's interval is ``now`` minus ``before``;
    its p50 and p99 come from the interval's histogram, so they say how the
    path behaves now, not since the start.
    """
    old = {r.id: r for r in before}
    rows = list(now)
    chains = {c[-1].id: tuple(r.func for r in c) for c in _chains(rows)}
    hot = []
    for r in rows:
        o = old.get(r.id)
        calls = r.calls - (o.calls if o else 0)
        if calls <= 0:
            continue
        h = Histogram()
        prev = dict(o.hist) if o else {}
        h.buckets = {b: n - prev.get(b, 0) for b, n in r.hist if n - prev.get(b, 0) > 0}
        h.count = calls
        h.total = r.total_ns - (o.total_ns if o else 0)
        h.min, h.max = r.min_ns, r.max_ns  # the clamp: the interval's own are not kept
        hot.append(HotPath(chains[r.id], calls, calls / seconds if seconds > 0 else 0.0,
                           h.total, h.percentile(50), h.percentile(99), r.calls, seconds))
    hot.sort(key=lambda p: (-p.total_ns, p.funcs))
    return hot[:limit]
