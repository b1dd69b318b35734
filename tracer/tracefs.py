"""The ``tracefs`` attach mode: tracepoints read from a private ftrace instance.

For kernels where bcc cannot compile (no kprobes, no headers), this mode
loads no BPF at all.  It creates ``instances/skbpath-<pid>`` under tracefs,
enables the net/napi/skb/tcp/udp/sock/qdisc tracepoints that exist there,
adds ``stacktrace`` triggers on a few of them, and reads the instance's
``trace_pipe``.  The top-level instance and other instances (the user's own
tracing) are never touched, and the instance is removed on every exit path.

This module is the live session: the instance's lifecycle, reading
``trace_pipe`` and writing the trace.  What the text means (hits, stacks,
skb ids, events) is tracer/tracefs_parse.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .errors import SkbpathError
from .events import EVENT_STRUCT, FLAG_MATCHED
from .kernel import KernelInfo
from .live import TraceOptions, TraceResult, _Stop, chown_to_invoker, trace_header
from .model import Model
from .resolve import Resolution
from .tracefile import END, STACKS, STATS, TASKS, TraceWriter
from .tracefs_parse import (
    TRACEPOINTS,
    StackIds,
    TracefsParser,
    Tracepoint,
    UserFilter,
    drop_reason_codes,
    function_table,
    hits_to_events,
)

INSTANCE_PREFIX = "skbpath-"
BUFFER_KB = 8192  # per CPU: a burst is kept while Python catches up


def available_tracepoints(tracefs: str) -> list[str]:
    """The ``group:event`` names of :data:`TRACEPOINTS` that this kernel has."""
    events = os.path.join(tracefs, "events")
    return [
        tp.name for tp in TRACEPOINTS if os.path.isdir(os.path.join(events, tp.group, tp.event))
    ]


def ensure_tracefs(tracefs: str) -> None:
    """Mount tracefs at ``tracefs`` if it is not mounted (as perf does); else explain."""
    if os.path.isdir(os.path.join(tracefs, "instances")):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["mount", "-t", "tracefs", "nodev", tracefs], check=True,
                       capture_output=True, timeout=10)
    if not os.path.isdir(os.path.join(tracefs, "instances")):
        raise SkbpathError(
            f"tracefs is not available at {tracefs} (mount -t tracefs nodev {tracefs})"
        )


def instance_lost(instance: str) -> dict[str, int]:
    """Sum the per-CPU ``overrun`` and ``dropped events`` counts of an instance."""
    lost = {"tracefs_overrun": 0, "tracefs_dropped": 0}
    keys = {"overrun": "tracefs_overrun", "dropped events": "tracefs_dropped"}
    per_cpu = os.path.join(instance, "per_cpu")
    try:
        cpus = sorted(os.listdir(per_cpu))
    except OSError:
        return lost
    for cpu in cpus:
        try:
            with open(os.path.join(per_cpu, cpu, "stats")) as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key.strip() in keys and value.strip().isdigit():
                        lost[keys[key.strip()]] += int(value)
        except OSError:
            continue
    return lost


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class Instance:
    """A private ftrace instance, set up and torn down by skbpath alone."""

    def __init__(self, tracefs: str, used: list[Tracepoint]) -> None:
        self.tracefs = tracefs
        self.path = os.path.join(tracefs, "instances", f"{INSTANCE_PREFIX}{os.getpid()}")
        self.used = used
        self.triggers: list[str] = []
        self.enabled: list[str] = []
        self.clock = "local"

    def _event(self, tp: Tracepoint, name: str) -> str:
        return os.path.join(self.path, "events", tp.group, tp.event, name)

    def create(self) -> None:
        """Make the instance and enable our events and triggers in it."""
        try:
            os.mkdir(self.path)
        except FileExistsError:
            # Left by a killed run of this same pid (pids are reused): ours to reclaim.
            self.remove()
            os.mkdir(self.path)
        except OSError as exc:
            raise SkbpathError(f"cannot create the tracefs instance {self.path}: "
                               f"{exc.strerror}") from exc
        try:
            _write(os.path.join(self.path, "tracing_on"), "0")
            with contextlib.suppress(OSError):
                _write(os.path.join(self.path, "buffer_size_kb"), str(BUFFER_KB))
            with contextlib.suppress(OSError):
                # Monotonic time, like bpf_ktime_get_ns in kprobe mode.
                _write(os.path.join(self.path, "trace_clock"), "mono")
                self.clock = "mono"
            for opt in ("record-tgid", "sym-offset", "irq-info"):
                with contextlib.suppress(OSError):
                    _write(os.path.join(self.path, "options", opt), "1")
            for tp in self.used:
                if tp.stack:
                    _write(self._event(tp, "trigger"), "stacktrace")
                    self.triggers.append(tp.name)
                _write(self._event(tp, "enable"), "1")
                self.enabled.append(tp.name)
        except OSError as exc:
            raise SkbpathError(f"cannot set up the tracefs instance {self.path}: "
                               f"{exc.strerror}") from exc

    def start(self) -> None:
        """Start recording."""
        _write(os.path.join(self.path, "tracing_on"), "1")

    def stop(self) -> None:
        """Stop recording (what is buffered can still be read)."""
        with contextlib.suppress(OSError):
            _write(os.path.join(self.path, "tracing_on"), "0")

    def remove(self) -> None:
        """Disable events and triggers, then remove the instance; never raises."""
        if not os.path.isdir(self.path):
            return
        self.stop()
        with contextlib.suppress(OSError):
            _write(os.path.join(self.path, "events", "enable"), "0")
        for tp in TRACEPOINTS:
            trig = self._event(tp, "trigger")
            if tp.stack and os.path.exists(trig):
                with contextlib.suppress(OSError):
                    _write(trig, "!stacktrace")
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # EBUSY while a reader still holds trace_pipe


class TracefsTracer:
    """Runs one tracefs trace; see the module docstring."""

    def __init__(
        self,
        kernel: KernelInfo,
        opts: TraceOptions,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.kernel = kernel
        self.opts = opts
        self.progress = progress
        self.tracefs = kernel.tracefs
        self.funcs, self.used, self.skipped = function_table(available_tracepoints(self.tracefs))
        if not self.used:
            raise SkbpathError(f"no usable tracepoint under {self.tracefs}/events")
        f = opts.filters
        self.filter = UserFilter(iface=f.iface, pid=f.pid, comm=f.comm)
        self.reasons = self._read_reasons()
        self.parser = TracefsParser(self.used, self.reasons)
        self.stacks = StackIds()
        self.tasks: dict[int, str] = {}
        self.new_tasks: dict[int, str] = {}
        self.filtered = 0
        self.instance_path = ""

    def _read_reasons(self) -> dict[int, str]:
        try:
            with open(os.path.join(self.tracefs, "events/skb/kfree_skb/format")) as fh:
                return drop_reason_codes(fh.read())
        except OSError:
            return {}

    def header(self, clock: str) -> dict[str, Any]:
        """The HEADER record: live's fields, attach "tracefs" and the events used."""
        opts = self.opts
        opts.drop_reasons = self.reasons
        h = trace_header(self.kernel, Resolution(self.funcs, self.skipped), opts, [])
        h["attach"] = "tracefs"
        h["tracefs_events"] = [tp.name for tp in self.used]
        h["trace_clock"] = clock
        return h

    def run(self) -> TraceResult:
        """Trace until the duration passes or a signal arrives; return the counts."""
        opts = self.opts
        model = Model(self.funcs, require_match=self.filter.active, keep_journeys=False,
                      timeout_ns=opts.journey_timeout_ns)
        ensure_tracefs(self.tracefs)
        inst = Instance(self.tracefs, self.used)
        self.instance_path = inst.path
        lost = {"tracefs_overrun": 0, "tracefs_dropped": 0, "filtered": 0}
        with _Stop() as stop:
            try:
                inst.create()
                with open(opts.output, "wb") as fh:
                    chown_to_invoker(opts.output)
                    writer = TraceWriter(fh, self.header(inst.clock))
                    fd = os.open(os.path.join(inst.path, "trace_pipe"),
                                 os.O_RDONLY | os.O_NONBLOCK)
                    try:
                        inst.start()
                        elapsed = self._loop(fd, writer, model, stop)
                        inst.stop()
                        self._drain(fd)  # what was recorded before the stop
                    finally:
                        os.close(fd)
                    self.parser.feed("\n")
                    self.parser.release()
                    self._write_batch(writer, model)
                    lost.update(instance_lost(inst.path))
                    lost["filtered"] = self.filtered
                    model.finish()
                    writer.write_json(STATS, {"lost": lost})
                    writer.write_json(END, {
                        "events": writer.events_written,
                        "duration_s": round(elapsed, 3),
                        "lost": lost,
                        "model": model.summary(),
                        "attach_failures": [],
                        "unparsed_lines": self.parser.unparsed,
                        "orphan_stacks": self.parser.orphan_stacks,
                        "drop_reasons": {str(k): v for k, v in self.parser.new_reasons.items()},
                    })
                    writer.close()
            finally:
                inst.remove()
        skipped = [(s.name, s.reason) for s in self.skipped]
        return TraceResult(writer.events_written, lost, elapsed, model, skipped)

    def _drain(self, fd: int) -> None:
        for _ in range(10_000):  # bounded: the buffer is finite and recording stopped
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            self.parser.feed(data.decode(errors="replace"))

    def _loop(self, fd: int, writer: TraceWriter, model: Model, stop: _Stop) -> float:
        if self.opts.ready_file:
            with open(self.opts.ready_file, "w") as rf:
                rf.write(f"{os.getpid()}\n")
        start = time.monotonic()
        last_flush = last_meta = start
        duration = self.opts.duration
        events = 0
        while not stop.requested:
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
            except InterruptedError:
                continue
            got = False
            if ready:
                try:
                    data = os.read(fd, 1 << 16)
                    if data:
                        self.parser.feed(data.decode(errors="replace"))
                        got = True
                except BlockingIOError:
                    pass
            if not got:
                self.parser.release()  # idle: no stack block is half read
            now = time.monotonic()
            if now - last_flush >= self.opts.batch_seconds:
                events += self._write_batch(writer, model)
                last_flush = now
            if now - last_meta >= 2.0:
                self._flush_meta(writer)
                lost = instance_lost(self.instance_path)
                lost["filtered"] = self.filtered
                writer.write_json(STATS, {"lost": lost})
                last_meta = now
                if self.progress:
                    self.progress(events, lost["tracefs_overrun"] + lost["tracefs_dropped"],
                                  now - start)
        return time.monotonic() - start

    def _write_batch(self, writer: TraceWriter, model: Model) -> int:
        kept = []
        frees = self.funcs.frees
        for hit in self.parser.take():
            if self.filter.keep(hit, frees[hit.func]):
                kept.append(hit)
                if hit.tgid and hit.tgid not in self.tasks:
                    self.tasks[hit.tgid] = self.new_tasks[hit.tgid] = hit.comm
            else:
                self.filtered += 1
        if not kept:
            return 0
        events = hits_to_events(kept, self.stacks, FLAG_MATCHED if self.filter.active else 0)
        # Stacks first, so that a killed tracer leaves no event without its stack.
        self._flush_meta(writer)
        pack = EVENT_STRUCT.pack
        writer.write_events(b"".join(pack(*e) for e in events))
        model.feed(events)
        return len(events)

    def _flush_meta(self, writer: TraceWriter) -> None:
        new = self.stacks.take_new()
        if new:
            writer.write_json(STACKS, {"stacks": {str(k): v for k, v in new.items()}})
        if self.new_tasks:
            writer.write_json(TASKS, {"tasks": {str(k): v for k, v in self.new_tasks.items()}})
            self.new_tasks.clear()
