"""tracefs mode, pure: ``trace_pipe`` lines and stacks to hits, hits to events.

Maps the tracepoints skbpath uses to a FuncTable, parses the instance's
``trace_pipe`` text (event lines and ``<stack trace>`` blocks), applies the
user-space filters, and turns each hit into events.  No file system, no
tracefs: the live session is in tracer/record/tracefs/backend.py.

Each tracepoint hit becomes a POINT call record (trace format version 2):
a call of no duration.  The hashed ``skbaddr`` (stable within a boot) is the
skb id, so journeys link ``net_dev_queue`` -> ``net_dev_xmit`` -> ... as in
kprobe mode, only coarser: there are no function bodies, hence no nesting
and no latencies of their own, only the time between stages.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from skbpath.probes.catalog import Tracepoint, load_tracepoints
from skbpath.tracer.kernel.symbols import normalise_frame, strip_tracefs_frames
from skbpath.tracer.record.resolve import Skipped
from skbpath.tracer.traces.events import FLAG_POINT, CallRecord
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

TRACK_MAX = 65536  # skbs tracked for user-space filters, like the kernel's LRU map


# The tracepoint catalog (probes/tracepoints.toml), in path order.
TRACEPOINTS: tuple[Tracepoint, ...] = load_tracepoints()

# Local delivery: after these the skb goes no further down the stack, and TCP
# frees pure ACKs with __kfree_skb, which has no tracepoint.  The address
# turning up again on a device tracepoint is therefore a new skb.
DELIVERED = frozenset({"tcp_probe", "skb_copy_datagram_iovec"})
REUSE_MARKERS = frozenset({"net_dev_queue", "net_dev_start_xmit", "netif_rx",
                           "napi_gro_receive_entry", "netif_receive_skb_entry",
                           "netif_receive_skb", "qdisc_enqueue"})
_GOLDEN = 0x9E3779B97F4A7C15

# "comm-tid (tgid) [cpu] flags ts: event: body"; the tgid column comes from
# the instance's record-tgid option, the flags column from irq-info.
_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<tid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>[-\d]+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?"
    r"(?P<sec>\d+)\.(?P<usec>\d+):\s+"
    r"(?:(?P<stack><stack trace>)|(?P<event>\w+):\s?(?P<body>.*))\s*$"
)
_SKBADDR = re.compile(r"\bskbaddr=(?:0x)?([0-9a-fA-F]+)")
_DEV = re.compile(r"\b(?:dev|name)=(\S+)")
_NAPI_DEV = re.compile(r"\bfor device (\S+)")
_REASON = re.compile(r"\breason: (\w+)")
_SYMBOLIC = re.compile(r'\{\s*(\d+),\s*"(\w+)"\s*\}')


def function_table(available: Iterable[str]) -> tuple[FuncTable, list[Tracepoint], list[Skipped]]:
    """The FuncTable for the tracepoints in ``available`` (``group:event`` names).

    Ids follow :data:`TRACEPOINTS` order; missing tracepoints are returned as skipped.
    """
    have = set(available)
    used: list[Tracepoint] = []
    skipped: list[Skipped] = []
    funcs: list[FuncInfo] = []
    for tp in TRACEPOINTS:
        if tp.name not in have:
            skipped.append(Skipped(tp.name, "no such tracepoint on this kernel"))
            continue
        spec = tp.spec(skb_arg=1 if tp.skb else 0)
        funcs.append(FuncInfo.resolved(spec, len(funcs), (f"{tp.group}/{tp.event}",)))
        used.append(tp)
    return FuncTable(funcs), used, skipped


def drop_reason_codes(format_text: str) -> dict[int, str]:
    """kfree_skb's reason codes and names, from its ``format`` file's __print_symbolic."""
    fmt = next((ln for ln in format_text.splitlines() if ln.startswith("print fmt:")), "")
    return {int(code): name for code, name in _SYMBOLIC.findall(fmt)}


def _bounded_add(d: dict[int, Any], key: int, value: Any = None) -> None:
    """Set ``d[key]``, evicting the oldest key beyond TRACK_MAX (addresses freed unseen)."""
    if key not in d and len(d) >= TRACK_MAX:
        del d[next(iter(d))]
    d[key] = value


@dataclass
class Hit:
    """One parsed tracepoint hit, before it becomes two events."""

    ts: int
    tid: int
    tgid: int
    cpu: int
    comm: str
    func: int
    skb: int
    dev: str | None = None
    aux: int = 0
    frames: list[str] | None = None
    waiting: bool = False  # a stack trace may still follow


@dataclass
class UserFilter:
    """--iface, --pid and --comm, applied in user space.

    As in kprobe mode, an skb that matches once is tracked until it is freed.
    A criterion the event cannot tell (no device name on kfree_skb) fails.
    """

    iface: str | None = None
    pid: int | None = None
    comm: str | None = None
    tracked: dict[int, None] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True when any filter is set."""
        return self.iface is not None or self.pid is not None or self.comm is not None

    def _matches(self, hit: Hit) -> bool:
        if self.iface is not None and hit.dev != self.iface:
            return False
        if self.pid is not None and hit.tgid != self.pid:
            return False
        return self.comm is None or hit.comm == self.comm[:15]

    def keep(self, hit: Hit, frees: bool) -> bool:
        """Whether to record this hit; updates the tracked skbs."""
        if not self.active:
            return True
        if not hit.skb:
            return self._matches(hit)
        tracked = self.tracked
        if hit.skb not in tracked:
            if not self._matches(hit):
                return False
            if len(tracked) >= TRACK_MAX:
                del tracked[next(iter(tracked))]  # oldest first, as an LRU would
            tracked[hit.skb] = None
        if frees:
            del tracked[hit.skb]
        return True


class TracefsParser:
    """Turns ``trace_pipe`` text into hits, in order, with their stacks attached.

    The ``<stack trace>`` block of a triggered event follows it in its CPU's
    buffer, but the merged pipe can put other CPUs' lines in between: a hit
    that may get a stack waits (and holds back the hits after it) until its
    CPU's next line or stack block arrives, or :meth:`release` is called.
    """

    def __init__(self, used: list[Tracepoint], reasons: dict[int, str] | None = None) -> None:
        self.ids = {tp.event: i for i, tp in enumerate(used)}
        self.used = used
        self.reason_codes = {name: code for code, name in (reasons or {}).items()}
        self.new_reasons: dict[int, str] = {}
        self.queue: deque[Hit] = deque()
        self.waiting: dict[int, Hit] = {}  # cpu -> hit that may get a stack
        self.block: Hit | None = None  # the hit whose stack lines are being read
        self.in_block = False
        self.tail = ""  # a line cut by the read size
        self.unparsed = 0
        self.orphan_stacks = 0
        # Addresses past local delivery (False) or freed (True).
        self.delivered: dict[int, bool] = {}
        self.generation: dict[int, int] = {}  # address -> times seen reused

    def feed(self, data: str) -> None:
        """Parse a chunk of pipe text (lines may be cut anywhere)."""
        lines = (self.tail + data).split("\n")
        self.tail = lines.pop()
        for line in lines:
            self.feed_line(line)

    def _end_block(self) -> None:
        if self.block is not None:
            self.block.waiting = False
            self.block = None
        self.in_block = False

    def feed_line(self, line: str) -> None:
        """Parse one whole line."""
        stripped = line.lstrip()
        if stripped.startswith("=>"):
            if self.block is not None and self.block.frames is not None:
                self.block.frames.append(normalise_frame(stripped[2:]))
            return
        self._end_block()
        if not stripped or stripped.startswith("#"):
            return
        m = _LINE.match(line)
        if m is None:
            self.unparsed += 1
            return
        cpu = int(m["cpu"])
        event = m["event"]
        if m["stack"]:
            self.in_block = True
            self.block = self.waiting.pop(cpu, None)
            if self.block is None:
                self.orphan_stacks += 1
            else:
                self.block.frames = []
            return
        prev = self.waiting.pop(cpu, None)
        if prev is not None:
            prev.waiting = False  # its CPU moved on: no stack is coming
        func = self.ids.get(event)
        if func is None:
            return  # not ours (the instance only has our events, but be safe)
        tp = self.used[func]
        body = m["body"]
        tgid = m["tgid"]
        hit = Hit(
            ts=int(m["sec"]) * 1_000_000_000 + int(m["usec"].ljust(6, "0")[:6]) * 1000,
            tid=int(m["tid"]),
            tgid=int(tgid) if tgid and tgid.lstrip("-").isdigit() and int(tgid) > 0 else 0,
            cpu=cpu,
            comm=m["comm"].strip(),
            func=func,
            skb=0,
        )
        if tp.skb:
            sm = _SKBADDR.search(body)
            hit.skb = self._skb_id(int(sm[1], 16), tp) if sm else 0
        dm = (_NAPI_DEV if tp.event == "napi_poll" else _DEV).search(body)
        hit.dev = dm[1] if dm else None
        if tp.drop:
            rm = _REASON.search(body)
            if rm:
                hit.aux = self._reason_code(rm[1])
        if tp.stack:
            hit.waiting = True
            self.waiting[cpu] = hit
        self.queue.append(hit)

    def _skb_id(self, addr: int, tp: Tracepoint) -> int:
        """The skb id: the address, told apart from earlier skbs at the same address."""
        if not addr:
            return 0
        gen = self.generation.get(addr, 0)
        dead = self.delivered.get(addr)
        # After a free any event is a new skb; after local delivery, a device event.
        if dead is not None and (dead or tp.event in REUSE_MARKERS):
            del self.delivered[addr]
            gen += 1
            _bounded_add(self.generation, addr, gen)
        skb = addr if not gen else (addr ^ (gen * _GOLDEN)) & 0xFFFFFFFFFFFFFFFF
        if tp.frees:
            _bounded_add(self.delivered, addr, True)
        elif tp.event in DELIVERED:
            _bounded_add(self.delivered, addr, False)
        return skb

    def _reason_code(self, name: str) -> int:
        code = self.reason_codes.get(name)
        if code is None:
            # Not in the format file's table: give it a code of our own.
            code = max([*self.reason_codes.values(), 0xFFFF]) + 1
            self.reason_codes[name] = code
            self.new_reasons[code] = name
        return code

    def release(self) -> None:
        """Stop waiting for stacks: nothing more is coming for now."""
        self._end_block()
        for hit in self.waiting.values():
            hit.waiting = False
        self.waiting.clear()

    def take(self) -> list[Hit]:
        """The hits that are complete, in pipe order."""
        out: list[Hit] = []
        q = self.queue
        while q and not q[0].waiting:
            out.append(q.popleft())
        return out


class StackIds:
    """Assigns an id to each distinct stack, and remembers which are not written yet."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, ...], int] = {}
        self.new: dict[int, list[str]] = {}

    def get(self, frames: list[str] | None) -> int:
        """The stack id of these frames (-1 for none), tracing frames removed."""
        if not frames:
            return -1
        key = tuple(strip_tracefs_frames(frames))
        sid = self.ids.get(key)
        if sid is None:
            sid = self.ids[key] = len(self.ids)
            self.new[sid] = list(key)
        return sid

    def take_new(self) -> dict[int, list[str]]:
        """Stacks assigned since the last call."""
        new, self.new = self.new, {}
        return new


def hits_to_calls(hits: Iterable[Hit], stacks: StackIds, flags: int = 0) -> list[CallRecord]:
    """Each hit as a POINT call record: a call of no duration, at depth 0."""
    flags |= FLAG_POINT
    return [
        CallRecord(entry=h.ts, duration=0, skb=h.skb, tid=h.tid, tgid=h.tgid, aux=h.aux,
                   stack_id=stacks.get(h.frames), func=h.func, cpu=h.cpu, flags=flags)
        for h in hits
    ]
