"""Boot the lab, trace the bulk transfer in events mode, check the kernel-paired calls.

One record per call, paired in the kernel (trace format version 2): the
default bulk transfer must lose nothing, the TX and RX chains must be there,
a syscall must appear only directly under its TX or RX root, and calls of
the same function in a syscall and in a softirq on top of it must nest.
"""

from __future__ import annotations

import pytest
from skbpath.render.folded import folded_stacks
from skbpath.tracer.model.calls import Call
from skbpath.tracer.model.nesting import Nester, NestingListener
from skbpath.tracer.model.replay import Replay
from skbpath.tracer.traces.tracefile import TraceReader

from tests.lab.labrun import KERNELS, MIXED, LabSession, assert_chain, check_nesting
from tests.lab.test_lab_tcp import RX_CHAIN, TX_CHAIN

pytestmark = pytest.mark.lab

SYSCALLS = {"__sys_sendto", "__sys_sendmsg", "__sys_recvfrom", "__sys_recvmsg", "sock_write_iter",
            "sock_read_iter", "__x64_sys_sendto", "__x64_sys_recvfrom"}
LOSSES = ("ringbuf_lost", "stack_lost", "kprobe_missed", "bpf_missed", "no_return",
          "unmatched_returns", "depth_overflow", "frames_full")


LAB_RUNS = [MIXED]


@pytest.fixture(scope="module", params=KERNELS)
def bulk_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """The mixed trace (labrun.MIXED, fentry): the bulk transfer among the other traffics."""
    return lab.replay(request.param, "mixed")


def _roots(r: Replay) -> list[Call]:
    roots: list[Call] = []

    class Keep(NestingListener):
        def on_root(self, call: Call) -> None:
            roots.append(call)

    reader = TraceReader(r.path)
    nester = Nester(r.funcs, Keep())
    for batch in reader.event_batches():
        nester.add_records(batch)
    nester.finish()
    return roots


def test_version_2_and_no_ring_buffer_loss(bulk_trace: Replay) -> None:
    c = bulk_trace.contents
    assert c.header["version"] == 2 and c.end is not None
    lost = c.end["lost"]
    assert set(LOSSES) <= set(lost), lost  # every counter is stored, zeros too
    assert lost["ringbuf_lost"] == 0, lost
    assert c.events > 1000
    # Calls without a packet are counted in the kernel, not recorded.
    assert sum(c.end["empty_calls"].values()) > 0, c.end["empty_calls"]


def test_tx_and_rx_chains(bulk_trace: Replay) -> None:
    assert_chain(bulk_trace, "TX", list(TX_CHAIN))
    assert_chain(bulk_trace, "RX", list(RX_CHAIN))
    assert check_nesting(bulk_trace) > 100


def test_syscalls_only_directly_under_their_root(bulk_trace: Replay) -> None:
    lines = folded_stacks(bulk_trace.model.calltree, "count")
    assert lines
    bad = [ln for ln in lines if any(f in SYSCALLS for f in ln.rsplit(" ", 1)[0].split(";")[2:])]
    assert not bad, bad[:5]
    assert any(ln.split(";")[1] in SYSCALLS for ln in lines)


def test_calls_nest_in_time_and_softirqs_in_what_they_interrupted(bulk_trace: Replay) -> None:
    name = bulk_trace.funcs.name_of
    twice = 0
    checked = 0
    for root in _roots(bulk_trace):
        for c in root.walk():
            if c.end is None:
                continue
            p = c.parent or c.interrupted
            if p is not None and p.end is not None:
                assert p.entry <= c.entry and c.end <= p.end, (name(p.func), name(c.func))
                checked += 1
            if c.parent is None and c.interrupted is not None and name(c.func) == "net_rx_action":
                # ip_finish_output2 in the syscall, and again in the softirq on top of it.
                outer: Call | None = c.interrupted
                while outer is not None and name(outer.func) != "ip_finish_output2":
                    outer = outer.parent
                inner = [d for d in c.walk() if name(d.func) == "ip_finish_output2"]
                if outer is not None and inner and outer.end is not None:
                    for d in inner:
                        assert d.end is None or outer.entry < d.entry <= d.end <= outer.end
                    twice += 1
    assert checked > 1000
    print(f"{checked} nested pairs, {twice} softirqs with ip_finish_output2 inside one")
