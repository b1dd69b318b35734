"""Load the probe catalog, ``catalog.toml``, into typed entries.

The catalog is data: which kernel functions to probe, on which path (tx, rx,
free), in which layer, and which argument carries the skb.  Resolving it
against a running kernel is the tracer's job (``tracer.resolve``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
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
RESULTS = ("", "route")
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
    text = resources.files("probes").joinpath("catalog.toml").read_text(encoding="utf-8")
    return parse_catalog(text)


def bpf_source(name: str = "skbpath.bpf.c") -> str:
    """Return the path of a BPF C file shipped in this package."""
    return str(resources.files("probes").joinpath(name))
