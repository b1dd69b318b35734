"""Reading the kernel stacks the BPF programs stored (``stacks`` in probes/skbpath.bpf.c).

Each value holds the frame count and a fixed array of addresses: only the
first ``nr`` are the stack, the rest is whatever the walk left there.
"""

from __future__ import annotations

import ctypes
from typing import Any

from skbpath.tracer.record.bpf import backend

DEPTH = 127


class Stack(ctypes.Structure):
    """struct stack as the BPF C declares it."""

    _fields_ = [("hash", ctypes.c_uint64), ("nr", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("ip", ctypes.c_uint64 * DEPTH)]


SYMS = {0x10: "bpf_prog_abc_kprobe__x+0x4", 0x20: "e1000_xmit_frame+0x0 [e1000]",
        0x30: "dev_hard_start_xmit+0x9d", 0x40: "__dev_queue_xmit+0x2a0", 0xdead: "stale+0x1"}


class FakeBpf:
    """bcc's BPF object as _new_stacks uses it: one table and ksym."""

    def __init__(self, table: dict[int, Stack]) -> None:
        self.table = table
        self.reads: list[int] = []  # the ids looked up, in order

    def __getitem__(self, name: str) -> Any:
        assert name == "stacks"
        table, reads = self.table, self.reads

        class Table:
            Key = ctypes.c_uint32

            def keys(self) -> list[ctypes.c_uint32]:
                return [ctypes.c_uint32(k) for k in table]

            def __getitem__(self, key: ctypes.c_uint32) -> Stack:
                reads.append(key.value)
                return table[key.value]

        return Table()

    def ksym(self, addr: int, show_module: bool = False, show_offset: bool = False) -> bytes:
        return SYMS.get(addr, f"0x{addr:x}").encode()


def _stack(addrs: list[int], junk: int = 0) -> Stack:
    s = Stack(hash=1, nr=len(addrs))
    for i, a in enumerate(addrs):
        s.ip[i] = a
    for i in range(len(addrs), DEPTH):
        s.ip[i] = junk
    return s


def _backend(table: dict[int, Stack]) -> backend.BccBackend:
    me = object.__new__(backend.BccBackend)
    me.bpf = FakeBpf(table)
    me.stacks_written = set()
    me.stacks_wanted = set()
    me.detached = True  # walks the whole map, as the last flush does
    me.attach_mode = "fentry"
    me.modules = backend.modules_loaded()
    return me


def test_only_the_stored_frames_are_read_and_bpf_frames_dropped() -> None:
    me = _backend({7: _stack([0x10, 0x20, 0x30, 0x40], junk=0xdead)})
    assert me._new_stacks() == {7: ["e1000_xmit_frame+0x0 [e1000]", "dev_hard_start_xmit+0x9d",
                                    "__dev_queue_xmit+0x2a0"]}


def test_each_stack_is_handed_over_once() -> None:
    table = {7: _stack([0x20, 0x30])}
    me = _backend(table)
    assert list(me._new_stacks()) == [7]
    table[9] = _stack([0x30, 0x40])
    assert me._new_stacks() == {9: ["dev_hard_start_xmit+0x9d", "__dev_queue_xmit+0x2a0"]}
    assert me._new_stacks() == {}


def test_a_frame_count_past_the_array_reads_the_array() -> None:
    s = _stack([0x30] * DEPTH)
    s.nr = 1000  # never from the kernel; a bad value must not index past the array
    assert len(_backend({3: s})._new_stacks()[3]) == DEPTH


def _rows(stack_ids: list[int]) -> Any:
    import numpy as np
    from skbpath.tracer.traces.events import CALL_DTYPE

    rows = np.zeros(len(stack_ids), dtype=CALL_DTYPE)
    rows["stack_id"] = stack_ids
    rows["tgid"] = 0  # no task to name
    return rows.view(np.uint8).reshape(len(stack_ids), CALL_DTYPE.itemsize)


def test_while_tracing_only_the_stacks_the_records_name_are_read() -> None:
    table = {7: _stack([0x20, 0x30]), 9: _stack([0x30, 0x40]), 11: _stack([0x40])}
    me = _backend(table)
    me.detached = False
    me.tasks = set()
    me.new_tasks = {}
    me._note_rows(_rows([9, -1, 9]))  # -1: no stack taken for that call
    reads = me.bpf.reads
    reads.clear()
    assert me._new_stacks() == {9: ["dev_hard_start_xmit+0x9d", "__dev_queue_xmit+0x2a0"]}
    assert reads == [9]  # not 7 nor 11: the map is not walked
    me._note_rows(_rows([9, 7]))
    assert list(me._new_stacks()) == [7]  # 9 was handed over already
    assert me._new_stacks() == {}
    # Detached, the whole map once: 11, which no record named.
    me.detached = True
    assert list(me._new_stacks()) == [11]
