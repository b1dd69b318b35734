"""The raw event record shared by the BPF program, the trace file and the model.

The layout mirrors ``struct event`` in probes/skbpath.bpf.c byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

ENTRY = 0
EXIT = 1
FLAG_MATCHED = 1
# On a return: skb and aux carry the call's result, not an skb (tracer/routes.py).
FLAG_RESULT = 2

# ts, skb, tid, tgid, func, kind, flags, cpu, pad, stack_id, aux
EVENT_STRUCT = struct.Struct("<QQIIHBBHHiI")
EVENT_SIZE = EVENT_STRUCT.size
assert EVENT_SIZE == 40


class Event(NamedTuple):
    """One function entry or return, as the kernel reported it."""

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
    """Pack events into their binary layout."""
    pack = EVENT_STRUCT.pack
    return b"".join(pack(*e) for e in events)


def unpack_events(blob: bytes) -> Iterator[tuple[int, ...]]:
    """Decode a batch of packed events; the blob's length must be a multiple of 40."""
    return EVENT_STRUCT.iter_unpack(blob)
