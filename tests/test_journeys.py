"""Building per-skb journeys from calls, on synthetic event sequences."""

from __future__ import annotations

from skbpath.tracer.model.core import JourneyView, Model
from skbpath.tracer.traces.events import ENTRY, EXIT, FLAG_MATCHED, Event
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

from tests.synth import demo_table, tx_rx_stream

T = demo_table()


def table_with(*extra: tuple[str, str, str, int]) -> FuncTable:
    funcs = list(T.funcs)
    for name, path, layer, arg in extra:
        funcs.append(FuncInfo(id=len(funcs), name=name, path=path, layer=layer, skb_arg=arg,
                              frees=layer == "memory"))
    return FuncTable(funcs)


def run(events: list[Event], table: FuncTable = T, **kw: object) -> Model:
    m = Model(table, **kw)  # type: ignore[arg-type]
    m.feed(events)
    m.finish()
    return m


class Ev:
    """Terse event builder: ids by name."""

    def __init__(self, table: FuncTable) -> None:
        self.ids = {f.name: f.id for f in table.funcs}

    def __call__(self, ts: int, name: str, kind: int, skb: int = 0, tid: int = 9, cpu: int = 0,
                 flags: int = 0) -> Event:
        return Event(ts, skb, tid, tid, self.ids[name], kind, flags, cpu)


E = Ev(T)


def test_tx_and_rx_journeys_are_complete_and_freed() -> None:
    m = run(tx_rx_stream(4))
    js = m.journey_list
    assert [j.path for j in js] == ["TX", "RX"] * 4
    assert all(j.end == "freed" for j in js)
    tx = js[0].functions()
    assert tx[:3] == ["__sys_sendto", "tcp_sendmsg", "tcp_write_xmit"]
    assert tx[-2:] == ["e1000_xmit_frame", "napi_consume_skb"]
    assert js[1].functions()[:4] == ["net_rx_action", "__napi_poll", "e1000_clean",
                                     "napi_gro_receive"]


def test_clone_made_on_the_way_down_joins_the_journey() -> None:
    ev = [
        E(10, "tcp_write_xmit", ENTRY),
        E(20, "__tcp_transmit_skb", ENTRY, skb=0x100),
        E(30, "ip_queue_xmit", ENTRY, skb=0x200),  # the clone
        E(40, "e1000_xmit_frame", ENTRY, skb=0x200),
        E(50, "e1000_xmit_frame", EXIT),
        E(60, "ip_queue_xmit", EXIT),
        E(70, "__tcp_transmit_skb", EXIT),
        E(80, "tcp_write_xmit", EXIT),
        E(200, "napi_consume_skb", ENTRY, skb=0x200, tid=0, cpu=1),
        E(210, "napi_consume_skb", EXIT, tid=0, cpu=1),
        E(300, "consume_skb", ENTRY, skb=0x100, tid=0, cpu=1),
        E(310, "consume_skb", EXIT, tid=0, cpu=1),
    ]
    (j,) = run(ev).journey_list
    assert j.skbs == (0x100, 0x200)
    assert j.functions() == ["tcp_write_xmit", "__tcp_transmit_skb", "ip_queue_xmit",
                             "e1000_xmit_frame", "napi_consume_skb", "consume_skb"]
    assert [s.depth for s in j.steps[:4]] == [0, 1, 2, 3]
    assert j.end == "freed"


def test_transmit_inside_receive_is_a_new_journey_with_a_trigger() -> None:
    t = table_with(("tcp_rcv_established", "rx", "transport", 2))
    e = Ev(t)
    ev = [
        e(10, "tcp_v4_rcv", ENTRY, skb=0xA),
        e(20, "tcp_rcv_established", ENTRY, skb=0xA),
        e(30, "tcp_write_xmit", ENTRY),
        e(40, "__tcp_transmit_skb", ENTRY, skb=0xB),
        e(50, "__tcp_transmit_skb", EXIT),
        e(60, "tcp_write_xmit", EXIT),
        e(70, "tcp_rcv_established", EXIT),
        e(80, "tcp_v4_rcv", EXIT),
    ]
    js = {j.path: j for j in run(ev, t).journey_list}
    assert js["RX"].functions() == ["tcp_v4_rcv", "tcp_rcv_established"]
    assert js["TX"].functions() == ["tcp_write_xmit", "__tcp_transmit_skb"]
    assert js["TX"].trigger == js["RX"].id
    assert all(j.end == "trace-end" for j in js.values())


def test_enclosing_calls_of_a_later_stage_are_included_once() -> None:
    t = table_with(("ip_list_rcv", "rx", "network", 0))
    e = Ev(t)
    ev = [
        e(10, "net_rx_action", ENTRY, tid=0),
        e(20, "napi_gro_receive", ENTRY, skb=0x1, tid=0),
        e(30, "napi_gro_receive", EXIT, tid=0),
        e(40, "napi_gro_receive", ENTRY, skb=0x2, tid=0),
        # the GRO batch is flushed inside the second skb's call
        e(50, "ip_list_rcv", ENTRY, tid=0),
        e(60, "ip_local_deliver", ENTRY, skb=0x1, tid=0),
        e(70, "ip_local_deliver", EXIT, tid=0),
        e(80, "ip_local_deliver", ENTRY, skb=0x2, tid=0),
        e(90, "ip_local_deliver", EXIT, tid=0),
        e(100, "ip_list_rcv", EXIT, tid=0),
        e(110, "napi_gro_receive", EXIT, tid=0),
        e(120, "net_rx_action", EXIT, tid=0),
    ]
    js = run(ev, t).journey_list
    assert [j.functions() for j in js] == [
        ["net_rx_action", "napi_gro_receive", "ip_list_rcv", "ip_local_deliver"],
        ["net_rx_action", "napi_gro_receive", "ip_list_rcv", "ip_local_deliver"],
    ]
    # net_rx_action is shared by both journeys, ip_list_rcv too: each lists it once.


def test_child_latency_never_exceeds_parent() -> None:
    for j in run(tx_rx_stream(10)).journey_list:
        by_depth: dict[int, int] = {}
        for s in j.steps:
            assert s.inclusive is not None
            if s.depth and s.depth - 1 in by_depth:
                assert s.inclusive <= by_depth[s.depth - 1]
            by_depth[s.depth] = s.inclusive


def test_idle_journey_times_out() -> None:
    ev = [E(10, "ip_queue_xmit", ENTRY, skb=0x5), E(20, "ip_queue_xmit", EXIT)]
    ev += [E(10_000 + i * 10, "tcp_write_xmit", k) for i in range(5000) for k in (ENTRY, EXIT)]
    m = run(ev, timeout_ns=1000)
    (j,) = m.journey_list
    assert j.end == "timeout"
    assert m.summary()["journeys_timed_out"] == 1


def test_free_of_an_unknown_skb_starts_nothing() -> None:
    ev = [E(1, "consume_skb", ENTRY, skb=0x9), E(2, "consume_skb", EXIT)]
    assert run(ev).journey_list == []


def test_filter_keeps_only_matched_journeys() -> None:
    ev = [
        E(1, "ip_queue_xmit", ENTRY, skb=0x1, flags=FLAG_MATCHED),
        E(2, "ip_queue_xmit", EXIT),
        E(3, "ip_queue_xmit", ENTRY, skb=0x2),
        E(4, "ip_queue_xmit", EXIT),
    ]
    m = run(ev, require_match=True)
    assert [j.skbs for j in m.journey_list] == [(0x1,)]
    assert m.summary()["journeys_filtered_out"] == 1


def test_journey_json_is_plain_data() -> None:
    j: JourneyView = run(tx_rx_stream(1)).journey_list[0]
    d = j.to_json()
    assert d["path"] == "TX" and d["steps"][0]["func"] == "__sys_sendto"
    # duration_ns is the packet's lifetime; span_ns also covers the enclosing calls.
    assert d["duration_ns"] == d["lifetime_ns"] == j.lifetime > 0
    assert d["span_ns"] == j.duration >= j.lifetime


def test_a_kept_free_ends_an_unmatched_journey_before_its_address_comes_back() -> None:
    # The kernel keeps a call the filter cannot decide yet (an ACK without its
    # socket) and always keeps a free: the next packet at that address, which
    # matches, must not inherit the first one's steps.
    ev = [
        E(1, "__tcp_transmit_skb", ENTRY, skb=0x1),
        E(2, "__tcp_transmit_skb", EXIT),
        E(3, "consume_skb", ENTRY, skb=0x1),
        E(4, "consume_skb", EXIT),
        E(5, "ip_queue_xmit", ENTRY, skb=0x1, flags=FLAG_MATCHED),
        E(6, "ip_queue_xmit", EXIT),
    ]
    m = run(ev, require_match=True)
    assert [j.functions() for j in m.journey_list] == [["ip_queue_xmit"]]
    assert m.summary()["journeys_filtered_out"] == 1


def test_a_driver_handing_up_a_live_address_starts_a_new_journey() -> None:
    funcs = [f if f.name != "napi_gro_receive" else FuncInfo(
        id=f.id, name=f.name, path=f.path, layer=f.layer, skb_arg=f.skb_arg, fresh=True)
        for f in T.funcs]
    t = FuncTable(funcs)
    e = Ev(t)
    ev = [
        e(10, "napi_gro_receive", ENTRY, skb=0x7, tid=0),
        e(20, "tcp_v4_rcv", ENTRY, skb=0x7, tid=0),
        e(30, "tcp_v4_rcv", EXIT, tid=0),
        e(40, "napi_gro_receive", EXIT, tid=0),
        # freed by an untraced path; the address comes back from the driver
        e(50, "napi_gro_receive", ENTRY, skb=0x7, tid=0),
        e(60, "napi_gro_receive", EXIT, tid=0),
    ]
    m = run(ev, t)
    assert [(j.end, j.functions()) for j in m.journey_list] == [
        ("reused", ["napi_gro_receive", "tcp_v4_rcv"]),
        ("trace-end", ["napi_gro_receive"]),
    ]
    assert m.summary()["journeys_reused"] == 1
