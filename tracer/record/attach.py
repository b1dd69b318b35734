"""How ``skbpath trace`` attaches, pure: what each mode needs, auto's choice, fentry's split.

Modes, in ``--attach auto``'s order of preference:

* ``fentry``: BPF trampolines (fentry/fexit), cheaper per call than kprobes.
  bcc 0.26 finds a trampoline's target by name in vmlinux's BTF only, so
  module functions (drivers) and suffixed clones fall back to kprobes in
  the same program, as do the few functions that take kernel stacks (the
  unwinder starts reliably only from a kprobe's registers).
* ``kprobe``: kprobes and kretprobes on every resolved symbol.
* ``tracepoint``: BPF on raw tracepoints (tracefs mode's set), for kernels
  without kprobes; argument positions come from BTF.
* ``tracefs``: tracepoints read as text from tracefs, no BPF at all.

Every need is detected (BTF, kallsyms, tracefs, bcc), never read from the
kernel version.  :func:`mode_gaps` is the one place that decides whether a
mode can run here: each gap comes with its remedy; ``auto`` and an explicit
``--attach`` both use it (:func:`choose_attach`, :func:`require_mode`).
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf, BtfError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

BPF_MODES = ("fentry", "kprobe", "tracepoint")
MODES = (*BPF_MODES, "tracefs")
# Any of these in kallsyms: the kernel can attach BPF to raw tracepoints
# (bcc's BPF.support_raw_tracepoint() looks for the same names).
RAW_TP_SYMBOLS = frozenset({"bpf_get_raw_tracepoint", "bpf_find_raw_tracepoint"})
STACK_REASON = "takes kernel stacks: on a kprobe until trampoline stacks are rechecked (README)"
# x86-64 trampolines pass register arguments only (six of them).
FENTRY_MAX_ARGS = 6


@dataclass(frozen=True)
class Features:
    """What the live modes depend on, detected on this machine."""

    bcc: bool
    headers: bool
    kprobes: bool
    btf: bool
    trampolines: bool
    raw_tracepoints: bool
    x86_64: bool = True
    root: bool = True
    release: str = "this kernel"

    @classmethod
    def detect(cls, kernel: KernelInfo, bcc: bool, machine: str, root: bool = True) -> Features:
        """The features of ``kernel``, with bcc's presence, the machine and root given."""
        return cls(
            bcc=bcc,
            headers=kernel.has_headers,
            kprobes=kernel.has_kprobes,
            btf=kernel.has_btf,
            trampolines=kernel.has_fentry,
            raw_tracepoints=not RAW_TP_SYMBOLS.isdisjoint(kernel.kallsyms),
            x86_64=machine == "x86_64",
            root=root,
            release=kernel.release,
        )

    def for_inspection(self) -> Features:
        """As if bcc, headers and root were there: --ebpf and --list-probes need none of them."""
        return replace(self, bcc=True, headers=True, root=True)


def bcc_installed() -> bool:
    """True if bcc's Python module (Debian's python3-bpfcc) can be found; it is not imported."""
    try:
        return importlib.util.find_spec("bcc") is not None
    except ValueError:  # in sys.modules without a spec: there, so importable
        return True


def machine_features(kernel: KernelInfo) -> Features:
    """What the modes depend on, on this machine."""
    return Features.detect(kernel, bcc_installed(), platform.machine(), os.geteuid() == 0)


@dataclass(frozen=True)
class Gap:
    """Something a mode needs and this machine lacks, and what to do about it."""

    what: str
    remedy: str

    def __str__(self) -> str:
        return self.what


def mode_gaps(feat: Features, mode: str) -> list[Gap]:
    """What ``mode`` lacks on this machine, each with its remedy; empty if it can run."""
    gaps = []
    if not feat.root:
        gaps.append(Gap("not root", "run it with sudo"))
    if mode == "tracefs":
        return gaps
    if not feat.bcc:
        gaps.append(Gap("no bcc", "apt-get install python3-bpfcc bpfcc-tools, and use a venv "
                                  "made with --system-site-packages"))
    if mode == "kprobe" and not feat.kprobes:
        gaps.append(Gap("no kprobes", "CONFIG_KPROBES is off: trace a kernel that has them, "
                                      "e.g. with 'skbpath lab', or use --attach tracepoint"))
    if mode in ("fentry", "tracepoint") and not feat.btf:
        gaps.append(Gap("no BTF", "/sys/kernel/btf/vmlinux is missing: use --attach kprobe "
                                  "or tracefs"))
    if mode == "fentry" and feat.btf and not feat.trampolines:
        gaps.append(Gap("no BPF trampolines", "use --attach kprobe"))
    if mode == "fentry" and not feat.x86_64:
        gaps.append(Gap("bcc has fentry on x86_64 only", "use --attach kprobe"))
    if mode == "tracepoint" and not feat.raw_tracepoints:
        gaps.append(Gap("no raw tracepoints", "use --attach tracefs"))
    if not feat.headers:
        gaps.append(Gap("no headers", "bcc compiles against them: apt-get install "
                                      f"linux-headers-{feat.release}"))
    return gaps


def require_mode(feat: Features, mode: str) -> None:
    """Raise one clear error (exit code 2) naming every gap of ``mode`` and its remedy."""
    gaps = mode_gaps(feat, mode)
    if not gaps:
        return
    if not feat.root:  # first: without root the other checks may not see the kernel
        raise SkbpathError("skbpath trace needs root: run it with sudo")
    raise SkbpathError(f"--attach {mode} cannot run on {feat.release}: "
                       + "; ".join(f"{g.what} ({g.remedy})" for g in gaps))


def choose_attach(feat: Features) -> tuple[str, list[str]]:
    """``--attach auto``: the first mode with no gaps, and why each better one was not used.

    E.g. ``("kprobe", ["fentry: no BPF trampolines"])``; the list is empty
    when the first choice (fentry) was taken.  Without root no mode can run:
    that is the error.
    """
    if not feat.root:
        require_mode(feat, "tracefs")
    why: list[str] = []
    for mode in MODES:
        gaps = mode_gaps(feat, mode)
        if not gaps:
            return mode, why
        why.append(f"{mode}: {', '.join(g.what for g in gaps)}")
    raise AssertionError("tracefs mode needs only root")  # pragma: no cover


def usable_modes(feat: Features) -> list[str]:
    """Every mode with no gaps here, best first (tracefs always last): auto's fallbacks."""
    return [mode for mode in MODES if not mode_gaps(feat, mode)]


@dataclass
class FentryPlan:
    """Which symbols fentry mode attaches by trampoline, and why the others use kprobes."""

    # Function id -> the symbol attached by fentry (always the function's exact name).
    fentry: dict[int, str] = field(default_factory=dict)
    # Symbol -> why it uses a kprobe.
    kprobe: dict[str, str] = field(default_factory=dict)
    # Function id -> its argument count (from BTF): fexit reads a recorded
    # return value right after the arguments.
    nargs: dict[int, int] = field(default_factory=dict)


def fentry_reason(
    f: FuncInfo, vmlinux: Btf | None, modules: Mapping[str, str | None]
) -> str | None:
    """Why function ``f`` cannot be attached by fentry, or None if it can.

    ``vmlinux`` is the kernel's base BTF (no module BTF: bcc 0.26 cannot
    target module functions); ``modules`` maps traceable names to their
    module, None for vmlinux.
    """
    if f.name not in f.symbols:
        return "only suffixed clones, which have no BTF FUNC of their own"
    module = modules.get(f.name)
    if module:
        return f"in module {module}: bcc 0.26 attaches fentry to vmlinux functions only"
    if vmlinux is None:
        return "no BTF"
    try:
        params = vmlinux.func_params(f.name)
    except BtfError as exc:
        return f"unreadable BTF: {exc}"
    if params is None:
        return "no BTF FUNC of that name"
    if len(params) > FENTRY_MAX_ARGS or "..." in params:
        return f"{len(params)} arguments: trampolines take at most {FENTRY_MAX_ARGS}"
    if any(p.startswith(("struct ", "union ")) and not p.endswith("*") for p in params):
        return "a struct argument passed by value"
    if f.stack:
        # Chosen when a trampoline's stack lacked the nf_tables frames a
        # kprobe's had; likely a stale symbol cache instead (the README's
        # fentry paragraph).  Kept until trampoline stacks are rechecked.
        return STACK_REASON
    return None


def fentry_plan(funcs: FuncTable, vmlinux: Btf | None,
                modules: Mapping[str, str | None]) -> FentryPlan:
    """Split the resolved functions between fentry and kprobes (see :func:`fentry_reason`).

    A function's exact name goes to fentry when it can; its clones always use
    kprobes, since a trampoline's target is found by BTF name.
    """
    plan = FentryPlan()
    for f in funcs.funcs:
        reason = fentry_reason(f, vmlinux, modules)
        if reason is None:
            plan.fentry[f.id] = f.name
            params = vmlinux.func_params(f.name) if vmlinux is not None else None
            plan.nargs[f.id] = len(params or ())
        for sym in f.symbols:
            if reason is not None:
                plan.kprobe[sym] = reason
            elif sym != f.name:
                plan.kprobe[sym] = "suffixed clone: no BTF FUNC of its own"
    return plan
