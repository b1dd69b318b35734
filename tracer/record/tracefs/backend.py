"""The ``tracefs`` attach mode: tracepoints read from a private ftrace instance.

For kernels where bcc cannot compile (no kprobes, no headers), this mode
loads no BPF at all.  It creates ``instances/skbpath-<pid>`` under tracefs,
enables the net/napi/skb/tcp/udp/sock/qdisc tracepoints that exist there,
adds ``stacktrace`` triggers on a few of them, and reads the instance's
``trace_pipe``.  The top-level instance and other instances (the user's own
tracing) are never touched, and the instance is removed on every exit path.

This module is the instance's lifecycle and a
:class:`~skbpath.tracer.record.session.Backend` that reads ``trace_pipe``;
the session (tracer/record/session.py) writes the trace.  What the text
means (hits, stacks, skb ids, events) is tracer/record/tracefs/parse.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from typing import Any

from skbpath.probes.catalog import Tracepoint
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.record.session import TraceOptions, buffer_bytes, trace_header
from skbpath.tracer.record.tracefs.instance import prepare_tracefs
from skbpath.tracer.record.tracefs.parse import (
    TRACEPOINTS,
    StackIds,
    TracefsParser,
    UserFilter,
    drop_reason_codes,
    function_table,
    hits_to_calls,
)
from skbpath.tracer.traces.events import FLAG_MATCHED, pack_calls

INSTANCE_PREFIX = "skbpath-"


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

    def __init__(self, tracefs: str, used: list[Tracepoint], buffer_kb: int = 8192) -> None:
        self.tracefs = tracefs
        self.buffer_kb = buffer_kb  # per CPU
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
                _write(os.path.join(self.path, "buffer_size_kb"), str(self.buffer_kb))
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


class TracefsBackend:
    """The tracefs mode, as a :class:`~skbpath.tracer.record.session.Backend`."""

    def __init__(self, kernel: KernelInfo, opts: TraceOptions) -> None:
        self.kernel = kernel
        self.opts = opts
        self.tracefs = kernel.tracefs
        # Mounted before the events are listed; killed runs' instances removed.
        prepare_tracefs(self.tracefs)
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
        self.attach_failures: list[tuple[str, str]] = []
        # The ring buffer per CPU: the session's total split between the CPUs.
        per_cpu_kb = buffer_bytes(opts.buffer_mb) // 1024 // (os.cpu_count() or 1)
        self.instance = Instance(self.tracefs, self.used, max(per_cpu_kb, 64))
        self.fd: int | None = None
        self.stopped = False
        self.rest_read = False

    def _read_reasons(self) -> dict[int, str]:
        try:
            with open(os.path.join(self.tracefs, "events/skb/kfree_skb/format")) as fh:
                return drop_reason_codes(fh.read())
        except OSError:
            return {}

    def attach(self) -> None:
        """Create the instance, enable its events, open trace_pipe and start recording."""
        ensure_tracefs(self.tracefs)
        self.instance.create()
        self.fd = os.open(os.path.join(self.instance.path, "trace_pipe"),
                          os.O_RDONLY | os.O_NONBLOCK)
        self.instance.start()

    def header(self) -> dict[str, Any]:
        """The HEADER record: live's fields, attach "tracefs" and the events used."""
        opts = self.opts
        opts.drop_reasons = self.reasons
        h = trace_header(self.kernel, Resolution(self.funcs, self.skipped), opts, [])
        h["attach"] = "tracefs"
        h["tracefs_events"] = [tp.name for tp in self.used]
        h["trace_clock"] = self.instance.clock
        return h

    def drain(self, timeout: float) -> bytes:
        """Read what trace_pipe has (waiting up to ``timeout``) and return its whole hits."""
        if self.fd is None:
            return b""
        if self.stopped:
            if not self.rest_read:  # once: then the parser's last block is closed
                self._read_rest(self.fd)
                self.rest_read = True
        else:
            self._read(self.fd, timeout)
        return self._events()

    def _read(self, fd: int, timeout: float) -> None:
        got = False
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            ready = []
        if ready:
            with contextlib.suppress(BlockingIOError):
                data = os.read(fd, 1 << 16)
                if data:
                    self.parser.feed(data.decode(errors="replace"))
                    got = True
        if not got:
            self.parser.release()  # idle: no stack block is half read

    def _read_rest(self, fd: int) -> None:
        for _ in range(10_000):  # bounded: the buffer is finite and recording stopped
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            self.parser.feed(data.decode(errors="replace"))
        self.parser.feed("\n")
        self.parser.release()

    def _events(self) -> bytes:
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
            return b""
        calls = hits_to_calls(kept, self.stacks, FLAG_MATCHED if self.filter.active else 0)
        return pack_calls(calls)

    def take_meta(self) -> tuple[dict[int, list[str]], dict[int, str]]:
        """Stacks and task names met since the last call."""
        tasks, self.new_tasks = self.new_tasks, {}
        return self.stacks.take_new(), tasks

    def stats(self) -> dict[str, Any]:
        """The instance's overrun and dropped counts, and what the filters rejected."""
        lost: dict[str, int] = instance_lost(self.instance.path)
        lost["filtered"] = self.filtered
        return {"lost": lost}

    def detach(self) -> None:
        """Stop recording; what is buffered is still read by :meth:`drain`."""
        self.instance.stop()
        self.stopped = True

    def close(self) -> None:
        """Close trace_pipe and remove the instance."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        self.instance.remove()

    def end_fields(self) -> dict[str, Any]:
        """What the text parser could not use, and drop reasons met in the text."""
        return {
            "unparsed_lines": self.parser.unparsed,
            "orphan_stacks": self.parser.orphan_stacks,
            "drop_reasons": {str(k): v for k, v in self.parser.new_reasons.items()},
        }

    def aggregate_rows(self) -> list[PathRow]:
        """Never called: tracefs hits are points, so ``trace`` refuses --aggregate with it."""
        raise SkbpathError("--aggregate needs --attach fentry or kprobe, not tracefs")
