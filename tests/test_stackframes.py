"""Kernel stacks from fentry programs, cleaned of BPF frames (stacks seen in the lab)."""

from __future__ import annotations

from tracer.stackframes import clean_stack, frame_function


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
    assert frame_function("dev_hard_start_xmit+0x63/0x1d0 [kernel]") == "dev_hard_start_xmit"
