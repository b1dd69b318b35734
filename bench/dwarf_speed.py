"""DWARF source-line speed: map 100 functions in Debian's 6.1 vmlinux, cold and cached.

Not a test: it prints numbers and appends them to bench/results-dwarf.md.
Cold = an empty cache dir (the symbol/CU index is built from .symtab and
.debug_aranges); cached = a second SourceMap in a new process-like state
that reads the index from disk and parses only the CUs it needs.

    nice -n 10 .venv/bin/python bench/dwarf_speed.py [--vmlinux PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from skbpath.probes.catalog import load_catalog  # noqa: E402
from skbpath.tracer.kernel.dwarf import SourceMap  # noqa: E402

VMLINUX = "/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"
RESULTS = os.path.join(ROOT, "bench", "results-dwarf.md")
# Kernel functions beyond the catalog (fixed, so runs compare), from the
# vmlinux symtab: the stack frames a networking trace usually shows.
EXTRA = [
    "sch_direct_xmit", "ip_output", "tcp_v4_do_rcv", "ip_protocol_deliver_rcu",
    "ip_local_deliver_finish", "ip_sublist_rcv_finish", "ip_sublist_rcv", "ip_list_rcv",
    "__netif_receive_skb_list_core", "netif_receive_skb_list_internal",
    "napi_gro_complete.constprop.0", "dev_gro_receive", "handle_softirqs", "__irq_exit_rcu",
    "__sk_mem_raise_allocated", "__sk_mem_schedule", "tcp_wmem_schedule",
    "tcp_sendmsg_locked", "__sock_sendmsg", "sock_write_iter", "vfs_write", "ksys_write",
    "do_syscall_64", "tcp_write_xmit", "__tcp_push_pending_frames", "__tcp_close",
    "tcp_close", "inet_release", "__sock_release", "sock_close", "__fput", "task_work_run",
    "tcp_rcv_established", "tcp_ack", "tcp_clean_rtx_queue", "tcp_data_queue",
    "tcp_event_data_recv", "tcp_recvmsg", "tcp_recvmsg_locked", "skb_copy_datagram_iter",
    "tcp_cleanup_rbuf", "tcp_rcv_space_adjust", "ip_rcv_core", "ip_route_input_noref",
    "ip_rcv_finish", "fib_table_lookup", "neigh_resolve_output", "arp_process",
    "dev_queue_xmit_nit", "validate_xmit_skb", "netif_skb_features", "skb_release_data",
    "kfree_skbmem", "skb_clone", "__alloc_skb", "__napi_alloc_skb", "tcp_v4_send_check",
    "tcp_options_write", "tcp_established_options", "tcp_current_mss", "tcp_send_ack",
    "__tcp_send_ack.part.0", "tcp_delack_timer_handler", "tcp_write_timer_handler",
    "udp_sendmsg", "udp_send_skb", "udp_rcv", "__udp4_lib_rcv", "udp_queue_rcv_one_skb",
    "sock_def_readable", "sk_reset_timer", "release_sock", "lock_sock_nested",
    "__release_sock", "sk_stream_alloc_skb", "tcp_push", "tcp_tso_segs",
    "tcp_schedule_loss_probe", "tcp_rearm_rto", "tcp_update_pacing_rate",
]


def names(count: int = 100) -> list[str]:
    """The catalog's function names, then EXTRA, without repeats, up to ``count``."""
    out: list[str] = []
    for n in [p.name for p in load_catalog()] + EXTRA:
        if n and n not in out:  # driver roles have no fixed name
            out.append(n)
    return out[:count]


def run(path: str, cache_dir: str, funcs: list[str]) -> tuple[float, float, int, bool]:
    """(open s, lookup s, functions found, index built) for one SourceMap."""
    t0 = time.perf_counter()
    smap = SourceMap.open(path, cache_dir=cache_dir)
    t1 = time.perf_counter()
    found = sum(1 for n in funcs if smap.function_line(n) is not None)
    t2 = time.perf_counter()
    built = smap.index_built
    smap.close()
    return t1 - t0, t2 - t1, found, built


def main() -> int:
    """Run the benchmark; prints how to get the vmlinux when it is absent."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vmlinux", default=VMLINUX)
    args = ap.parse_args()
    if not os.path.exists(args.vmlinux):
        print(f"{args.vmlinux} is missing; install Debian's debug kernel image (~860 MB):\n"
              "  sudo apt-get install linux-image-6.1.0-56-amd64-dbg")
        return 0
    funcs = names()
    with tempfile.TemporaryDirectory() as cache:
        rows = [("cold", *run(args.vmlinux, cache, funcs)),
                ("cached", *run(args.vmlinux, cache, funcs))]
    lines = [f"## {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
             f"{os.path.basename(args.vmlinux)}, {len(funcs)} functions", "",
             "| run | open+index | 100 lookups | total | found | index built |",
             "|---|---|---|---|---|---|"]
    for label, t_open, t_look, found, built in rows:
        line = (f"| {label} | {t_open:.2f} s | {t_look:.2f} s | {t_open + t_look:.2f} s "
                f"| {found}/{len(funcs)} | {built} |")
        print(line)
        lines.append(line)
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
