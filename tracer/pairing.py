"""Pair function entries with their returns into calls, one stack per thread.

The kernel reports an entry and a return per traced call.  This module turns
that stream into :class:`Call` trees.  Rules:

* Each thread has its own stack, because a syscall can sleep and resume on
  another CPU.  Idle tasks all have tid 0, so they get one stack per CPU.
* A softirq entry point (``context`` in the catalog) that runs on top of a
  syscall starts a new root: it is not the syscall's child, and its time is
  taken out of the interrupted call's self time.
* A return pops the nearest frame of the same function.  Frames above it
  never saw their return (a kretprobe miss): they are closed as ``lost``.
* A return with no entry (the trace began inside the call) is counted and
  dropped.  Entries still open at the end are closed by :meth:`Pairer.finish`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import ENTRY, FLAG_MATCHED, FLAG_RESULT
from .functions import FuncTable

if TYPE_CHECKING:
    from .journeys import Journey


class Call:
    """One execution of a traced function."""

    __slots__ = (
        "func",
        "entry",
        "exit",
        "skb",
        "cpu",
        "tid",
        "tgid",
        "stack_id",
        "matched",
        "parent",
        "interrupted",
        "children",
        "child_time",
        "journeys",
        "lost",
        "aux",
        "result",
    )

    def __init__(
        self,
        func: int,
        entry: int,
        skb: int,
        cpu: int,
        tid: int,
        tgid: int,
        stack_id: int,
        matched: bool,
        parent: Call | None,
    ) -> None:
        self.func = func
        self.entry = entry
        self.exit: int | None = None
        self.skb = skb
        self.cpu = cpu
        self.tid = tid
        self.tgid = tgid
        self.stack_id = stack_id
        self.matched = matched
        self.parent = parent
        # The call a softirq root interrupted, if any (not its parent).
        self.interrupted: Call | None = None
        self.children: list[Call] = []
        self.child_time = 0
        self.journeys: list[Journey] | None = None
        # True when the return was never seen (closed by an ancestor's return
        # or by the end of the trace).
        self.lost = False
        # The integer argument the catalog asked for (a drop reason), or 0.
        self.aux = 0
        # What the return carried (FLAG_RESULT): (word, aux), e.g. a route.
        self.result: tuple[int, int] | None = None

    @property
    def inclusive(self) -> int | None:
        """Time from entry to return in ns, or None if the return was lost."""
        if self.exit is None:
            return None
        return self.exit - self.entry

    @property
    def self_time(self) -> int | None:
        """Inclusive time less children and interrupting softirqs, in ns."""
        if self.exit is None:
            return None
        return max(0, self.exit - self.entry - self.child_time)

    def walk(self) -> Iterable[Call]:
        """This call and its descendants, in entry order."""
        stack = [self]
        while stack:
            c = stack.pop()
            yield c
            stack.extend(reversed(c.children))

    def __repr__(self) -> str:
        return f"Call(func={self.func}, entry={self.entry}, exit={self.exit}, skb={self.skb:#x})"


@dataclass
class PairingStats:
    """What pairing could not match, so that nothing is lost silently."""

    events: int = 0
    calls: int = 0
    unmatched_exits: int = 0
    lost_exits: int = 0
    open_at_end: int = 0


class PairingListener:
    """Receives calls as they open and close.  The default does nothing."""

    def on_entry(self, call: Call) -> None:
        """A call was entered (its parent chain is complete, its return is not)."""

    def on_exit(self, call: Call) -> None:
        """A call was closed: by its return, or as lost (``call.lost``)."""

    def on_root(self, call: Call) -> None:
        """A root call and its whole subtree are closed."""


class Pairer:
    """Turns an ordered event stream into calls and root call trees."""

    def __init__(self, funcs: FuncTable, listener: PairingListener) -> None:
        self.funcs = funcs
        self.listener = listener
        self.stacks: dict[int, list[Call]] = {}
        self.stats = PairingStats()
        self.last_ts = 0

    def feed(self, events: Iterable[tuple[int, ...]]) -> None:
        """Consume decoded events (tuples in :class:`tracer.events.Event` order)."""
        stacks = self.stacks
        stats = self.stats
        is_context = self.funcs.is_context
        n_funcs = len(is_context)
        listener = self.listener
        on_entry = listener.on_entry
        on_exit = listener.on_exit
        on_root = listener.on_root
        close = self._close
        n = 0
        closed = 0  # calls closed inline below; _close counts its own
        ts = self.last_ts
        try:
            for ts, skb, tid, tgid, func, kind, flags, cpu, _p, stack_id, aux in events:
                n += 1
                key = tid if tid else -1 - cpu
                st = stacks.get(key)
                if kind == ENTRY:
                    if st is None:
                        st = stacks[key] = []
                    top = st[-1] if st else None
                    ctx_root = func < n_funcs and is_context[func]
                    call = Call(
                        func,
                        ts,
                        skb,
                        cpu,
                        tid,
                        tgid,
                        stack_id,
                        bool(flags & FLAG_MATCHED),
                        None if ctx_root else top,
                    )
                    if ctx_root:
                        call.interrupted = top
                    if aux:
                        call.aux = aux
                    st.append(call)
                    on_entry(call)
                elif not st:
                    stats.unmatched_exits += 1
                elif st[-1].func == func:
                    # The common case, _close inlined: the return of the top frame.
                    call = st.pop()
                    closed += 1
                    call.exit = ts
                    if flags & FLAG_RESULT:
                        call.result = (skb, aux)
                    on_exit(call)
                    parent = call.parent
                    if parent is not None:
                        parent.children.append(call)
                        parent.child_time += ts - call.entry
                    else:
                        if call.interrupted is not None:
                            call.interrupted.child_time += ts - call.entry
                        on_root(call)
                else:
                    for i in range(len(st) - 2, -1, -1):
                        if st[i].func == func:
                            break
                    else:
                        stats.unmatched_exits += 1
                        continue
                    while len(st) > i + 1:
                        stats.lost_exits += 1
                        close(st.pop(), None, True)
                    call = st.pop()
                    if flags & FLAG_RESULT:
                        call.result = (skb, aux)
                    close(call, ts, False)
        finally:
            stats.events += n
            stats.calls += closed
            self.last_ts = ts

    def _close(self, call: Call, ts: int | None, lost: bool) -> None:
        self.stats.calls += 1
        call.exit = ts
        call.lost = lost
        parent = call.parent
        incl = 0 if ts is None else ts - call.entry
        self.listener.on_exit(call)
        if parent is not None:
            parent.children.append(call)
            parent.child_time += incl
            return
        if call.interrupted is not None:
            call.interrupted.child_time += incl
        self.listener.on_root(call)

    def open_calls(self) -> int:
        """How many calls are entered and not yet returned."""
        return sum(len(s) for s in self.stacks.values())

    def finish(self) -> None:
        """Close every open call as lost: the trace ended before they returned."""
        for key in sorted(self.stacks):
            st = self.stacks[key]
            while st:
                self.stats.open_at_end += 1
                self._close(st.pop(), None, True)
        self.stacks.clear()


def pair_all(
    funcs: FuncTable, events: Iterable[tuple[int, ...]], on_root: Callable[[Call], None]
) -> PairingStats:
    """Pair a whole event sequence, handing every closed root to ``on_root``."""

    class _Roots(PairingListener):
        def on_root(self, call: Call) -> None:
            on_root(call)

    p = Pairer(funcs, _Roots())
    p.feed(events)
    p.finish()
    return p.stats
