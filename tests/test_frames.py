"""Frames open in the kernel at the stop become NO_RETURN records, as the kernel emits them."""

from __future__ import annotations

from types import SimpleNamespace

from skbpath.tracer.record.bpf.frames import (
    PRE_START,
    open_frame_records,
    pre_frames,
    thread_of_key,
)
from skbpath.tracer.traces.events import FLAG_NO_RETURN, unpack_calls


def frame(func: int, entry: int, skb: int = 0, base: int = 0, has_skb: int = 0,
          skip: int = 0, pre: int = 0) -> SimpleNamespace:
    # A frame pushed outside the armed window is skipped too, as the kernel marks it.
    return SimpleNamespace(entry=entry, skb=skb, stack_id=-1, aux=0, func=func, flags=0,
                           has_skb=has_skb or int(bool(skb)), base=base,
                           skip=skip or int(bool(pre)), pre=pre)


def stack(*frames: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(depth=len(frames), overflow=0, f=list(frames))


def test_thread_keys_name_tids_and_idle_cpus() -> None:
    assert thread_of_key(1234) == (1234, 0)
    assert thread_of_key(3 << 24) == (0, 3)


def test_open_frames_go_out_deepest_first_and_empty_ones_are_counted() -> None:
    # A syscall (no skb) blocked in tcp_sendmsg with an skb call open inside;
    # a second thread in a recv that saw no packet; a filtered frame.
    items = [
        (7, stack(frame(1, 100), frame(2, 110), frame(3, 120, skb=0xA))),
        (8, stack(frame(4, 200), frame(5, 210, skip=1))),
        (2 << 24, stack(frame(6, 300, base=0), frame(3, 310, skb=0xB))),
    ]
    blob, opened, empty = open_frame_records(items)
    calls = list(unpack_calls(blob))
    got = [(c[4], c[8], c[10], c[9]) for c in calls]  # tid, func, depth, cpu
    assert got == [(7, 3, 2, 0), (7, 2, 1, 0), (7, 1, 0, 0), (0, 3, 1, 2), (0, 6, 0, 2)]
    assert all(c[11] & FLAG_NO_RETURN and c[1] == 0 for c in calls)
    assert opened == 6  # the filtered frame is not a call
    assert empty == {4: 1}


def test_a_softirq_root_does_not_mark_the_task_it_interrupted() -> None:
    # sock_recvmsg (no skb) interrupted by net_rx_action (a context root at depth 1).
    items = [(9, stack(frame(1, 100), frame(6, 110, base=1), frame(3, 120, skb=0xC, base=1)))]
    blob, _opened, empty = open_frame_records(items)
    assert [c[8] for c in unpack_calls(blob)] == [3, 6]
    assert empty == {1: 1}


def test_calls_begun_before_arming_are_counted_apart_and_not_emitted() -> None:
    # A recv entered before the probes were armed, a call inside it after;
    # a frame pushed after disarming (PRE_STOP) is neither.
    items = [(7, stack(frame(1, 100, pre=PRE_START), frame(3, 120, skb=0xA))),
             (8, stack(frame(4, 200, pre=2)))]
    blob, opened, _empty = open_frame_records(items)
    assert [c[8] for c in unpack_calls(blob)] == [3]
    assert opened == 1
    assert pre_frames(items) == 1


def test_keys_as_bcc_hands_them_out() -> None:
    # bcc's items() gives ctypes keys; int() of one is a ValueError (its bytes).
    import ctypes

    items = [(ctypes.c_ulonglong(7), stack(frame(1, 100), frame(3, 120, skb=0xA))),
             (ctypes.c_ulonglong(2 << 24), stack(frame(3, 310, skb=0xB)))]
    blob, opened, _empty = open_frame_records(items)
    assert [(c[4], c[9]) for c in unpack_calls(blob)] == [(7, 0), (7, 0), (0, 2)]
    assert opened == 3
