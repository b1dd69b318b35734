"""Boot the lab and trace mixed TCP, UDP, ICMP and IPv6 traffic with a pcap-filter
expression: only the matching packets have journeys.

IPv6 uses the documentation prefix 2001:db8:5b::/64, only on the lab's two NICs
(the root namespace's and the one in netns skbpeer, inside the guest); IPv4
stays in 198.18.0.0/24.  Nothing is routed anywhere else.
"""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import LabRun, LabSession

pytestmark = pytest.mark.lab

EXPR = "ip6 or icmp"
# The NICs are found by their IPv4 addresses (guest.sh names no interface).
MIXED = (
    "A=$(ip -o -4 addr show to 198.18.0.1 | cut -d' ' -f2); "
    "B=$(ip -n skbpeer -o -4 addr show to $PEER | cut -d' ' -f2); "
    "ip addr add 2001:db8:5b::1/64 dev $A nodad && "
    "ip -n skbpeer addr add 2001:db8:5b::2/64 dev $B nodad && "
    '"$SKBPATH_PY" -m skbpath.tracer.lab.rr client $PEER 30; '
    "iperf3 -u -c $PEER -b 10M -n 200K -l 1000; "
    "ping -c 5 -i 0.2 $PEER; "
    "ping -6 -c 5 -i 0.2 2001:db8:5b::2"
)
IPV4 = ("ip_rcv", "ip_output", "ip_finish_output2", "ip_local_deliver", "__ip_local_out",
        "ip_list_rcv", "ip_send_skb", "ip_make_skb", "ip_queue_xmit", "arp_rcv", "arp_xmit")
DEVICE = ("dev_hard_start_xmit", "__netif_receive_skb_core", "napi_gro_receive",
          "netif_receive_skb_list_internal", "__dev_queue_xmit")


LAB_RUNS = [LabRun("pcap", MIXED, ("--filter", EXPR), kernels=("6.1",))]


@pytest.fixture(scope="module")
def traced(lab: LabSession) -> Replay:
    """The mixed traffic, traced with the expression (one boot shared with the other tests)."""
    return lab.replay("6.1", "pcap")


def test_the_expression_is_recorded_and_compiled_in(traced: Replay) -> None:
    h = traced.contents.header
    assert h["filters"] == {"expr": EXPR}
    assert any(f.startswith("-DPCAP_ETH_PROG=I(0,") for f in h["cflags"])
    assert any(f.startswith("-DPCAP_RAW_PROG=I(0,") for f in h["cflags"])
    assert (traced.contents.end or {})["lost"]["filtered"] > 0  # TCP and UDP were dropped


def _has(j: object, names: tuple[str, ...]) -> bool:
    funcs = set(j.functions())  # type: ignore[attr-defined]
    return any(n in funcs or any(f.startswith(n) for f in funcs) for n in names)


def test_only_icmp_and_ipv6_journeys(traced: Replay) -> None:
    journeys = traced.model.journey_list
    for j in journeys:
        funcs = j.functions()
        assert not [f for f in funcs if f.startswith(("tcp_", "__tcp_", "udp_", "__udp"))], funcs
    icmp = [j for j in journeys if _has(j, IPV4)]
    ipv6 = [j for j in journeys if not _has(j, IPV4) and _has(j, DEVICE)]
    # 5 echo requests and 5 replies each way, sent and received: one journey each.
    assert len(icmp) >= 10, [j.functions() for j in journeys]
    assert len(ipv6) >= 10, [j.functions() for j in journeys]
