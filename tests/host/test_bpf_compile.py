"""The BPF C compiles for every attach mode, against each lab kernel's headers, on this host.

This machine cannot load kprobes or fentry programs, but bcc can compile the
program against Debian's 6.1 and 6.12 headers (installed by ``make apt``),
which catches C errors in a minute instead of a lab boot.  It compiles the
way a live trace does (tracer/record/bpf/compile.py): on 6.12, bcc 0.26's
bundled uapi header lacks types the kernel's headers use, which are then
defined from the kernel's uapi header.  Loading and the verifier are the lab
tests' job.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from skbpath.probes.catalog import bpf_source
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab.headers import headers_installed, headers_of, kernel_source_tree
from skbpath.tracer.lab.kernels import TESTED_SERIES, lab_kernel, release_of
from skbpath.tracer.record.bpf.compile import compile_bpf
from skbpath.tracer.record.bpf.progstats import BpfProgInfo, misses_by_program, prog_info
from skbpath.tracer.record.cflags import Filters, build_cflags
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

from tests.conftest import lab_unavailable

pytestmark = pytest.mark.host


FUNCS = FuncTable([
    FuncInfo(id=0, name="tcp_sendmsg", path="tx", layer="transport"),
    FuncInfo(id=1, name="ip_rcv", path="rx", layer="network", skb_arg=1),
    FuncInfo(id=2, name="fib_table_lookup", path="rx", layer="network", result="route"),
    FuncInfo(id=3, name="kfree_skb_reason", path="free", layer="memory", skb_arg=1, aux_arg=2,
             stack=True, frees=True, drop=True),
    FuncInfo(id=4, name="net_rx_action", path="rx", layer="softirq", context=True),
    # The driver's transmit reads gso_segs from the skb's shared info (aux_of).
    FuncInfo(id=5, name="e1000_xmit_frame", path="tx", layer="driver", skb_arg=1,
             driver="xmit", gso_segs=True),
])
TRACEPOINTS = FuncTable([
    FuncInfo(id=0, name="net:net_dev_queue", path="tx", layer="device",
             skb_arg=1, symbols=("net_dev_queue",)),
    FuncInfo(id=1, name="skb:kfree_skb", path="free", layer="memory",
             skb_arg=1, aux_arg=3, stack=True,
             frees=True, drop=True, symbols=("kfree_skb",)),
])
ALL_FILTERS = Filters(pid=42, comm="iperf3", ifindex=3, proto="tcp", port=80, host="198.18.0.2")
# A pcap-filter expression: both programs (Ethernet and raw IP), IPv6 too.
PCAP = Filters(expr="(tcp port 443 and host 198.18.0.2) or (ip6 and udp) or len > 1000")
# Link-layer only: no raw program, the Ethernet one alone.
PCAP_ETHER = Filters(expr="ether src 02:00:00:00:00:01")
BPF_PROG_TYPE_RAW_TRACEPOINT = 17


@pytest.fixture(scope="module", params=TESTED_SERIES)
def kernel_source(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The newest installed headers of a series as one tree (Debian splits them; bcc wants one)."""
    try:
        release = release_of(lab_kernel(request.param))
    except SkbpathError as exc:
        lab_unavailable(str(exc))
    if not headers_installed(release):
        lab_unavailable(f"the lab kernel's headers ({headers_of(release)[0]}) are not installed")
    try:
        import bcc  # noqa: F401
    except ImportError:
        lab_unavailable("bcc's Python module is missing")
    tree = kernel_source_tree(tmp_path_factory.mktemp(f"kernel-source-{release}"), release)
    old = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = str(tree)
    yield release
    if old is None:
        del os.environ["BCC_KERNEL_SOURCE"]
    else:
        os.environ["BCC_KERNEL_SOURCE"] = old


@pytest.mark.parametrize("filters", [Filters(), ALL_FILTERS, PCAP, PCAP_ETHER],
                         ids=["plain", "filters", "pcap", "pcap-ether"])
@pytest.mark.parametrize("mode", ["kprobe", "fentry", "tracepoint"])
def test_program_compiles(kernel_source: str, mode: str, filters: Filters,
                          tmp_path: Path) -> None:
    from bcc import BPF
    from bcc.libbcc import lib

    class Compiled(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            """Compile only: this host cannot attach these programs."""

    funcs = TRACEPOINTS if mode == "tracepoint" else FUNCS
    fentry = {1: "ip_rcv", 2: "fib_table_lookup"} if mode == "fentry" else None
    cflags = build_cflags(funcs, filters, mode, fentry, netns=4026531840)
    # No BTF: the kernel's uapi header must be enough (this host's BTF is another kernel's).
    bpf = compile_bpf(Compiled, bpf_source(), cflags, kernel_source, lambda: None,
                      str(tmp_path / "bcc.log"))
    try:
        if mode == "tracepoint":
            names = [f"skbpath_tp_{f.id}" for f in funcs.funcs]
        else:
            # fentry mode compiles kprobe programs only for what has no trampoline.
            names = [f"skbpath_{kind}_{f.id}" for f in funcs.funcs for kind in ("entry", "exit")
                     if not fentry or f.id not in fentry]
        if fentry:
            names += [f"{kind}__{sym}" for sym in sorted(fentry.values())
                      for kind in ("kfunc", "kretfunc")]
        # Compiled, not loaded: this kernel would verify them, not the lab's.
        missing = [n for n in names if not lib.bpf_function_size(bpf.module, n.encode())]
        assert not missing
    finally:
        bpf.cleanup()


@pytest.mark.parametrize("filters", [Filters(), ALL_FILTERS], ids=["plain", "filters"])
@pytest.mark.parametrize("mode", ["kprobe", "fentry"])
def test_aggregate_program_compiles(kernel_source: str, mode: str, filters: Filters,
                                    tmp_path: Path) -> None:
    """--aggregate's program (calls kept per call path in the kernel) compiles in both modes."""
    from bcc import BPF
    from bcc.libbcc import lib

    class Compiled(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            """Compile only: this host cannot attach these programs."""

    fentry = {1: "ip_rcv", 2: "fib_table_lookup"} if mode == "fentry" else None
    cflags = build_cflags(FUNCS, filters, mode, fentry, netns=4026531840, aggregate=True)
    assert "-DSKBPATH_AGGREGATE" in cflags
    bpf = compile_bpf(Compiled, bpf_source(), cflags, kernel_source, lambda: None,
                      str(tmp_path / "bcc.log"))
    try:
        names = [f"skbpath_{kind}_{f.id}" for f in FUNCS.funcs for kind in ("entry", "exit")
                 if not fentry or f.id not in fentry]
        missing = [n for n in names if not lib.bpf_function_size(bpf.module, n.encode())]
        assert not missing
        # The aggregation map is in the program, with the layout user space reads.
        table = bpf["agg_paths"]
        leaf = table.Leaf
        assert [n for n, _ in leaf._fields_][:8] == [
            "parent", "calls", "no_return", "total", "self", "min", "max", "func"]
        assert len(leaf().hist) == 512
        if mode == "kprobe" and os.geteuid() == 0:
            _check_batch_read(table)
    finally:
        bpf.cleanup()


def _check_batch_read(table: Any) -> None:
    """The recorder's batch read of agg_paths (on this host's kernel) sees what a key
    by key read sees, for more paths than one batch step of a hash bucket holds."""
    from bcc.libbcc import lib
    from skbpath.tracer.record.bpf.aggregate import lookup_all, paths_of_arrays, read_paths

    for i in range(1, 301):
        v = table.Leaf()
        v.parent, v.func, v.calls, v.total, v.min, v.max = i - 1, i % 7, i, 10 * i, i, 2 * i
        v.hist[i % 512] = i
        table[table.Key(i * 0x9E3779B97F4A7C15 % 2**64)] = v
    arrays = lookup_all(table.map_fd, table.max_entries, lib.bpf_lookup_batch)
    assert arrays is not None and len(arrays[0]) == 300
    assert paths_of_arrays(*arrays) == read_paths(table.items())


@pytest.mark.parametrize("aggregate", [False, True], ids=["events", "aggregate"])
@pytest.mark.parametrize("filters", [Filters(), ALL_FILTERS], ids=["plain", "filters"])
def test_kprobe_programs_pass_this_hosts_verifier(kernel_source: str, filters: Filters,
                                                  aggregate: bool, tmp_path: Path) -> None:
    """Kprobe programs load here (this host verifies them; it cannot attach them): push,
    pop and the aggregation, with the masks and bounds a verifier needs (the lab kernels'
    own verifiers, stricter, are the lab tests')."""
    from bcc import BPF

    if os.geteuid() != 0:
        lab_unavailable("loading BPF needs root")

    class Compiled(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            """Load by hand, without attaching."""

    cflags = build_cflags(FUNCS, filters, "kprobe", None, netns=4026531840, aggregate=aggregate)
    bpf = compile_bpf(Compiled, bpf_source(), cflags, kernel_source, lambda: None,
                      str(tmp_path / "bcc.log"))
    try:
        for f in FUNCS.funcs:
            for kind in ("entry", "exit"):
                assert bpf.load_func(f"skbpath_{kind}_{f.id}".encode(), BPF.KPROBE).fd >= 0
    finally:
        bpf.cleanup()


@pytest.mark.parametrize("filters", [PCAP, PCAP_ETHER], ids=["pcap", "pcap-ether"])
def test_pcap_filter_passes_this_hosts_verifier(kernel_source: str, filters: Filters,
                                                tmp_path: Path) -> None:
    """Raw tracepoint programs load here: the classic BPF run in the filter passes a
    real verifier (this host's; the lab tests load the kprobe and fentry ones on 6.1)."""
    from bcc import BPF

    if os.geteuid() != 0:
        lab_unavailable("loading BPF needs root")

    class Compiled(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            """Load by hand, without attaching."""

    # Compiled as a live trace compiles (6.12's headers need the missing uapi types).
    bpf = compile_bpf(Compiled, bpf_source(), build_cflags(TRACEPOINTS, filters, "tracepoint"),
                      kernel_source, lambda: None, str(tmp_path / "bcc.log"))
    try:
        fds = []
        for f in TRACEPOINTS.funcs:
            fds.append(bpf.load_func(f"skbpath_tp_{f.id}".encode(), BPF.RAW_TRACEPOINT).fd)
            assert fds[-1] >= 0
            # The kernel's view of the program, as the recorder reads its misses.
            info = prog_info(fds[-1])
            assert info.type == BPF_PROG_TYPE_RAW_TRACEPOINT
            assert info.name.decode() == f"skbpath_tp_{f.id}"[:15]
        assert misses_by_program((str(fd), fd) for fd in fds) == {}  # loaded, never run
    finally:
        bpf.cleanup()


def test_prog_info_layout_matches_the_uapi_header(tmp_path: Path) -> None:
    """BpfProgInfo's offsets are the uapi header's (offsetof, compiled against the installed
    linux/bpf.h: the struct only ever grows at its end, so one kernel's offsets are all's)."""
    fields = ["name", "netns_dev", "jited_ksyms", "prog_tags", "run_cnt", "recursion_misses"]
    prog = tmp_path / "offsets.c"
    prog.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/bpf.h>\n"
                    "int main(void) {\n" + "".join(
                        f'printf("%zu\\n", offsetof(struct bpf_prog_info, {f}));\n'
                        for f in fields) + "return 0;\n}\n")
    exe = tmp_path / "offsets"
    subprocess.run(["gcc", "-o", str(exe), str(prog)], check=True)
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in got] == [getattr(BpfProgInfo, f).offset for f in fields]
