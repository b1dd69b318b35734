"""Drain rate: the bulk ring-buffer reader against bcc's ring_buffer_poll with a callback.

One BPF ring buffer, filled by a tiny XDP program run with
``BPF_PROG_TEST_RUN`` (``repeat`` = records per round: one record per run,
no network involved), is drained in alternating rounds:

* **bcc**: ``ring_buffer_consume`` with a Python callback that copies the
  record and decodes it with ``struct`` (what a per-record tracer does);
* **bulk**: :class:`skbpath.tracer.record.bpf.ringbuf.RingReader` on the same map:
  one numpy copy of everything committed, viewed as a structured array,
  and the bytes the trace file would get.

Both read the same map (the consumer position lives in the map's first page,
so either sees where the other stopped).  Only the drain is timed; the fill
is not.  bcc compiles the program against the lab kernel's headers (this
host's kernel may have none); the program is XDP, which loads on any kernel
with BPF_PROG_TEST_RUN.  Needs root and bcc.

    sudo .venv/bin/python bench/drain.py [--records N] [--rounds N] [--record-size 40|56]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skbpath.tracer.lab.headers import kernel_source_tree  # noqa: E402
from skbpath.tracer.record.bpf.ringbuf import RingReader, record_stride  # noqa: E402

RESULTS = ROOT / "bench" / "results-drain.md"
# The record layouts: v1's event (40 bytes) and v2's call (56, /work/tools/v2-record.md).
LAYOUTS = {40: "<QQIIHBBHHiI", 56: "<QQQQIIIiHHBBH"}

PROGRAM = r"""
#include <uapi/linux/bpf.h>
struct record { u64 seq; u64 ts; u64 words[RECORD_WORDS - 2]; };
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(seq, u64, 1);

int produce(struct xdp_md *ctx) {
    int zero = 0;
    u64 *n = seq.lookup(&zero);
    if (!n)
        return XDP_PASS;
    struct record *r = events.ringbuf_reserve(sizeof(*r));
    if (!r)
        return XDP_PASS;
    r->seq = (*n)++;
    r->ts = bpf_ktime_get_ns();
    #pragma unroll
    for (int i = 0; i < RECORD_WORDS - 2; i++)
        r->words[i] = r->seq + i;
    events.ringbuf_submit(r, 0);
    return XDP_PASS;
}
"""


class TestRunAttr(ctypes.Structure):
    """union bpf_attr's BPF_PROG_TEST_RUN part."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32), ("pad", ctypes.c_uint32),
    ]


SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
BPF_PROG_TEST_RUN = 10
_libc = ctypes.CDLL(None, use_errno=True)


def test_run(prog_fd: int, repeat: int) -> None:
    """Run the XDP program ``repeat`` times on a 64-byte zero frame."""
    frame = ctypes.create_string_buffer(64)
    out = ctypes.create_string_buffer(256)
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=64, data_size_out=256,
                       data_in=ctypes.addressof(frame), data_out=ctypes.addressof(out),
                       repeat=repeat)
    if _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")


def kernel_source() -> str:
    """A one-tree view of the lab kernel's headers, for BCC_KERNEL_SOURCE."""
    return str(kernel_source_tree(Path(tempfile.mkdtemp(prefix="skbpath-drain-"))))


class Producer:
    """The XDP program that writes numbered records into its ring buffer, compiled by bcc."""

    def __init__(self, pages: int, record_size: int) -> None:
        os.environ.setdefault("BCC_KERNEL_SOURCE", kernel_source())
        from bcc import BPF

        self.pages = pages
        self.record_size = record_size
        self.bpf = BPF(text=PROGRAM.encode(), cflags=[f"-DRINGBUF_PAGES={pages}",
                                                      f"-DRECORD_WORDS={record_size // 8}"])
        self.prog = self.bpf.load_func(b"produce", BPF.XDP)
        self.table = self.bpf[b"events"]

    def fill(self, records: int) -> None:
        """Run the program ``records`` times: as many records, while they fit."""
        test_run(self.prog.fd, records)

    def reader(self) -> RingReader:
        """A bulk reader on the program's ring buffer."""
        return RingReader.from_map_fd(self.table.map_fd, self.pages * 4096, self.record_size)

    def close(self) -> None:
        """Unload the program and free its maps."""
        self.bpf.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=250_000, help="records per round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per reader")
    ap.add_argument("--record-size", type=int, choices=sorted(LAYOUTS), default=40)
    ap.add_argument("--no-write", action="store_true", help="do not append to results-drain.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("drain.py needs root (BPF)", file=sys.stderr)
        return 2
    size = args.record_size
    need = args.records * record_stride(size)
    pages = 1 << max(need // 4096, 1).bit_length()  # a power of two that holds a round
    producer = Producer(pages, size)
    bpf = producer.bpf
    codes = {"Q": "<u8", "I": "<u4", "i": "<i4", "H": "<u2", "B": "u1"}
    dtype = np.dtype(",".join(codes[c] for c in LAYOUTS[size][1:]))
    decode = struct.Struct(LAYOUTS[size]).unpack
    string_at = ctypes.string_at
    got: list[tuple[int, ...]] = []
    append = got.append

    def on_record(_ctx: object, data: int, n: int) -> None:
        append(decode(string_at(data, n)))

    producer.table.open_ring_buffer(on_record)
    reader = producer.reader()
    rates: dict[str, list[float]] = {"bcc": [], "bulk": []}
    check: dict[str, int] = {"bcc": 0, "bulk": 0}
    for rnd in range(2 * args.rounds):
        name = "bcc" if rnd % 2 == 0 else "bulk"
        producer.fill(args.records)
        t0 = time.perf_counter()
        if name == "bcc":
            got.clear()
            while len(got) < args.records:
                bpf.ring_buffer_consume()
            n = len(got)
            last = got[-1][0]
        else:
            n, last = 0, -1
            while n < args.records:
                rows = reader.read()
                records = rows.view(dtype).ravel()  # decoded: every field a column
                blob = rows.tobytes()  # what TraceWriter.write_events gets
                n += len(records)
                if len(records):
                    seq = records["f0"]
                    assert last in (-1, int(seq[0]) - 1) and bool(np.all(np.diff(seq) == 1))
                    last = int(seq[-1])
                del blob
        dt = time.perf_counter() - t0
        # Every record once, in order: the round's sequence numbers end where they must.
        assert n == args.records and last == (rnd + 1) * args.records - 1, (name, n, last)
        check[name] += n
        rates[name].append(n / dt)
        print(f"round {rnd // 2 + 1} {name:4s} {n:,d} records in {dt * 1e3:8.1f} ms: "
              f"{n / dt / 1e6:6.2f} M records/s (last seq {last})", flush=True)
    reader.close()
    producer.close()
    bcc_rate = statistics.median(rates["bcc"])
    bulk_rate = statistics.median(rates["bulk"])
    ratio = bulk_rate / bcc_rate
    summary = (f"record {size} B, {args.rounds} rounds x {args.records:,d} records per reader "
               f"({check['bcc']:,d} bcc, {check['bulk']:,d} bulk): bcc callback "
               f"{bcc_rate / 1e6:.2f} M/s ({1e9 / bcc_rate:.0f} ns/record), bulk "
               f"{bulk_rate / 1e6:.2f} M/s ({1e9 / bulk_rate:.0f} ns/record), "
               f"ratio {ratio:.1f}x (target >= 10x)")
    print(summary)
    if not args.no_write:
        with open(RESULTS, "a") as fh:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            fh.write(f"| {when} | {platform.release()} | {size} | "
                     f"{check['bcc']:,d} / {check['bulk']:,d} | {bcc_rate / 1e6:.2f} | "
                     f"{bulk_rate / 1e6:.2f} | {ratio:.1f}x |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
