"""In the lab, send to closed ports with --attach tracepoint; check journeys, drops, stacks."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, LabRun, LabSession, has_subsequence

pytestmark = pytest.mark.lab

TX_CHAIN: list[str | tuple[str, ...]] = [
    "net:net_dev_queue", "net:net_dev_start_xmit", "net:net_dev_xmit"]


LAB_RUNS = [LabRun("closed_tp", "closed", ("--attach", "tracepoint"))]


@pytest.fixture(scope="module", params=KERNELS)
def tp_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """TCP connects and UDP datagrams to a closed port, traced on raw tracepoints."""
    return lab.replay(request.param, "closed_tp")


def _is_kernel_pointer(addr: int) -> bool:
    # x86-64 kernel addresses start 0xff.. (4- or 5-level paging: the lab's
    # TCG guest has la57, 0xff33...): real pointers, not tracefs's 32-bit hashes.
    return addr >> 56 == 0xFF


def test_header_says_tracepoint(tp_trace: Replay, lab: LabSession) -> None:
    h = tp_trace.contents.header
    assert h["attach"] == "tracepoint"
    assert h["kernel"] == lab.release_of(tp_trace)
    assert tp_trace.contents.end is not None, "the tracer did not stop cleanly"
    attached = set(h["attach_by"]["raw_tracepoint"])
    assert {"net_dev_queue", "net_dev_start_xmit", "net_dev_xmit", "netif_receive_skb",
            "kfree_skb", "consume_skb"} <= attached
    names = {f["name"] for f in h["functions"]}
    assert "skb:kfree_skb" in names and all(":" in n for n in names)
    kfree = next(f for f in h["functions"] if f["name"] == "skb:kfree_skb")
    assert kfree["skb_arg"] == 1 and kfree["aux_arg"] == 3  # 6.1: (skb, location, reason)


def test_tx_journey_runs_through_the_device_tracepoints(tp_trace: Replay) -> None:
    tx = [j for j in tp_trace.model.journey_list if j.path == "TX"]
    full = [j for j in tx if has_subsequence(j.functions(), list(TX_CHAIN))]
    assert full, [j.functions() for j in tx[:5]]
    assert all(_is_kernel_pointer(s) for j in full for s in j.skbs), [j.skbs for j in full[:3]]
    # Each hit is a zero-length call: ENTRY and EXIT at the same time.
    assert all(s.inclusive == 0 for j in full for s in j.steps if s.inclusive is not None)


def test_rx_journeys_start_at_netif_receive_skb(tp_trace: Replay) -> None:
    rx = [j for j in tp_trace.model.journey_list if j.path == "RX"]
    assert any("net:netif_receive_skb" in j.functions() for j in rx), [
        j.functions() for j in rx[:5]]


def test_drops_have_reason_names_and_the_dropper(tp_trace: Replay) -> None:
    names = {int(k): v for k, v in tp_trace.contents.header["drop_reasons"].items()}
    assert "NO_SOCKET" in names.values()
    rows = drop_report(tp_trace.model.drops, names, tp_trace.contents.stacks)
    by = {(r.reason, r.function): r.count for r in rows}
    assert by.get(("NO_SOCKET", "tcp_v4_rcv"), 0) >= 1, rows


def test_stacks_start_at_the_traced_function(tp_trace: Replay) -> None:
    stacks = tp_trace.contents.stacks
    assert stacks
    firsts = {frames[0].split("+", 1)[0] for frames in stacks.values() if frames}
    # The tracepoint fires in the kernel's dropper: kfree_skb_reason (6.1), sk_skb_reason_drop
    # (6.12, where kfree_skb_reason is an inline wrapper of it).
    assert {"kfree_skb_reason", "sk_skb_reason_drop"} & firsts, firsts
    assert not any(f.startswith(("bpf_prog_", "bpf_trace_run", "__bpf_trace_")) for f in firsts)
