"""The raw records shared by the BPF program, the trace file and the model.

Version 2 traces hold one 56-byte CALL record per traced call, written by the
kernel at the call's return (``struct call`` in probes/skbpath.bpf.c, byte
for byte).  Version 1 traces hold 40-byte ENTRY/EXIT events (``Event``),
still read and paired in user space (tracer/model/pairing.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

ENTRY = 0
EXIT = 1
FLAG_MATCHED = 1
# The call's result travels in the record (v2: result and aux; v1: the EXIT's skb and aux).
FLAG_RESULT = 2
FLAG_NO_RETURN = 4  # v2: the entry's return never came (closed by an outer return or the end)
FLAG_POINT = 8  # v2: a tracepoint hit, no duration
FLAG_RETVAL = 16  # v2: result is the call's return value (catalog result "gro")

# -- version 1: one event per entry and one per return -----------------------
# ts, skb, tid, tgid, func, kind, flags, cpu, pad, stack_id, aux
EVENT_STRUCT = struct.Struct("<QQIIHBBHHiI")
EVENT_SIZE = EVENT_STRUCT.size
assert EVENT_SIZE == 40


class Event(NamedTuple):
    """One function entry or return, as a version 1 trace stores it."""

    ts: int
    skb: int
    tid: int
    tgid: int
    func: int
    kind: int
    flags: int
    cpu: int
    pad: int = 0
    stack_id: int = -1
    aux: int = 0  # an integer argument, e.g. kfree_skb_reason's drop reason


def pack_events(events: list[Event] | list[tuple[int, ...]]) -> bytes:
    """Pack version 1 events into their binary layout."""
    pack = EVENT_STRUCT.pack
    return b"".join(pack(*e) for e in events)


def unpack_events(blob: bytes) -> Iterator[tuple[int, ...]]:
    """Decode a batch of packed v1 events; the blob's length must be a multiple of 40."""
    return EVENT_STRUCT.iter_unpack(blob)


# -- version 2: one record per call ------------------------------------------
# entry, duration, skb, result, tid, tgid, aux, stack_id, func, cpu, depth, flags, base, pad
CALL_STRUCT = struct.Struct("<QQQQIIIiHHBBBB")
CALL_SIZE = CALL_STRUCT.size
assert CALL_SIZE == 56
# The same layout for bulk parsing (a ring buffer's pages, a trace's batches).
CALL_DTYPE = np.dtype([
    ("entry", "<u8"), ("duration", "<u8"), ("skb", "<u8"), ("result", "<u8"),
    ("tid", "<u4"), ("tgid", "<u4"), ("aux", "<u4"), ("stack_id", "<i4"),
    ("func", "<u2"), ("cpu", "<u2"), ("depth", "u1"), ("flags", "u1"), ("base", "u1"),
    ("pad", "u1"),
])
assert CALL_DTYPE.itemsize == CALL_SIZE


class CallRecord(NamedTuple):
    """One traced call, as the kernel reports it at the return (trace version 2)."""

    entry: int
    duration: int  # 0 for a point or a call whose return never came
    skb: int
    result: int = 0  # with FLAG_RESULT: what the return carried (e.g. a route word)
    tid: int = 0
    tgid: int = 0
    aux: int = 0  # the catalog's integer argument, or the result's second word
    stack_id: int = -1
    func: int = 0
    cpu: int = 0
    depth: int = 0  # frames below it on the thread's stack at entry
    flags: int = 0
    # Depth of the frame that began the call's context: a softirq root's own
    # depth for the calls in that softirq, 0 in task context.
    base: int = 0
    pad: int = 0


def pack_calls(calls: Iterable[CallRecord] | Iterable[tuple[int, ...]]) -> bytes:
    """Pack version 2 call records into their binary layout."""
    pack = CALL_STRUCT.pack
    return b"".join(pack(*c) for c in calls)


def unpack_calls(blob: bytes) -> Iterator[tuple[int, ...]]:
    """Decode a batch of packed v2 calls (tuples in :class:`CallRecord` order)."""
    return CALL_STRUCT.iter_unpack(blob)


def calls_array(blob: bytes) -> np.ndarray:
    """A batch of packed v2 calls as a numpy structured array (no copy)."""
    return np.frombuffer(blob, dtype=CALL_DTYPE)
