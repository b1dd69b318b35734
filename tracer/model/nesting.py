"""Nest closed calls into call trees, per thread, by time containment and depth.

Calls arrive closed, as the kernel emits them at their return (trace format
version 2) or as the v1 pairer closes them (tracer/model/pairing.py).  A
call's parent is the innermost call of the same thread and the same context
that contains it in time and sits lower on the frame stack.  So a lost
record removes that one call: its children go to the nearest ancestor that
was recorded, or become roots, and nothing else moves.  Rules:

* Each thread has its own calls; idle tasks (tid 0) have one per CPU.
* A call whose return never came (NO_RETURN) has no known end and adopts
  no children; neither does a point (a tracepoint hit).
* A softirq entry point (catalog ``context``) is a root of its own; the call
  it ran on top of is its ``interrupted``, whose self time excludes it.  A
  call is only ever nested in a call of its own context (``base``), so a
  lost softirq root cannot hand its children to the syscall it interrupted.

Listeners get the same calls and the same order as live pairing gave them:
``on_entry`` in entry-time order across threads, ``on_exit`` at the return,
``on_root`` once a root's whole subtree has returned.  A thread's calls are
held until its outermost call returns (depth 0), and events are released up
to the earliest entry still held, and no later than :data:`HORIZON_NS`
before the newest time seen: a call entered earlier on a thread that has
returned nothing yet may still come.  (One open for longer than that, whose
children have not returned either, reaches the listeners late: only its
entry order with other threads suffers.)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from skbpath.tracer.model.calls import Call
from skbpath.tracer.traces.events import (
    FLAG_MATCHED,
    FLAG_NO_RETURN,
    FLAG_POINT,
    FLAG_RESULT,
    FLAG_RETVAL,
)
from skbpath.tracer.traces.functions import FuncTable

_ENTRY = 0
_EXIT = 1
HORIZON_NS = 1_000_000_000


class NestingListener:
    """Receives calls as they open and close.  The default does nothing."""

    def on_entry(self, call: Call) -> None:
        """A call was entered (its parent chain is complete, its return is not)."""

    def on_exit(self, call: Call) -> None:
        """A call was closed: by its return, or as lost (``call.lost``)."""

    def on_root(self, call: Call) -> None:
        """A root call and its whole subtree are closed."""


@dataclass
class NestingStats:
    """What nesting saw: calls, those without a return, those whose parent was lost."""

    calls: int = 0
    no_return: int = 0
    # Calls above their context's base whose enclosing call was not recorded.
    orphans: int = 0


def thread_of(tid: int, cpu: int) -> int:
    """The key calls are grouped by: the tid, or for idle tasks (tid 0) the CPU."""
    return tid if tid else -1 - cpu


class Nester:
    """Builds call trees from closed calls; see the module docstring."""

    def __init__(self, funcs: FuncTable, listener: NestingListener) -> None:
        self.is_context = funcs.is_context
        self.listener = listener
        self.pending: dict[int, list[Call]] = {}  # thread -> calls held
        self.earliest: dict[int, int] = {}  # thread -> earliest entry held
        self.heap: list[tuple[int, int, int, Call]] = []  # (time, kind, order, call)
        self.order = 0
        self.newest = 0  # the latest return (or entry) seen
        self.stats = NestingStats()

    def add(self, call: Call) -> None:
        """Take one closed call (its thread's calls in return order)."""
        key = thread_of(call.tid, call.cpu)
        held = self.pending.get(key)
        if held is None:
            held = self.pending[key] = []
            self.earliest[key] = call.entry
        elif call.entry < self.earliest[key]:
            self.earliest[key] = call.entry
        held.append(call)
        end = call.end if call.end is not None else call.entry
        if end > self.newest:
            self.newest = end
        if call.depth == 0:
            # The thread's outermost call returned: all it contains is here.
            del self.pending[key]
            del self.earliest[key]
            self._nest(held)
            held_from = min(self.earliest.values(), default=self.newest)
            self._release(min(held_from, self.newest - HORIZON_NS))

    def add_records(self, records: Iterable[tuple[int, ...]]) -> int:
        """Take decoded v2 call records (tuples in ``CallRecord`` order); returns how many."""
        add = self.add
        n = 0
        for (entry, duration, skb, result, tid, tgid, aux, stack_id, func, cpu, depth, flags,
             base, _pad) in records:
            n += 1
            c = Call(func, entry, skb, cpu, tid, tgid, stack_id, bool(flags & FLAG_MATCHED))
            c.depth = depth
            c.base = base
            if flags & FLAG_RESULT:
                c.result = (result, aux)
            elif aux:
                c.aux = aux
            if flags & FLAG_RETVAL:
                c.retval = result & 0xFFFFFFFF  # an enum or int return: the register's low half
            if flags & FLAG_POINT:
                c.point = True
                c.end = entry
            elif not flags & FLAG_NO_RETURN:
                c.end = entry + duration
            add(c)
        return n

    def finish(self) -> None:
        """Nest and release everything held: the trace has ended."""
        for key in sorted(self.pending):
            self._nest(self.pending[key])
        self.pending.clear()
        self.earliest.clear()
        self._release(None)

    # -- internals -------------------------------------------------------
    def _nest(self, calls: list[Call]) -> None:
        calls.sort(key=lambda c: (c.entry, c.depth))
        is_context = self.is_context
        n_funcs = len(is_context)
        stats = self.stats
        # The chain of calls containing the current one, with their ends.
        open_: list[tuple[Call, int]] = []
        roots = []
        for c in calls:
            end = c.end if c.end is not None else c.entry
            while open_ and not (open_[-1][0].entry <= c.entry and end <= open_[-1][1]):
                open_.pop()
            top = open_[-1][0] if open_ else None
            if c.func < n_funcs and is_context[c.func]:
                c.interrupted = top
                roots.append(c)
            elif top is not None and top.base == c.base and top.depth < c.depth:
                c.parent = top
                top.children.append(c)
                if c.end is not None:
                    top.child_time += c.end - c.entry
            else:
                if c.depth > c.base:
                    stats.orphans += 1
                roots.append(c)
            if c.end is not None and c.end > c.entry and not c.point:
                open_.append((c, c.end))
        for r in roots:
            if r.interrupted is not None and r.end is not None:
                r.interrupted.child_time += r.end - r.entry
            self._schedule(r)

    def _schedule(self, root: Call) -> None:
        """Queue a root's entries (pre-order) and returns (post-order)."""
        heap = self.heap
        push = heapq.heappush

        def visit(c: Call, close_at: int) -> None:
            self.order += 1
            push(heap, (c.entry, _ENTRY, self.order, c))
            # A call without a return is closed when its parent returns.
            at = c.end if c.end is not None else close_at
            for ch in c.children:
                visit(ch, at)
            self.order += 1
            push(heap, (at, _EXIT, self.order, c))

        visit(root, root.end if root.end is not None else root.entry)

    def _release(self, limit: int | None) -> None:
        """Hand on queued events before ``limit`` (all of them if None)."""
        heap = self.heap
        pop = heapq.heappop
        listener = self.listener
        stats = self.stats
        while heap and (limit is None or heap[0][0] < limit):
            _t, kind, _o, c = pop(heap)
            if kind == _ENTRY:
                listener.on_entry(c)
                continue
            stats.calls += 1
            c.exit = c.end
            if c.end is None:
                c.lost = True
                stats.no_return += 1
            listener.on_exit(c)
            if c.parent is None:
                listener.on_root(c)
