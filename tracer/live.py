"""Live tracing with bcc: the only module that imports bcc, and only lazily.

Flow: check the machine, compile and attach (kprobes, fentry trampolines
with kprobe fallback, or raw tracepoints: see tracer/attach.py), write the
trace header with what was attached how, then poll the ring buffer,
streaming raw events to the trace file and through the model.  Ctrl-C,
SIGTERM or ``--duration`` stop it; probes are detached and the buffer
drained before the final records are written.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from . import __version__
from .attach import Features, FentryPlan, mode_gaps
from .bpfconfig import Filters, build_cflags, own_netns
from .errors import SkbpathError
from .events import EVENT_SIZE, unpack_events
from .kernel import KernelInfo, interface_names
from .model import Model
from .pairing import Call
from .rawtp import strip_tracing_frames
from .resolve import Resolution
from .stackframes import clean_stack
from .tracefile import END, STACKS, STATS, TASKS, TraceWriter

COUNTERS = ("ringbuf_lost", "stack_lost", "filtered")
KRETPROBE_MAXACTIVE = 64  # blocking calls (recv, sendmsg waiting for memory) hold instances


def bcc_available() -> bool:
    """True if bcc's Python module can be imported (Debian's python3-bpfcc)."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        return False
    return True


def features(kernel: KernelInfo) -> Features:
    """What the BPF modes depend on, on this machine (bcc looked up, not imported)."""
    return Features.detect(kernel, bcc_available(), platform.machine())


def check_environment(kernel: KernelInfo, attach: str = "kprobe") -> None:
    """Raise one clear error, exit code 2, if this machine cannot trace live in ``attach`` mode."""
    if os.geteuid() != 0:
        raise SkbpathError("skbpath trace needs root: run it with sudo")
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        raise SkbpathError(
            "bcc's Python module is missing: apt-get install python3-bpfcc bpfcc-tools, "
            "and use a venv made with --system-site-packages"
        ) from exc
    if attach == "kprobe" and not kernel.has_kprobes:
        raise SkbpathError(
            f"this kernel ({kernel.release}) has no kprobes (CONFIG_KPROBES is off); "
            "trace a kernel that has them, e.g. with 'skbpath lab', or use --attach tracepoint"
        )
    if attach in ("fentry", "tracepoint") and not kernel.has_btf:
        raise SkbpathError(
            f"--attach {attach}: this kernel ({kernel.release}) has no BTF "
            "(/sys/kernel/btf/vmlinux); use --attach kprobe or tracefs"
        )
    gaps = [g for g in mode_gaps(features(kernel), attach) if g not in ("no bcc", "no headers")]
    if gaps:
        raise SkbpathError(f"--attach {attach} is not possible on {kernel.release}: "
                           f"{', '.join(gaps)}; try --attach auto")
    if not kernel.has_headers:
        raise SkbpathError(
            f"no kernel headers for {kernel.release}: apt-get install "
            f"linux-headers-{kernel.release} (bcc compiles against them)"
        )


@dataclass
class TraceOptions:
    """What ``skbpath trace`` was asked to do."""

    output: str
    duration: float | None = None
    filters: Filters = field(default_factory=Filters)
    ready_file: str | None = None
    recorded_with: str | None = None
    drop_reasons: dict[int, str] = field(default_factory=dict)
    journey_timeout_ns: int = 5_000_000_000
    batch_seconds: float = 0.2


@dataclass
class TraceResult:
    """What a live trace recorded, for the final report."""

    events: int
    lost: dict[str, int]
    duration: float
    model: Model
    skipped: list[tuple[str, str]]


class _Stop:
    """Turns SIGINT and SIGTERM into a flag, so stopping is always orderly."""

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


def kprobe_misses(tracefs: str, pid: int) -> int:
    """Sum the kernel's miss counts for this process's kprobes and kretprobes."""
    total = 0
    try:
        with open(os.path.join(tracefs, "kprobe_profile")) as fh:
            for line in fh:
                parts = line.split()
                # bcc names its events p_<sym>_bcc_<pid> and r_<sym>_bcc_<pid>
                if len(parts) == 3 and parts[0].endswith(f"_bcc_{pid}"):
                    total += int(parts[2])
    except OSError:
        pass
    return total


def chown_to_invoker(path: str) -> None:
    """Give a file written under sudo to the user who ran sudo."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid:
        with contextlib.suppress(OSError):
            os.chown(path, int(uid), int(gid))


def trace_header(
    kernel: KernelInfo, resolution: Resolution, opts: TraceOptions, cflags: list[str],
    attach: str = "kprobe", attach_by: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The HEADER record of a live trace.

    ``attach_by`` maps each mechanism (fentry, kprobe, raw_tracepoint) to the
    symbols it was attached to; omitted when not given.
    """
    header = {
        "format": "skbpath-trace",
        "version": 1,
        "tool": "skbpath",
        "tool_version": __version__,
        "kernel": kernel.release,
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "attach": attach,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "functions": resolution.funcs.to_json(),
        "skipped": [{"name": s.name, "reason": s.reason} for s in resolution.skipped],
        "filters": opts.filters.active(),
        "journey_timeout_ns": opts.journey_timeout_ns,
        "cflags": cflags,
        "recorded_with": opts.recorded_with,
        # Names of kfree_skb_reason's codes, from this kernel's BTF.
        "drop_reasons": {str(k): v for k, v in sorted(opts.drop_reasons.items())},
        # Output devices of recorded routes are ifindexes; these name them.
        "interfaces": {str(k): v for k, v in sorted(interface_names().items())},
    }
    if attach_by is not None:
        header["attach_by"] = attach_by
    return header


def _no_autoload(bpf_class: Any) -> Any:
    """bcc's BPF class, minus its auto-attach of kfunc__-named programs at load.

    bcc derives a trampoline's target from the program name (kfunc__<symbol>)
    and attaches all such programs in its constructor, where one failure
    would abort the whole trace.  We attach them one by one instead, so a
    function whose trampoline fails falls back to its kprobe.
    """

    class Bpf(bpf_class):  # type: ignore[misc]
        def _trace_autoload(self) -> None:
            pass

    return Bpf


class LiveTracer:
    """Runs one live trace; see the module docstring."""

    def __init__(
        self,
        kernel: KernelInfo,
        resolution: Resolution,
        opts: TraceOptions,
        progress: Callable[[int, int, float], None] | None = None,
        attach: str = "kprobe",
        fentry: FentryPlan | None = None,
    ) -> None:
        self.kernel = kernel
        self.resolution = resolution
        self.opts = opts
        self.progress = progress
        self.attach = attach
        self.fentry = fentry or FentryPlan()
        self.cflags = build_cflags(resolution.funcs, opts.filters, attach, self.fentry.fentry,
                                   own_netns())
        self.skipped = [(s.name, s.reason) for s in resolution.skipped]
        self.tasks: dict[int, str] = {}
        self.new_tasks: dict[int, str] = {}
        self.stacks_written: set[int] = set()
        # What is attached, by mechanism: kprobe, fentry or raw_tracepoint.
        self.attached: dict[str, list[str]] = {"fentry": [], "kprobe": [], "raw_tracepoint": []}

    def _on_root(self, call: Call) -> None:
        tgid = call.tgid
        if tgid and tgid not in self.tasks:
            try:
                with open(f"/proc/{tgid}/comm") as fh:
                    comm = fh.read().strip()
            except OSError:
                comm = "?"
            self.tasks[tgid] = self.new_tasks[tgid] = comm

    def run(self) -> TraceResult:
        """Trace until the duration passes or a signal arrives; return the counts."""
        from bcc import BPF  # lazily: only live tracing needs bcc

        from probes.catalog import bpf_source

        opts = self.opts
        model = Model(
            self.resolution.funcs,
            require_match=bool(opts.filters.active()),
            keep_journeys=False,
            on_root=self._on_root,
            timeout_ns=opts.journey_timeout_ns,
        )
        with _Stop() as stop, open(opts.output, "wb") as fh:
            chown_to_invoker(opts.output)
            bpf = _no_autoload(BPF)(src_file=bpf_source().encode(), cflags=self.cflags)
            chunks: list[bytes] = []
            writer: TraceWriter | None = None
            try:
                self._attach(bpf)
                # The header is written once attached, so that it says how.
                header = trace_header(self.kernel, self.resolution, opts, self.cflags,
                                      self.attach, self.attach_by())
                if self.attach == "fentry":
                    header["fentry_fallback"] = dict(sorted(self.fentry.kprobe.items()))
                writer = TraceWriter(fh, header)
                elapsed = self._loop(bpf, writer, model, stop, chunks)
            finally:
                # Detach first, so that no probe outlives us whatever fails next.
                self._detach(bpf)
                try:
                    if writer is not None:
                        bpf.ring_buffer_consume()  # drain what was already in the buffer
                        self._write_batch(chunks, writer, model)
                        self._flush_meta(bpf, writer)
                    lost = self._counters(bpf)
                    lost["kprobe_missed"] = kprobe_misses(self.kernel.tracefs, os.getpid())
                finally:
                    bpf.cleanup()
            model.finish()
            writer.write_json(STATS, {"lost": lost})
            writer.write_json(
                END,
                {
                    "events": writer.events_written,
                    "duration_s": round(elapsed, 3),
                    "lost": lost,
                    "model": model.summary(),
                    "attach_failures": self.skipped[len(self.resolution.skipped) :],
                },
            )
            writer.close()
        return TraceResult(writer.events_written, lost, elapsed, model, self.skipped)

    def attach_by(self) -> dict[str, list[str]]:
        """The trace header's ``attach_by``: attached symbols by mechanism (non-empty only)."""
        return {k: sorted(v) for k, v in self.attached.items() if v}

    def _attach(self, bpf: Any) -> None:
        if self.attach == "tracepoint":
            self._attach_tracepoints(bpf)
        else:
            self._attach_functions(bpf)
        if not any(self.attached.values()):
            raise SkbpathError("no probe could be attached")

    def _attach_tracepoints(self, bpf: Any) -> None:
        for f in self.resolution.funcs.funcs:
            event = f.symbols[0]
            try:
                bpf.attach_raw_tracepoint(tp=event.encode(), fn_name=f"skbpath_tp_{f.id}".encode())
                self.attached["raw_tracepoint"].append(event)
            except Exception as exc:  # bcc raises bare Exception
                self.skipped.append((f.name, f"attach failed: {exc}"))

    def _attach_functions(self, bpf: Any) -> None:
        fentry = self.fentry.fentry
        for f in self.resolution.funcs.funcs:
            for sym in f.symbols:
                if fentry.get(f.id) == sym and self._attach_fentry(bpf, sym):
                    continue
                if not self.kernel.has_kprobes:
                    self.skipped.append((sym, "no fentry, and this kernel has no kprobes"))
                    continue
                try:
                    # Returns first: an entry is then never missing its return probe.
                    bpf.attach_kretprobe(
                        event=sym, fn_name=f"skbpath_exit_{f.id}", maxactive=KRETPROBE_MAXACTIVE
                    )
                    self.attached["kprobe"].append(sym)
                    bpf.attach_kprobe(event=sym, fn_name=f"skbpath_entry_{f.id}")
                except Exception as exc:  # bcc raises bare Exception
                    self.skipped.append((sym, f"attach failed: {exc}"))

    def _attach_fentry(self, bpf: Any, sym: str) -> bool:
        """Attach fexit then fentry programs to ``sym``; False (nothing attached) on failure."""
        try:
            bpf.attach_kretfunc(fn_name=f"kretfunc__{sym}".encode())
        except Exception as exc:  # bcc raises bare Exception
            self.fentry.kprobe[sym] = f"fentry failed: {exc}"
            return False
        try:
            bpf.attach_kfunc(fn_name=f"kfunc__{sym}".encode())
        except Exception as exc:
            with contextlib.suppress(Exception):
                bpf.detach_kretfunc(fn_name=f"kretfunc__{sym}".encode())
            self.fentry.kprobe[sym] = f"fentry failed: {exc}"
            return False
        self.attached["fentry"].append(sym)
        return True

    def _detach(self, bpf: Any) -> None:
        for sym in self.attached["kprobe"]:
            for detach in (bpf.detach_kprobe, bpf.detach_kretprobe):
                # Not attached when the entry failed after the return attached.
                with contextlib.suppress(Exception):
                    detach(event=sym)
        for sym in self.attached["fentry"]:
            for prefix, detach in (("kfunc__", bpf.detach_kfunc),
                                   ("kretfunc__", bpf.detach_kretfunc)):
                with contextlib.suppress(Exception):
                    detach(fn_name=f"{prefix}{sym}".encode())
        for event in self.attached["raw_tracepoint"]:
            with contextlib.suppress(Exception):
                bpf.detach_raw_tracepoint(tp=event.encode())
        # Keep the record of what was attached for the report; detaching is idempotent.

    def _write_batch(self, chunks: list[bytes], writer: TraceWriter, model: Model) -> int:
        if not chunks:
            return 0
        blob = b"".join(chunks)
        chunks.clear()
        writer.write_events(blob)
        model.feed(unpack_events(blob))
        return len(blob) // EVENT_SIZE

    def _loop(
        self, bpf: Any, writer: TraceWriter, model: Model, stop: _Stop, chunks: list[bytes]
    ) -> float:
        append = chunks.append
        string_at = ctypes.string_at

        def on_event(_ctx: Any, data: Any, size: int) -> None:
            # Copy and return: the ring buffer callback is the hot path.  A
            # record is one event, or two (a tracepoint hit's ENTRY and EXIT).
            append(string_at(data, size))

        bpf["events"].open_ring_buffer(on_event)
        if self.opts.ready_file:
            with open(self.opts.ready_file, "w") as rf:
                rf.write(f"{os.getpid()}\n")
        start = time.monotonic()
        last_flush = last_meta = start
        events = 0
        duration = self.opts.duration
        while not stop.requested:
            bpf.ring_buffer_poll(timeout=50)
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            if now - last_flush >= self.opts.batch_seconds:
                events += self._write_batch(chunks, writer, model)
                last_flush = now
            if now - last_meta >= 2.0:
                self._flush_meta(bpf, writer)
                lost = self._counters(bpf)
                writer.write_json(STATS, {"lost": lost})
                last_meta = now
                if self.progress:
                    self.progress(events, lost["ringbuf_lost"] + lost["stack_lost"], now - start)
        return time.monotonic() - start

    def _counters(self, bpf: Any) -> dict[str, int]:
        table = bpf["counters"]
        out = {}
        for slot, name in enumerate(COUNTERS):
            out[name] = int(sum(table[ctypes.c_int(slot)]))
        return out

    def _flush_meta(self, bpf: Any, writer: TraceWriter) -> None:
        """Write stacks and task names seen since the last flush."""
        stacks = {}
        table = bpf["stacks"]
        for key in list(table.keys()):
            sid = int(key.value)
            if sid in self.stacks_written:
                continue
            frames = [
                bpf.ksym(addr, show_module=True, show_offset=True).decode(errors="replace")
                for addr in table.walk(sid)
            ]
            # fentry programs' and trampolines' own frames are not the kernel's path.
            frames = clean_stack(frames)
            if self.attach == "tracepoint":
                # Start at the function that hit the tracepoint, as the other modes do.
                frames = strip_tracing_frames(frames)
            stacks[str(sid)] = frames
            self.stacks_written.add(sid)
        if stacks:
            writer.write_json(STACKS, {"stacks": stacks})
        if self.new_tasks:
            writer.write_json(TASKS, {"tasks": {str(k): v for k, v in self.new_tasks.items()}})
            self.new_tasks.clear()
