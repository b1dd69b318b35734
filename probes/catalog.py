"""Load the probe catalogs into typed entries: ``catalog.toml`` and ``tracepoints.toml``.

The catalogs are data: which kernel functions (``catalog.toml``) and which
tracepoints (``tracepoints.toml``, for tracepoint and tracefs modes) to
probe, on which path (tx, rx, free), in which layer, and where the skb is.
Resolving them against a running kernel is the tracer's job
(``tracer/record/resolve.py``, ``tracer/record/rawtp.py``,
``tracer/record/tracefs/parse.py``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PATHS = ("tx", "rx", "free")
LAYERS = (
    "socket",
    "transport",
    "network",
    "neighbour",
    "qdisc",
    "device",
    "driver",
    "softirq",
    "memory",
)
DRIVER_ROLES = ("xmit", "poll", "rx_clean", "tx_clean")
# What a return carries: the FIB lookup's route, or a return value named by a
# kernel enum (napi_gro_receive's gro_result_t).
RESULTS = ("", "route", "gro")
# Where a received packet's stack latency ends (tracer/model/latency.py).
STAGES = ("", "queued")
MAX_SKB_ARG = 5


class CatalogError(ValueError):
    """The catalog file is malformed."""


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    """One catalog entry: a kernel function, or a driver role to be found per interface."""

    name: str = ""
    path: str
    layer: str
    skb_arg: int = 0
    skb_deref: bool = False
    stack: bool = False
    context: bool = False
    frees: bool = False
    drop: bool = False
    fresh: bool = False
    aux_arg: int = 0
    result: str = ""
    driver: str = ""
    stage: str = ""
    merge: bool = False
    gso_segs: bool = False

    @property
    def key(self) -> str:
        """A stable key: the function name, or ``driver:<role>``."""
        return self.name or f"driver:{self.driver}"


def _entry(raw: dict[str, Any], index: int) -> ProbeSpec:
    known = set(ProbeSpec.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise CatalogError(f"probe #{index}: unknown keys {sorted(unknown)}")
    spec = ProbeSpec(**raw)
    if bool(spec.name) == bool(spec.driver):
        raise CatalogError(f"probe #{index}: give exactly one of name and driver")
    if spec.driver and spec.driver not in DRIVER_ROLES:
        raise CatalogError(f"probe #{index}: driver role {spec.driver!r} not in {DRIVER_ROLES}")
    if spec.path not in PATHS:
        raise CatalogError(f"{spec.key}: path {spec.path!r} not in {PATHS}")
    if spec.layer not in LAYERS:
        raise CatalogError(f"{spec.key}: layer {spec.layer!r} not in {LAYERS}")
    if not 0 <= spec.skb_arg <= MAX_SKB_ARG:
        raise CatalogError(f"{spec.key}: skb_arg must be 0..{MAX_SKB_ARG}")
    if not 0 <= spec.aux_arg <= MAX_SKB_ARG:
        raise CatalogError(f"{spec.key}: aux_arg must be 0..{MAX_SKB_ARG}")
    if spec.result not in RESULTS:
        raise CatalogError(f"{spec.key}: result {spec.result!r} not in {RESULTS}")
    if spec.skb_deref and not spec.skb_arg:
        raise CatalogError(f"{spec.key}: skb_deref needs skb_arg")
    if spec.stage not in STAGES:
        raise CatalogError(f"{spec.key}: stage {spec.stage!r} not in {STAGES}")
    if spec.stage and not spec.skb_arg:
        raise CatalogError(f"{spec.key}: stage needs skb_arg")
    if spec.gso_segs and (not spec.skb_arg or spec.aux_arg):
        raise CatalogError(f"{spec.key}: gso_segs needs skb_arg and takes the place of aux_arg")
    if spec.merge and not (spec.skb_arg and spec.aux_arg):
        raise CatalogError(f"{spec.key}: merge needs skb_arg and aux_arg (the head)")
    return spec


def parse_catalog(text: str) -> list[ProbeSpec]:
    """Parse catalog TOML text into probe specs, checking every field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog is not valid TOML: {exc}") from exc
    entries = [_entry(raw, i) for i, raw in enumerate(data.get("probe", []))]
    keys = [e.key for e in entries]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise CatalogError(f"duplicate catalog entries: {dupes}")
    return entries


def load_catalog() -> list[ProbeSpec]:
    """Load the catalog shipped with skbpath."""
    text = resources.files("skbpath.probes").joinpath("catalog.toml").read_text(encoding="utf-8")
    return parse_catalog(text)


@dataclass(frozen=True)
class Tracepoint:
    """One tracepoint skbpath uses, and how it maps to the model."""

    group: str
    event: str
    path: str
    layer: str
    skb: bool = True
    frees: bool = False
    drop: bool = False
    stack: bool = False

    @property
    def name(self) -> str:
        """``group:event``, the name used in the trace's function table."""
        return f"{self.group}:{self.event}"

    def spec(self, skb_arg: int, aux_arg: int = 0) -> ProbeSpec:
        """The probe spec of this tracepoint, with its arguments where the mode found them."""
        return ProbeSpec(name=self.name, path=self.path, layer=self.layer, skb_arg=skb_arg,
                         stack=self.stack, frees=self.frees, drop=self.drop, aux_arg=aux_arg)


def _tracepoint(raw: Any, index: int) -> Tracepoint:
    if not isinstance(raw, dict):
        raise CatalogError(f"tracepoint #{index}: not a table")
    fields = Tracepoint.__dataclass_fields__
    unknown = set(raw) - set(fields)
    if unknown:
        raise CatalogError(f"tracepoint #{index}: unknown keys {sorted(unknown)}")
    missing = [k for k in ("group", "event", "path", "layer") if k not in raw]
    if missing:
        raise CatalogError(f"tracepoint #{index}: missing {missing}")
    for key, value in raw.items():
        want = bool if fields[key].type in ("bool", bool) else str
        if type(value) is not want or (want is str and not value):
            raise CatalogError(f"tracepoint #{index}: {key} must be a {want.__name__}"
                               + (" (non-empty)" if want is str else ""))
    tp = Tracepoint(**raw)
    if tp.path not in PATHS:
        raise CatalogError(f"{tp.name}: path {tp.path!r} not in {PATHS}")
    if tp.layer not in LAYERS:
        raise CatalogError(f"{tp.name}: layer {tp.layer!r} not in {LAYERS}")
    if (tp.frees or tp.drop) and not tp.skb:
        raise CatalogError(f"{tp.name}: frees and drop need skb")
    return tp


def parse_tracepoints(text: str) -> tuple[Tracepoint, ...]:
    """Parse tracepoint-catalog TOML text into tracepoints, checking every field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"tracepoint catalog is not valid TOML: {exc}") from exc
    extra = set(data) - {"tracepoint"}
    if extra:
        raise CatalogError(f"tracepoint catalog: unknown top-level keys {sorted(extra)}")
    raws = data.get("tracepoint", [])
    if not isinstance(raws, list):
        raise CatalogError("tracepoint catalog: 'tracepoint' must be an array of tables")
    tps = tuple(_tracepoint(raw, i) for i, raw in enumerate(raws))
    names = [tp.name for tp in tps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CatalogError(f"duplicate tracepoints: {dupes}")
    return tps


@cache
def load_tracepoints() -> tuple[Tracepoint, ...]:
    """The tracepoints shipped with skbpath, in path order (parsed once, then cached)."""
    text = resources.files("skbpath.probes").joinpath("tracepoints.toml").read_text(
        encoding="utf-8")
    return parse_tracepoints(text)


def bpf_source(name: str = "skbpath.bpf.c") -> str:
    """Return the path of a BPF C file shipped in this package."""
    return str(resources.files("skbpath.probes").joinpath(name))
