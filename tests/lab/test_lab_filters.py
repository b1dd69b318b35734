"""In the lab, check that the kernel-side filters keep exactly the selected packets."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import LabRun, LabSession

pytestmark = pytest.mark.lab

# TCP request/response on port 5202, then a UDP burst the filter must leave out.
MIXED = ('"$SKBPATH_PY" -m skbpath.tracer.lab.rr client $PEER 50; '
         'iperf3 -u -c $PEER -b 20M -n 300K -l 1000')
UDP_FUNCS = {"udp_send_skb", "__udp4_lib_rcv", "__udp_enqueue_schedule_skb"}


# kprobe programs with the tuple filters (test_lab_pcap loads fentry ones with a pcap filter),
# on 6.12: the forward run covers kprobe mode on 6.1 (labrun.FORWARD).
FILTERS = LabRun("filters", MIXED, ("--proto", "tcp", "--port", "5202", "--host", "198.18.0.2",
                                    "--attach", "kprobe"), kernels=("6.12",))
LAB_RUNS = [FILTERS]


@pytest.fixture(scope="module")
def filtered(lab: LabSession) -> Replay:
    """Mixed TCP and UDP traffic, traced with --proto tcp --port 5202 --host PEER."""
    return lab.replay(FILTERS.kernels[0], FILTERS.name)


def test_filters_are_recorded_and_count_what_they_drop(filtered: Replay) -> None:
    h = filtered.contents.header
    assert h["filters"] == {"proto": "tcp", "port": 5202, "host": "198.18.0.2"}
    assert any(f.startswith("-DFILTER_PORT=5202") for f in h["cflags"])
    lost = (filtered.contents.end or {})["lost"]
    assert lost["filtered"] > 0  # the UDP burst was there, and dropped in the kernel


def test_only_the_selected_tcp_flow_has_journeys(filtered: Replay) -> None:
    journeys = filtered.model.journey_list
    assert len(journeys) >= 100  # 50 exchanges, both ends
    for j in journeys:
        assert not UDP_FUNCS & set(j.functions()), j.functions()
    tcp = [j for j in journeys if {"tcp_v4_rcv", "__tcp_transmit_skb"} & set(j.functions())]
    # A few RX skbs end inside GRO (merged into another) before TCP sees them.
    assert len(tcp) >= 0.95 * len(journeys)


def test_the_filter_drops_returns_with_their_entries(filtered: Replay) -> None:
    # A filtered entry's return is dropped in the kernel too, so pairing
    # never sees returns without entries.
    assert filtered.model.summary()["unmatched_exits"] <= 2
