"""In the lab, flush the neighbour caches, ping, and check the ARP exchange."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession, has_subsequence

pytestmark = pytest.mark.lab

REQUEST_TX: list[str | tuple[str, ...]] = [
    "arp_solicit", "arp_send_dst", "arp_xmit", "__dev_queue_xmit", "e1000_xmit_frame",
]
ARP_RX: list[str | tuple[str, ...]] = ["e1000_clean", "arp_rcv", "arp_process"]


LAB_RUNS = [MIXED]


@pytest.fixture(scope="module", params=KERNELS)
def arp_trace(lab: LabSession, request: pytest.FixtureRequest) -> Replay:
    """The mixed trace (labrun.MIXED): it begins with both neighbour caches flushed, then ping."""
    return lab.replay(request.param, "mixed")


def test_arp_request_goes_out_through_the_driver(arp_trace: Replay) -> None:
    assert any(has_subsequence(j.functions(), REQUEST_TX) for j in arp_trace.model.journey_list), [
        j.functions() for j in arp_trace.model.journey_list[:10]
    ]


def test_arp_is_received_and_processed(arp_trace: Replay) -> None:
    rx = [j for j in arp_trace.model.journey_list if has_subsequence(j.functions(), ARP_RX)]
    # The peer gets the request, the host the reply (at least).
    assert len(rx) >= 2
    assert all(j.path == "RX" and j.end == "freed" for j in rx)


def test_the_first_packet_waits_for_the_neighbour(arp_trace: Replay) -> None:
    # The ping is parked by __neigh_event_send, then sent when the reply updates
    # the entry: the same skb, transmitted later from the ARP receive path.
    parked = [j for j in arp_trace.model.journey_list
              if has_subsequence(j.functions(), ["neigh_resolve_output", "__neigh_event_send"])]
    assert parked
    assert any(has_subsequence(j.functions(), ["__neigh_event_send", "__neigh_update",
                                               "dev_hard_start_xmit", "e1000_xmit_frame"])
               for j in parked), [j.functions() for j in parked]
