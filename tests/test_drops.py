"""Drop accounting: reasons from the trace header, droppers from kernel stacks."""

from __future__ import annotations

from skbpath.tracer.model.core import Model
from skbpath.tracer.model.drops import DropKey, drop_reason_names, drop_report, dropped_by
from skbpath.tracer.traces.events import ENTRY, EXIT, Event
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

FUNCS = FuncTable([
    FuncInfo(id=0, name="tcp_v4_rcv", path="rx", layer="transport", skb_arg=1),
    FuncInfo(id=1, name="kfree_skb_reason", path="free", layer="memory", skb_arg=1,
             frees=True, drop=True, aux_arg=2, stack=True),
])


class FakeBtf:
    def enum_values(self, name: str) -> dict[int, str] | None:
        assert name == "skb_drop_reason"
        return {2: "SKB_DROP_REASON_NO_SOCKET", 1: "SKB_DROP_REASON_NOT_SPECIFIED"}


def test_reason_names_come_from_btf_without_prefix() -> None:
    assert drop_reason_names(FakeBtf()) == {1: "NOT_SPECIFIED", 2: "NO_SOCKET"}  # type: ignore[arg-type]
    assert drop_reason_names(None) == {}


def test_drops_are_counted_by_reason_and_dropper() -> None:
    events = []
    for i in range(3):
        t = i * 100
        events += [
            Event(t, 0xA0 + i, 5, 5, 0, ENTRY, 0, 0),
            Event(t + 10, 0xA0 + i, 5, 5, 1, ENTRY, 0, 0, 0, 7, 2),  # stack 7, NO_SOCKET
            Event(t + 20, 0, 5, 5, 1, EXIT, 0, 0),
            Event(t + 30, 0, 5, 5, 0, EXIT, 0, 0),
        ]
    m = Model(FUNCS)
    m.feed(events)
    m.finish()
    assert m.drops.counts == {DropKey(2, 7, 0): 3}
    stacks = {7: ["kfree_skb_reason+0x1 [kernel]", "tcp_v4_rcv+0x1c2 [kernel]"]}
    rows = drop_report(m.drops, {2: "NO_SOCKET"}, stacks)
    assert [(r.reason, r.function, r.count) for r in rows] == [("NO_SOCKET", "tcp_v4_rcv", 3)]
    # Every drop also ends its skb's journey.
    assert [j.end for j in m.journey_list] == ["freed"] * 3
    assert m.journey_list[0].steps[-1].aux == 2


def test_dropper_falls_back_to_the_enclosing_call() -> None:
    assert dropped_by(DropKey(2, -1, 0), {}, FUNCS) == "tcp_v4_rcv (enclosing call)"
    assert dropped_by(DropKey(2, -1, -1), {}, FUNCS) == "?"
    rows = drop_report_unknown()
    assert rows == [("reason 9", "?", 1)]


def drop_report_unknown() -> list[tuple[str, str, int]]:
    m = Model(FUNCS)
    m.feed([Event(1, 0xB, 5, 5, 1, ENTRY, 0, 0, 0, -1, 9), Event(2, 0, 5, 5, 1, EXIT, 0, 0)])
    m.finish()
    return [(r.reason, r.function, r.count) for r in drop_report(m.drops, {}, {})]


def test_a_consumed_skb_freed_through_the_drop_function_is_no_drop() -> None:
    # 6.12's enum has SKB_CONSUMED: kfree_skb_reason(skb, SKB_CONSUMED) is a consume.
    m = Model(FUNCS)
    m.feed([Event(1, 0xB, 5, 5, 1, ENTRY, 0, 0, 0, -1, 1), Event(2, 0, 5, 5, 1, EXIT, 0, 0),
            Event(3, 0xC, 5, 5, 1, ENTRY, 0, 0, 0, -1, 2), Event(4, 0, 5, 5, 1, EXIT, 0, 0)])
    m.finish()
    rows = drop_report(m.drops, {1: "SKB_CONSUMED", 2: "NO_SOCKET"}, {})
    assert [(r.reason, r.count) for r in rows] == [("NO_SOCKET", 1)]
