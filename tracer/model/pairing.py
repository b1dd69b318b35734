"""Version 1 traces: pair function entries with their returns into closed calls.

A version 1 trace holds an ENTRY and an EXIT event per call; the kernel of a
version 2 trace does this pairing itself (probes/skbpath.bpf.c).  This module
closes v1 calls the way the kernel does and hands them to the same
:class:`~skbpath.tracer.model.nesting.Nester`, which builds the trees.  Rules:

* Each thread has its own stack, because a syscall can sleep and resume on
  another CPU.  Idle tasks all have tid 0, so they get one stack per CPU.
* A return pops the nearest frame of the same function.  Frames above it
  never saw their return (a kretprobe miss, or a lost event): they are
  closed without a return (NO_RETURN), and adopt no children.
* A return with no entry (the trace began inside the call, or the entry was
  lost) is counted and dropped.  Entries still open at the end are closed
  without a return by :meth:`Pairer.finish`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from skbpath.tracer.model.calls import Call
from skbpath.tracer.model.nesting import Nester, NestingListener, thread_of
from skbpath.tracer.traces.events import ENTRY, FLAG_MATCHED, FLAG_RESULT
from skbpath.tracer.traces.functions import FuncTable

__all__ = ["MAX_DEPTH", "Call", "Pairer", "PairingListener", "PairingStats", "pair_all"]

# Open calls one thread may hold.  A real stack is a few dozen deep; a crafted
# trace nesting without end would make every return search a huge stack.
MAX_DEPTH = 256

# The listener interface is the nester's.
PairingListener = NestingListener


@dataclass
class PairingStats:
    """What pairing could not match, so that nothing is lost silently."""

    events: int = 0
    calls: int = 0
    unmatched_exits: int = 0
    lost_exits: int = 0
    open_at_end: int = 0
    too_deep: int = 0  # entries past MAX_DEPTH and their returns, dropped


class Pairer:
    """Turns an ordered v1 event stream into closed calls for a :class:`Nester`."""

    def __init__(self, funcs: FuncTable, nester: Nester) -> None:
        self.funcs = funcs
        self.nester = nester
        self.stacks: dict[int, list[Call]] = {}
        self.stats = PairingStats()
        # Per thread: entries dropped past MAX_DEPTH whose returns are still to come.
        self.excess: dict[int, int] = {}

    def feed(self, events: Iterable[tuple[int, ...]]) -> None:
        """Consume decoded events (tuples in :class:`tracer.traces.events.Event` order)."""
        stacks = self.stacks
        stats = self.stats
        is_context = self.funcs.is_context
        n_funcs = len(is_context)
        add = self.nester.add
        excess = self.excess
        n = 0
        try:
            for ts, skb, tid, tgid, func, kind, flags, cpu, _p, stack_id, aux in events:
                n += 1
                key = thread_of(tid, cpu)
                st = stacks.get(key)
                if kind == ENTRY:
                    if st is None:
                        st = stacks[key] = []
                    if len(st) >= MAX_DEPTH:
                        excess[key] = excess.get(key, 0) + 1
                        stats.too_deep += 1
                        continue
                    call = Call(func, ts, skb, cpu, tid, tgid, stack_id, bool(flags & FLAG_MATCHED))
                    depth = len(st)
                    call.depth = depth
                    if func < n_funcs and is_context[func]:
                        call.base = depth
                    elif st:
                        call.base = st[-1].base
                    if aux:
                        call.aux = aux
                    st.append(call)
                    continue
                if excess and excess.get(key):
                    # The return of a dropped entry: the innermost frames are those.
                    excess[key] -= 1
                    stats.too_deep += 1
                    continue
                if not st:
                    stats.unmatched_exits += 1
                    continue
                i = len(st) - 1
                while i >= 0 and st[i].func != func:
                    i -= 1
                if i < 0:
                    stats.unmatched_exits += 1
                    continue
                while len(st) > i + 1:
                    stats.lost_exits += 1
                    stats.calls += 1
                    add(st.pop())  # no return: end stays None
                call = st.pop()
                call.end = ts
                if flags & FLAG_RESULT:
                    call.result = (skb, aux)
                stats.calls += 1
                add(call)
        finally:
            stats.events += n

    def open_calls(self) -> int:
        """How many calls are entered and not yet returned."""
        return sum(len(s) for s in self.stacks.values())

    def finish(self) -> None:
        """Close every open call without a return: the trace ended first."""
        for key in sorted(self.stacks):
            st = self.stacks[key]
            while st:
                self.stats.open_at_end += 1
                self.stats.calls += 1
                self.nester.add(st.pop())
        self.stacks.clear()
        self.excess.clear()
        self.nester.finish()


def pair_all(
    funcs: FuncTable, events: Iterable[tuple[int, ...]], on_root: Callable[[Call], None]
) -> PairingStats:
    """Pair and nest a whole v1 event sequence, handing every closed root to ``on_root``."""

    class _Roots(NestingListener):
        def on_root(self, call: Call) -> None:
            on_root(call)

    p = Pairer(funcs, Nester(funcs, _Roots()))
    p.feed(events)
    p.finish()
    return p.stats
