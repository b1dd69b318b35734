"""One live trace, whatever records it: the steps every attach mode shares.

A session opens the output (given to the user who ran sudo), lets its back
end attach, writes the header, the ready file, then loops: the back end
drains what the kernel produced into packed events, batches are written as
they are every ``batch_seconds`` (stacks and task names first, so a killed
tracer leaves no event without them), and STATS every 2 s.  Ctrl-C, SIGTERM
or ``--duration`` stop it; the back end detaches and hands over what was
left, then the journeys and call tree are built by replaying the written
file through the model (not while the kernel is producing), and END is
written with the model's summary.

With ``--aggregate`` nothing comes through the ring buffer: once a second
the back end reads the kernel's call paths for the live view, and every
AGGREGATE_SECONDS and at the stop they go into an AGGREGATE record
(cumulative, the last one wins).

Back ends (tracer/record/bpf/backend.py, tracer/record/tracefs/backend.py)
implement :class:`Backend`: attach, drain, new stacks and tasks, stats
(the loss counters), detach, close.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from skbpath.tracer import __version__
from skbpath.tracer.kernel.info import KernelInfo, interface_names, kernel_build
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.record.cflags import Filters
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.traces.tracefile import (
    AGGREGATE,
    END,
    FORMAT_VERSION,
    STACKS,
    STATS,
    TASKS,
    TraceWriter,
)

META_SECONDS = 2.0  # STATS, and the progress line, this often
# Kernel buffer by default: this much per CPU (every CPU produces into it), within bounds.
BUFFER_PER_CPU = 8 << 20
BUFFER_MIN, BUFFER_MAX = 16 << 20, 256 << 20
# Counters that are not losses: events the filters rejected on purpose, calls
# still running when the trace stopped (recorded, flagged NO_RETURN), and
# calls begun before the probes were armed (outside the trace: not recorded).
NOT_LOSSES = frozenset({"filtered", "open_at_stop", "open_at_start"})

Progress = Callable[[int, int, float], None]
# --aggregate's live view: the call paths so far, seconds since the start, losses.
LiveView = Callable[[list[PathRow], float, int], None]
LIVE_SECONDS = 1.0  # the live view, this often
AGGREGATE_SECONDS = 10.0  # an AGGREGATE record (cumulative), this often


@dataclass
class TraceOptions:
    """What ``skbpath trace`` was asked to do."""

    output: str
    duration: float | None = None
    filters: Filters = field(default_factory=Filters)
    ready_file: str | None = None
    recorded_with: str | None = None
    drop_reasons: dict[int, str] = field(default_factory=dict)
    # Function name -> its recorded return value's names (from BTF).
    return_names: dict[str, dict[int, str]] = field(default_factory=dict)
    journey_timeout_ns: int = 5_000_000_000
    batch_seconds: float = 0.2
    # Total kernel buffer in MiB; None: sized for the machine by the back end.
    buffer_mb: int | None = None
    # --aggregate: the kernel counts calls per call path; no per-call records.
    aggregate: bool = False


@dataclass
class TraceResult:
    """What a live trace recorded: what the CLI prints at the end."""

    events: int
    lost: dict[str, int]
    duration: float
    summary: dict[str, int]  # the model's, from replaying the trace
    attach_failures: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    paths: int = 0  # --aggregate: the call paths written


class Backend(Protocol):
    """What a recording mode provides to a :class:`Session`."""

    # (name, reason) of what resolved but could not be attached.
    attach_failures: list[tuple[str, str]]

    def attach(self) -> None:
        """Load and attach (or enable) everything; raise SkbpathError if nothing could be."""

    def header(self) -> dict[str, Any]:
        """The HEADER record, once attached (it says what was attached how)."""

    def drain(self, timeout: float) -> bytes:
        """Wait at most ``timeout`` s for data; return what is there as packed events."""

    def take_meta(self) -> tuple[dict[int, list[str]], dict[int, str]]:
        """Stacks (id -> frames) and task names (tgid -> comm) not handed over yet."""

    def stats(self) -> dict[str, Any]:
        """The STATS record: ``lost`` (loss counters, and ``filtered``) and any other counts.

        END stores the last one's fields too.
        """

    def detach(self) -> None:
        """Stop the kernel producing; :meth:`drain` then returns what was left. Never raises."""

    def close(self) -> None:
        """Release what attach took (programs, instance, maps). Never raises."""

    def end_fields(self) -> dict[str, Any]:
        """The back end's own END fields (unparsed lines, ...), if any."""

    def aggregate_rows(self) -> list[PathRow]:
        """--aggregate: the call paths counted so far (complete once detached)."""


class Stop:
    """Turns SIGINT and SIGTERM into a flag, so stopping is always orderly."""

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


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
        "version": FORMAT_VERSION,
        "tool": "skbpath",
        "tool_version": __version__,
        "kernel": kernel.release,
        "kernel_build": kernel_build(),
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
        # Names of the recorded return values (napi_gro_receive's gro_result_t).
        "return_names": {f: {str(k): v for k, v in sorted(names.items())}
                         for f, names in sorted(opts.return_names.items())},
        # Output devices of recorded routes are ifindexes; these name them.
        "interfaces": {str(k): v for k, v in sorted(interface_names().items())},
    }
    if attach_by is not None:
        header["attach_by"] = attach_by
    return header


def buffer_bytes(buffer_mb: int | None, cpus: int | None = None) -> int:
    """The kernel buffer's total size: ``--buffer-mb``, or sized by the CPU count."""
    if buffer_mb is not None:
        return buffer_mb << 20
    per_cpu = BUFFER_PER_CPU * (cpus or os.cpu_count() or 1)
    return min(max(per_cpu, BUFFER_MIN), BUFFER_MAX)


def task_name(tgid: int) -> str:
    """A live process's comm, "?" once it is gone."""
    try:
        with open(f"/proc/{tgid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def losses(lost: dict[str, int]) -> int:
    """The sum of the counters that are losses."""
    return sum(v for k, v in lost.items() if k not in NOT_LOSSES)


def replay_summary(path: str) -> dict[str, int]:
    """The model's summary of the trace written so far at ``path`` (read back from the file)."""
    from skbpath.tracer.model.replay import replay

    return replay(path, keep_journeys=False).model.summary()


class Session:
    """Runs one live trace through ``backend``; see the module docstring."""

    def __init__(self, backend: Backend, opts: TraceOptions,
                 progress: Progress | None = None, live: LiveView | None = None) -> None:
        self.backend = backend
        self.opts = opts
        self.progress = progress
        self.live = live
        self.chunks: list[bytes] = []
        self.paths = 0  # --aggregate: call paths in the last AGGREGATE record
        self.started = time.monotonic()

    def run(self) -> TraceResult:
        """Trace until the duration passes or a signal arrives; return the counts."""
        b, opts = self.backend, self.opts
        stats: dict[str, Any] = {"lost": {}}
        with Stop() as stop, open(opts.output, "wb") as fh:
            chown_to_invoker(opts.output)
            writer: TraceWriter | None = None
            try:
                b.attach()
                header = b.header()
                if opts.aggregate:
                    header["aggregate"] = True  # replay: a call tree, no journeys
                writer = TraceWriter(fh, header)
                if opts.ready_file:
                    with open(opts.ready_file, "w") as rf:
                        rf.write(f"{os.getpid()}\n")
                elapsed = self._loop(writer, stop)
            finally:
                # Detach first, so that nothing outlives us whatever fails next.
                b.detach()
                try:
                    if writer is not None:
                        self._collect(b.drain(0.0))
                        self._flush(writer)
                        if opts.aggregate:
                            self._write_aggregate(writer, b.aggregate_rows())
                        stats = b.stats()
                finally:
                    b.close()
            # The kernel is done: now the model, from what was written.
            fh.flush()
            start = time.monotonic()
            summary = replay_summary(opts.output)
            fields = b.end_fields()
            # Under emulation replaying a large trace takes a while too: kept with the rest.
            fields.setdefault("timings", {})["model_s"] = round(time.monotonic() - start, 3)
            writer.write_json(STATS, stats)
            end = {
                **stats,
                "events": writer.events_written,
                "duration_s": round(elapsed, 3),
                "model": summary,
                "attach_failures": [list(f) for f in b.attach_failures],
                **fields,
            }
            writer.write_json(END, end)
            writer.close()
        return TraceResult(writer.events_written, stats["lost"], elapsed, summary,
                           list(b.attach_failures), self.paths)

    def _write_aggregate(self, writer: TraceWriter, rows: list[PathRow]) -> None:
        """An AGGREGATE record: every call path so far (cumulative; the last one wins)."""
        writer.write_json(AGGREGATE, {"seconds": round(time.monotonic() - self.started, 3),
                                      "paths": [r.to_json() for r in rows]})
        self.paths = len(rows)

    def _collect(self, blob: bytes) -> None:
        while blob:
            self.chunks.append(blob)
            blob = self.backend.drain(0.0)

    def _flush(self, writer: TraceWriter) -> None:
        """Write new stacks and tasks, then the events batched so far (as they are)."""
        stacks, tasks = self.backend.take_meta()
        if stacks:
            writer.write_json(STACKS, {"stacks": {str(k): v for k, v in stacks.items()}})
        if tasks:
            writer.write_json(TASKS, {"tasks": {str(k): v for k, v in tasks.items()}})
        if self.chunks:
            writer.write_events(b"".join(self.chunks))
            self.chunks.clear()

    def _loop(self, writer: TraceWriter, stop: Stop) -> float:
        b, opts = self.backend, self.opts
        start = self.started = time.monotonic()
        last_flush = last_meta = last_live = last_agg = start
        lost = losses(b.stats()["lost"]) if opts.aggregate else 0  # as the last STATS says
        while not stop.requested:
            blob = b.drain(0.05)
            if blob:
                self.chunks.append(blob)
            now = time.monotonic()
            if opts.duration is not None and now - start >= opts.duration:
                break
            if now - last_flush >= opts.batch_seconds:
                self._flush(writer)
                last_flush = now
            if opts.aggregate and now - last_live >= LIVE_SECONDS:
                # The kernel's counters, read while it counts: the live view, and
                # now and then a record, so that a killed tracer leaves a tree.
                rows = b.aggregate_rows()
                last_live = now
                if now - last_agg >= AGGREGATE_SECONDS:
                    self._write_aggregate(writer, rows)
                    last_agg = now
                if self.live:
                    self.live(rows, now - start, lost)
            if now - last_meta >= META_SECONDS:
                stats = b.stats()
                writer.write_json(STATS, stats)
                last_meta = now
                lost = losses(stats["lost"])
                if self.progress:
                    self.progress(writer.events_written, lost, now - start)
        return time.monotonic() - start
