"""Pairing entries with returns, on synthetic event sequences."""

from __future__ import annotations

from skbpath.tracer.model.nesting import Nester
from skbpath.tracer.model.pairing import Call, Pairer, PairingListener, pair_all
from skbpath.tracer.traces.events import ENTRY, EXIT, Event
from skbpath.tracer.traces.functions import FuncTable

from tests.synth import Spec, demo_table, events_for

T = demo_table()
ID = {f.name: f.id for f in T.funcs}


def ev(ts: int, name: str, kind: int, tid: int = 7, cpu: int = 0, skb: int = 0) -> Event:
    return Event(ts, skb, tid, tid, ID[name], kind, 0, cpu)


def roots_of(events: list[Event], table: FuncTable = T) -> tuple[list[Call], Pairer]:
    roots: list[Call] = []

    class L(PairingListener):
        def on_root(self, call: Call) -> None:
            roots.append(call)

    p = Pairer(table, Nester(table, L()))
    p.feed(events)
    p.finish()
    return roots, p


def test_nested_calls_give_inclusive_and_self_time() -> None:
    events = [
        ev(100, "__sys_sendto", ENTRY),
        ev(110, "tcp_sendmsg", ENTRY),
        ev(120, "tcp_write_xmit", ENTRY),
        ev(150, "tcp_write_xmit", EXIT),
        ev(160, "tcp_write_xmit", ENTRY),
        ev(170, "tcp_write_xmit", EXIT),
        ev(200, "tcp_sendmsg", EXIT),
        ev(300, "__sys_sendto", EXIT),
    ]
    roots, p = roots_of(events)
    assert len(roots) == 1
    root = roots[0]
    assert root.inclusive == 200
    (send,) = root.children
    assert send.inclusive == 90
    assert [c.inclusive for c in send.children] == [30, 10]
    assert send.self_time == 90 - 40
    assert root.self_time == 200 - 90
    assert p.stats.calls == 4 and p.stats.unmatched_exits == 0


def test_two_cpus_interleaved_pair_by_thread() -> None:
    a, _ = events_for(T, Spec("__sys_sendto", 0, 100, [Spec("tcp_sendmsg", 0, 50)]), 1000, tid=1)
    b, _ = events_for(T, Spec("__sys_sendto", 0, 300, [Spec("tcp_sendmsg", 0, 20)]), 1010, tid=2,
                      cpu=1)
    merged = sorted(a + b, key=lambda e: e.ts)
    roots, p = roots_of(merged)
    assert sorted((r.tid, r.inclusive, r.children[0].inclusive) for r in roots) == [
        (1, 151, 50),
        (2, 321, 20),
    ]
    assert p.stats.unmatched_exits == 0


def test_idle_tasks_share_tid_zero_but_not_a_stack() -> None:
    events = [
        ev(10, "net_rx_action", ENTRY, tid=0, cpu=0),
        ev(11, "net_rx_action", ENTRY, tid=0, cpu=1),
        ev(20, "net_rx_action", EXIT, tid=0, cpu=0),
        ev(40, "net_rx_action", EXIT, tid=0, cpu=1),
    ]
    roots, _ = roots_of(events)
    assert sorted((r.cpu, r.inclusive) for r in roots) == [(0, 10), (1, 29)]


def test_softirq_interrupting_a_syscall_is_its_own_root() -> None:
    events = [
        ev(100, "__sys_sendto", ENTRY),
        ev(110, "__dev_queue_xmit", ENTRY, skb=0xA),
        # bottom halves run on the way out of __dev_queue_xmit
        ev(120, "net_rx_action", ENTRY),
        ev(130, "napi_gro_receive", ENTRY, skb=0xB),
        ev(150, "napi_gro_receive", EXIT),
        ev(170, "net_rx_action", EXIT),
        ev(180, "__dev_queue_xmit", EXIT),
        ev(200, "__sys_sendto", EXIT),
    ]
    roots, _ = roots_of(events)
    names = [T.name_of(r.func) for r in roots]
    assert names == ["net_rx_action", "__sys_sendto"]
    rx, tx = roots
    assert rx.parent is None and rx.interrupted is tx.children[0]
    dq = tx.children[0]
    assert [T.name_of(c.func) for c in dq.children] == []
    assert dq.inclusive == 70
    assert dq.self_time == 70 - 50  # the softirq's 50 ns are not the qdisc's
    assert T.name_of(rx.children[0].func) == "napi_gro_receive"


def test_exits_without_entry_at_trace_start_are_counted_and_dropped() -> None:
    events = [
        ev(5, "tcp_sendmsg", EXIT),
        ev(6, "__sys_sendto", EXIT),
        ev(10, "__sys_sendto", ENTRY),
        ev(20, "__sys_sendto", EXIT),
    ]
    roots, p = roots_of(events)
    assert p.stats.unmatched_exits == 2
    assert [r.inclusive for r in roots] == [10]


def test_entries_without_exit_at_trace_end_are_closed_as_lost() -> None:
    events = [
        ev(10, "__sys_sendto", ENTRY),
        ev(20, "tcp_sendmsg", ENTRY),
        ev(30, "tcp_write_xmit", ENTRY),
        ev(40, "tcp_write_xmit", EXIT),
    ]
    roots, p = roots_of(events)
    assert p.stats.open_at_end == 2
    # Calls without a return have no known end: they adopt no children, and
    # the call that did return is a root of its own (its parents are unknown).
    assert [(T.name_of(r.func), r.lost, r.inclusive) for r in roots] == [
        ("__sys_sendto", True, None), ("tcp_sendmsg", True, None), ("tcp_write_xmit", False, 10)]
    assert all(not r.children for r in roots)


def test_missed_return_is_closed_when_an_ancestor_returns() -> None:
    events = [
        ev(10, "__sys_sendto", ENTRY),
        ev(20, "tcp_sendmsg", ENTRY),
        ev(30, "tcp_write_xmit", ENTRY),
        # tcp_write_xmit's and tcp_sendmsg's returns were missed
        ev(90, "__sys_sendto", EXIT),
    ]
    roots, p = roots_of(events)
    assert p.stats.lost_exits == 2
    (root,) = roots
    assert root.inclusive == 80
    # Both stay the syscall's children: a call without a return adopts none.
    assert [(T.name_of(c.func), c.lost) for c in root.children] == [
        ("tcp_sendmsg", True), ("tcp_write_xmit", True)]


def test_pair_all_counts_events() -> None:
    events, _ = events_for(T, Spec("__sys_sendto", 0, 10, [Spec("tcp_sendmsg")]), 0)
    seen: list[Call] = []
    stats = pair_all(T, events, seen.append)
    assert stats.events == 4 and stats.calls == 2 and len(seen) == 1
