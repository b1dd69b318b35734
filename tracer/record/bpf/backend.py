"""The BPF modes (fentry, kprobe, tracepoint) through bcc: the only module that imports bcc, lazily.

A :class:`~skbpath.tracer.record.session.Backend`: compile and attach
(kprobes, fentry trampolines with kprobe fallback, or raw tracepoints: see
tracer/record/attach.py), then hand the session what the ring buffer holds,
read in bulk (tracer/record/bpf/ringbuf.py), the stacks and task names, and the
loss counters.  Whether a mode can run here is tracer/record/attach.py's
call (:func:`~skbpath.tracer.record.attach.require_mode`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.kernel.symbols import clean_stack, strip_bpf_tracepoint_frames
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.record.attach import FentryPlan
from skbpath.tracer.record.bpf.aggregate import (
    add_open_calls,
    lookup_all,
    paths_of_arrays,
    read_paths,
)
from skbpath.tracer.record.bpf.frames import open_frame_records, pre_frames
from skbpath.tracer.record.bpf.progstats import misses_by_program
from skbpath.tracer.record.bpf.ringbuf import RingReader, map_fd_size
from skbpath.tracer.record.cflags import build_cflags, needs_kprobe, own_netns, ringbuf_pages
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.record.session import TraceOptions, buffer_bytes, task_name, trace_header
from skbpath.tracer.traces.events import CALL_SIZE

# The BPF program's counter slots, in order (CNT_* in probes/skbpath.bpf.c).
COUNTERS = ("ringbuf_lost", "stack_lost", "filtered", "no_return", "unmatched_returns",
            "depth_overflow", "frames_full", "aggregate_full", "open_at_start")
# The ``armed`` map's states (ARMING, ARMED, DISARMED in probes/skbpath.bpf.c).
ARMED, DISARMED = 1, 2
KRETPROBE_MAXACTIVE = 64  # blocking calls (recv, sendmsg waiting for memory) hold instances
# Read the ring at most this often while it is filling slowly: one numpy pass has a
# fixed cost, so under steady load fewer, bigger batches cost the traffic less CPU.
DRAIN_INTERVAL = 0.01
TGID_OFFSET = 36  # of the tgid in a record (struct call in tracer/traces/events.py)
STACK_ID_OFFSET = 44  # of the stack id, -1 for none
PID_LIMIT = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit machines (4 MB of flags)


_PROGRAM = re.compile(r"^(?:(kfunc|kretfunc)__(.+)|skbpath_(entry|exit|tp)_(\d+))$")


def program_label(prog: str, name_of: Callable[[int], str]) -> str:
    """What a program of probes/skbpath.bpf.c traces: ``ip_rcv entry``, ``ip_rcv return``."""
    m = _PROGRAM.match(prog)
    if m is None:
        return prog
    if m.group(1):
        return f"{m.group(2)} {'entry' if m.group(1) == 'kfunc' else 'return'}"
    end = {"entry": "entry", "exit": "return", "tp": "hit"}[m.group(3)]
    return f"{name_of(int(m.group(4)))} {end}"


def modules_loaded(path: str = "/proc/modules") -> frozenset[tuple[str, str]]:
    """The loaded modules and their load addresses (not their use counts, which change)."""
    try:
        with open(path) as fh:
            return frozenset((f[0], f[-1]) for f in (line.split() for line in fh) if f)
    except OSError:
        return frozenset()

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


def compile_program(kernel: KernelInfo, cflags: list[str], log_path: str) -> Any:
    """bcc compiles probes/skbpath.bpf.c with ``cflags`` and loads it (nothing attached yet).

    A compile that fails on types bcc's bundled headers lack is retried with
    definitions from this kernel's BTF (tracer/record/bpf/compile.py); one
    that still fails raises CompileError, one line, the full log at ``log_path``.
    """
    import sys

    from bcc import BPF  # lazily: only live tracing needs bcc
    from skbpath.probes.catalog import bpf_source
    from skbpath.tracer.record.bpf.compile import compile_bpf, default_cache
    from skbpath.tracer.record.prepare import KernelBtf

    release = kernel.release
    return compile_bpf(_no_autoload(BPF), bpf_source(), cflags, release,
                       lambda: KernelBtf(kernel).vmlinux, log_path,
                       note=lambda line: print(line, file=sys.stderr),
                       cache=default_cache(release))


def record_size(attach: str) -> int:
    """Bytes per ring buffer record: one call record in every mode (a hit is a POINT record)."""
    return CALL_SIZE


class BccBackend:
    """The fentry, kprobe and tracepoint modes, as a :class:`~.session.Backend`."""

    def __init__(
        self,
        kernel: KernelInfo,
        resolution: Resolution,
        opts: TraceOptions,
        attach: str = "kprobe",
        fentry: FentryPlan | None = None,
    ) -> None:
        self.kernel = kernel
        self.resolution = resolution
        self.opts = opts
        self.attach_mode = attach
        self.fentry = fentry or FentryPlan()
        # --aggregate: nothing goes through the ring buffer, which only has to exist.
        self.ringbuf_pages = (1 if opts.aggregate
                              else ringbuf_pages(buffer_bytes(opts.buffer_mb)))
        self.cflags = self._cflags()
        self.attach_failures: list[tuple[str, str]] = []
        # Ids whose trampoline failed and that have no kprobe program in this compile.
        self.fentry_failed: set[int] = set()
        self.tasks: set[int] = set()
        # Process ids named already, by id up to the kernel's PID_MAX_LIMIT.
        self.tgid_seen = np.zeros(PID_LIMIT, dtype=bool)
        self.new_tasks: dict[int, str] = {}
        self.stacks_written: set[int] = set()
        # Stack ids the records named and that are not written yet: looked up
        # one by one, not by walking the whole map at every flush.
        self.stacks_wanted: set[int] = set()
        self.frame_names: dict[int, str] = {}  # address -> symbol+offset [module]
        # The modules when bcc's kernel symbols were read (see _fresh_symbols).
        self.modules: frozenset[tuple[str, str]] | None = modules_loaded()
        # What is attached, by mechanism: kprobe, fentry or raw_tracepoint.
        self.attached: dict[str, list[str]] = {"fentry": [], "kprobe": [], "raw_tracepoint": []}
        self.bpf: Any = None
        self.reader: RingReader | None = None
        self.detached = False
        self.kprobe_missed = 0
        self.last_read = 0.0
        # Calls still open in the kernel at the stop, read once after detaching.
        self.open_read = False
        self.open_no_return = 0
        self.open_pre = 0
        self.missed_at_stop: dict[str, int] = {}  # bpf_missed as the probes were disarmed
        self.open_empty: dict[str, int] = {}
        self.final_rows: list[PathRow] | None = None  # --aggregate, read once detached
        # Seconds spent compiling, attaching and detaching: under emulation they
        # dominate a short trace, so the END record keeps them.
        self.timings: dict[str, float] = {}

    def _cflags(self) -> list[str]:
        return build_cflags(self.resolution.funcs, self.opts.filters, self.attach_mode,
                            self.fentry.fentry, own_netns(), ringbuf_pages=self.ringbuf_pages,
                            nargs=self.fentry.nargs, aggregate=self.opts.aggregate)

    # -- the Backend interface
    def attach(self) -> None:
        """Compile, load and attach; map the ring buffer for the bulk reader."""
        start = time.monotonic()
        self.bpf = compile_program(self.kernel, self.cflags, f"{self.opts.output}.bcc.log")
        compiled = time.monotonic()
        self._attach(self.bpf)
        if self.fentry_failed:
            # Their kprobe programs were not compiled (see build_cflags): once more, with them.
            failed = sorted(self.fentry_failed)
            print(f"skbpath: fentry failed for {len(failed)} functions; compiling again with "
                  "kprobes for them", file=sys.stderr)
            self._detach(self.bpf)
            self.bpf.cleanup()
            for fid in failed:
                self.fentry.fentry.pop(fid, None)
            self.cflags = self._cflags()
            self.attached = {k: [] for k in self.attached}
            self.attach_failures = []
            self.fentry_failed = set()
            self.bpf = compile_program(self.kernel, self.cflags, f"{self.opts.output}.bcc.log")
            compiled = time.monotonic()
            self._attach(self.bpf)
        attached = time.monotonic()
        self.timings = {"compile_s": round(compiled - start, 3),
                        "attach_s": round(attached - compiled, 3)}
        n = sum(len(v) for v in self.attached.values())
        print(f"skbpath: compiled in {compiled - start:.1f} s, attached {n} probes in "
              f"{attached - compiled:.1f} s", file=sys.stderr)
        fd = self.bpf["events"].map_fd
        self.reader = RingReader.from_map_fd(fd, map_fd_size(fd), record_size(self.attach_mode))
        # Every probe is on: from now on calls are emitted and losses counted
        # (``armed`` in probes/skbpath.bpf.c).
        self._arm(ARMED)

    def header(self) -> dict[str, Any]:
        """The header, written once attached, so that it says how."""
        header = trace_header(self.kernel, self.resolution, self.opts, self.cflags,
                              self.attach_mode, self.attach_by())
        if self.attach_mode == "fentry":
            header["fentry_fallback"] = dict(sorted(self.fentry.kprobe.items()))
        return header

    def drain(self, timeout: float) -> bytes:
        """Every committed record, copied out in one piece (no Python per record)."""
        reader = self.reader
        if reader is None:
            return b""
        if timeout:
            if not reader.pending():
                reader.wait(timeout)
            else:
                rest = self.last_read + DRAIN_INTERVAL - time.monotonic()
                if rest > 0 and reader.pending() < reader.size // 4:
                    time.sleep(min(rest, timeout))
        self.last_read = time.monotonic()
        rows = reader.read()
        blob = b""
        if len(rows):
            self._note_rows(rows)
            blob = rows.tobytes()
        if self.detached and not self.open_read and not self.opts.aggregate:
            blob += self._open_frames()
        return blob

    def aggregate_rows(self) -> list[PathRow]:
        """--aggregate: every call path the kernel has counted so far.

        Once detached, the calls still open are added to their paths (as
        ``no_return``), and that final read is what every later call returns.
        """
        if self.final_rows is not None:
            return self.final_rows
        from bcc.libbcc import lib

        table = self.bpf["agg_paths"]
        arrays = lookup_all(table.map_fd, table.max_entries, lib.bpf_lookup_batch)
        rows = paths_of_arrays(*arrays) if arrays else read_paths(table.items())
        if self.detached and not self.open_read:
            self.open_read = True
            items = self.bpf["frame_stacks"].items()
            opened, empty = add_open_calls(rows, items)
            self.open_no_return = opened
            self.open_pre = pre_frames(items)
            for fid, n in empty.items():
                name = self.resolution.funcs.name_of(fid)
                self.open_empty[name] = self.open_empty.get(name, 0) + n
            self.final_rows = rows
        return rows

    def _open_frames(self) -> bytes:
        """The calls left open in the kernel's frame stacks, as NO_RETURN records (once)."""
        self.open_read = True
        try:
            items = self.bpf["frame_stacks"].items()
        except KeyError:  # a program without frame stacks (tracepoint mode)
            return b""
        blob, opened, empty = open_frame_records(items)
        self.open_no_return = opened
        self.open_pre = pre_frames(items)
        for fid, n in empty.items():
            name = self.resolution.funcs.name_of(fid)
            self.open_empty[name] = self.open_empty.get(name, 0) + n
        return blob

    def take_meta(self) -> tuple[dict[int, list[str]], dict[int, str]]:
        """Stacks and task names seen since the last call."""
        tasks, self.new_tasks = self.new_tasks, {}
        return (self._new_stacks() if self.bpf is not None else {}), tasks

    def stats(self) -> dict[str, Any]:
        """The BPF program's loss counters, and the kernel's kprobe and program misses."""
        table = self.bpf["counters"]
        lost = {name: int(sum(table[ctypes.c_int(slot)])) for slot, name in enumerate(COUNTERS)
                if self.opts.aggregate or name != "aggregate_full"}
        if not self.detached:
            self.kprobe_missed = kprobe_misses(self.kernel.tracefs, os.getpid())
        lost["kprobe_missed"] = self.kprobe_missed
        # Programs the kernel skipped because a BPF program was running on that CPU.
        missed = self.missed_at_stop if self.detached else self._missed_by_function()
        lost["bpf_missed"] = sum(missed.values())
        # Calls still running when the probes came off: flagged and counted, but
        # not lost (a blocked recv, a poll in progress); no_return is the kernel's misses.
        lost["open_at_stop"] = self.open_no_return
        # Begun before the probes were armed: the kernel counts those that
        # ended within the trace, _open_frames those still running at its end.
        lost["open_at_start"] += self.open_pre
        empty = self._empty_calls()
        for name, n in self.open_empty.items():
            empty[name] = empty.get(name, 0) + n
        return {"lost": lost, "empty_calls": empty, "bpf_missed_by": missed}

    def _missed_by_function(self) -> dict[str, int]:
        """bpf_missed per traced function and program end: ``ip_rcv entry``, ``ip_rcv return``."""
        name_of = self.resolution.funcs.name_of
        return misses_by_program(
            (program_label(raw.decode() if isinstance(raw, bytes) else str(raw), name_of), fn.fd)
            for raw, fn in self.bpf.funcs.items())

    def _empty_calls(self) -> dict[str, int]:
        """Calls the kernel did not emit, no skb call having happened in them, by function."""
        try:
            table = self.bpf["empty_calls"]
        except KeyError:
            return {}
        funcs = self.resolution.funcs
        out = {}
        for f in funcs.funcs:
            n = int(sum(table[ctypes.c_int(f.id)]))
            if n:
                out[funcs.name_of(f.id)] = n
        return out

    def detach(self) -> None:
        """Detach every probe (the misses are read first: they vanish with the probes)."""
        if self.bpf is None or self.detached:
            return
        # Disarmed first: what the probes see while they come off is not
        # emitted nor counted (calls begun before still are, as they return).
        with contextlib.suppress(Exception):
            self._arm(DISARMED)
        with contextlib.suppress(Exception):
            self.kprobe_missed = kprobe_misses(self.kernel.tracefs, os.getpid())
        with contextlib.suppress(Exception):
            self.missed_at_stop = self._missed_by_function()
        start = time.monotonic()
        self._detach(self.bpf)
        self.timings["detach_s"] = round(time.monotonic() - start, 3)
        self.detached = True

    def close(self) -> None:
        """Unmap the ring buffer and free the program."""
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
            self.reader = None
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()

    def end_fields(self) -> dict[str, Any]:
        """The compile, attach and detach seconds."""
        return {"timings": dict(self.timings)}

    # -- the rest
    def _note_rows(self, rows: Any) -> None:
        # One vectorised pass per column and batch: the new process ids, named
        # while they live, and the stack ids to read before the next flush.
        # No sort of the whole batch: a table of the ids seen picks the new
        # ones, and only the few calls that took a stack have an id.
        tgids = np.ascontiguousarray(rows[:, TGID_OFFSET : TGID_OFFSET + 4]).view("<u4").ravel()
        last = len(self.tgid_seen) - 1
        fresh = tgids[~self.tgid_seen[np.minimum(tgids, last)] | (tgids >= last)]
        for tgid in np.unique(fresh).tolist():
            self.tgid_seen[min(tgid, last)] = tgid < last  # the last slot: look every time
            if tgid and tgid not in self.tasks:
                self.tasks.add(tgid)
                self.new_tasks[tgid] = task_name(tgid)
        sids = np.ascontiguousarray(rows[:, STACK_ID_OFFSET : STACK_ID_OFFSET + 4]).view("<i4")
        sids = sids[sids >= 0]
        if len(sids):
            self.stacks_wanted.update(sid for sid in np.unique(sids).tolist()
                                      if sid not in self.stacks_written)

    def attach_by(self) -> dict[str, list[str]]:
        """The trace header's ``attach_by``: attached symbols by mechanism (non-empty only)."""
        return {k: sorted(v) for k, v in self.attached.items() if v}

    def _attach(self, bpf: Any) -> None:
        if self.attach_mode == "tracepoint":
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
                self.attach_failures.append((f.name, f"attach failed: {exc}"))

    def _attach_functions(self, bpf: Any) -> None:
        fentry = self.fentry.fentry
        for f in self.resolution.funcs.funcs:
            compiled_kprobe = needs_kprobe(f, fentry)
            for sym in f.symbols:
                if fentry.get(f.id) == sym:
                    if self._attach_fentry(bpf, sym):
                        continue
                    if not compiled_kprobe and self.kernel.has_kprobes:
                        self.fentry_failed.add(f.id)
                        continue
                if not self.kernel.has_kprobes:
                    self.attach_failures.append((sym, "no fentry, and this kernel has no kprobes"))
                    continue
                try:
                    # The entry first: a call begun between the two attaches is
                    # then an entry without its return (pushed before arming, so
                    # dropped), never a return without its entry.
                    bpf.attach_kprobe(event=sym, fn_name=f"skbpath_entry_{f.id}")
                except Exception as exc:  # bcc raises bare Exception
                    self.attach_failures.append((sym, f"attach failed: {exc}"))
                    continue
                try:
                    bpf.attach_kretprobe(
                        event=sym, fn_name=f"skbpath_exit_{f.id}", maxactive=KRETPROBE_MAXACTIVE
                    )
                except Exception as exc:
                    # An entry alone would leave a frame open at every call.
                    with contextlib.suppress(Exception):
                        bpf.detach_kprobe(event=sym)
                    self.attach_failures.append((sym, f"attach failed: {exc}"))
                    continue
                self.attached["kprobe"].append(sym)

    def _attach_fentry(self, bpf: Any, sym: str) -> bool:
        """Attach fentry then fexit programs to ``sym``; False (nothing attached) on failure.

        The entry first, as for kprobes: a call that enters through the
        trampoline before its fexit is in never runs fexit (it returns past
        the trampoline), so no return comes without its entry.
        """
        try:
            bpf.attach_kfunc(fn_name=f"kfunc__{sym}".encode())
        except Exception as exc:  # bcc raises bare Exception
            self.fentry.kprobe[sym] = f"fentry failed: {exc}"
            return False
        try:
            bpf.attach_kretfunc(fn_name=f"kretfunc__{sym}".encode())
        except Exception as exc:
            with contextlib.suppress(Exception):
                bpf.detach_kfunc(fn_name=f"kfunc__{sym}".encode())
            self.fentry.kprobe[sym] = f"fentry failed: {exc}"
            return False
        self.attached["fentry"].append(sym)
        return True

    def _arm(self, state: int) -> None:
        """Set the BPF programs' ``armed`` state (ARMED or DISARMED)."""
        self.bpf["armed"][ctypes.c_int(0)] = ctypes.c_uint32(state)

    def _detach(self, bpf: Any) -> None:
        for sym in self.attached["kprobe"]:
            # Returns first: a call entering meanwhile is then an open frame
            # (disarmed: dropped), never a return without its entry.
            for detach in (bpf.detach_kretprobe, bpf.detach_kprobe):
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

    def _fresh_symbols(self) -> None:
        """Make bcc read kallsyms again if modules have come or gone since it last did.

        bcc reads the kernel's symbols once.  A module loaded during the trace
        (nftables, by the first rule) then resolves to the symbol below its
        address, another module's or a BPF program's (whose frames
        clean_stack drops): its frames would be named wrongly, or vanish.
        """
        loaded = modules_loaded()
        if loaded == self.modules:
            return
        if self.modules is not None:
            caches = getattr(type(self.bpf), "_sym_caches", None)
            if isinstance(caches, dict):
                caches.pop(-1, None)  # the kernel's: built again at the next ksym()
            self.frame_names.clear()
        self.modules = loaded

    def _new_stacks(self) -> dict[int, list[str]]:
        """Stacks in the BPF stack map not handed over yet, as symbolised frames.

        The map (``stacks`` in probes/skbpath.bpf.c) holds each distinct stack
        once, keyed by its id, with its frame count and addresses.  While
        tracing, only the ids the records named since the last call are read,
        not every key of a map that grows to thousands, five times a second.
        Once detached, the whole map is walked once, for what no drained
        record named (the calls still open at the stop).

        Each address is named once (``frame_names``): stacks share most of
        their frames, and under TCG naming them one by one through bcc took
        5.4 of a profiled 11.6 s trace's seconds (SKBPATH_PROFILE).
        """
        bpf = self.bpf
        stacks = {}
        table = bpf["stacks"]
        self._fresh_symbols()
        if self.detached:
            keys = list(table.keys())
        else:
            keys = [table.Key(sid) for sid in sorted(self.stacks_wanted)]
        self.stacks_wanted.clear()
        for key in keys:
            sid = int(key.value)
            if sid in self.stacks_written:
                continue
            try:
                value = table[key]
            except KeyError:  # not stored (stack_lost): the record says -1 then
                continue
            addrs = list(value.ip)[: min(int(value.nr), len(value.ip))]
            names = self.frame_names
            frames = []
            for addr in addrs:
                name = names.get(addr)
                if name is None:
                    name = names[addr] = bpf.ksym(addr, show_module=True,
                                                  show_offset=True).decode(errors="replace")
                frames.append(name)
            # fentry programs' and trampolines' own frames are not the kernel's path.
            frames = clean_stack(frames)
            if self.attach_mode == "tracepoint":
                # Start at the function that hit the tracepoint, as the other modes do.
                frames = strip_bpf_tracepoint_frames(frames)
            stacks[sid] = frames
            self.stacks_written.add(sid)
        return stacks
