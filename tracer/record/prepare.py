"""What a live trace needs before it starts, read from the running kernel.

The catalog resolved against the kernel with the interfaces' drivers, the
tracepoint table, fentry's split between trampolines and kprobes, the drop
reason names and interface indexes.  The kernel's BTF is parsed once and
shared (it is several MB).  The CLI (tracer/cli/record.py) calls these.
"""

from __future__ import annotations

import os
from functools import cached_property

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf, BtfError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.record.attach import FentryPlan, fentry_plan
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.traces.functions import FuncTable

BTF_DIR = "/sys/kernel/btf"


class KernelBtf:
    """The running kernel's BTF: vmlinux's, and modules' split on top; loaded on first use."""

    def __init__(self, kernel: KernelInfo, btf_dir: str = BTF_DIR) -> None:
        self.kernel = kernel
        self.btf_dir = btf_dir

    @cached_property
    def vmlinux(self) -> Btf | None:
        """vmlinux's BTF, or None if the kernel has none (or it cannot be read)."""
        if not self.kernel.has_btf:
            return None
        try:
            return Btf.load(os.path.join(self.btf_dir, "vmlinux"))
        except (OSError, BtfError):
            return None

    def for_driver(self, driver: str) -> Btf | None:
        """A module's split BTF on vmlinux's; a built-in driver's is vmlinux's own."""
        base = self.vmlinux
        path = os.path.join(self.btf_dir, driver)
        if base is None or not os.path.exists(path):
            return base
        try:
            return Btf.load(path, base=base)
        except (OSError, BtfError):
            return None


def interfaces_with_drivers() -> list[str]:
    """The interfaces whose driver can be found (see tracer/kernel/drivers.py), sorted."""
    from skbpath.tracer.kernel.drivers import interface_module

    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []
    return [n for n in names if interface_module(n)]


def resolve_catalog(kernel: KernelInfo, btf: KernelBtf, iface: str | None) -> Resolution:
    """The catalog resolved on ``kernel``, driver roles from ``iface`` (or every interface)."""
    from skbpath.probes.catalog import load_catalog
    from skbpath.tracer.kernel.drivers import find_driver_functions, interface_module
    from skbpath.tracer.record.resolve import resolve

    if iface and not os.path.exists(f"/sys/class/net/{iface}"):
        raise SkbpathError(f"--iface {iface}: no such interface")
    ifaces = [iface] if iface else interfaces_with_drivers()
    driver_funcs: dict[str, list[str]] = {}
    for name in ifaces:
        driver = interface_module(name)
        if not driver:
            continue
        for role, names in find_driver_functions(driver, kernel, btf.for_driver(driver)).items():
            merged = driver_funcs.setdefault(role, [])
            merged.extend(n for n in names if n not in merged)
    return resolve(load_catalog(), kernel, driver_funcs if ifaces else None)


def drop_reasons(btf: KernelBtf) -> dict[int, str]:
    """kfree_skb_reason's codes and names from the kernel's BTF (empty without BTF)."""
    from skbpath.tracer.model.drops import drop_reason_names

    return drop_reason_names(btf.vmlinux) if btf.vmlinux is not None else {}


def return_names(btf: KernelBtf, funcs: FuncTable) -> dict[str, dict[int, str]]:
    """Names of the recorded return values, per function: its BTF return type's enumerators.

    For the catalog's ``result = "gro"`` functions (napi_gro_receive returns
    ``enum gro_result``); a function whose return is not an enum gets none.
    """
    out: dict[str, dict[int, str]] = {}
    if btf.vmlinux is None:
        return out
    for f in funcs.funcs:
        if not f.result or f.result == "route":
            continue
        try:
            ret = btf.vmlinux.func_return(f.name) or ""
            values = btf.vmlinux.enum_values(ret[5:]) if ret.startswith("enum ") else None
        except BtfError:
            values = None  # unreadable BTF: the values stay numbers
        if values:
            out[f.name] = values
    return out


def ifindex(iface: str) -> int:
    """The interface's index; one clear error if it does not exist."""
    try:
        with open(f"/sys/class/net/{iface}/ifindex") as fh:
            return int(fh.read())
    except (OSError, ValueError) as exc:
        raise SkbpathError(f"--iface {iface}: no such interface") from exc


def tracepoint_resolution(kernel: KernelInfo, btf: KernelBtf) -> Resolution:
    """tracepoint mode's function table: the tracepoints in this kernel's BTF."""
    from skbpath.tracer.record.rawtp import tracepoint_table

    if btf.vmlinux is None:
        raise SkbpathError("--attach tracepoint needs the kernel's BTF (/sys/kernel/btf/vmlinux)")
    funcs, skipped = tracepoint_table(btf.vmlinux)
    if not funcs.funcs:
        raise SkbpathError(f"--attach tracepoint: none of skbpath's tracepoints is in "
                           f"{kernel.release}'s BTF")
    return Resolution(funcs, skipped)


def fentry_split(kernel: KernelInfo, btf: KernelBtf, resolution: Resolution) -> FentryPlan:
    """Which resolved functions fentry mode attaches by trampoline (vmlinux BTF only)."""
    return fentry_plan(resolution.funcs, btf.vmlinux, kernel.traceable)
