"""Routes: what fib_table_lookup returned, carried in its return event.

A catalog entry with ``result = "route"`` (fib_table_lookup) has its return
event flagged ``FLAG_RESULT``: instead of an skb, the event's ``skb`` field
carries the route found and ``aux`` the output interface's ifindex.  The
word is packed by probes/skbpath.bpf.c as:

====  ======  ==================================================
bits  field   meaning
====  ======  ==================================================
0-31  prefix  the matched prefix, as the kernel stores it (big endian)
32-39 plen    prefix length
40-46 type    route type (RTN_UNICAST, RTN_LOCAL, ...)
47    elsewhere  the output device is in another network namespace than
              the tracer's, so its ifindex cannot be named
48-63 table   FIB table id (low 16 bits; main is 254, local 255)
====  ======  ==================================================

A lookup that found no route has no result.  Table and type names are the
kernel's uapi constants (linux/rtnetlink.h), which do not change.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass

from skbpath.tracer.model.calls import Call
from skbpath.tracer.traces.functions import FuncTable

RESULT_ROUTE = "route"
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}
TYPE_NAMES = {
    1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
    6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat",
}


@dataclass(frozen=True, order=True)
class Route:
    """One FIB lookup result."""

    prefix: str
    plen: int
    rtype: int
    table: int
    oif: int
    elsewhere: bool = False

    def text(self, interfaces: dict[int, str] | None = None) -> str:
        """``198.18.0.128/25 table main unicast dev skbfwd0``."""
        table = TABLE_NAMES.get(self.table, str(self.table))
        rtype = TYPE_NAMES.get(self.rtype, f"type {self.rtype}")
        dev = ""
        if self.oif:
            name = None if self.elsewhere else (interfaces or {}).get(self.oif)
            dev = f" dev {name}" if name else f" ifindex {self.oif}"
            if self.elsewhere:
                dev += " in another netns"
        return f"{self.prefix}/{self.plen} table {table} {rtype}{dev}"


def pack_route(prefix: str, plen: int, rtype: int, table: int, elsewhere: bool = False) -> int:
    """The result word for a route (what the BPF program writes; for tests)."""
    raw: int = struct.unpack("<I", ipaddress.IPv4Address(prefix).packed)[0]
    return raw | plen << 32 | rtype << 40 | int(elsewhere) << 47 | (table & 0xFFFF) << 48


def decode_route(word: int, oif: int) -> Route:
    """A :class:`Route` from a return event's result word and ifindex."""
    prefix = ipaddress.IPv4Address(struct.pack("<I", word & 0xFFFFFFFF))
    return Route(str(prefix), (word >> 32) & 0xFF, (word >> 40) & 0x7F, word >> 48, oif,
                 bool(word >> 47 & 1))


class RouteCounter:
    """Counts the routes returned by ``result = "route"`` functions in closed roots."""

    def __init__(self, funcs: FuncTable) -> None:
        self.route_funcs = {f.id for f in funcs.funcs if f.result == RESULT_ROUTE}
        self.counts: Counter[Route] = Counter()

    def add_root(self, root: Call) -> None:
        """Count the routes found in one closed root call tree."""
        if not self.route_funcs:
            return
        for c in root.walk():
            if c.result is not None and c.func in self.route_funcs:
                self.counts[decode_route(*c.result)] += 1


def return_name(func: int, value: int, names: dict[int, dict[int, str]] | None) -> str:
    """A recorded return value by the kernel's name for it (``GRO_MERGED_FREE``), else its number.

    ``names`` maps function ids to their return enum's values (the trace
    header's ``return_names``, read from BTF when it was recorded).
    """
    name = (names or {}).get(func, {}).get(value)
    return name if name is not None else str(value if value < 1 << 31 else value - (1 << 32))
