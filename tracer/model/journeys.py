"""Per-skb journeys: the ordered calls that handled one packet.

A journey is built as calls are *entered*, so that steps from different
threads and CPUs land in the order they happened.  The rules:

* A call whose skb is live joins that skb's journey.
* A call with a new skb, nested in a call of a journey on the same path
  (tx or rx), joins it: that is a clone or copy made on the way (TCP clones
  the skb in ``__tcp_transmit_skb``).  Otherwise it starts a journey.
* The calls without an skb that enclose a step (the syscall, tcp_sendmsg,
  the NAPI poll, the list receive functions) are included before it, once.
* Free functions never start a journey.  When one that frees the journey's
  last live skb returns, the journey is finished; it is handed on once every
  step has returned.  A journey idle for ``timeout_ns`` is finished too.
* A merge (GRO's ``skb_gro_receive``) finishes the merged packet's journey
  as ``merged`` into the journey of the head skb its aux names (by the low
  32 bits of its address); the head lists it, and hands it on after itself,
  so that the segment's delivery is known to be the head's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from skbpath.tracer.model.calls import Call, Journey
from skbpath.tracer.traces.functions import FuncTable

END_FREED = "freed"
END_TIMEOUT = "timeout"
END_TRACE = "trace-end"
# The skb's address came back from a driver with no traced free in between
# (freed by a path the catalog does not probe): the old journey ends there.
END_REUSED = "reused"
END_MERGED = "merged"
LOW32 = 0xFFFFFFFF

__all__ = ["Call", "Journey", "JourneyBuilder", "JourneyStats"]


@dataclass
class JourneyStats:
    """Counts of journeys by how they ended."""

    started: int = 0
    freed: int = 0
    timed_out: int = 0
    at_trace_end: int = 0
    reused: int = 0
    merged: int = 0
    filtered_out: int = 0


class JourneyBuilder:
    """Builds journeys from entered and closed calls; see the module docstring."""

    def __init__(
        self,
        funcs: FuncTable,
        on_journey: Callable[[Journey], None],
        timeout_ns: int = 5_000_000_000,
        require_match: bool = False,
    ) -> None:
        self.funcs = funcs
        self.on_journey = on_journey
        self.timeout_ns = timeout_ns
        self.require_match = require_match
        self.live: dict[int, Journey] = {}  # skb -> journey
        # The low 32 bits of a live skb's address -> the address (a merge's aux
        # names its head so); stale entries are checked against ``live``.
        self.low: dict[int, int] = {}
        self.active: dict[int, Journey] = {}  # id -> journey, oldest first
        self.next_id = 1
        self.stats = JourneyStats()
        self._entries = 0

    # -- called by the pairing listener ---------------------------------
    def on_entry(self, call: Call) -> None:
        """Attach a newly entered call to its journey, if it has an skb."""
        self._entries += 1
        if self._entries & 0xFFF == 0:
            self.expire(call.entry)
        skb = call.skb
        if not skb:
            return
        j = self.live.get(skb)
        if j is not None and self.funcs.fresh_at(call.func):
            # A driver hands up only new skbs: a live journey here is stale.
            self._finish(j, END_REUSED)
            self.stats.reused += 1
            if j.open <= 0:
                self._emit(j)
            j = None
        if j is None:
            if self.funcs.frees_at(call.func):
                return
            path = self.funcs.path_of(call.func)
            anc = call.parent
            while anc is not None and not anc.skb:
                anc = anc.parent
            parent_j = anc.journeys[-1] if anc is not None and anc.journeys else None
            if parent_j is not None and parent_j.path == path and not parent_j.end:
                j = parent_j
                j.live.add(skb)
                if skb not in j.skbs:  # a freed clone's address can come back
                    j.skbs.append(skb)
                self.live[skb] = j
                self.low[skb & LOW32] = skb
                self._add_enclosing(j, call)
            else:
                j = Journey(self.next_id, path, skb)
                self.next_id += 1
                self.stats.started += 1
                if parent_j is not None:
                    j.trigger = parent_j.id
                self.live[skb] = j
                self.low[skb & LOW32] = skb
                self.active[j.id] = j
                # Enclosing calls: no-skb ancestors up to the nearest skb call.
                chain = []
                a = call.parent
                while a is not None and not a.skb:
                    chain.append(a)
                    a = a.parent
                for a in reversed(chain):
                    j.add(a)
        else:
            self._add_enclosing(j, call)
        j.add(call)
        if call.aux and self.funcs.merges_at(call.func):
            self._merge(j, skb, call.aux)

    def _merge(self, j: Journey, skb: int, head_low: int) -> None:
        # The segment's skb is GRO's from here on: its journey ends.
        head_skb = self.low.get(head_low)
        head = self.live.get(head_skb) if head_skb is not None else None
        if head is None or head is j:
            return  # the head was not traced (or filtered out): nothing to follow
        del self.live[skb]
        j.live.discard(skb)
        if not j.live and not j.end:
            j.end = END_MERGED
            j.merged_into = head
            head.segments.append(j)
            self.stats.merged += 1

    def _add_enclosing(self, j: Journey, call: Call) -> None:
        # No-skb ancestors entered since the journey's last step.
        since = j.last_entry
        chain = []
        a = call.parent
        while a is not None and a.entry > since:
            if not a.skb:
                chain.append(a)
            a = a.parent
        for a in reversed(chain):
            j.add(a)

    def on_exit(self, call: Call) -> None:
        """Account a closed call in its journeys; finish journeys whose skbs are freed."""
        js = call.journeys
        if not js:
            if call.result is not None:
                self._add_result(call)
            return
        for j in js:
            j.open -= 1
        skb = call.skb
        if skb and self.funcs.frees_at(call.func):
            owner = self.live.get(skb)
            if owner is not None and owner is js[-1]:
                del self.live[skb]
                owner.live.discard(skb)
                if not owner.live and not owner.end:
                    owner.end = END_FREED
                    self.stats.freed += 1
        for j in js:
            if j.end and j.open <= 0:
                self._emit(j)

    def _add_result(self, call: Call) -> None:
        # A call without an skb that returned something about the packet (the
        # route fib_table_lookup found) belongs to its nearest skb caller's journey.
        a = call.parent
        while a is not None and not a.skb:
            a = a.parent
        if a is not None and a.journeys:
            a.journeys[-1].add(call)

    # -- lifecycle ---------------------------------------------------------
    def _finish(self, j: Journey, how: str) -> None:
        for skb in j.live:
            if self.live.get(skb) is j:
                del self.live[skb]
        j.live.clear()
        j.end = how

    def _emit(self, j: Journey) -> None:
        head = j.merged_into
        if head is not None and not head.emitted:
            return  # handed on after its head (see below)
        if self.active.pop(j.id, None) is None:
            return  # already emitted
        j.emitted = True
        if self.require_match and not j.matched and not (head and head.matched):
            self.stats.filtered_out += 1
        else:
            self.on_journey(j)
        for seg in j.segments:
            if seg.end and seg.open <= 0:
                self._emit(seg)

    def expire(self, now: int) -> None:
        """Finish journeys idle for longer than the timeout (bounds memory)."""
        limit = now - self.timeout_ns
        for j in list(self.active.values()):
            if not j.end and j.last_entry < limit:
                self._finish(j, END_TIMEOUT)
                self.stats.timed_out += 1
            if j.end and j.open <= 0:
                self._emit(j)

    def finish(self) -> None:
        """Hand on every journey still open: the trace has ended."""
        for j in list(self.active.values()):
            if not j.end:
                self._finish(j, END_TRACE)
                self.stats.at_trace_end += 1
            j.open = 0
            self._emit(j)
