"""Boot the lab and trace the mixed traffic with --aggregate (calls counted per path in the kernel).

The same traffic (labrun.MIXED: ARP, closed ports, the firewall, rr, UDP,
loopback, bulk) runs twice in one boot, traced once per call (``mixed``) and
once aggregated in the kernel (``aggregate``).  The aggregate must lose
nothing, hold the TX and RX chains in its flame graph with every syscall
directly under its root, and count what the events trace counted.
"""

from __future__ import annotations

import pytest
from skbpath.render.folded import folded_stacks
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import MIXED, LabRun, LabSession, has_subsequence
from tests.lab.test_lab_capture import SYSCALLS
from tests.lab.test_lab_tcp import RX_CHAIN, TX_CHAIN

pytestmark = pytest.mark.lab

AGGREGATE = LabRun("aggregate", MIXED.traffic, (*MIXED.trace_opts, "--aggregate"),
                   kernels=("6.1",))
LAB_RUNS = [MIXED, AGGREGATE]
# Calls whose number the traffic decides, whatever the timing: the frames
# the NICs receive, the UDP datagrams sent and received.  (The bulk
# transfer's TSO and GRO batching, and so the calls per batch, vary from run
# to run.  ARP does too: the neighbour timers decide when a cached entry is
# probed again, and a CI run saw arp_rcv 4 times in one trace and 6 in the
# other.)
STEADY = ("napi_gro_receive", "udp_sendmsg", "__udp4_lib_rcv")
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def aggregate(lab: LabSession) -> Replay:
    """The mixed traffic, counted per call path in the kernel (6.1, fentry)."""
    return lab.replay("6.1", AGGREGATE.name)


@pytest.fixture(scope="module")
def events(lab: LabSession) -> Replay:
    """The same traffic in the same boot, one record per call."""
    return lab.replay("6.1", MIXED.name)


def test_no_events_and_nothing_lost(aggregate: Replay) -> None:
    c = aggregate.contents
    assert c.header.get("aggregate") is True and c.events == 0
    assert c.aggregate is not None and len(c.aggregate["paths"]) > 100
    assert c.end is not None
    lost = c.end["lost"]
    for name in ("aggregate_full", "frames_full", "depth_overflow", "ringbuf_lost"):
        assert lost[name] == 0, lost  # stored, zeros too
    # A return without its entry is one whose entry program the kernel skipped
    # (a trampoline or kprobe already running on that CPU), none else.
    assert lost["unmatched_returns"] <= lost["bpf_missed"] + lost["kprobe_missed"], lost
    assert aggregate.model.aggregate and aggregate.model.journey_list == []
    assert aggregate.model.summary()["calls"] > 10_000


def test_tx_and_rx_chains_in_its_flame_graph(aggregate: Replay) -> None:
    stacks = [ln.rsplit(" ", 1)[0].split(";") for ln in
              folded_stacks(aggregate.model.calltree, "time")]
    for root, chain in (("TX", TX_CHAIN), ("RX", RX_CHAIN)):
        assert any(s[0] == root and has_subsequence(s[1:], list(chain)) for s in stacks), root


def test_syscalls_only_directly_under_their_root(aggregate: Replay) -> None:
    lines = folded_stacks(aggregate.model.calltree, "count")
    bad = [ln for ln in lines if any(f in SYSCALLS for f in ln.rsplit(" ", 1)[0].split(";")[2:])]
    assert not bad, bad[:5]
    assert any(ln.split(";")[1] in SYSCALLS for ln in lines)


def test_counts_agree_with_the_events_trace(aggregate: Replay, events: Replay) -> None:
    ids_a = {f.name: f.id for f in aggregate.funcs.funcs}
    ids_e = {f.name: f.id for f in events.funcs.funcs}
    got = {n: aggregate.model.calltree.count_by_func.get(ids_a[n], 0) for n in STEADY
           if n in ids_a}
    want = {n: events.model.calltree.count_by_func.get(ids_e[n], 0) for n in STEADY
            if n in ids_e}
    # Every function, for the log: how far each count is from the events trace's.
    for f in events.funcs.funcs:
        e = events.model.calltree.count_by_func.get(f.id, 0)
        a = aggregate.model.calltree.count_by_func.get(ids_a.get(f.name, -1), 0)
        if e >= 100:
            print(f"{f.name:36s} events {e:8,d} aggregate {a:8,d} {100 * (a - e) / e:+6.1f}%")
    assert got.keys() == want.keys() and len(got) == len(STEADY), (got, want)
    for name, n in want.items():
        assert n > 0 and abs(got[name] - n) <= TOLERANCE * n, (name, got[name], n)
    # The whole tree too: calls per direction.
    tot_a = sum(aggregate.model.calltree.count_by_func.values())
    tot_e = sum(events.model.calltree.count_by_func.values())
    assert abs(tot_a - tot_e) <= 0.15 * tot_e, (tot_a, tot_e)
