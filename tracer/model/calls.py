"""The objects the model is made of: calls and the journeys they belong to.

Both live here, apart from the code that builds them (nesting, pairing,
journeys), so that no two model modules import each other.
"""

from __future__ import annotations

from collections.abc import Iterable


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
        "retval",
        "end",
        "depth",
        "base",
        "point",
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
        parent: Call | None = None,
    ) -> None:
        self.func = func
        self.entry = entry
        # The return time as listeners see it: None until the call is closed
        # (JourneyBuilder counts open steps by it), then ``end``.
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
        # What the call returned (FLAG_RETVAL), e.g. napi_gro_receive's gro_result_t.
        self.retval: int | None = None
        # The known return time (None: the return never came), the depth on
        # the thread's frame stack, and the depth where its context began.
        self.end: int | None = None
        self.depth = 0
        self.base = 0
        self.point = False  # a tracepoint hit: no duration, adopts no children

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


class Journey:
    """The calls that handled one skb (and the clones made from it)."""

    __slots__ = ("id", "path", "steps", "skbs", "live", "open", "last_entry", "end", "trigger",
                 "merged_into", "segments", "emitted")

    def __init__(self, jid: int, path: str, skb: int) -> None:
        self.id = jid
        self.path = path
        self.steps: list[Call] = []
        self.skbs: list[int] = [skb]
        self.live: set[int] = {skb}
        self.open = 0
        self.last_entry = 0
        self.end = ""
        # The journey whose call caused this one (e.g. an ACK that made TCP send).
        self.trigger: int | None = None
        # GRO: the head journey this packet was merged into, and, on a head,
        # the journeys merged into it (handed on after it).
        self.merged_into: Journey | None = None
        self.segments: list[Journey] = []
        self.emitted = False

    @property
    def matched(self) -> bool:
        """True if the kernel's filter matched any of this journey's skb calls."""
        return any(c.matched for c in self.steps if c.skb)

    def add(self, call: Call) -> None:
        """Append a step (an entered call) to this journey."""
        self.steps.append(call)
        if call.journeys is None:
            call.journeys = [self]
        else:
            call.journeys.append(self)
        if call.exit is None and not call.lost:
            self.open += 1
        self.last_entry = call.entry
