"""Resolve the probe catalog against a kernel: which functions to attach, by id.

A catalog name is resolved to the symbols the kernel can trace: the exact
name and its compiler clones (``name.constprop.0``, ``name.isra.0``,
``name.part.0``, ``name.llvm.<n>``, and chains of these), all of which run the
function's body.  ``name.cold`` is not a clone but a split-off unlikely path,
so it is never attached.  Entries that cannot be resolved are reported as
:class:`Skipped` with the reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from skbpath.probes.catalog import ProbeSpec
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.kernel.symbols import clone_of
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

INLINED = "inlined or not built in this kernel"
NOT_TRACEABLE = "not traceable (notrace or blacklisted)"
NO_INTERFACE = "no interface given"


@dataclass(frozen=True)
class Skipped:
    """A catalog entry that was not resolved, and why."""

    name: str
    reason: str


@dataclass
class Resolution:
    """The resolved function table and the entries left out."""

    funcs: FuncTable
    skipped: list[Skipped]


class SymbolIndex:
    """Exact names plus clones grouped under their base name."""

    def __init__(self, names: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.clones: dict[str, list[str]] = {}
        for n in names:
            self.exact.add(n)
            base = clone_of(n)
            if base is not None and base != n:
                self.clones.setdefault(base, []).append(n)

    def symbols(self, name: str) -> list[str]:
        """``name`` if present, and its clones, sorted (so the exact name comes first)."""
        out = list(self.clones.get(name, ()))
        if name in self.exact and name not in out:
            out.append(name)
        return sorted(out)


def resolve(
    catalog: list[ProbeSpec],
    kernel: KernelInfo,
    driver_funcs: dict[str, list[str]] | None = None,
    module: str = "",
) -> Resolution:
    """Resolve ``catalog`` against ``kernel``.

    ``driver_funcs`` (from :func:`skbpath.tracer.kernel.drivers.find_driver_functions`) maps
    a driver role to its functions; None means no interface was given.
    ``module`` names the driver in skip reasons.  Ids are given in catalog
    order, 0..n-1, to resolved functions only; a driver role resolving to k
    functions takes k ids, in the order of its list.  A function already
    resolved by an earlier entry is not added twice.
    """
    traceable = SymbolIndex(kernel.traceable)
    kallsyms = SymbolIndex(kernel.kallsyms)
    funcs: list[FuncInfo] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()

    def add(spec: ProbeSpec, name: str, key: str) -> None:
        if name in seen:
            return
        symbols = traceable.symbols(name)
        if symbols:
            seen.add(name)
            funcs.append(FuncInfo.resolved(spec, len(funcs), symbols, name=name))
        elif kallsyms.symbols(name):
            skipped.append(Skipped(key, NOT_TRACEABLE))
        else:
            skipped.append(Skipped(key, INLINED))

    for spec in catalog:
        if not spec.driver:
            add(spec, spec.name, spec.name)
            continue
        if driver_funcs is None:
            skipped.append(Skipped(spec.key, NO_INTERFACE))
            continue
        names = driver_funcs.get(spec.driver, [])
        if not names:
            who = module or "of the interface"
            skipped.append(Skipped(spec.key, f"no {spec.driver} function found for driver {who}"))
        for name in names:
            add(spec, name, name)
    return Resolution(FuncTable(funcs), skipped)
