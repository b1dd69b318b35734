"""pcap-filter expressions (``tcp port 443 and host 198.18.0.2``), compiled by libpcap.

libpcap itself (Debian's libpcap0.8, through ctypes) compiles the expression
to classic BPF, twice: for DLT_EN10MB, run where the skb has its Ethernet
header, and for DLT_RAW, run where it has only its IP header (or one made up
from its socket).  probes/pcap_filter.h runs the instructions in the BPF
program; they reach it as cflags (``-DPCAP_ETH_PROG=I(0,40,0,0,12) ...``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

from skbpath.tracer.errors import SkbpathError

DLT_EN10MB = 1
DLT_RAW = 12  # pcap/dlt.h: DLT_RAW on Linux (LINKTYPE_RAW is 101)
SNAPLEN = 262144
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
# Past this, the BPF program grows too large to load for every probe.
MAX_INSNS = 512
LIBRARIES = ("pcap", "libpcap.so.0.8", "libpcap.so.1")

Insn = tuple[int, int, int, int]  # code, jt, jf, k


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


_lib: ctypes.CDLL | None = None


def libpcap() -> ctypes.CDLL:
    """libpcap, loaded once; a one-line error naming the package if it is missing."""
    global _lib
    if _lib is None:
        names = [ctypes.util.find_library("pcap"), *LIBRARIES[1:]]
        for name in names:
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            lib.pcap_open_dead.restype = ctypes.c_void_p
            lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.pcap_compile.restype = ctypes.c_int
            lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram),
                                         ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
            lib.pcap_geterr.restype = ctypes.c_char_p
            lib.pcap_geterr.argtypes = [ctypes.c_void_p]
            lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
            lib.pcap_close.argtypes = [ctypes.c_void_p]
            _lib = lib
            break
        else:
            raise SkbpathError("pcap-filter expressions need libpcap: apt-get install libpcap0.8")
    return _lib


def compile_expr(expr: str, linktype: int) -> list[Insn]:
    """The optimised classic BPF program for ``expr`` on ``linktype``.

    Raises SkbpathError with libpcap's own message if it does not compile.
    """
    lib = libpcap()
    handle = lib.pcap_open_dead(linktype, SNAPLEN)
    if not handle:
        raise SkbpathError("libpcap could not open a dead handle")
    prog = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1,
                            PCAP_NETMASK_UNKNOWN) != 0:
            message = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
            raise SkbpathError(f"filter {expr!r}: {message}")
        insns = [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf,
                  prog.bf_insns[i].k) for i in range(prog.bf_len)]
        lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)
    return insns


@dataclass(frozen=True)
class PcapFilter:
    """An expression and its programs; ``raw`` is None if it needs the link layer."""

    expr: str
    eth: tuple[Insn, ...]
    raw: tuple[Insn, ...] | None


def compile_filter(expr: str) -> PcapFilter:
    """Both programs for ``expr``; the Ethernet one must compile (its error is the user's)."""
    if not expr.strip():
        raise SkbpathError("filter: the expression is empty")
    eth = compile_expr(expr, DLT_EN10MB)
    try:
        raw: list[Insn] | None = compile_expr(expr, DLT_RAW)
    except SkbpathError:
        raw = None  # e.g. "ether host ...": only where the skb has its Ethernet header
    for name, prog in (("DLT_EN10MB", eth), ("DLT_RAW", raw or [])):
        if len(prog) > MAX_INSNS:
            raise SkbpathError(f"filter {expr!r}: {len(prog)} BPF instructions for {name}; "
                               f"at most {MAX_INSNS} fit in every probe")
    return PcapFilter(expr, tuple(eth), tuple(raw) if raw is not None else None)


def insn_list(prog: tuple[Insn, ...]) -> str:
    """The X-macro list probes/pcap_filter.h expands: ``I(index, code, jt, jf, k)``."""
    return " ".join(f"I({n},{code},{jt},{jf},{k}U)" for n, (code, jt, jf, k) in enumerate(prog))


def pcap_cflags(flt: PcapFilter) -> list[str]:
    """The cflags that put the filter's programs into the BPF program.

    bcc compiles the program's text as /virtual/main.c: the include path names
    the folder of pcap_filter.h.
    """
    from skbpath.probes.catalog import bpf_source

    flags = [f"-I{os.path.dirname(bpf_source())}", "-DFILTER_PCAP=1",
             f"-DPCAP_ETH_PROG={insn_list(flt.eth)}"]
    if flt.raw is not None:
        flags.append(f"-DPCAP_RAW_PROG={insn_list(flt.raw)}")
    return flags
