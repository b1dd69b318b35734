"""The path atlas: each kernel function's layer, source file and one-line summary.

The atlas is data, ``probes/atlas.toml``, beside the probe catalog.  It lets
every view explain the functions a trace passed through (``skbpath explain``,
tooltips in the SVGs, ``replay --explain``) without a kernel or its sources.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from skbpath.probes.catalog import LAYERS as CATALOG_LAYERS
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.symbols import base_name
from skbpath.tracer.traces.functions import FuncTable

# The catalog's layers plus "syscall": system call entry points are not
# probed, but the atlas explains them.
LAYERS: tuple[str, ...] = (*CATALOG_LAYERS, "syscall")
MAX_SUMMARY = 300
NOT_IN_ATLAS = "not in the atlas"

# A kernel source path: relative, made of plain path components, ending in .c or .h.
_PATH_RE = re.compile(r"^(?:[A-Za-z0-9_.+-]+/)+[A-Za-z0-9_.+-]+\.[ch]$")
# A C function name, or a tracepoint as group:event (tracepoint and tracefs modes).
_NAME_RE = re.compile(r"^(?:[a-z][a-z0-9_]*:)?[A-Za-z_][A-Za-z0-9_]*$")


class AtlasError(SkbpathError):
    """The atlas file is malformed."""


@dataclass(frozen=True)
class AtlasEntry:
    """One kernel function: its layer, where it is defined and what it does."""

    name: str
    layer: str
    file: str
    summary: str


def _entry(raw: Any, index: int) -> AtlasEntry:
    if not isinstance(raw, dict):
        raise AtlasError(f"atlas fn #{index}: not a table")
    fields = ("name", "layer", "file", "summary")
    unknown = set(raw) - set(fields)
    if unknown:
        raise AtlasError(f"atlas fn #{index}: unknown keys {sorted(unknown)}")
    missing = [f for f in fields if f not in raw]
    if missing:
        raise AtlasError(f"atlas fn #{index}: missing {missing}")
    bad = [f for f in fields if not isinstance(raw[f], str) or not raw[f].strip()]
    if bad:
        raise AtlasError(f"atlas fn #{index}: {bad} must be non-empty strings")
    entry = AtlasEntry(**raw)
    where = f"atlas entry {entry.name!r}"
    if not _NAME_RE.match(entry.name):
        raise AtlasError(f"{where}: name is not a C identifier or a group:event tracepoint")
    if entry.layer not in LAYERS:
        raise AtlasError(f"{where}: layer {entry.layer!r} not in {LAYERS}")
    if not _PATH_RE.match(entry.file) or ".." in entry.file.split("/"):
        raise AtlasError(f"{where}: file {entry.file!r} is not a path in the kernel tree")
    s = entry.summary
    # One sentence: it ends with a full stop and has none before (no ". ").
    if "\n" in s or len(s) >= MAX_SUMMARY or not s.endswith(".") or ". " in s:
        raise AtlasError(
            f"{where}: summary must be one sentence ending in '.', under {MAX_SUMMARY} chars"
        )
    return entry


def parse_atlas(text: str) -> dict[str, AtlasEntry]:
    """Parse atlas TOML text into entries by name, checking every field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AtlasError(f"atlas is not valid TOML: {exc}") from exc
    extra = set(data) - {"fn"}
    if extra:
        raise AtlasError(f"atlas: unknown top-level keys {sorted(extra)}")
    raws = data.get("fn", [])
    if not isinstance(raws, list):
        raise AtlasError("atlas: 'fn' must be an array of tables ([[fn]])")
    atlas: dict[str, AtlasEntry] = {}
    for i, raw in enumerate(raws):
        entry = _entry(raw, i)
        if entry.name in atlas:
            raise AtlasError(f"atlas: duplicate entry {entry.name!r}")
        atlas[entry.name] = entry
    return atlas


@cache
def load_atlas() -> dict[str, AtlasEntry]:
    """The atlas shipped with skbpath, by function name (parsed once, then cached).

    Callers must not modify the returned dict.
    """
    text = resources.files("skbpath.probes").joinpath("atlas.toml").read_text(encoding="utf-8")
    return parse_atlas(text)


def lookup(name: str) -> AtlasEntry | None:
    """The atlas entry for a function, symbol or stack frame, or None."""
    return load_atlas().get(base_name(name))


# Ordered: the first matching prefix wins, so specific paths come first.
_PATH_LAYERS: tuple[tuple[str, str], ...] = (
    ("drivers/net/", "driver"),
    ("net/sched/", "qdisc"),
    ("include/net/sch_generic.h", "qdisc"),
    ("include/net/pkt_sched.h", "qdisc"),
    ("net/socket.c", "socket"),
    ("net/ipv4/af_inet.c", "socket"),
    ("net/ipv6/af_inet6.c", "socket"),
    ("net/core/sock.c", "socket"),
    ("net/core/stream.c", "socket"),
    ("net/core/datagram.c", "socket"),
    ("include/net/sock.h", "socket"),
    ("net/ipv4/tcp", "transport"),
    ("net/ipv6/tcp", "transport"),
    ("net/ipv4/udp", "transport"),
    ("net/ipv6/udp", "transport"),
    ("include/net/tcp.h", "transport"),
    ("include/net/udp.h", "transport"),
    ("net/core/neighbour.c", "neighbour"),
    ("net/ipv4/arp.c", "neighbour"),
    ("net/ipv6/ndisc.c", "neighbour"),
    ("include/net/neighbour.h", "neighbour"),
    ("net/ipv4/ip_", "network"),
    ("net/ipv4/route.c", "network"),
    ("net/ipv4/fib", "network"),
    ("net/ipv6/ip6_", "network"),
    ("net/ipv6/route.c", "network"),
    ("include/net/ip.h", "network"),
    ("include/net/route.h", "network"),
    ("net/core/skbuff.c", "memory"),
    ("include/linux/skbuff.h", "memory"),
    ("net/core/dev.c", "device"),
    ("net/core/gro.c", "device"),
    ("include/linux/netdevice.h", "device"),
    ("include/net/gro.h", "device"),
    ("kernel/softirq.c", "softirq"),
    ("arch/x86/entry/", "syscall"),
)
_TREE_TOPS = ("net", "drivers", "include", "kernel", "arch")


def _classify(rel: str) -> str | None:
    for prefix, layer in _PATH_LAYERS:
        if rel.startswith(prefix):
            return layer
    return None


def layer_from_path(path: str) -> str | None:
    """Guess a function's layer from its source file, or None if the path says nothing.

    Accepts paths relative to the kernel tree ("net/ipv4/tcp_output.c") and
    absolute build paths ("/build/linux-6.1/net/ipv4/tcp_output.c").
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    # Try each place the kernel tree could start: build paths have a prefix
    # we cannot know, and a prefix may itself contain "net" or "kernel".
    for i, part in enumerate(parts):
        if part in _TREE_TOPS:
            layer = _classify("/".join(parts[i:]))
            if layer is not None:
                return layer
    return None


# Name prefixes, for functions the atlas does not know and no trace layer.
_NAME_LAYERS: tuple[tuple[str, str], ...] = (
    ("__sys_", "socket"),
    ("sock_", "socket"),
    ("inet_", "socket"),
    ("tcp", "transport"),
    ("udp", "transport"),
    ("ip_", "network"),
    ("ip6_", "network"),
    ("fib", "network"),
    ("neigh_", "neighbour"),
    ("arp_", "neighbour"),
    ("qdisc_", "qdisc"),
    ("sch_", "qdisc"),
    ("netif_", "device"),
    ("napi_gro", "device"),
    ("dev_", "device"),
    ("kfree_skb", "memory"),
    ("consume_skb", "memory"),
)


def _layer_from_name(name: str) -> str | None:
    bare = name.lstrip("_")
    for prefix, layer in _NAME_LAYERS:
        if name.startswith(prefix) or bare.startswith(prefix):
            return layer
    return None


def describe(name: str, funcs_layer: str | None = None) -> str:
    """One line about a function, for tooltips: ``"layer · file — summary"``.

    A function the atlas does not know gets ``funcs_layer`` (its layer in the
    trace) or a guess from its name, and "not in the atlas".
    """
    entry = lookup(name)
    if entry is not None:
        return f"{entry.layer} · {entry.file} — {entry.summary}"
    layer = funcs_layer if funcs_layer and funcs_layer != "?" else _layer_from_name(base_name(name))
    return f"{layer or '?'} · {NOT_IN_ATLAS}"


def atlas_details(funcs: FuncTable) -> dict[str, str]:
    """Tooltip text for every function of a trace, keyed by its name in the trace."""
    return {f.name: describe(f.name, f.layer) for f in funcs.funcs}
