"""The aggregated call tree and per-function latency statistics.

A node is a call path from a root (a syscall or a softirq entry point) down
to a function; it counts the calls that took that path, their inclusive and
self time, and their latency histogram.  Trees are built from closed root
calls, so a call shared by many journeys is counted once.
"""

from __future__ import annotations

from collections.abc import Iterator

from skbpath.tracer.model.calls import Call
from skbpath.tracer.model.stats import SUB as _SUB
from skbpath.tracer.model.stats import SUB_BITS as _SUB_BITS
from skbpath.tracer.model.stats import Histogram
from skbpath.tracer.traces.functions import FuncTable


class Node:
    """One call path in the aggregated tree."""

    __slots__ = ("func", "parent", "children", "count", "lost", "total", "self_total", "hist")

    def __init__(self, func: int, parent: Node | None) -> None:
        self.func = func
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.count = 0
        self.lost = 0  # calls whose return was never seen
        self.total = 0  # inclusive ns
        self.self_total = 0
        self.hist = Histogram()

    def path(self) -> list[int]:
        """Function ids from the root down to this node."""
        out = []
        n: Node | None = self
        while n is not None:
            out.append(n.func)
            n = n.parent
        return out[::-1]

    def sorted_children(self) -> list[Node]:
        """Children by descending total time, then function id (deterministic)."""
        return sorted(self.children.values(), key=lambda c: (-c.total, c.func))

    def walk(self) -> Iterator[Node]:
        """This node and all below it, depth first, children in sorted order."""
        yield self
        for c in self.sorted_children():
            yield from c.walk()


class CallTree:
    """Aggregated call paths, with one root node per root function."""

    def __init__(self, funcs: FuncTable, require_match: bool = False) -> None:
        self.funcs = funcs
        self.require_match = require_match
        self.roots: dict[int, Node] = {}
        self.by_func: dict[int, Histogram] = {}
        self.self_by_func: dict[int, int] = {}
        self.count_by_func: dict[int, int] = {}
        self.skipped_roots = 0

    def add_root(self, root: Call) -> None:
        """Aggregate one closed root call and its subtree."""
        if self.require_match and not any(c.matched for c in root.walk()):
            self.skipped_roots += 1
            return
        node = self.roots.get(root.func)
        if node is None:
            node = self.roots[root.func] = Node(root.func, None)
        by_func = self.by_func
        self_by_func = self.self_by_func
        count_by_func = self.count_by_func
        # The hot loop of replay: Histogram.add and stats.bucket_of are inlined
        # here (same arithmetic), as two method calls per call dominated it.
        work: list[tuple[Call, Node]] = [(root, node)]
        pop = work.pop
        push = work.append
        while work:
            call, node = pop()
            node.count += 1
            f = call.func
            count_by_func[f] = count_by_func.get(f, 0) + 1
            end = call.exit
            if end is None:
                node.lost += 1
            else:
                incl = end - call.entry
                selft = incl - call.child_time
                if selft < 0:
                    selft = 0
                node.total += incl
                node.self_total += selft
                if incl < _SUB:
                    b = incl if incl > 0 else 0
                else:
                    bl = incl.bit_length()
                    b = ((bl - _SUB_BITS) << _SUB_BITS) | (
                        (incl >> (bl - _SUB_BITS - 1)) & (_SUB - 1)
                    )
                h = node.hist
                hb = h.buckets
                hb[b] = hb.get(b, 0) + 1
                if not h.count or incl < h.min:
                    h.min = incl
                if incl > h.max:
                    h.max = incl
                h.count += 1
                h.total += incl
                h2 = by_func.get(f)
                if h2 is None:
                    h2 = by_func[f] = Histogram()
                hb = h2.buckets
                hb[b] = hb.get(b, 0) + 1
                if not h2.count or incl < h2.min:
                    h2.min = incl
                if incl > h2.max:
                    h2.max = incl
                h2.count += 1
                h2.total += incl
                self_by_func[f] = self_by_func.get(f, 0) + selft
            children = call.children
            if children:
                kids = node.children
                for child in children:
                    cf = child.func
                    cn = kids.get(cf)
                    if cn is None:
                        cn = kids[cf] = Node(cf, node)
                    push((child, cn))

    def direction(self, node: Node) -> str:
        """TX or RX (or FREE) for a root node, from its function's path."""
        return self.funcs.path_of(node.func).upper()

    def sorted_roots(self) -> list[Node]:
        """Root nodes grouped by direction (TX, RX, others), then by total time."""
        order = {"TX": 0, "RX": 1}
        return sorted(
            self.roots.values(),
            key=lambda n: (order.get(self.direction(n), 2), -n.total, n.func),
        )

    def nodes(self) -> Iterator[Node]:
        """Every node, roots in :meth:`sorted_roots` order, depth first."""
        for r in self.sorted_roots():
            yield from r.walk()

    def hottest_path(self, root: Node) -> list[Node]:
        """The chain from ``root`` that follows the child with most total time."""
        out = [root]
        n = root
        while n.children:
            n = n.sorted_children()[0]
            out.append(n)
        return out
