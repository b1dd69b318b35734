"""Reading the kernel stacks the BPF programs stored (``stacks`` in probes/skbpath.bpf.c).

Each value holds the frame count and a fixed array of addresses: only the
first ``nr`` are the stack, the rest is whatever the walk left there.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest
from skbpath.tracer.record.bpf import backend
from skbpath.tracer.traces.events import CALL_DTYPE

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
        self.named: list[int] = []  # the addresses ksym named, in order

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
        self.named.append(addr)
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
    me.frame_names = {}
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


def _rows(stack_ids: list[int], tgids: list[int] | None = None) -> Any:
    rows = np.zeros(len(stack_ids), dtype=CALL_DTYPE)
    rows["stack_id"] = stack_ids
    rows["tgid"] = tgids if tgids is not None else 0  # 0: no task to name
    return rows.view(np.uint8).reshape(len(stack_ids), CALL_DTYPE.itemsize)


def test_while_tracing_only_the_stacks_the_records_name_are_read() -> None:
    table = {7: _stack([0x20, 0x30]), 9: _stack([0x30, 0x40]), 11: _stack([0x40])}
    me = _backend(table)
    me.detached = False
    me.tasks = set()
    me.new_tasks = {}
    me.tgid_seen = np.zeros(backend.PID_LIMIT, dtype=bool)
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


def test_each_address_is_named_once() -> None:
    me = _backend({7: _stack([0x20, 0x30, 0x40]), 9: _stack([0x30, 0x40])})
    got = me._new_stacks()
    assert got[9] == ["dev_hard_start_xmit+0x9d", "__dev_queue_xmit+0x2a0"]
    assert sorted(me.bpf.named) == [0x20, 0x30, 0x40]


def test_a_module_loaded_names_the_addresses_again() -> None:
    # A module that came since the last read may own addresses named before
    # (as the symbol below them): the names are dropped with bcc's cache.
    table = {7: _stack([0x20, 0x30])}
    me = _backend(table)
    me._new_stacks()
    me.modules = frozenset({("nf_tables", "0xffffffffc0000000")})  # not what is loaded now
    table[9] = _stack([0x20])
    assert me._new_stacks() == {9: ["e1000_xmit_frame+0x0 [e1000]"]}
    assert me.bpf.named == [0x20, 0x30, 0x20]


def test_each_process_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    named: list[int] = []

    def task_name(tgid: int) -> str:
        named.append(tgid)
        return f"t{tgid}"

    monkeypatch.setattr(backend, "task_name", task_name)
    me = _backend({})
    me.detached = False
    me.tasks = set()
    me.new_tasks = {}
    me.tgid_seen = np.zeros(backend.PID_LIMIT, dtype=bool)
    big = backend.PID_LIMIT + 5  # past the table: looked up in the set every time
    me._note_rows(_rows([-1] * 5, [42, 0, 42, 7, big]))
    me._note_rows(_rows([-1] * 3, [7, 42, big]))
    me._note_rows(_rows([-1] * 2, [9, 9]))
    assert named == [7, 42, big, 9]
    assert me.new_tasks == {7: "t7", 42: "t42", big: f"t{big}", 9: "t9"}
