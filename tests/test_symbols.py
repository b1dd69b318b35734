"""Kernel symbol names and stack frames: base names, clones, frame text, cleaned stacks."""

from __future__ import annotations

import pytest
from skbpath.tracer.kernel.symbols import (
    Frame,
    base_name,
    clean_stack,
    clone_of,
    frame_function,
    normalise_frame,
    parse_frame,
    strip_bpf_tracepoint_frames,
    strip_tracefs_frames,
)


# ---------------------------------------------------------------- symbols
@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("tcp_sendmsg", "tcp_sendmsg"),
        ("napi_gro_complete.constprop.0", "napi_gro_complete"),
        ("foo.constprop.0.isra.0", "foo"),
        ("tcp_write_xmit.isra.0", "tcp_write_xmit"),
        ("ip_finish_output2.part.0", "ip_finish_output2"),
        ("foo.llvm.123456", "foo"),
        ("__napi_poll.cold", "__napi_poll"),
        ("foo.lto_priv.0", "foo"),
        ("tcp_ack+0x1a", "tcp_ack"),
        ("tcp_ack+0x1a/0x1640", "tcp_ack"),
        ("e1000_clean+0x279 [e1000]", "e1000_clean"),
        ("napi_gro_complete.constprop.0+0x145 [kernel]", "napi_gro_complete"),
        ("  do_syscall_64+0x5d [kernel] ", "do_syscall_64"),
        ("skb:kfree_skb", "skb:kfree_skb"),
    ],
)
def test_base_name_is_the_c_function(name: str, base: str) -> None:
    assert base_name(name) == base


@pytest.mark.parametrize(
    ("symbol", "whole"),
    [
        ("foo", "foo"),
        ("foo.constprop.0", "foo"),
        ("foo.constprop.0.isra.0", "foo"),
        ("foo.part.1", "foo"),
        ("foo.llvm.123456", "foo"),
        # Pieces of a function, or no C function's clone: nothing to attach to.
        ("foo.cold", None),
        ("foo.constprop.0.cold", None),
        ("foo.lto_priv.0", None),
        ("foo.bar.isra.0", None),
        ("foo.isra", None),
    ],
)
def test_clone_of_only_whole_body_clones(symbol: str, whole: str | None) -> None:
    assert clone_of(symbol) == whole


# ----------------------------------------------------------------- frames
@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("napi_gro_complete.constprop.0+0x145 [kernel]",
         Frame("napi_gro_complete.constprop.0", 0x145, "kernel")),
        (" veth_xmit+0x1a/0x2b0 [veth]", Frame("veth_xmit", 0x1A, "veth")),
        ("tcp_ack+0x1a", Frame("tcp_ack", 0x1A)),
        ("dev_hard_start_xmit", Frame("dev_hard_start_xmit")),
        ("0xffffffffc0a1b2c3", Frame("0xffffffffc0a1b2c3")),
        ("garbage+zz [kernel]", Frame("garbage", None, "kernel")),
    ],
)
def test_parse_frame(text: str, frame: Frame) -> None:
    assert parse_frame(text) == frame


def test_frames_are_stored_without_the_size() -> None:
    assert normalise_frame(" veth_xmit+0x1a/0x2b0 [veth]") == "veth_xmit+0x1a [veth]"
    assert normalise_frame("dev_hard_start_xmit") == "dev_hard_start_xmit"
    assert normalise_frame("tcp_ack+0x1a") == "tcp_ack+0x1a"
    # bcc's ksym text is already in the stored form.
    assert str(parse_frame("e1000_clean+0x279 [e1000]")) == "e1000_clean+0x279 [e1000]"


def test_frame_function_keeps_the_symbol() -> None:
    assert frame_function("dev_hard_start_xmit+0x63/0x1d0 [kernel]") == "dev_hard_start_xmit"
    assert frame_function("ip_rcv_finish.isra.0+0x5 [kernel]") == "ip_rcv_finish.isra.0"


# ----------------------------------------------------------------- stacks
def test_strip_bpf_tracepoint_frames() -> None:
    frames = ["bpf_prog_6deef7357e7b4530_skbpath_tp_18+0x3c", "bpf_trace_run3+0x8c",
              "__bpf_trace_kfree_skb+0x9", "kfree_skb_reason+0x88", "tcp_v4_rcv+0x7a4"]
    assert strip_bpf_tracepoint_frames(frames) == ["kfree_skb_reason+0x88", "tcp_v4_rcv+0x7a4"]
    assert strip_bpf_tracepoint_frames(["bpf_trace_run1+0x1"]) == ["bpf_trace_run1+0x1"]
    assert strip_bpf_tracepoint_frames([]) == []


def test_strip_tracefs_frames() -> None:
    frames = ["trace_event_raw_event_kfree_skb+0x1", "__traceiter_kfree_skb+0x2",
              "kfree_skb_reason+0x88", "trace_event_not_leading+0x1"]
    assert strip_tracefs_frames(frames) == frames[2:]
    assert strip_tracefs_frames(["__trace_x+0x1"]) == ["__trace_x+0x1"]


def test_fentry_stack_starts_at_the_traced_function() -> None:
    frames = [
        "bpf_prog_1adbc933e3e4559a_kfree_skb_reaso+0x3a [bpf]",
        "bpf_trampoline_6442472461+0x53 [bpf]",
        "kfree_skb_reason+0x5 [kernel]",
        "icmp_rcv+0x1b1 [kernel]",
        "ip_protocol_deliver_rcu+0x1e8 [kernel]",
        "bpf_trampoline_6442489665+0x7e [bpf]",
        "ip_protocol_deliver_rcu+0x5 [kernel]",
        "ip_local_deliver_finish+0x77 [kernel]",
    ]
    assert clean_stack(frames) == [
        "kfree_skb_reason+0x5 [kernel]",
        "icmp_rcv+0x1b1 [kernel]",
        "ip_protocol_deliver_rcu+0x1e8 [kernel]",
        "ip_local_deliver_finish+0x77 [kernel]",
    ]


def test_kprobe_stack_under_fexit_traced_callers() -> None:
    frames = [
        "e1000_xmit_frame+0x1 [e1000]",
        "dev_hard_start_xmit+0x63 [kernel]",
        "bpf_trampoline_6442502517+0x86 [bpf]",
        "dev_hard_start_xmit+0x5 [kernel]",
        "sch_direct_xmit+0xa0 [kernel]",
    ]
    assert clean_stack(frames) == [
        "e1000_xmit_frame+0x1 [e1000]",
        "dev_hard_start_xmit+0x63 [kernel]",
        "sch_direct_xmit+0xa0 [kernel]",
    ]


def test_plain_stacks_are_unchanged() -> None:
    frames = ["tcp_v4_rcv+0x1 [kernel]", "ip_protocol_deliver_rcu+0x32 [kernel]"]
    assert clean_stack(frames) == frames
    assert clean_stack([]) == []


def test_recursion_is_not_mistaken_for_an_entry_call() -> None:
    # Without a trampoline in between, the same function twice is real recursion.
    frames = ["f+0x10 [kernel]", "f+0x5 [kernel]", "g+0x1 [kernel]"]
    assert clean_stack(frames) == frames
