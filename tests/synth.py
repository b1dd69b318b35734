"""Synthetic event streams for unit tests and benchmarks (no kernel needed).

They are built from call specifications, so each test states the calls it
means and the events follow from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skbpath.tracer.traces.events import (
    ENTRY,
    EXIT,
    FLAG_MATCHED,
    FLAG_NO_RETURN,
    FLAG_RESULT,
    CallRecord,
    Event,
)
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

TX_CHAIN = [
    ("__sys_sendto", "socket", 0),
    ("tcp_sendmsg", "transport", 0),
    ("tcp_write_xmit", "transport", 0),
    ("__tcp_transmit_skb", "transport", 2),
    ("ip_queue_xmit", "network", 2),
    ("ip_finish_output2", "network", 3),
    ("__dev_queue_xmit", "device", 1),
    ("dev_hard_start_xmit", "device", 1),
    ("e1000_xmit_frame", "driver", 1),
]
RX_CHAIN = [
    ("net_rx_action", "softirq", 0),
    ("__napi_poll", "softirq", 0),
    ("e1000_clean", "driver", 0),
    ("napi_gro_receive", "device", 2),
    ("ip_rcv", "network", 1),
    ("ip_local_deliver", "network", 1),
    ("tcp_v4_rcv", "transport", 1),
]
FREE = [("consume_skb", "memory", 1), ("napi_consume_skb", "memory", 1)]


def demo_table() -> FuncTable:
    """A function table with the TX, RX and free functions above."""
    funcs = []
    for i, (name, layer, arg) in enumerate(TX_CHAIN + RX_CHAIN + FREE):
        path = "tx" if i < len(TX_CHAIN) else "rx" if i < len(TX_CHAIN) + len(RX_CHAIN) else "free"
        funcs.append(
            FuncInfo(
                id=i,
                name=name,
                path=path,
                layer=layer,
                skb_arg=arg,
                context=name == "net_rx_action",
                frees=layer == "memory",
                symbols=(name,),
            )
        )
    return FuncTable(funcs)


@dataclass
class Spec:
    """A call to generate: function name, skb, duration of its own work, children."""

    name: str
    skb: int = 0
    work: int = 100
    children: list[Spec] = field(default_factory=list)


def chain(names: list[str], skb_of: dict[str, int], work: int = 100) -> Spec:
    """A linear call chain: each function calls the next."""
    root = cur = Spec(names[0], skb_of.get(names[0], 0), work)
    for n in names[1:]:
        nxt = Spec(n, skb_of.get(n, 0), work)
        cur.children.append(nxt)
        cur = nxt
    return root


def events_for(
    table: FuncTable, spec: Spec, start: int, tid: int = 100, cpu: int = 0, matched: bool = False
) -> tuple[list[Event], int]:
    """Entry and return events for ``spec`` starting at ``start``; returns (events, end ts)."""
    ids = {f.name: f.id for f in table.funcs}
    out: list[Event] = []
    flags = FLAG_MATCHED if matched else 0

    def gen(s: Spec, t: int) -> int:
        out.append(Event(t, s.skb, tid, tid, ids[s.name], ENTRY, flags if s.skb else 0, cpu))
        t += s.work // 2
        for c in s.children:
            t = gen(c, t + 1)
        t += s.work - s.work // 2
        out.append(Event(t, 0, tid, tid, ids[s.name], EXIT, 0, cpu))
        return t

    end = gen(spec, start)
    return out, end


def tx_rx_stream(packets: int, table: FuncTable | None = None) -> list[Event]:
    """``packets`` TX journeys on CPU 0 and RX journeys on CPU 1, interleaved, each freed."""
    table = table or demo_table()
    tx_names = [n for n, _, _ in TX_CHAIN]
    rx_names = [n for n, _, _ in RX_CHAIN]
    out: list[Event] = []
    t = 1_000_000
    for p in range(packets):
        skb_tx = 0xFFFF_0000_0000 + p * 0x100
        skb_rx = 0xFFFF_1000_0000 + p * 0x100
        tx = chain(tx_names, {n: skb_tx for n, _, a in TX_CHAIN if a}, work=200)
        tx_ev, _ = events_for(table, tx, t, tid=100 + p % 4, cpu=0)
        rx = chain(rx_names, {n: skb_rx for n, _, a in RX_CHAIN if a}, work=150)
        rx.children[0].children[0].children.append(Spec("napi_consume_skb", skb_tx, 50))
        rx.children[0].children[0].children[0].children[-1].children.append(
            Spec("consume_skb", skb_rx, 40)
        )
        rx_ev, _ = events_for(table, rx, t + 300, tid=0, cpu=1)
        merged = sorted(tx_ev + rx_ev, key=lambda e: e.ts)
        out.extend(merged)
        t += 5000
    return out


def v2_records(table: FuncTable, events: list[Event]) -> list[CallRecord]:
    """The v2 call records a kernel pairing ``events`` would emit, in return order.

    Pairs with the v1 pairer (the same rules as the BPF programs) and keeps
    each closed call as the kernel writes it: entry, duration, depth, base.
    """
    from skbpath.tracer.model.calls import Call
    from skbpath.tracer.model.pairing import Pairer

    closed: list[Call] = []

    class Sink:
        def add(self, call: Call) -> None:
            closed.append(call)

        def finish(self) -> None:
            pass

    p = Pairer(table, Sink())  # type: ignore[arg-type]
    p.feed(events)
    p.finish()
    out = []
    for c in closed:
        flags = (FLAG_MATCHED if c.matched else 0) | (FLAG_RESULT if c.result else 0)
        if c.end is None:
            flags |= FLAG_NO_RETURN
        result, aux = c.result if c.result else (0, c.aux)
        out.append(CallRecord(
            entry=c.entry, duration=(c.end - c.entry) if c.end is not None else 0, skb=c.skb,
            result=result, tid=c.tid, tgid=c.tgid, aux=aux, stack_id=c.stack_id, func=c.func,
            cpu=c.cpu, depth=c.depth, flags=flags, base=c.base))
    return out
