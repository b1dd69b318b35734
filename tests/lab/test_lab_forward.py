"""The lab as a router (--topology forward) and follow forwarded packets.

The client's e1000 sends through the hub to the router's e1000; the router
(the guest's root namespace) forwards over a veth into the peer's netns.
"""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay
from skbpath.tracer.model.routes import decode_route

from tests.lab.labrun import FORWARD, LabSession, has_subsequence

pytestmark = pytest.mark.lab

# One journey, one skb: received by the router's e1000, forwarded, sent on the veth.
FORWARD_CHAIN: list[str | tuple[str, ...]] = [
    "e1000_clean",
    "napi_gro_receive",
    ("ip_rcv", "ip_list_rcv"),
    "ip_route_input_slow",
    "fib_table_lookup",
    "ip_forward",
    "ip_forward_finish",
    "ip_output",
    "ip_finish_output2",
    "__dev_queue_xmit",
    "dev_hard_start_xmit",
    "veth_xmit",
]
# ... and on, through the backlog, into the peer's TCP.
DELIVERY_CHAIN: list[str | tuple[str, ...]] = [
    "veth_xmit",
    ("netif_rx", "__netif_rx", "enqueue_to_backlog"),
    "process_backlog",
    "ip_local_deliver",
    "tcp_v4_rcv",
]


LAB_RUNS = [FORWARD]


@pytest.fixture(scope="module", params=FORWARD.kernels)
def forward_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """TCP request/response and bulk from the client netns, forwarded by the guest."""
    return lab.replay(request.param, "forward")


def test_veth_driver_is_found_without_a_device(forward_trace: Replay) -> None:
    xmit = {f.name for f in forward_trace.funcs.funcs if f.driver == "xmit"}
    assert {"e1000_xmit_frame", "veth_xmit", "loopback_xmit"} <= xmit


def test_a_forwarded_packet_is_one_journey_from_e1000_to_veth(forward_trace: Replay) -> None:
    journeys = forward_trace.model.journey_list
    fwd = [j for j in journeys if has_subsequence(j.functions(), FORWARD_CHAIN)]
    assert len(fwd) >= 100, [j.functions() for j in journeys[:5]]
    # Every packet the router took from its e1000 and forwarded: one whole journey.
    inbound = [j for j in journeys if has_subsequence(j.functions(), ["e1000_clean", "ip_forward"])]
    # Without the FIB lookup: a GRO batch's later packets reuse the first one's route
    # (ip_list_rcv_finish's route hint), which 6.12 does for a third of this traffic.
    hinted = [f for f in FORWARD_CHAIN if f not in ("ip_route_input_slow", "fib_table_lookup")]
    broken = [j.functions() for j in inbound if not has_subsequence(j.functions(), hinted)]
    assert len(broken) <= len(inbound) // 20, broken[:3]
    assert any(has_subsequence(j.functions(), DELIVERY_CHAIN) for j in fwd)
    assert all(j.path == "RX" for j in fwd)


def test_the_route_is_recorded_in_the_journey(forward_trace: Replay) -> None:
    names = {int(k): v for k, v in forward_trace.contents.header["interfaces"].items()}
    seen = set()
    for j in forward_trace.model.journey_list:
        funcs = j.functions()
        if "ip_forward" not in funcs:
            continue
        for s in j.steps[: funcs.index("ip_forward")]:
            if s.func == "fib_table_lookup" and s.result is not None:
                seen.add(decode_route(*s.result).text(names))
    assert "198.18.0.128/25 table main unicast dev skbfwd0" in seen, seen


def test_routes_are_counted(forward_trace: Replay) -> None:
    routes = {r.prefix: n for r, n in forward_trace.model.routes.counts.items()}
    # Requests go to the peer's subnet, responses back to the client's.
    assert routes.get("198.18.0.128", 0) >= 100
    assert routes.get("198.18.0.0", 0) >= 100
