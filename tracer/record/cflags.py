"""Configure the BPF C program through cflags (never by templating its text)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

RINGBUF_PAGES = 1024  # 4 MiB; live traces size it for the machine (ringbuf_pages)
PAGE_SIZE = 4096
STACK_ENTRIES = 16384
# Call paths the aggregation map holds (--aggregate); real traffic has hundreds.
AGG_PATHS = 8192
FRAME_THREADS = 4096  # threads inside a traced call at once (each holds a 2 KiB frame stack)
# Nested traced calls per thread (a power of two).  A TCP send whose transmit
# runs the receive softirq on its way out, which sends an ACK, nests past 32:
# the lab's mixed traffic overflowed 32 frames 481 times.
FRAME_DEPTH = 64
TRACK_ENTRIES = 65536
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass(frozen=True)
class Filters:
    """What to trace; empty fields mean no filter."""

    pid: int | None = None
    comm: str | None = None
    iface: str | None = None
    ifindex: int | None = None
    proto: str | None = None
    port: int | None = None
    host: str | None = None
    # A pcap-filter expression (tracer/record/pcap.py compiles it).
    expr: str | None = None

    def active(self) -> dict[str, Any]:
        """The filters that are set, for the trace header."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _comm_words(comm: str) -> tuple[int, int]:
    raw = comm.encode()[:15].ljust(16, b"\0")
    lo, hi = struct.unpack("<QQ", raw)
    return lo, hi


def probe_list(funcs: FuncTable, fentry: Mapping[int, str] | None = None) -> str:
    """The X-macro list: ``P(id, skb argument, deref, stack, aux argument, frees)``.

    With ``fentry`` (ids attached by trampoline -> symbol), only the functions
    that still need a kprobe: no trampoline, or a symbol (a clone) beside it.
    """
    return " ".join(
        f"P({f.id},{f.skb_arg},{int(f.skb_deref)},{int(f.stack)},{f.aux_arg},{int(f.frees)})"
        for f in funcs.funcs if fentry is None or needs_kprobe(f, fentry)
    )


def needs_kprobe(f: FuncInfo, fentry: Mapping[int, str]) -> bool:
    """Whether function ``f`` has a symbol that fentry mode attaches by kprobe."""
    sym = fentry.get(f.id)
    return sym is None or any(s != sym for s in (f.symbols or (f.name,)))


def context_list(funcs: FuncTable) -> str:
    """The softirq entry points' X-macro list: ``C(id)`` per catalog ``context`` function."""
    return " ".join(f"C({f.id})" for f in funcs.funcs if f.context)


def fentry_list(funcs: FuncTable, fentry: Mapping[int, str]) -> str:
    """The fentry X-macro list: ``F(id, symbol, skb argument, deref, stack, aux, frees)``.

    ``fentry`` maps the function ids attached by trampoline to their symbol.
    """
    out = []
    for f in funcs.funcs:
        sym = fentry.get(f.id)
        if sym is None:
            continue
        if not sym.isidentifier():
            raise SkbpathError(f"{sym!r} cannot be attached by fentry (not a C identifier)")
        out.append(f"F({f.id},{sym},{f.skb_arg},{int(f.skb_deref)},{int(f.stack)},"
                   f"{f.aux_arg},{int(f.frees)})")
    return " ".join(out)


def retval_list(funcs: FuncTable, nargs: Mapping[int, int] | None = None) -> str:
    """``R(id, argument count)`` per function whose return value is recorded (catalog result gro).

    The count matters only to an fexit program (0 where the function is on a kprobe).
    """
    return " ".join(f"R({f.id},{(nargs or {}).get(f.id, 0)})"
                    for f in funcs.funcs if f.result and f.result != "route")


def tracepoint_list(funcs: FuncTable) -> str:
    """The raw tracepoint X-macro list: ``T(id, event, skb argument, aux, stack, frees)``.

    For tracepoint mode's table (tracer/record/rawtp.py): ``symbols[0]`` is the event.
    """
    out = []
    for f in funcs.funcs:
        event = f.symbols[0] if f.symbols else ""
        if not event.isidentifier():
            raise SkbpathError(f"{f.name}: {event!r} is not a raw tracepoint name")
        out.append(f"T({f.id},{event},{f.skb_arg},{f.aux_arg},{int(f.stack)},{int(f.frees)})")
    return " ".join(out)


def build_cflags(
    funcs: FuncTable, filters: Filters, attach: str = "kprobe",
    fentry: Mapping[int, str] | None = None, netns: int | None = None,
    ringbuf_pages: int = RINGBUF_PAGES, nargs: Mapping[int, int] | None = None,
    aggregate: bool = False,
) -> list[str]:
    """The cflags that configure probes/skbpath.bpf.c for these functions and filters.

    ``attach`` is kprobe, fentry or tracepoint.  In fentry mode ``fentry``
    names the ids and symbols attached by trampoline; only the others (clones,
    module functions, ...) get kprobe programs.  Compiling both for every
    function doubled bcc's compile, minutes under emulation; a trampoline that
    fails to attach makes the recorder compile again with a kprobe for it.  ``netns``
    is the tracer's network namespace inode (:func:`own_netns`), which routes
    are compared with.  ``ringbuf_pages`` sizes the ring buffer (a power of
    two: :func:`ringbuf_pages`).  ``nargs`` gives the argument counts of
    the fentry functions (:class:`~.attach.FentryPlan`), for the fexit of a
    function whose return value is recorded.  ``aggregate`` keeps calls in
    the kernel, per call path (``--aggregate``; kprobe and fentry only).
    """
    if not funcs.funcs:
        raise SkbpathError("no function of the catalog could be resolved on this kernel")
    if attach == "tracepoint":
        lists = [f"-DSKBPATH_TRACEPOINTS={tracepoint_list(funcs)}"]
    elif attach in ("kprobe", "fentry"):
        lists = [f"-DSKBPATH_PROBES={probe_list(funcs, fentry if attach == 'fentry' else None)}"]
        if attach == "fentry" and fentry:
            lists.append(f"-DSKBPATH_FENTRY={fentry_list(funcs, fentry)}")
        if context_list(funcs):
            lists.append(f"-DSKBPATH_CONTEXT={context_list(funcs)}")
        gso = " ".join(f"G({f.id})" for f in funcs.funcs if f.gso_segs)
        if gso:
            lists.append(f"-DSKBPATH_GSO={gso}")
        if retval_list(funcs, nargs):
            lists.append(f"-DSKBPATH_RETVAL={retval_list(funcs, nargs)}")
    else:
        raise SkbpathError(f"--attach {attach} loads no BPF program")
    if aggregate:
        if attach == "tracepoint":
            raise SkbpathError("--aggregate needs calls with durations: --attach fentry or kprobe")
        lists += ["-DSKBPATH_AGGREGATE", f"-DAGG_PATHS={AGG_PATHS}"]
    if attach != "tracepoint":
        # The FIB lookup's return carries its route (tracer/model/routes.py).
        route = [f"-DROUTE_FUNC_ID={f.id}" for f in funcs.funcs if f.result == "route"][:1]
        if route and netns is not None:
            route.append(f"-DTRACER_NETNS={netns}U")
        lists += route
    flags = [
        *lists,
        f"-DRINGBUF_PAGES={ringbuf_pages}",
        f"-DSTACK_ENTRIES={STACK_ENTRIES}",
        f"-DTRACK_ENTRIES={TRACK_ENTRIES}",
        f"-DFRAME_THREADS={FRAME_THREADS}",
        f"-DMAX_DEPTH={FRAME_DEPTH}",
    ]
    if filters.ifindex is not None:
        flags.append(f"-DFILTER_IFINDEX={filters.ifindex}")
    if filters.proto is not None:
        if filters.proto not in PROTOS:
            raise SkbpathError(f"--proto must be one of {sorted(PROTOS)}")
        flags.append(f"-DFILTER_PROTO={PROTOS[filters.proto]}")
    if filters.port is not None:
        if not 0 < filters.port < 65536:
            raise SkbpathError(f"--port {filters.port} is not a port number")
        flags.append(f"-DFILTER_PORT={filters.port}")
    if filters.host is not None:
        try:
            addr = ipaddress.IPv4Address(filters.host)
        except ValueError as exc:
            raise SkbpathError(f"--host {filters.host!r} is not an IPv4 address") from exc
        # The kernel holds addresses in network order; as a u32 read on x86.
        flags.append(f"-DFILTER_HOST={struct.unpack('<I', addr.packed)[0]}U")
    if filters.expr is not None:
        from skbpath.tracer.record.pcap import compile_filter, pcap_cflags

        flags += pcap_cflags(compile_filter(filters.expr))
    if filters.pid is not None:
        flags.append(f"-DFILTER_TGID={filters.pid}")
    if filters.comm is not None:
        lo, hi = _comm_words(filters.comm)
        flags += [f"-DFILTER_COMM0={lo}ULL", f"-DFILTER_COMM1={hi}ULL"]
    return flags


def ringbuf_pages(total_bytes: int) -> int:
    """Pages for a ring buffer of at least ``total_bytes`` (the kernel wants a power of two)."""
    pages = max(1, -(-total_bytes // PAGE_SIZE))
    return 1 << (pages - 1).bit_length()


def own_netns() -> int | None:
    """The inode of this process's network namespace, or None if it cannot be read."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None
