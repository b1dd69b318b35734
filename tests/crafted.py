"""Crafted trace files for the hostile-input tests: any record content, always a valid CRC.

A crafted trace passes every checksum, so only the schema and the reader's
limits stand between it and the model (tracer/traces/schema.py).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skbpath.tracer.traces.events import pack_events
from skbpath.tracer.traces.tracefile import (
    END,
    EVENTS,
    FLAG_ZLIB,
    HEADER,
    MAGIC,
    SOURCES,
    STACKS,
    STATS,
    TASKS,
)

from tests.synth import tx_rx_stream

_RECORD = struct.Struct("<BBHII")


def record(rtype: int, payload: bytes, flags: int = 0) -> bytes:
    """One record with a correct checksum."""
    return _RECORD.pack(rtype, flags, 0, len(payload), zlib.crc32(payload)) + payload


def json_payload(obj: Any) -> bytes:
    """JSON as the writer would produce it (NaN and 1e400 pass through as Python writes them)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def base_header() -> dict[str, Any]:
    """A complete header over tests.synth.demo_table(), every optional field filled."""
    from tests.test_tracefile import synthetic_header

    h = synthetic_header()
    h.update({
        "tool": "skbpath", "machine": "x86_64", "started": "2026-01-01T00:00:00Z",
        "journey_timeout_ns": 5_000_000_000, "cflags": ["-DX=1"],
        "recorded_with": "tests", "drop_reasons": {"2": "NO_SOCKET"},
        "interfaces": {"1": "lo", "2": "eth0"},
        "skipped": [{"name": "tcp_foo", "reason": "inlined"}],
    })
    return h


@dataclass
class Crafted:
    """A trace as a list of (type, flags, payload) records after the header."""

    header: dict[str, Any] = field(default_factory=base_header)
    header_bytes: bytes | None = None  # replaces the JSON header payload when set
    records: list[tuple[int, int, bytes]] = field(default_factory=list)
    version: int = 1  # crafted traces hold v1 events, and their headers say version 1

    def add_json(self, rtype: int, obj: Any) -> Crafted:
        self.records.append((rtype, 0, json_payload(obj)))
        return self

    def add_raw(self, rtype: int, payload: bytes, flags: int = 0) -> Crafted:
        self.records.append((rtype, flags, payload))
        return self

    def to_bytes(self) -> bytes:
        head = self.header_bytes if self.header_bytes is not None else json_payload(self.header)
        out = [MAGIC, struct.pack("<HH", self.version, 0), record(HEADER, head)]
        out += [record(t, p, f) for t, f, p in self.records]
        return b"".join(out)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.to_bytes())
        return path


def complete(packets: int = 8) -> Crafted:
    """A well-formed crafted trace: events, stacks, tasks, stats, end, sources."""
    events = pack_events(tx_rx_stream(packets))
    c = Crafted()
    c.add_raw(EVENTS, zlib.compress(events, 1), FLAG_ZLIB)
    c.add_json(STACKS, {"stacks": {"1": ["tcp_v4_rcv+0x1 [kernel]", "ip_rcv+0x9 [kernel]"]}})
    c.add_json(TASKS, {"tasks": {"100": "iperf3"}})
    c.add_json(STATS, {"lost": {"ringbuf_lost": 0}})
    c.add_json(END, {"events": len(events) // 40, "duration_s": 1.0,
                     "lost": {"ringbuf_lost": 0}, "model": {"calls": 1}})
    c.add_json(SOURCES, {"functions": {"tcp_v4_rcv": {"file": "net/ipv4/tcp_ipv4.c",
                                                      "line": 1, "layer": "transport"}},
                         "frames": {}})
    return c


def zlib_bomb(size: int) -> bytes:
    """zlib data that decompresses to ``size`` zero bytes, made without holding them."""
    comp = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = []
    left = size
    while left > 0:
        parts.append(comp.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(comp.flush())
    return b"".join(parts)


@dataclass
class ChildRun:
    """What a ``skbpath`` child process did: exit code, output, peak RSS in MB."""

    code: int
    stdout: str
    stderr: str
    peak_mb: float


# Runs ARGV[2:] and writes its own peak RSS (KB) and exit code to fd ARGV[1].  A
# child's ru_maxrss starts from the high-water mark of the process it was forked
# from (Linux records it at exec), so a big pytest process would inflate it:
# forking from this small launcher keeps the measurement the child's own.
_LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(fd, f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def skbpath_child(args: list[str], *, stdin: Any = subprocess.DEVNULL, stdout: Any = None,
                  timeout: float = 60, preexec: Any = None) -> ChildRun:
    """Run ``skbpath ARGS`` as a child and measure its own peak RSS (os.wait4's rusage)."""
    r, w = os.pipe()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(w), sys.executable, "-m",
                 "skbpath.tracer.cli.entry", *args], stdin=stdin,
                stdout=stdout if stdout is not None else out, stderr=err,
                env={**os.environ, "COLUMNS": "200"}, preexec_fn=preexec, pass_fds=(w,),
            )
            os.close(w)
            w = -1
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # the launcher; its child gets EOF/SIGPIPE or runs on briefly
                proc.wait()
                raise TimeoutError(f"skbpath {' '.join(args)}: still running after "
                                   f"{timeout} s") from None
            report = os.read(r, 100).decode().split()
            peak_kb, code = int(report[0]), int(report[1])
            out.seek(0)
            err.seek(0)
            return ChildRun(code, out.read().decode(errors="replace"),
                            err.read().decode(errors="replace"), peak_kb / 1024)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
