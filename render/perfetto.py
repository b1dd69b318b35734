"""A Perfetto timeline of a trace: every call a slice, every journey a flow.

The output is Perfetto's native protobuf (``trace.perfetto-trace``), built
with the ``perfetto`` package's :class:`TraceProtoBuilder`.  That builder
only collects ``TracePacket`` messages; tracks, slices, instants and flows
are the package's protobuf classes (``TrackDescriptor``, ``TrackEvent``),
filled in here.

Tracks:

* one per CPU (``CPU n``): the softirq roots (the catalog's ``context``
  functions: NAPI, the backlog) and the idle task's calls, which belong to
  the CPU, not to whichever thread they interrupted;
* one per thread, under its process (names from the trace's TASKS record):
  the calls made in process context (syscalls).

Each call is a slice named after its function, with its layer as the
category, nested as in the model.  A call whose return was lost ends when
the last event seen inside it.  Drops are instant
events named after their reason; point-only traces (tracepoint, tracefs)
have instant events instead of slices.  Each journey is one flow through its
steps in entry order, so following it crosses threads and CPUs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    TracePacket,
    TrackEvent,
)
from perfetto.trace_builder.proto_builder import (
    TraceProtoBuilder,
)
from skbpath.tracer.model.core import JourneyView
from skbpath.tracer.model.drops import DropKey, dropped_by
from skbpath.tracer.model.pairing import Call
from skbpath.tracer.model.routes import decode_route
from skbpath.tracer.traces.functions import FuncTable

FILE_NAME = "trace.perfetto-trace"
SEQUENCE_ID = 1  # one writer: every packet is on this trusted sequence
# Track uuids: a kind in the high bits, the CPU, tgid or tid below.
_KIND_SHIFT = 40
_CPU, _PROCESS, _THREAD = 1 << _KIND_SHIFT, 2 << _KIND_SHIFT, 3 << _KIND_SHIFT
_SLICE_BEGIN = TrackEvent.Type.TYPE_SLICE_BEGIN
_SLICE_END = TrackEvent.Type.TYPE_SLICE_END
_INSTANT = TrackEvent.Type.TYPE_INSTANT


@dataclass
class TimelineStats:
    """What the export wrote, and what it had to adjust (never silently)."""

    slices: int = 0
    instants: int = 0
    drops: int = 0
    flows: int = 0
    lost_returns: int = 0  # slices drawn up to the last event seen inside them
    clamped: int = 0  # slices cut to fit their parent or the previous slice on the track
    tracks: dict[str, int] = field(default_factory=dict)


@dataclass
class _Span:
    """One call placed on a track, with the times it is drawn at."""

    call: Call
    begin: int
    end: int
    children: list[_Span]


@dataclass(frozen=True)
class TimelineInput:
    """What the timeline is drawn from: the model's calls and journeys, and trace metadata."""

    roots: Sequence[Call]
    journeys: Sequence[JourneyView]
    funcs: FuncTable
    tasks: dict[int, str] = field(default_factory=dict)
    drop_reasons: dict[int, str] = field(default_factory=dict)
    stacks: dict[int, list[str]] = field(default_factory=dict)
    interfaces: dict[int, str] = field(default_factory=dict)
    points: bool = False  # calls are points (tracepoint and tracefs modes)


def call_key(tid: int, cpu: int, entry: int, func: str) -> tuple[int, int, str]:
    """What identifies a call across the model's Call and a journey's Step.

    The pairing keeps one stack per thread, and one per CPU for the idle
    task (tid 0): on one stack no two calls of a function enter at once.
    """
    return (tid if tid else -1 - cpu, entry, func)


def _track_of(call: Call, funcs: FuncTable) -> int:
    """The track uuid of a root call (its subtree goes with it)."""
    ctx = call.func < len(funcs.is_context) and funcs.is_context[call.func]
    if ctx or call.tid == 0:
        return _CPU | call.cpu
    return _THREAD | call.tid


def _last_seen(call: Call) -> int:
    """The latest entry or return known inside ``call``'s subtree."""
    last = call.entry
    for c in call.walk():
        t = c.exit if c.exit is not None else c.entry
        if t > last:
            last = t
    return last


def _spans(root: Call, stats: TimelineStats) -> _Span:
    """The root's subtree as spans; children fit in their parent, siblings do not overlap.

    A call whose return was lost is drawn up to the last event known inside
    it: when it really returned is not in the trace, and stretching it to its
    closer would cover calls that ran after it.
    """

    def end_of(c: Call) -> int:
        if c.exit is not None:
            return c.exit
        stats.lost_returns += 1
        return _last_seen(c)

    top = _Span(root, root.entry, max(root.entry, end_of(root)), [])
    work = [(top, root)]
    while work:
        span, call = work.pop()
        prev_end = span.begin
        for child in sorted(call.children, key=lambda c: c.entry):
            begin = min(max(child.entry, prev_end), span.end)
            end = max(begin, min(end_of(child), span.end))
            if begin != child.entry or (child.exit is not None and end != child.exit):
                stats.clamped += 1  # clocks between CPUs made it overlap
            s = _Span(child, begin, end, [])
            span.children.append(s)
            work.append((s, child))
            prev_end = end
    return top


@dataclass
class _Ev:
    """One track event before it becomes a packet; sorted by time, then emission order."""

    ts: int
    seq: int
    kind: int = field(compare=False)
    track: int = field(compare=False)
    call: Call | None = field(compare=False, default=None)
    name: str = field(compare=False, default="")
    category: str = field(compare=False, default="")


class _Builder:
    """Turns spans and instants into packets, with interned names and categories."""

    def __init__(self, inp: TimelineInput, stats: TimelineStats) -> None:
        self.inp = inp
        self.stats = stats
        self.builder = TraceProtoBuilder()
        self.names: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self.first = True
        self.journeys_of: dict[tuple[int, int, str], list[int]] = {}
        self.flow_last: dict[tuple[int, int, str], list[int]] = {}
        self.flow_mid: dict[tuple[int, int, str], list[int]] = {}

    # -- tracks ------------------------------------------------------------
    def tracks(self, roots: Sequence[Call]) -> None:
        """Descriptors for every CPU, process and thread track the calls use."""
        cpus: set[int] = set()
        threads: dict[int, int] = {}
        for r in roots:
            if _track_of(r, self.inp.funcs) >> _KIND_SHIFT == _CPU >> _KIND_SHIFT:
                cpus.add(r.cpu)
            else:
                threads[r.tid] = r.tgid
        tasks = self.inp.tasks
        for cpu in sorted(cpus):
            p = self._packet(None)
            p.track_descriptor.uuid = _CPU | cpu
            p.track_descriptor.name = f"CPU {cpu}"
            p.track_descriptor.sibling_order_rank = cpu
        for tgid in sorted(set(threads.values())):
            p = self._packet(None)
            p.track_descriptor.uuid = _PROCESS | tgid
            p.track_descriptor.process.pid = tgid
            p.track_descriptor.process.process_name = tasks.get(tgid, f"pid {tgid}")
        for tid, tgid in sorted(threads.items()):
            p = self._packet(None)
            p.track_descriptor.uuid = _THREAD | tid
            p.track_descriptor.parent_uuid = _PROCESS | tgid
            p.track_descriptor.thread.pid = tgid
            p.track_descriptor.thread.tid = tid
            p.track_descriptor.thread.thread_name = tasks.get(tid) or tasks.get(tgid, f"tid {tid}")
        self.stats.tracks = {"cpu": len(cpus), "process": len(set(threads.values())),
                             "thread": len(threads)}

    # -- flows -------------------------------------------------------------
    def flows(self, journeys: Sequence[JourneyView], drawn: dict[tuple[int, int, str], int]
              ) -> None:
        """Each journey: a flow id through its steps' calls, terminated at the last.

        Steps are taken in the order they are drawn (``drawn``: call key to
        drawn begin), which is entry order unless a slice was moved to nest.
        """
        for j in journeys:
            keys = sorted({call_key(s.tid, s.cpu, s.entry, s.func) for s in j.steps},
                          key=lambda k: (drawn.get(k, k[1]), k[1]))
            for k in keys:
                self.journeys_of.setdefault(k, []).append(j.id)
            if len(keys) < 2:
                continue  # a flow needs two ends
            self.stats.flows += 1
            for k in keys[:-1]:
                self.flow_mid.setdefault(k, []).append(j.id)
            self.flow_last.setdefault(keys[-1], []).append(j.id)

    # -- packets -----------------------------------------------------------
    def _packet(self, ts: int | None) -> TracePacket:
        p = self.builder.add_packet()
        if ts is not None:
            p.timestamp = ts
        p.trusted_packet_sequence_id = SEQUENCE_ID
        if self.first:
            p.sequence_flags = TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        else:
            p.sequence_flags = TracePacket.SequenceFlags.SEQ_NEEDS_INCREMENTAL_STATE
        return p

    def _iid(self, p: TracePacket, table: dict[str, int], value: str, names: bool) -> int:
        iid = table.get(value)
        if iid is None:
            iid = table[value] = len(table) + 1
            entry = p.interned_data.event_names.add() if names else \
                p.interned_data.event_categories.add()
            entry.iid = iid
            entry.name = value
        return iid

    def emit(self, ev: _Ev) -> None:
        """Write one event as a packet."""
        p = self._packet(ev.ts)
        te = p.track_event
        te.type = ev.kind
        te.track_uuid = ev.track
        if ev.kind == _SLICE_END:
            return
        te.name_iid = self._iid(p, self.names, ev.name, True)
        te.category_iids.append(self._iid(p, self.categories, ev.category, False))
        call = ev.call
        if call is None:
            return
        if ev.category == "drop":
            self._drop_args(te, call)
            return
        self._call_args(te, call)

    def _call_args(self, te: TrackEvent, call: Call) -> None:
        funcs = self.inp.funcs
        k = call_key(call.tid, call.cpu, call.entry, funcs.name_of(call.func))
        if call.skb:
            a = te.debug_annotations.add()
            a.name = "skb"
            a.pointer_value = call.skb
        js = self.journeys_of.get(k)
        if js:
            a = te.debug_annotations.add()
            a.name = "journey"
            if len(js) == 1:
                a.int_value = js[0]
            else:
                a.string_value = ", ".join(str(j) for j in js)
        a = te.debug_annotations.add()
        a.name = "cpu"
        a.int_value = call.cpu
        if call.result is not None:
            a = te.debug_annotations.add()
            a.name = "route"
            a.string_value = decode_route(*call.result).text(self.inp.interfaces)
        if call.lost:
            a = te.debug_annotations.add()
            a.name = "return"
            a.string_value = "lost: drawn up to the last event seen inside it"
        if call.func < len(funcs.drops) and funcs.drops[call.func]:
            a = te.debug_annotations.add()
            a.name = "drop reason"
            a.string_value = self._reason(call)
        te.flow_ids.extend(self.flow_mid.get(k, ()))
        te.terminating_flow_ids.extend(self.flow_last.get(k, ()))

    def _reason(self, call: Call) -> str:
        return self.inp.drop_reasons.get(call.aux, f"reason {call.aux}")

    def _drop_args(self, te: TrackEvent, call: Call) -> None:
        a = te.debug_annotations.add()
        a.name = "reason"
        a.string_value = self._reason(call)
        a = te.debug_annotations.add()
        a.name = "dropped by"
        parent = call.parent.func if call.parent is not None else -1
        a.string_value = dropped_by(DropKey(call.aux, call.stack_id, parent), self.inp.stacks,
                                    self.inp.funcs)
        if call.skb:
            a = te.debug_annotations.add()
            a.name = "skb"
            a.pointer_value = call.skb


def _track_events(
    inp: TimelineInput, stats: TimelineStats
) -> tuple[list[list[_Ev]], dict[tuple[int, int, str], int]]:
    """Each track's events in time and nesting order, and the time each call is drawn at."""
    funcs = inp.funcs
    by_track: dict[int, list[Call]] = {}
    for r in inp.roots:
        by_track.setdefault(_track_of(r, funcs), []).append(r)
    seq = 0
    per_track: list[list[_Ev]] = []
    drawn: dict[tuple[int, int, str], int] = {}
    for track in sorted(by_track):
        evs: list[_Ev] = []
        prev_end = 0
        for root in sorted(by_track[track], key=lambda c: c.entry):
            top = _spans(root, stats)
            if top.begin < prev_end:
                # Two roots overlap on one track (CPU clocks): start the later one later.
                stats.clamped += _shift(top, prev_end)
            prev_end = top.end
            work: list[tuple[_Span, bool]] = [(top, False)]
            while work:
                span, done = work.pop()
                c = span.call
                name = funcs.name_of(c.func)
                is_drop = c.func < len(funcs.drops) and funcs.drops[c.func]
                if done:
                    seq += 1
                    evs.append(_Ev(span.end, seq, _SLICE_END, track))
                    continue
                category = funcs.layer[c.func] if c.func < len(funcs.layer) else "?"
                drawn[call_key(c.tid, c.cpu, c.entry, name)] = span.begin
                seq += 1
                if inp.points:
                    evs.append(_Ev(span.begin, seq, _INSTANT, track, c, name, category))
                    stats.instants += 1
                else:
                    evs.append(_Ev(span.begin, seq, _SLICE_BEGIN, track, c, name, category))
                    stats.slices += 1
                if is_drop:
                    seq += 1
                    stats.drops += 1
                    evs.append(_Ev(span.begin, seq, _INSTANT, track, c,
                                   f"drop: {inp.drop_reasons.get(c.aux, f'reason {c.aux}')}",
                                   "drop"))
                if not inp.points:
                    work.append((span, True))
                work.extend((s, False) for s in reversed(span.children))
        per_track.append(evs)
    return per_track, drawn


def _shift(span: _Span, at_least: int) -> int:
    """Move a subtree's begins (and ends) to no earlier than ``at_least``; how many moved."""
    moved = 0
    work = [span]
    while work:
        s = work.pop()
        if s.begin < at_least or s.end < at_least:
            moved += 1
            s.begin = max(s.begin, at_least)
            s.end = max(s.end, s.begin)
        work.extend(s.children)
    return moved


def perfetto_trace(inp: TimelineInput) -> tuple[bytes, TimelineStats]:
    """The timeline as a serialized Perfetto trace, and counts of what it holds."""
    stats = TimelineStats()
    b = _Builder(inp, stats)
    b.tracks(inp.roots)
    per_track, drawn = _track_events(inp, stats)
    b.flows(inp.journeys, drawn)
    # Each list is already in time order; merging keeps equal times in list order.
    for ev in heapq.merge(*per_track, key=lambda e: e.ts):
        b.emit(ev)
    return b.builder.serialize(), stats
