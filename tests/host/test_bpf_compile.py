"""The BPF C compiles for every attach mode, against the lab kernel's headers, on this host.

This machine cannot load kprobes or fentry programs, but bcc can compile the
program against Debian's 6.1 headers (installed by ``make apt``), which
catches C errors in a minute instead of a lab boot.  Loading and the
verifier are the lab tests' job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.catalog import bpf_source
from tests.conftest import lab_unavailable
from tracer.bpfconfig import Filters, build_cflags
from tracer.functions import FuncInfo, FuncTable
from tracer.lab import DEFAULT_KERNEL

pytestmark = pytest.mark.host

RELEASE = os.path.basename(DEFAULT_KERNEL).removeprefix("vmlinuz-")
HEADERS = [Path(f"/usr/src/linux-headers-{RELEASE}"),
           Path(f"/usr/src/linux-headers-{RELEASE.rsplit('-', 1)[0]}-common")]
FUNCS = FuncTable([
    FuncInfo(id=0, name="tcp_sendmsg", path="tx", layer="transport"),
    FuncInfo(id=1, name="ip_rcv", path="rx", layer="network", skb_arg=1),
    FuncInfo(id=2, name="fib_table_lookup", path="rx", layer="network", result="route"),
    FuncInfo(id=3, name="kfree_skb_reason", path="free", layer="memory", skb_arg=1, aux_arg=2,
             stack=True, frees=True, drop=True),
])
TRACEPOINTS = FuncTable([
    FuncInfo(0, "net:net_dev_queue", "tx", "device", skb_arg=1, symbols=("net_dev_queue",)),
    FuncInfo(1, "skb:kfree_skb", "free", "memory", skb_arg=1, aux_arg=3, stack=True,
             frees=True, drop=True, symbols=("kfree_skb",)),
])
ALL_FILTERS = Filters(pid=42, comm="iperf3", ifindex=3, proto="tcp", port=80, host="198.18.0.2")


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` under ``dst`` as symlinks to its files (like ``cp -rs``)."""
    for root, _dirs, files in os.walk(src, followlinks=True):
        out = dst / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            link = out / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.realpath(os.path.join(root, name)))


@pytest.fixture(scope="module")
def kernel_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian splits the headers in two directories; bcc wants one tree."""
    if not all(h.is_dir() for h in HEADERS):
        lab_unavailable(f"the lab kernel's headers ({HEADERS[0]}) are not installed")
    try:
        import bcc  # noqa: F401
    except ImportError:
        lab_unavailable("bcc's Python module is missing")
    tree = tmp_path_factory.mktemp("kernel-source")
    for src in reversed(HEADERS):  # the arch directory's files win
        _link_tree(src, tree)
    old = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = str(tree)
    yield str(tree)
    if old is None:
        del os.environ["BCC_KERNEL_SOURCE"]
    else:
        os.environ["BCC_KERNEL_SOURCE"] = old


@pytest.mark.parametrize("filters", [Filters(), ALL_FILTERS], ids=["plain", "filters"])
@pytest.mark.parametrize("mode", ["kprobe", "fentry", "tracepoint"])
def test_program_compiles(kernel_source: str, mode: str, filters: Filters) -> None:
    from bcc import BPF
    from bcc.libbcc import lib

    class Compiled(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            """Compile only: this host cannot attach these programs."""

    funcs = TRACEPOINTS if mode == "tracepoint" else FUNCS
    fentry = {1: "ip_rcv", 2: "fib_table_lookup"} if mode == "fentry" else None
    cflags = build_cflags(funcs, filters, mode, fentry, netns=4026531840)
    bpf = Compiled(src_file=bpf_source().encode(), cflags=cflags)
    try:
        if mode == "tracepoint":
            names = [f"skbpath_tp_{f.id}" for f in funcs.funcs]
        else:
            names = [f"skbpath_{kind}_{f.id}" for f in funcs.funcs for kind in ("entry", "exit")]
        if fentry:
            names += [f"{kind}__{sym}" for sym in sorted(fentry.values())
                      for kind in ("kfunc", "kretfunc")]
        # Compiled, not loaded: this kernel would verify them, not the lab's.
        missing = [n for n in names if not lib.bpf_function_size(bpf.module, n.encode())]
        assert not missing
    finally:
        bpf.cleanup()
