"""In the lab, drop packets with an nftables rule, and check the drops' reason and dropper."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import MIXED, LabSession

pytestmark = pytest.mark.lab


# The rule stays loaded for the boot's later runs: it drops port 5299 only.
LAB_RUNS = [MIXED]


@pytest.fixture(scope="module")
def firewall_trace(lab: LabSession) -> Replay:
    """The mixed trace (labrun.MIXED), which ends with connects and datagrams to a port the
    peer's nftables rule drops."""
    return lab.replay("6.1", "mixed")


def test_firewall_drops_are_netfilter_drop_by_the_rule(firewall_trace: Replay) -> None:
    names = {int(k): v for k, v in firewall_trace.contents.header["drop_reasons"].items()}
    rows = drop_report(firewall_trace.model.drops, names, firewall_trace.contents.stacks)
    by = {(r.reason, r.function): r.count for r in rows}
    # 3 SYNs and their retransmissions, and 3 datagrams, freed where the
    # nftables rule's verdict is carried out (on 6.1: in nft_do_chain).
    assert by.get(("NETFILTER_DROP", "nft_do_chain"), 0) >= 6, rows


def test_drop_stacks_run_through_the_netfilter_hook(firewall_trace: Replay) -> None:
    stacks = [s for s in firewall_trace.contents.stacks.values()
              if len(s) > 1 and s[1].startswith("nft_do_chain")]
    assert stacks
    for frames in stacks:
        funcs = [f.split("+", 1)[0] for f in frames]
        assert funcs.index("nf_hook_slow") < funcs.index("ip_local_deliver"), frames


def test_the_dropped_packet_journey_ends_in_the_hook(firewall_trace: Replay) -> None:
    dropped = [j for j in firewall_trace.model.journey_list
               if j.functions()[-1:] == ["kfree_skb_reason"] and "nf_hook_slow" in j.functions()]
    assert dropped
    for j in dropped:
        funcs = j.functions()
        # Dropped at the peer's INPUT hook: after routing, before any transport.
        assert "ip_local_deliver" in funcs
        assert not {"tcp_v4_rcv", "udp_rcv", "__udp4_lib_rcv"} & set(funcs), funcs
