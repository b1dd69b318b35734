"""A snapshot of what the running kernel offers the tracer.

Every capability is detected from what the kernel exposes (tracefs, kallsyms,
BTF), never from its version number: distributions backport features and
configurations differ, so a version says little.  All paths hang off an
injectable ``root`` so tests can build a fake tree.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Any of these in kallsyms means the kernel was built with BPF trampolines,
# which fentry/fexit programs need (names differ across kernel versions).
TRAMPOLINE_SYMBOLS = frozenset(
    {
        "bpf_trampoline_link_prog",
        "__bpf_trampoline_link_prog",
        "bpf_trampoline_link_cgroup_shim",
        "bpf_trampoline_get",
    }
)
TRACEFS_DIRS = ("sys/kernel/tracing", "sys/kernel/debug/tracing")


@dataclass
class KernelInfo:
    """What the running kernel offers; see :func:`read_kernel_info`."""

    release: str
    # Function name -> module (None for vmlinux), from available_filter_functions.
    traceable: dict[str, str | None]
    # Text symbol names (types t/T) from /proc/kallsyms, module tags stripped.
    kallsyms: set[str]
    has_kprobes: bool
    has_btf: bool
    has_headers: bool
    has_fentry: bool
    tracefs: str
    # Module -> its traceable functions.  Filled from ``traceable`` when not
    # given; it also keeps names listed under several modules.
    by_module: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.by_module:
            for name, module in self.traceable.items():
                if module:
                    self.by_module.setdefault(module, set()).add(name)

    def module_functions(self, module: str) -> set[str]:
        """The traceable functions of ``module`` (empty if none or built in)."""
        return self.by_module.get(module, set())


def _lines(path: str) -> Iterator[str]:
    """The lines of a file, or nothing if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f
    except OSError:
        return


def find_tracefs(root: str = "/") -> str:
    """The tracefs directory: the first candidate that looks mounted, else the first."""
    candidates = [os.path.join(root, d) for d in TRACEFS_DIRS]
    for path in candidates:
        # An unmounted mount point exists but is empty.
        if os.path.exists(os.path.join(path, "available_filter_functions")) or os.path.exists(
            os.path.join(path, "kprobe_events")
        ):
            return path
    for path in candidates:
        if os.path.isdir(path):
            return path
    return candidates[0]


def parse_filter_functions(
    lines: Iterable[str],
) -> tuple[dict[str, str | None], dict[str, set[str]]]:
    """Parse available_filter_functions: (name -> module, module -> names).

    A name listed several times (static functions of the same name in
    different objects) keeps its first module in the first mapping; the
    second mapping records every module.
    """
    traceable: dict[str, str | None] = {}
    by_module: dict[str, set[str]] = {}
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        name = parts[0]
        # Newer kernels list addresses ftrace could not resolve under this name.
        if name.startswith("__ftrace_invalid_address__"):
            continue
        module = parts[1].strip("[]") if len(parts) > 1 else None
        traceable.setdefault(name, module)
        if module:
            by_module.setdefault(module, set()).add(name)
    return traceable, by_module


def parse_kallsyms(lines: Iterable[str]) -> set[str]:
    """Text symbol names (types t and T) from /proc/kallsyms lines."""
    names: set[str] = set()
    for line in lines:
        # "ffffffff81000000 T _stext" or "0000000000000000 t foo\t[mod]";
        # the address is 0 without privileges, but only names are used.
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("t", "T"):
            names.add(parts[2])
    return names


def _release(root: str) -> str:
    for line in _lines(os.path.join(root, "proc/sys/kernel/osrelease")):
        if line.strip():
            return line.strip()
    # Only the real root may fall back to the running kernel's uname.
    return platform.release() if os.path.abspath(root) == "/" else ""


def kernel_build(root: str = "/") -> str:
    """The kernel's build string (``#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (...)``), or empty.

    With the release it names exactly which kernel a trace came from: the
    release is an ABI (``6.1.0-57-amd64``), this has the package version.
    """
    for line in _lines(os.path.join(root, "proc/sys/kernel/version")):
        return line.strip()
    return ""


def read_kernel_info(root: str = "/") -> KernelInfo:
    """Snapshot the kernel under ``root``; missing files give empty results."""
    release = _release(root)
    tracefs = find_tracefs(root)
    traceable, by_module = parse_filter_functions(
        _lines(os.path.join(tracefs, "available_filter_functions"))
    )
    kallsyms = parse_kallsyms(_lines(os.path.join(root, "proc/kallsyms")))
    has_btf = os.path.exists(os.path.join(root, "sys/kernel/btf/vmlinux"))
    has_headers = bool(release) and os.path.isdir(
        os.path.join(root, "lib/modules", release, "build")
    )
    has_headers = has_headers or os.path.exists(os.path.join(root, "sys/kernel/kheaders.tar.xz"))
    return KernelInfo(
        release=release,
        traceable=traceable,
        kallsyms=kallsyms,
        has_kprobes=os.path.exists(os.path.join(tracefs, "kprobe_events")),
        has_btf=has_btf,
        has_headers=has_headers,
        has_fentry=has_btf and not TRAMPOLINE_SYMBOLS.isdisjoint(kallsyms),
        tracefs=tracefs,
        by_module=by_module,
    )


def interface_names(root: str = "/") -> dict[int, str]:
    """ifindex -> name of this network namespace's interfaces (for routes' output devices)."""
    netdir = os.path.join(root, "sys/class/net")
    out: dict[int, str] = {}
    try:
        names = sorted(os.listdir(netdir))
    except OSError:
        return out
    for name in names:
        for line in _lines(os.path.join(netdir, name, "ifindex")):
            if line.strip().isdigit():
                out[int(line)] = name
    return out
