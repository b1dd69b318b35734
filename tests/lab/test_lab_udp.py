"""In the lab, send a UDP stream, and check both of its paths on the real kernel."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession, has_subsequence

pytestmark = pytest.mark.lab

UDP_TX: list[str | tuple[str, ...]] = [
    "udp_sendmsg",
    "udp_send_skb",
    "ip_send_skb",
    "ip_output",
    "__dev_queue_xmit",
    "e1000_xmit_frame",
]
UDP_RX: list[str | tuple[str, ...]] = [
    "e1000_clean",
    "napi_gro_receive",
    ("ip_rcv", "ip_list_rcv"),
    "ip_local_deliver",
    "__udp4_lib_rcv",
    "__udp_enqueue_schedule_skb",
]


LAB_RUNS = [MIXED]


@pytest.fixture(scope="module", params=KERNELS)
def udp_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """The mixed trace (labrun.MIXED), with its iperf3 UDP stream between the two e1000 NICs."""
    return lab.replay(request.param, "mixed")


def test_udp_transmit_path(udp_trace: Replay) -> None:
    tx = [j.functions() for j in udp_trace.model.journey_list if j.path == "TX"]
    assert any(has_subsequence(f, UDP_TX) for f in tx), tx[:3]


def test_udp_receive_path_reaches_the_socket_and_recvmsg(udp_trace: Replay) -> None:
    rx = [j.functions() for j in udp_trace.model.journey_list if j.path == "RX"]
    assert any(has_subsequence(f, UDP_RX) for f in rx), rx[:3]
    # The datagram is read by the receiver (iperf3's server socket is dual
    # stack, hence udpv6_recvmsg) and freed once copied.
    read: list[str | tuple[str, ...]] = [("udp_recvmsg", "udpv6_recvmsg"), "skb_consume_udp"]
    assert any(has_subsequence(f, [*UDP_RX, *read]) for f in rx), rx[:3]
