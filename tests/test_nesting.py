"""Nesting calls by time containment and depth: v2 records, and losses that re-parent nothing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from skbpath.tracer.model.calls import Call
from skbpath.tracer.model.core import Model
from skbpath.tracer.model.nesting import Nester, NestingListener
from skbpath.tracer.model.replay import function_table
from skbpath.tracer.traces.events import (
    ENTRY,
    EXIT,
    FLAG_NO_RETURN,
    CallRecord,
    Event,
)
from skbpath.tracer.traces.functions import FuncTable
from skbpath.tracer.traces.tracefile import TraceReader

from tests.synth import demo_table, tx_rx_stream, v2_records

T = demo_table()
ID = {f.name: f.id for f in T.funcs}
SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"


class Recorder(NestingListener):
    """Keeps roots, and the order listeners saw entries and exits in."""

    def __init__(self) -> None:
        self.roots: list[Call] = []
        self.seen: list[tuple[str, int]] = []

    def on_entry(self, call: Call) -> None:
        assert call.exit is None and not call.lost  # as live pairing showed it
        self.seen.append(("entry", call.entry))

    def on_exit(self, call: Call) -> None:
        self.seen.append(("exit", call.entry))

    def on_root(self, call: Call) -> None:
        self.roots.append(call)


def nest(records: list[CallRecord] | list[tuple[int, ...]], table: FuncTable = T) -> Recorder:
    rec = Recorder()
    n = Nester(table, rec)
    n.add_records(records)
    n.finish()
    return rec


def ev(ts: int, name: str, kind: int, tid: int = 7, skb: int = 0) -> Event:
    return Event(ts, skb, tid, tid, ID[name], kind, 0, 0)


def shape(c: Call) -> tuple[str, list[object]]:
    return (T.name_of(c.func), [shape(ch) for ch in c.children])


def test_v2_records_nest_like_v1_pairing() -> None:
    events = tx_rx_stream(3)
    v1 = Model(T)
    v1.feed(events)
    v1.finish()
    v2 = Model(T)
    v2.feed_calls(v2_records(T, events))
    v2.finish()
    assert [j.functions() for j in v2.journey_list] == [j.functions() for j in v1.journey_list]
    assert [(j.path, j.end) for j in v2.journey_list] == [(j.path, j.end) for j in v1.journey_list]
    assert v2.calltree.count_by_func == v1.calltree.count_by_func
    assert [(n.path(), n.count, n.total) for n in v2.calltree.nodes()] == [
        (n.path(), n.count, n.total) for n in v1.calltree.nodes()]
    assert v2.summary()["calls"] == v1.summary()["calls"] == len(v2_records(T, events))


def test_listeners_see_entries_in_time_order_across_threads() -> None:
    rec = nest(v2_records(T, tx_rx_stream(4)))
    entries = [t for kind, t in rec.seen if kind == "entry"]
    assert entries == sorted(entries)
    assert len(rec.seen) == 2 * len(entries)


def test_syscall_and_softirq_on_top_pair_their_own_ip_finish_output2() -> None:
    # ip_finish_output2 in a syscall, and again in a softirq that ran on top
    # of it on the same thread (bottom halves on the way out of the qdisc).
    events = [
        ev(100, "__sys_sendto", ENTRY),
        ev(110, "ip_finish_output2", ENTRY, skb=0xA),
        ev(120, "net_rx_action", ENTRY),
        ev(130, "ip_finish_output2", ENTRY, skb=0xB),
        ev(150, "ip_finish_output2", EXIT),
        ev(170, "net_rx_action", EXIT),
        ev(180, "ip_finish_output2", EXIT),
        ev(200, "__sys_sendto", EXIT),
    ]
    records = v2_records(T, events)
    assert [(T.name_of(r.func), r.depth, r.base) for r in records] == [
        ("ip_finish_output2", 3, 2), ("net_rx_action", 2, 2), ("ip_finish_output2", 1, 0),
        ("__sys_sendto", 0, 0)]
    rec = nest(records)
    rx, tx = rec.roots
    assert shape(tx) == ("__sys_sendto", [("ip_finish_output2", [])])
    assert shape(rx) == ("net_rx_action", [("ip_finish_output2", [])])
    inner, outer = rx.children[0], tx.children[0]
    assert (inner.inclusive, outer.inclusive) == (20, 70)
    assert rx.interrupted is outer and outer.self_time == 70 - 50


def test_a_lost_softirq_root_does_not_hand_its_children_to_the_syscall() -> None:
    events = [
        ev(100, "__sys_sendto", ENTRY),
        ev(120, "net_rx_action", ENTRY),
        ev(130, "ip_rcv", ENTRY, skb=0xB),
        ev(150, "ip_rcv", EXIT),
        ev(170, "net_rx_action", EXIT),
        ev(200, "__sys_sendto", EXIT),
    ]
    records = [r for r in v2_records(T, events) if T.name_of(r.func) != "net_rx_action"]
    rec = nest(records)
    assert sorted(shape(r) for r in rec.roots) == [("__sys_sendto", []), ("ip_rcv", [])]


def test_a_call_without_return_adopts_no_children() -> None:
    # The kernel closed tcp_sendmsg as NO_RETURN when the syscall returned;
    # tcp_write_xmit ran after its (missed) return, one level too deep.
    records = [
        CallRecord(entry=130, duration=10, skb=0, tid=7, func=ID["tcp_write_xmit"], depth=2),
        CallRecord(entry=110, duration=0, skb=0, tid=7, func=ID["tcp_sendmsg"], depth=1,
                   flags=FLAG_NO_RETURN),
        CallRecord(entry=100, duration=100, skb=0, tid=7, func=ID["__sys_sendto"], depth=0),
    ]
    (root,) = nest(records).roots
    assert shape(root) == ("__sys_sendto", [("tcp_sendmsg", []), ("tcp_write_xmit", [])])
    assert root.children[0].lost and root.children[0].inclusive is None


def _parents(roots: list[Call]) -> dict[tuple[int, int, int], tuple[int, int, int] | None]:
    """Each call's identity (thread, entry, func) -> its parent's (or None)."""
    out: dict[tuple[int, int, int], tuple[int, int, int] | None] = {}

    def ident(c: Call) -> tuple[int, int, int]:
        return (c.tid if c.tid else -1 - c.cpu, c.entry, c.func)

    for r in roots:
        for c in r.walk():
            out[ident(c)] = ident(c.parent) if c.parent is not None else None
    return out


def _check_random_loss(table: FuncTable, records: list[CallRecord], seed: int,
                       share: float) -> int:
    """Drop a share of records; every kept call's parent is its nearest kept ancestor."""
    full = _parents(nest(records, table).roots)
    assert len(full) == len(records)
    rng = random.Random(seed)
    kept = [r for r in records if rng.random() >= share]
    got = _parents(nest(kept, table).roots)
    assert len(got) == len(kept)
    kept_ids = set(got)
    same = 0
    for c, parent in got.items():
        want = full[c]
        while want is not None and want not in kept_ids:
            want = full[want]  # the parent's record was lost: the nearest kept ancestor
        assert parent == want, (c, parent, want)
        same += parent == full[c]
    return same


@pytest.mark.parametrize("seed", range(5))
def test_random_loss_in_a_synthetic_trace_reparents_nothing(seed: int) -> None:
    records = v2_records(T, tx_rx_stream(40))
    assert _check_random_loss(T, records, seed, 0.2) > len(records) // 3


@pytest.mark.parametrize("name", ["tcp_rr", "tcp_bulk"])
def test_random_loss_in_a_real_sample_reparents_nothing(name: str) -> None:
    path = SAMPLES / f"{name}.skbtrace"
    reader = TraceReader(str(path))
    batches = [list(b) for b in reader.event_batches()]
    table = function_table(reader.contents)
    if reader.version == 2:
        records = [CallRecord(*r) for b in batches for r in b]
    else:
        records = v2_records(table, [Event(*e) for b in batches for e in b])
    records = records[:20000]  # enough threads and softirqs, and a quick test
    assert _check_random_loss(table, records, 1, 0.1) > 0
