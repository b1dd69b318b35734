"""The kernel's per-program miss counts (``bpf_prog_info.recursion_misses``).

A BPF program that the kernel does not run because a BPF program is already
running on that CPU loses its event without a trace in skbpath's own
counters: a trampoline program re-entered (a softirq on top of it calls the
same function), or a kprobe program hit while another kprobe program runs
(``bpf_prog_active``).  The kernel counts each such skip per program; this
module reads the counts through ``BPF_OBJ_GET_INFO_BY_FD`` (kernels without
the field, before 5.12, leave it zero).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterable

BPF_OBJ_GET_INFO_BY_FD = 15
# The bpf(2) syscall's number by machine; elsewhere the counts read as zero.
NR_BPF = {"x86_64": 321, "aarch64": 280}

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64


class BpfProgInfo(ctypes.Structure):
    """``struct bpf_prog_info`` of include/uapi/linux/bpf.h, up to ``recursion_misses``.

    The kernel fills only as many bytes as the caller says it has, so the
    fields after the last one read here are left out.
    """

    _fields_ = [
        ("type", u32), ("id", u32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", u32), ("xlated_prog_len", u32),
        ("jited_prog_insns", u64), ("xlated_prog_insns", u64), ("load_time", u64),
        ("created_by_uid", u32), ("nr_map_ids", u32), ("map_ids", u64),
        ("name", ctypes.c_char * 16), ("ifindex", u32), ("gpl_compatible", u32),
        ("netns_dev", u64), ("netns_ino", u64),
        ("nr_jited_ksyms", u32), ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64), ("jited_func_lens", u64),
        ("btf_id", u32), ("func_info_rec_size", u32), ("func_info", u64),
        ("nr_func_info", u32), ("nr_line_info", u32), ("line_info", u64),
        ("jited_line_info", u64), ("nr_jited_line_info", u32), ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32), ("nr_prog_tags", u32), ("prog_tags", u64),
        ("run_time_ns", u64), ("run_cnt", u64), ("recursion_misses", u64),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    # Once: find_library runs ldconfig in a subprocess, and the tracer reads
    # every program's counts every two seconds.  Under TCG, looking libc up
    # per program kept the tracer busy for 10 s of every 2, and its ring
    # buffer filled up unread.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def prog_info(fd: int) -> BpfProgInfo:
    """The kernel's ``bpf_prog_info`` of the program behind ``fd`` (OSError if it fails)."""
    nr = NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(f"bpf(2) is not known on {os.uname().machine}")
    info = BpfProgInfo()
    attr = _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    ret = _libc().syscall(ctypes.c_long(nr), ctypes.c_int(BPF_OBJ_GET_INFO_BY_FD),
                       ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return info


def misses_by_program(progs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Recursion misses per program (name, fd), the programs with any only."""
    out: dict[str, int] = {}
    for name, fd in progs:
        try:
            n = int(prog_info(fd).recursion_misses)
        except OSError:
            continue
        if n:
            out[name] = out.get(name, 0) + n
    return out
