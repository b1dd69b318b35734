"""Routes carried by fib_table_lookup's return event: decoding, pairing, model, views."""

from __future__ import annotations

from rich.console import Console
from skbpath.render.terminal import journey_timeline, route_table
from skbpath.tracer.model.core import Model
from skbpath.tracer.model.routes import Route, decode_route, pack_route
from skbpath.tracer.traces.events import ENTRY, EXIT, FLAG_RESULT, Event
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

FUNCS = FuncTable([
    FuncInfo(id=0, name="ip_rcv", path="rx", layer="network", skb_arg=1),
    FuncInfo(id=1, name="fib_table_lookup", path="rx", layer="network", result="route"),
    FuncInfo(id=2, name="ip_forward", path="rx", layer="network", skb_arg=1),
])
SKB = 0xFFFF888004A1B200


def forwarded(
    ts: int, word: int, oif: int, flags: int = FLAG_RESULT, skb: int = SKB
) -> list[Event]:
    """ip_rcv -> fib_table_lookup (returning a route) -> ip_forward, on one skb."""
    return [
        Event(ts, skb, 0, 0, 0, ENTRY, 0, 0),
        Event(ts + 10, 0, 0, 0, 1, ENTRY, 0, 0),
        Event(ts + 30, word, 0, 0, 1, EXIT, flags, 0, 0, -1, oif),
        Event(ts + 40, skb, 0, 0, 2, ENTRY, 0, 0),
        Event(ts + 60, 0, 0, 0, 2, EXIT, 0, 0),
        Event(ts + 70, 0, 0, 0, 0, EXIT, 0, 0),
    ]


def test_pack_and_decode_round_trip() -> None:
    word = pack_route("198.18.0.128", 25, 1, 254)
    assert decode_route(word, 5) == Route("198.18.0.128", 25, 1, 254, 5)
    # The prefix is stored as the kernel holds it: network order, read on x86.
    assert word & 0xFFFFFFFF == 0x800012C6


def test_route_text_names_table_type_and_device() -> None:
    r = Route("198.18.0.128", 25, 1, 254, 5)
    assert r.text({5: "skbfwd0"}) == "198.18.0.128/25 table main unicast dev skbfwd0"
    assert r.text() == "198.18.0.128/25 table main unicast ifindex 5"
    local = Route("198.18.0.1", 32, 2, 255, 1)
    assert local.text({1: "lo"}) == "198.18.0.1/32 table local local dev lo"
    assert Route("10.0.0.0", 8, 42, 1000, 0).text() == "10.0.0.0/8 table 1000 type 42"


def test_a_device_in_another_netns_is_never_named_from_ours() -> None:
    word = pack_route("0.0.0.0", 0, 1, 254, elsewhere=True)
    r = decode_route(word, 2)
    assert r == Route("0.0.0.0", 0, 1, 254, 2, elsewhere=True)
    assert r.text({2: "eth0"}) == "0.0.0.0/0 table main unicast ifindex 2 in another netns"


def test_model_counts_routes_and_keeps_them_in_the_journey() -> None:
    word = pack_route("198.18.0.128", 25, 1, 254)
    model = Model(FUNCS)
    model.feed(forwarded(1000, word, 5) + forwarded(2000, word, 5, skb=SKB + 0x100))
    model.finish()
    assert model.routes.counts == {Route("198.18.0.128", 25, 1, 254, 5): 2}
    j = model.journey_list[0]
    assert [s.func for s in j.steps] == ["ip_rcv", "fib_table_lookup", "ip_forward"]
    assert j.steps[1].result == (word, 5)
    steps = j.to_json({5: "skbfwd0"})["steps"]
    assert [s["route"] for s in steps] == [None, "198.18.0.128/25 table main unicast dev skbfwd0",
                                           None]


def test_a_return_without_the_result_flag_carries_no_route() -> None:
    model = Model(FUNCS)
    model.feed(forwarded(1000, 0, 0, flags=0))
    model.finish()
    assert not model.routes.counts
    assert model.journey_list[0].steps[1].result is None


def test_terminal_shows_routes() -> None:
    word = pack_route("198.18.0.128", 25, 1, 254)
    model = Model(FUNCS)
    model.feed(forwarded(1000, word, 5))
    model.finish()
    console = Console(width=160, record=True)
    console.print(journey_timeline(model.journey_list[0], {5: "skbfwd0"}))
    console.print(route_table(model.routes.counts, {5: "skbfwd0"}))
    text = console.export_text()
    assert "fib_table_lookup  → 198.18.0.128/25 table main unicast dev skbfwd0" in text
    assert "routes (fib_table_lookup)" in text
