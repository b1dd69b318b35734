"""The Perfetto export, parsed back with the perfetto package's protobuf classes, per sample."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    Trace,
    TracePacket,
    TrackEvent,
)
from skbpath.render.perfetto import TimelineInput, TimelineStats, call_key, perfetto_trace
from skbpath.tracer.cli.timeline import drop_reason_names
from skbpath.tracer.model.pairing import Call
from skbpath.tracer.model.replay import POINT_MODES, Replay, replay

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(p.stem for p in (ROOT / "sample_traces").glob("*.skbtrace"))
BEGIN, END, INSTANT = (TrackEvent.Type.TYPE_SLICE_BEGIN, TrackEvent.Type.TYPE_SLICE_END,
                       TrackEvent.Type.TYPE_INSTANT)


@dataclass
class Exported:
    """A sample replayed, its calls, and its export parsed back."""

    rep: Replay
    roots: list[Call]
    trace: Trace
    stats: TimelineStats


_cache: dict[str, Exported] = {}


def _export(name: str) -> Exported:
    if name not in _cache:
        roots: list[Call] = []
        rep = replay(str(ROOT / "sample_traces" / f"{name}.skbtrace"), on_root=roots.append)
        data, stats = perfetto_trace(TimelineInput(
            roots=roots, journeys=rep.model.journey_list, funcs=rep.funcs,
            tasks=rep.contents.tasks, drop_reasons=drop_reason_names(rep.contents),
            stacks=rep.contents.stacks,
            points=rep.contents.header.get("attach") in POINT_MODES,
        ))
        _cache[name] = Exported(rep, roots, Trace.FromString(data), stats)
    return _cache[name]


@dataclass
class Parsed:
    """The parsed events: names resolved, slices paired per track."""

    descriptors: dict[int, Any]
    # (track, begin ts, end ts, name, category, flow ids, terminating ids, parent name)
    slices: list[tuple[int, int, int, str, str, tuple[int, ...], tuple[int, ...], str | None]]
    instants: list[tuple[int, int, str, str, tuple[int, ...], tuple[int, ...]]]


def _parse(trace: Trace) -> Parsed:
    """Walk the packets as trace processor would, asserting the rules on the way."""
    names: dict[int, str] = {}
    cats: dict[int, str] = {}
    descriptors: dict[int, Any] = {}
    stacks: dict[int, list[tuple[int, str, str, tuple[int, ...], tuple[int, ...]]]] = {}
    last_ts: dict[int, int] = {}
    parsed = Parsed(descriptors, [], [])
    assert trace.packet, "an empty trace"
    first = trace.packet[0]
    assert first.sequence_flags & TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED
    for p in trace.packet:
        assert p.trusted_packet_sequence_id == first.trusted_packet_sequence_id
        for n in p.interned_data.event_names:
            names[n.iid] = n.name
        for c in p.interned_data.event_categories:
            cats[c.iid] = c.name
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            assert d.uuid not in descriptors, "a track described twice"
            if d.HasField("thread"):
                assert d.parent_uuid in descriptors, "a thread before its process"
            descriptors[d.uuid] = d
            continue
        te = p.track_event
        assert te.track_uuid in descriptors, "an event on an undescribed track"
        track = te.track_uuid
        # In order on each track: trace processor would reorder, we never need it to.
        assert p.timestamp >= last_ts.get(track, 0)
        last_ts[track] = p.timestamp
        stack = stacks.setdefault(track, [])
        if te.type == END:
            assert stack, f"an end without a begin on track {track:#x}"
            ts, name, cat, flows, terms = stack.pop()
            parent = stack[-1][1] if stack else None
            parsed.slices.append((track, ts, p.timestamp, name, cat, flows, terms, parent))
            continue
        assert te.name_iid in names and len(te.category_iids) == 1
        assert te.category_iids[0] in cats
        item = (names[te.name_iid], cats[te.category_iids[0]], tuple(te.flow_ids),
                tuple(te.terminating_flow_ids))
        if te.type == BEGIN:
            stack.append((p.timestamp, *item))
        else:
            assert te.type == INSTANT
            parsed.instants.append((track, p.timestamp, *item))
    assert all(not s for s in stacks.values()), "a slice begun and never ended"
    return parsed


@pytest.mark.parametrize("name", SAMPLES)
def test_slices_nest_as_in_the_model(name: str) -> None:
    ex = _export(name)
    parsed = _parse(ex.trace)
    funcs = ex.rep.funcs
    calls = [c for r in ex.roots for c in r.walk()]
    assert ex.rep.model.summary()["calls"] == len(calls)
    points = ex.rep.contents.header.get("attach") in POINT_MODES
    if points:
        assert not parsed.slices
        assert len([i for i in parsed.instants if i[3] != "drop"]) == len(calls)
        return
    assert ex.stats.slices == len(parsed.slices) == len(calls)
    # Every call is a slice under its model parent, with its layer as the category.
    want = Counter((funcs.name_of(c.func), funcs.layer[c.func],
                    funcs.name_of(c.parent.func) if c.parent else None) for c in calls)
    got = Counter((s[3], s[4], s[7]) for s in parsed.slices)
    assert got == want
    # A slice lasts as long as its call, unless the export says it cut some.
    exact = {(c.entry, c.exit) for c in calls if c.exit is not None}
    kept = sum(1 for s in parsed.slices if (s[1], s[2]) in exact)
    assert kept >= len(exact) - ex.stats.clamped


@pytest.mark.parametrize("name", SAMPLES)
def test_each_journey_is_a_flow_through_its_steps(name: str) -> None:
    ex = _export(name)
    _parse(ex.trace)  # the rules hold
    # The flow points in packet order: the order trace processor links them in.
    names: dict[int, str] = {}
    points: dict[int, list[tuple[int, int, str, bool]]] = {}
    for p in ex.trace.packet:
        for n in p.interned_data.event_names:
            names[n.iid] = n.name
        te = p.track_event
        for f in te.flow_ids:
            points.setdefault(f, []).append((p.timestamp, te.track_uuid, names[te.name_iid], False))
        for f in te.terminating_flow_ids:
            points.setdefault(f, []).append((p.timestamp, te.track_uuid, names[te.name_iid], True))
    crossing = 0
    expected = 0
    for j in ex.rep.model.journey_list:
        steps = sorted({call_key(s.tid, s.cpu, s.entry, s.func): s for s in j.steps}.values(),
                       key=lambda s: s.entry)
        if len(steps) < 2:
            assert j.id not in points
            continue
        expected += 1
        chain = points[j.id]
        if ex.stats.clamped:
            # Slices moved to nest (counted) are drawn later than their entry.
            assert Counter(s.func for s in steps) == Counter(p[2] for p in chain)
        else:
            assert [(s.entry, s.func) for s in steps] == [(p[0], p[2]) for p in chain]
        assert [p[3] for p in chain] == [False] * (len(chain) - 1) + [True]
        crossing += len({p[1] for p in chain}) > 1
    assert ex.stats.flows == expected == len(points)
    if name in ("tcp_rr", "forward_rr", "tcp_bulk", "virtio_rr"):
        # A send on one thread freed in a softirq on a CPU track, a packet forwarded ...
        assert crossing > 0


@pytest.mark.parametrize("name", SAMPLES)
def test_call_keys_are_unique(name: str) -> None:
    """The flows find a journey's steps by call_key: two calls must never share one."""
    ex = _export(name)
    funcs = ex.rep.funcs
    keys = Counter(call_key(c.tid, c.cpu, c.entry, funcs.name_of(c.func))
                   for r in ex.roots for c in r.walk())
    assert max(keys.values()) == 1


@pytest.mark.parametrize("name", ["closed_ports", "firewall_drop", "tracepoint_closed"])
def test_drops_are_instants_with_their_reason(name: str) -> None:
    ex = _export(name)
    parsed = _parse(ex.trace)
    drops = [i for i in parsed.instants if i[3] == "drop"]
    assert len(drops) == sum(ex.rep.model.drops.counts.values()) == ex.stats.drops > 0
    reason = "NETFILTER_DROP" if name == "firewall_drop" else "NO_SOCKET"
    assert any(i[2] == f"drop: {reason}" for i in drops)


def test_tracks_are_cpus_and_threads_under_named_processes() -> None:
    ex = _export("tcp_rr")
    parsed = _parse(ex.trace)
    ds = list(parsed.descriptors.values())
    cpus = [d.name for d in ds if d.name.startswith("CPU ")]
    assert cpus == ["CPU 0", "CPU 1"]
    procs = {d.process.pid: d.process.process_name
             for d in ds if d.HasField("process")}
    assert procs and all(ex.rep.contents.tasks.get(pid, f"pid {pid}") == n
                         for pid, n in procs.items())
    # The lab's rr client is a Python process (comm "python" or "python3").
    assert any(n.startswith("python") for n in procs.values())
    threads = [d for d in ds if d.HasField("thread")]
    assert all(d.parent_uuid in parsed.descriptors for d in threads)
    # Softirqs sit on the CPU tracks, syscalls on the threads.
    cpu_uuids = {d.uuid for d in ds if d.name.startswith("CPU ")}
    roots = Counter((s[0] in cpu_uuids, s[3]) for s in parsed.slices if s[7] is None)
    assert roots[(True, "net_rx_action")] > 0 and not roots[(False, "net_rx_action")]
    assert roots[(False, "__sys_sendto")] > 0 and not roots[(True, "__sys_sendto")]


def test_route_and_skb_args() -> None:
    ex = _export("forward_rr")
    routes = []
    skbs = 0
    for p in ex.trace.packet:
        for a in p.track_event.debug_annotations:
            if a.name == "route":
                routes.append(a.string_value)
            skbs += a.name == "skb"
    assert routes and all("table main" in r for r in routes)
    assert skbs > 0


def test_render_format_perfetto_writes_the_file(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from skbpath.tracer.cli.main import main

    trace = str(ROOT / "sample_traces" / "arp_ping.skbtrace")
    res = CliRunner().invoke(main, ["render", trace, "--format", "perfetto", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "trace.perfetto-trace"
    assert res.output.strip() == str(out)
    parsed = _parse(Trace.FromString(out.read_bytes()))
    assert any(s[3] == "arp_rcv" for s in parsed.slices)
    res = CliRunner().invoke(main, ["render", trace, "--format", "perfetto", "-o", "-"])
    assert res.exit_code == 2 and "one stream" in res.output


def test_lost_returns_and_overlaps_are_drawn_nested_and_counted() -> None:
    """A call whose return was lost ends at the last event inside it; overlaps are cut, counted."""
    from tests.synth import demo_table

    funcs = demo_table()
    fid = {f.name: f.id for f in funcs.funcs}

    def call(name: str, entry: int, exit_: int | None, parent: Call | None,
             tid: int = 0, cpu: int = 0) -> Call:
        c = Call(fid[name], entry, 0, cpu, tid, tid, -1, False, parent)
        c.exit = exit_
        c.lost = exit_ is None
        if parent is not None:
            parent.children.append(c)
        return c

    # Idle CPU 0: a NAPI poll whose return was lost, a child that returned at 300,
    # then a second poll that starts at 250, before that child's end (clock skew).
    first = call("net_rx_action", 100, None, None)
    call("__napi_poll", 120, 300, first)
    second = call("net_rx_action", 250, 400, None)
    # A syscall on thread 7 whose child claims to end after it (counted, cut).
    sys = call("__sys_sendto", 1000, 2000, None, tid=7, cpu=1)
    call("tcp_sendmsg", 1100, 2500, sys, tid=7, cpu=1)
    data, stats = perfetto_trace(TimelineInput(roots=[first, second, sys], journeys=[],
                                               funcs=funcs))
    trace = Trace.FromString(data)
    parsed = _parse(trace)  # every begin has its end on its track, in order
    got = {(s[3], s[1], s[2]) for s in parsed.slices}
    assert ("net_rx_action", 100, 300) in got  # lost: up to the last event inside it
    assert ("net_rx_action", 300, 400) in got  # moved after the first, as it overlapped
    assert ("tcp_sendmsg", 1100, 2000) in got  # cut at its parent's end
    assert stats.lost_returns == 1 and stats.clamped == 2
    lost = [a.string_value for p in trace.packet for a in p.track_event.debug_annotations
            if a.name == "return"]
    assert lost == ["lost: drawn up to the last event seen inside it"]
