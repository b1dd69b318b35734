"""In the lab, run TCP over 127.0.0.1, and follow packets through lo and the backlog."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession, has_subsequence

pytestmark = pytest.mark.lab

# One skb from the sender's TCP to the receiver's, through the loopback device.
LOOPBACK_CHAIN: list[str | tuple[str, ...]] = [
    "tcp_sendmsg",
    "ip_finish_output2",
    "__dev_queue_xmit",
    "dev_hard_start_xmit",
    "loopback_xmit",
    ("__netif_rx", "netif_rx", "netif_rx_internal"),
    "enqueue_to_backlog",
    "process_backlog",
    ("__netif_receive_skb", "__netif_receive_skb_one_core"),
    "ip_rcv",
    "ip_local_deliver",
    "tcp_v4_rcv",
]


LAB_RUNS = [MIXED]


@pytest.fixture(scope="module", params=KERNELS)
def loopback_trace(lab: LabSession, request: pytest.FixtureRequest) -> Replay:
    """The mixed trace (labrun.MIXED), with its TCP request/response over 127.0.0.1."""
    return lab.replay(request.param, "mixed")


def test_lo_driver_is_found(loopback_trace: Replay) -> None:
    lo = [f for f in loopback_trace.funcs.funcs if f.name == "loopback_xmit"]
    assert lo and lo[0].driver == "xmit" and lo[0].layer == "driver"


def test_loopback_journey_runs_from_tcp_through_the_backlog_to_tcp(
    loopback_trace: Replay,
) -> None:
    js = [j for j in loopback_trace.model.journey_list
          if has_subsequence(j.functions(), LOOPBACK_CHAIN)]
    assert len(js) >= 100, [j.functions() for j in loopback_trace.model.journey_list[:5]]
    # The backlog is drained in the receive softirq, which runs as its own root.
    assert all(j.path == "TX" for j in js)
