"""In the lab, drop packets with an nftables rule, and check the drops' reason and dropper."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession

pytestmark = pytest.mark.lab


# The rule stays loaded for the boot's later runs: it drops port 5299 only.
LAB_RUNS = [MIXED]


# Where the kernel frees a dropped skb: kfree_skb_reason, which 6.12 makes an
# inline wrapper of sk_skb_reason_drop.
DROP_FUNCS = ("kfree_skb_reason", "sk_skb_reason_drop")


@pytest.fixture(scope="module", params=KERNELS)
def firewall_trace(lab: LabSession, request: pytest.FixtureRequest) -> Replay:
    """The mixed trace (labrun.MIXED), which ends with connects and datagrams to a port the
    peer's nftables rule drops."""
    return lab.replay(request.param, "mixed")


def test_firewall_drops_are_netfilter_drop_by_the_rule(firewall_trace: Replay) -> None:
    names = {int(k): v for k, v in firewall_trace.contents.header["drop_reasons"].items()}
    rows = drop_report(firewall_trace.model.drops, names, firewall_trace.contents.stacks)
    by = {(r.reason, r.function): r.count for r in rows}
    # 3 SYNs and their retransmissions, and 3 datagrams, freed inside the
    # nftables hook that nf_hook_slow called (nft_do_chain: a module loaded
    # by the rule during the trace, so its symbols must have been read again).
    assert by.get(("NETFILTER_DROP", "nft_do_chain"), 0) >= 6, rows


def test_drop_stacks_run_through_the_netfilter_hook(firewall_trace: Replay) -> None:
    stacks = [s for s in firewall_trace.contents.stacks.values()
              if len(s) > 2 and s[0].startswith(DROP_FUNCS) and s[1].startswith("nft_do_chain")]
    assert stacks
    for frames in stacks:
        funcs = [f.split("+", 1)[0] for f in frames]
        # The INPUT hook, called from ip_local_deliver: callee first.
        assert funcs.index("nf_hook_slow") < funcs.index("ip_local_deliver"), frames
        # Every frame named by a symbol it lies in, not by a neighbour far below.
        offsets = [int(f.split("+", 1)[1].split()[0], 16) for f in frames if "+0x" in f]
        assert max(offsets) < 0x10000, frames


def test_the_dropped_packet_journey_ends_in_the_hook(firewall_trace: Replay) -> None:
    dropped = [j for j in firewall_trace.model.journey_list
               if j.functions()[-1:] and j.functions()[-1] in DROP_FUNCS
               and "nf_hook_slow" in j.functions()]
    assert dropped
    for j in dropped:
        funcs = j.functions()
        # Dropped at the peer's INPUT hook: after routing, before any transport.
        assert "ip_local_deliver" in funcs
        assert not {"tcp_v4_rcv", "udp_rcv", "__udp4_lib_rcv"} & set(funcs), funcs
