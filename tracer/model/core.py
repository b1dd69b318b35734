"""The model: calls in, journeys, call tree and statistics out.

The live tracer and replay both feed decoded records through :class:`Model`
(v2 call records with :meth:`Model.feed_calls`, v1 entry/exit events with
:meth:`Model.feed`), so what the tests check on recorded traces is what
users see live.  Either way, calls are nested by tracer/model/nesting.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from skbpath.tracer.model.aggregate import PathRow, add_rows
from skbpath.tracer.model.calls import Call
from skbpath.tracer.model.calltree import CallTree
from skbpath.tracer.model.drops import DropCounter
from skbpath.tracer.model.journeys import Journey, JourneyBuilder
from skbpath.tracer.model.latency import (
    SENT,
    LatencyReport,
    lifetime,
    stack_end,
    stack_latency,
    stage_table,
)
from skbpath.tracer.model.nesting import Nester, NestingListener
from skbpath.tracer.model.pairing import Pairer
from skbpath.tracer.model.routes import RouteCounter, decode_route, return_name
from skbpath.tracer.traces.functions import FuncTable


@dataclass(frozen=True)
class Step:
    """One call in a journey, flattened for rendering and JSON."""

    func: str
    layer: str
    path: str
    entry: int
    exit: int | None
    inclusive: int | None
    self_time: int | None
    depth: int
    skb: int
    cpu: int
    tid: int
    stack_id: int
    lost: bool
    aux: int = 0
    result: tuple[int, int] | None = None  # what the return carried (tracer/model/routes.py)
    stage: str = ""  # where a packet's stack latency can end (tracer/model/latency.py)
    returned: str = ""  # the named return value (napi_gro_receive: GRO_MERGED_FREE, ...)


@dataclass(frozen=True)
class JourneyView:
    """A finished journey, detached from the live call objects."""

    id: int
    path: str
    end: str
    skbs: tuple[int, ...]
    trigger: int | None
    steps: tuple[Step, ...]
    # GRO: the head journey this packet was merged into, the journeys merged
    # into this one, and, for a merged one, where the head's stack latency ended.
    merged_into: int | None = None
    segments: tuple[int, ...] = ()
    delivered: tuple[int, str] | None = None

    @property
    def start(self) -> int:
        """Entry time of the first step, in ns."""
        return self.steps[0].entry if self.steps else 0

    @property
    def duration(self) -> int:
        """From the first entry to the last known return or entry, in ns."""
        if not self.steps:
            return 0
        last = max((s.exit if s.exit is not None else s.entry) for s in self.steps)
        return last - self.start

    @property
    def lifetime(self) -> int:
        """The packet's own lifetime in ns: its skb steps only (tracer/model/latency.py)."""
        return lifetime(self.steps)

    @property
    def stack_latency(self) -> tuple[int, str] | None:
        """The packet's stack latency in ns and where it ended, or None (model/latency.py)."""
        return stack_latency(self.steps, self.path, self.delivered)

    @property
    def wire_frames(self) -> int:
        """Frames the driver's transmit put on the wire for it (TSO/GSO segments counted)."""
        return sum(max(s.aux, 1) for s in self.steps if s.stage == SENT)

    def functions(self) -> list[str]:
        """Function names in step order."""
        return [s.func for s in self.steps]

    def to_json(self, interfaces: dict[int, str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict (skb pointers as hex strings, routes as text)."""
        lat = self.stack_latency
        return {
            "type": "journey",
            "id": self.id,
            "path": self.path,
            "end": self.end,
            "skbs": [f"{s:#x}" for s in self.skbs],
            "trigger": self.trigger,
            "merged_into": self.merged_into,
            "segments": list(self.segments),
            # The packet's lifetime; span_ns includes the enclosing calls.
            "duration_ns": self.lifetime,
            "lifetime_ns": self.lifetime,
            "span_ns": self.duration,
            "stack_latency_ns": lat[0] if lat else None,
            "stack_until": lat[1] if lat else None,
            "wire_frames": self.wire_frames,
            "steps": [
                {
                    "func": s.func,
                    "layer": s.layer,
                    "entry": s.entry,
                    "exit": s.exit,
                    "inclusive_ns": s.inclusive,
                    "self_ns": s.self_time,
                    "depth": s.depth,
                    "skb": f"{s.skb:#x}" if s.skb else None,
                    "cpu": s.cpu,
                    "tid": s.tid,
                    "stack_id": s.stack_id if s.stack_id >= 0 else None,
                    "aux": s.aux,
                    "route": decode_route(*s.result).text(interfaces) if s.result else None,
                    "returned": s.returned or None,
                }
                for s in self.steps
            ],
        }


def view_journey(j: Journey, funcs: FuncTable, stages: list[str] | None = None,
                 delivered: tuple[int, str] | None = None,
                 names: dict[int, dict[int, str]] | None = None) -> JourneyView:
    """Flatten a journey; depth counts the step's ancestors that are also steps.

    ``stages`` is :func:`~skbpath.tracer.model.latency.stage_table` of ``funcs``
    (computed once per trace by the caller; here if not given); ``delivered``
    the end of the stack latency of the head a merged journey joined.
    """
    if stages is None:
        stages = stage_table(funcs)
    members = {id(c) for c in j.steps}
    steps = []
    for c in j.steps:
        depth = 0
        a = c.parent
        while a is not None:
            if id(a) in members:
                depth += 1
            a = a.parent
        steps.append(
            Step(
                func=funcs.name_of(c.func),
                layer=funcs.layer_of(c.func),
                path=funcs.path_of(c.func),
                entry=c.entry,
                exit=c.exit,
                inclusive=c.inclusive,
                self_time=c.self_time,
                depth=depth,
                skb=c.skb,
                cpu=c.cpu,
                tid=c.tid,
                stack_id=c.stack_id,
                lost=c.lost,
                aux=c.aux,
                result=c.result,
                stage=stages[c.func] if 0 <= c.func < len(stages) else "",
                returned=return_name(c.func, c.retval, names) if c.retval is not None else "",
            )
        )
    return JourneyView(j.id, j.path.upper(), j.end, tuple(j.skbs), j.trigger, tuple(steps),
                       merged_into=j.merged_into.id if j.merged_into is not None else None,
                       segments=tuple(seg.id for seg in j.segments), delivered=delivered)


class _Listener(NestingListener):
    """Hands nested calls to the journey builder and the root aggregates."""

    def __init__(self, model: Model) -> None:
        self.journeys = model.journeys
        self.model = model

    def on_entry(self, call: Call) -> None:
        """A call was entered: journeys are built in entry order."""
        self.journeys.on_entry(call)

    def on_exit(self, call: Call) -> None:
        """A call returned (or was closed without a return)."""
        self.journeys.on_exit(call)
        if call.retval is not None:
            self.model.returns[(call.func, call.retval)] += 1

    def on_root(self, call: Call) -> None:
        """A root's subtree is complete: aggregate it."""
        self.model._on_root(call)


class Model:
    """Nests calls, builds journeys and aggregates the call tree, as a stream.

    ``on_journey`` receives each finished journey; it is then dropped, which
    keeps memory bounded on long traces.  ``keep_journeys`` collects them.
    """

    def __init__(
        self,
        funcs: FuncTable,
        *,
        require_match: bool = False,
        keep_journeys: bool = True,
        on_journey: Callable[[JourneyView], None] | None = None,
        on_root: Callable[[Call], None] | None = None,
        timeout_ns: int = 5_000_000_000,
        return_names: dict[int, dict[int, str]] | None = None,
    ) -> None:
        self.funcs = funcs
        # Recorded return values (catalog result "gro"): how often each came
        # back, per (function id, value), and the kernel's names for them.
        self.returns: Counter[tuple[int, int]] = Counter()
        self.return_names = return_names or {}
        self.calltree = CallTree(funcs, require_match=require_match)
        self.drops = DropCounter(funcs)
        self.routes = RouteCounter(funcs)
        self.journey_list: list[JourneyView] = []
        self.stages = stage_table(funcs)
        self.latency = LatencyReport()  # every journey's, kept or not
        # Heads of GRO merges: their stack end, and how many segments are still to come.
        self._heads: dict[int, list[Any]] = {}
        self._keep = keep_journeys
        self._on_journey = on_journey
        self._on_root_cb = on_root
        self.journeys = JourneyBuilder(
            funcs, self._journey_done, timeout_ns=timeout_ns, require_match=require_match
        )
        self.nester = Nester(funcs, _Listener(self))
        self.pairer = Pairer(funcs, self.nester)  # v1 events only
        self.records = 0  # v2 call records fed
        # --aggregate traces: calls the kernel counted per call path (no journeys).
        self.aggregate = False
        self.aggregated_calls = 0
        self.aggregate_orphans = 0  # call paths whose parent was not stored
        self.finished = False

    def _journey_done(self, j: Journey) -> None:
        delivered = None
        head = j.merged_into
        if head is not None:
            # Heads are handed on before their segments (JourneyBuilder._emit).
            left = self._heads.get(head.id)
            if left is not None:
                delivered = left[0]
                left[1] -= 1
                if left[1] <= 0:
                    del self._heads[head.id]
        view = view_journey(j, self.funcs, self.stages, delivered, self.return_names)
        if j.segments:
            self._heads[j.id] = [stack_end(view.steps, view.path), len(j.segments)]
        self.latency.add(view.path, view.steps, delivered)
        if self._keep:
            self.journey_list.append(view)
        if self._on_journey is not None:
            self._on_journey(view)

    def _on_root(self, call: Call) -> None:
        self.calltree.add_root(call)
        self.drops.add_root(call)
        self.routes.add_root(call)
        if self._on_root_cb is not None:
            self._on_root_cb(call)

    def feed(self, events: Iterable[tuple[int, ...]]) -> None:
        """Consume a batch of decoded v1 entry/exit events in arrival order."""
        self.pairer.feed(events)

    def feed_calls(self, records: Iterable[tuple[int, ...]]) -> None:
        """Consume a batch of decoded v2 call records in arrival order."""
        self.records += self.nester.add_records(records)

    def feed_aggregate(self, rows: list[PathRow]) -> None:
        """Take the call paths an ``--aggregate`` trace counted (its last AGGREGATE record)."""
        self.aggregate = True
        self.aggregate_orphans += add_rows(self.calltree, rows)
        self.aggregated_calls += sum(r.calls + r.no_return for r in rows)

    def finish(self) -> None:
        """Close what is still open at the end of the trace."""
        if self.finished:
            return
        self.pairer.finish()  # also finishes the nester
        self.journeys.finish()
        self.finished = True
        self.journey_list.sort(key=lambda j: j.id)

    def return_counts(self) -> list[tuple[str, str, int]]:
        """(function, named value, calls) for every recorded return value, most frequent first."""
        rows = [(self.funcs.name_of(f), return_name(f, v, self.return_names), n)
                for (f, v), n in self.returns.items()]
        return sorted(rows, key=lambda r: (r[0], -r[2], r[1]))

    def summary(self) -> dict[str, int]:
        """Counts of what nesting and journey building saw and could not match.

        ``lost_exits`` counts calls without a return (v2: NO_RETURN records);
        ``orphans`` calls whose enclosing call was not recorded.
        """
        p = self.pairer.stats
        n = self.nester.stats
        js = self.journeys.stats
        return {
            "events": p.events + self.records,
            "calls": n.calls + self.aggregated_calls,
            "unmatched_exits": p.unmatched_exits,
            "lost_exits": n.no_return - p.open_at_end,
            "too_deep": p.too_deep,
            "open_at_end": p.open_at_end,
            "orphans": n.orphans + self.aggregate_orphans,
            "journeys": js.started,
            "journeys_freed": js.freed,
            "journeys_timed_out": js.timed_out,
            "journeys_at_trace_end": js.at_trace_end,
            "journeys_reused": js.reused,
            "journeys_merged": js.merged,
            "journeys_filtered_out": js.filtered_out,
        }
