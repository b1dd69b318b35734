"""Boot the lab, trace TCP request/response with --attach fentry, check what a 6.1 kernel gave."""

from __future__ import annotations

import statistics

import pytest

from tests.lab.labrun import boot_and_trace, check_nesting
from tests.lab.test_lab_tcp import RX_CHAIN, TX_CHAIN, has_subsequence
from tracer.replay import Replay

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fentry_trace(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """One lab boot for the module: the rr preset traced with fentry/fexit."""
    return boot_and_trace(tmp_path_factory, "rr", "--attach", "fentry")


def test_header_says_fentry_and_which_functions_used_it(fentry_trace: Replay) -> None:
    h = fentry_trace.contents.header
    assert h["attach"] == "fentry"
    assert h["kernel"].startswith("6.1.")
    assert fentry_trace.contents.end is not None, "the tracer did not stop cleanly"
    by = h["attach_by"]
    # Core stack functions have BTF FUNCs of their own: trampolines.
    assert {"tcp_sendmsg", "ip_queue_xmit", "__dev_queue_xmit", "ip_rcv",
            "ip_local_deliver"} <= set(by["fentry"]), by
    # Functions that take kernel stacks stay on kprobes (reliable unwinding).
    assert {"tcp_v4_rcv", "kfree_skb_reason"} <= set(by["kprobe"]), by
    assert "kernel stacks" in h["fentry_fallback"]["tcp_v4_rcv"]
    # bcc 0.26 cannot target module functions, nor clones: kprobes, with the reason.
    assert "e1000_xmit_frame" in by["kprobe"]
    assert "module e1000" in h["fentry_fallback"]["e1000_xmit_frame"]
    assert any("." in s for s in by["kprobe"]), "suffixed clones should use kprobes"
    assert not set(by["fentry"]) & set(by["kprobe"])


def test_tx_and_rx_chains_cross_fentry_and_kprobe_functions(fentry_trace: Replay) -> None:
    journeys = fentry_trace.model.journey_list
    tx = [j for j in journeys if j.path == "TX"]
    rx = [j for j in journeys if j.path == "RX"]
    assert any(has_subsequence(j.functions(), list(TX_CHAIN)) for j in tx), [
        j.functions() for j in tx[:5]]
    assert any(has_subsequence(j.functions(), list(RX_CHAIN)) for j in rx), [
        j.functions() for j in rx[:5]]


def test_latencies_are_sane(fentry_trace: Replay) -> None:
    sendmsg = []
    for j in fentry_trace.model.journey_list:
        for s in j.steps:
            if s.inclusive is not None:
                assert 0 <= s.inclusive < 10_000_000_000, (j.id, s.func, s.inclusive)
                if s.func == "tcp_sendmsg":
                    sendmsg.append(s.inclusive)
    assert check_nesting(fentry_trace) > 100
    # 200 sends of 100 bytes: each is microseconds to a few ms, even under TCG.
    assert len(sendmsg) >= 100
    assert 0 < statistics.median(sendmsg) < 50_000_000


def test_no_events_lost(fentry_trace: Replay) -> None:
    lost = fentry_trace.contents.end["lost"] if fentry_trace.contents.end else {}
    assert lost.get("ringbuf_lost", 0) == 0 and lost.get("kprobe_missed", 0) == 0, lost
    # A stack whose hash bucket holds another stack is lost (and counted): rare.
    stacked = sum(1 for j in fentry_trace.model.journey_list for s in j.steps
                  if s.stack_id >= 0)
    assert lost.get("stack_lost", 0) <= max(1, stacked // 100), (lost, stacked)
