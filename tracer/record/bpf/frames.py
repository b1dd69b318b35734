"""Calls still open in the kernel when a trace stops, as NO_RETURN records.

The BPF programs keep each thread's open calls in the ``frame_stacks`` map
(probes/skbpath.bpf.c).  Once the probes are detached, what is left there
never returned within the trace: it goes out like a kretprobe miss, flagged
NO_RETURN, deepest first, as the kernel would have emitted it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from skbpath.tracer.record.cflags import FRAME_DEPTH
from skbpath.tracer.traces.events import FLAG_NO_RETURN, CallRecord, pack_calls

# struct frames in probes/skbpath.bpf.c holds this many (the cflags set it).
MAX_DEPTH = FRAME_DEPTH
PRE_START = 1  # struct frame's pre: the call began before the probes were armed


def thread_of_key(key: int) -> tuple[int, int]:
    """(tid, cpu) from a thread_key(): the tid, or an idle task's CPU shifted by 24."""
    if key >> 24 and not key & 0xFFFFFF:
        return 0, key >> 24
    return key, 0


def open_frames(items: Iterable[tuple[Any, Any]]
                ) -> Iterator[tuple[int, int, Any, int, Any, bool]]:
    """The open frames of ``frame_stacks`` items (key, struct frames), deepest first.

    Yields (tid, cpu, frames, depth, frame, keep) for each frame the filter
    did not skip and that began while the probes were armed; ``keep`` is the
    kernel's rule at a return: the frame had an skb call in it (an skb call
    marks its parent, a context root does not).
    """
    for key, fs in items:
        # bcc hands keys out as ctypes integers, which int() would read as a
        # buffer of digits: their value.
        tid, cpu = thread_of_key(int(getattr(key, "value", key)))
        depth = min(int(fs.depth), MAX_DEPTH)
        has_skb = False
        for i in range(depth - 1, -1, -1):
            f = fs.f[i]
            if f.skip:
                continue
            keep = bool(f.has_skb) or has_skb
            has_skb = keep and int(f.base) != i
            yield tid, cpu, fs, i, f, keep


def kept_open_frames(items: Iterable[tuple[Any, Any]]
                     ) -> tuple[list[tuple[int, int, Any, int, Any]], int, dict[int, int]]:
    """The open frames the kernel would have kept, (tid, cpu, frames, depth, frame) each,
    with how many frames were open, and the per-function counts of those with no skb
    call in them (empty calls, which the kernel only counts)."""
    kept = []
    opened = 0
    empty: dict[int, int] = {}
    for tid, cpu, fs, i, f, keep in open_frames(items):
        opened += 1
        if keep:
            kept.append((tid, cpu, fs, i, f))
        else:
            empty[int(f.func)] = empty.get(int(f.func), 0) + 1
    return kept, opened, empty


def open_frame_records(items: Iterable[tuple[Any, Any]]) -> tuple[bytes, int, dict[int, int]]:
    """Records for the frames left in ``frame_stacks`` items (key, struct frames).

    Returns the packed NO_RETURN records, how many frames were open, and the
    per-function counts of open frames with no skb call in them (not emitted,
    as the kernel counts empty calls).
    """
    kept, opened, empty = kept_open_frames(items)
    out: list[CallRecord] = []
    for tid, cpu, _fs, i, f in kept:
        out.append(CallRecord(
            entry=int(f.entry), duration=0, skb=int(f.skb), tid=tid, aux=int(f.aux),
            stack_id=int(f.stack_id), func=int(f.func), cpu=cpu, depth=i,
            flags=int(f.flags) | FLAG_NO_RETURN, base=int(f.base)))
    return pack_calls(out), opened, empty


def pre_frames(items: Iterable[tuple[Any, Any]]) -> int:
    """How many open frames of ``frame_stacks`` items began before the probes were armed."""
    return sum(1 for _key, fs in items for i in range(min(int(fs.depth), MAX_DEPTH))
               if int(getattr(fs.f[i], "pre", 0)) == PRE_START)
