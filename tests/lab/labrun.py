"""Run the lab from tests: one boot per (kernel, NIC, topology) runs every scenario the tests need.

Booting under TCG costs minutes, so a test module does not boot: it declares
the runs it needs (``LAB_RUNS``, a list of :class:`LabRun`) and asks the
session's :class:`LabSession` (the ``lab`` fixture, tests/lab/conftest.py)
for each run's trace.  The session collects the runs of every collected
module, and the first request for a (kernel, NIC, topology) boots it once
with all of that boot's runs (``skbpath lab --scenario ...``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab.kernels import TESTED_SERIES, lab_kernel, release_of
from skbpath.tracer.lab.vm import PRESETS, lab_timeout
from skbpath.tracer.model.replay import Replay, replay

from tests.conftest import lab_unavailable

# The CLI as a module of this interpreter (the lab guest runs it the same way).
SKBPATH = [sys.executable, "-m", "skbpath.tracer.cli.main"]
# Every lab test that matters most runs on each of these (make setup installs them).
KERNELS = TESTED_SERIES


@dataclass(frozen=True)
class LabRun:
    """One traced run a test needs: ``skbpath lab --scenario NAME:TRAFFIC:TRACE_OPTS``."""

    name: str
    traffic: str
    trace_opts: tuple[str, ...] = ()
    kernels: tuple[str, ...] = KERNELS
    nic: str = "e1000"
    topology: str = "pair"

    def spec(self) -> str:
        """The --scenario argument."""
        opts = f":{shlex.join(self.trace_opts)}" if self.trace_opts else ""
        return f"{self.name}:{self.traffic}{opts}"


@dataclass
class Boot:
    """What one boot produced: trace paths by run name, the lab's stderr, how long it took."""

    traces: dict[str, str]
    stderr: str
    seconds: float
    runs: list[str] = field(default_factory=list)


def presets(*names: str) -> str:
    """The lab's traffic presets ``names``, run one after the other in one scenario."""
    return "; ".join(f"({PRESETS[n]})" for n in names)


# One trace serves the tests of many traffics: bcc's compile, minutes under TCG
# (tracer/record/bpf/backend.py prints how long), is paid once per attach mode
# and kernel rather than once per test module.  The firewall's table is removed
# after its drops, and the bulk transfer comes last, so the drops' traffic runs
# before the bulk's load.
# ``lab_mark small`` (tracer/lab/guest.sh) reads the NICs' counters between
# the small-packet traffic and the bulk transfer, for test_lab_counters.
MIXED = LabRun("mixed", presets("arp", "closed", "firewall") +
               "; ip netns exec skbpeer nft delete table inet skbpath; " +
               presets("rr", "udp", "loopback") + "; lab_mark small; " + presets("bulk"),
               ("--attach", "fentry"))
# Through the router: TCP both ways, requests and responses, then a short bulk
# transfer, on kprobes.  Its kretprobe reads the route through the arguments
# its kprobe saved (fentry mode's fexit reads them directly: see test_lab_virtio).
# On 6.1 only: a boot of its own costs six minutes, and kprobe mode is covered
# on 6.12 by test_lab_filters' run, in the pair boot that runs anyway.
FORWARD = LabRun("forward", presets("rr") + "; iperf3 -c $PEER -n 2M -l 64K",
                 ("--attach", "kprobe"), kernels=("6.1",), topology="forward")


class LabSession:
    """Boots the lab lazily, once per (kernel, NIC, topology), and hands out replays."""

    def __init__(self, tmp: pytest.TempPathFactory, runs: list[LabRun],
                 report: Callable[[str], None] | None = None) -> None:
        self.tmp = tmp
        # Where each boot's outcome is written as soon as it ends (the terminal):
        # a CI log cut off by its time limit still says what each boot did.
        self.report = report
        self.runs: dict[str, LabRun] = {}
        for r in runs:
            if self.runs.setdefault(r.name, r) != r:
                raise ValueError(f"two lab runs are named {r.name} but differ")
        self.boots: dict[tuple[str, str, str], Boot] = {}
        self.replays: dict[tuple[str, str], Replay] = {}
        self.kernels: dict[int, str] = {}

    def replay(self, kernel: str, name: str) -> Replay:
        """The replayed trace of run ``name`` on ``kernel`` (a series), booting if needed."""
        run = self.runs.get(name)
        if run is None or kernel not in run.kernels:
            raise AssertionError(f"no lab run {name} on {kernel}: declare it in LAB_RUNS")
        if (kernel, name) in self.replays:
            return self.replays[(kernel, name)]
        key = (kernel, run.nic, run.topology)
        if key not in self.boots:
            self.boots[key] = self._boot(*key)
            if self.report:
                for line in boot_report(key, self.boots[key]):
                    self.report(line)
        boot = self.boots[key]
        if name not in boot.traces:
            pytest.fail(f"lab run {name} on {kernel} wrote no trace:\n{boot.stderr[-4000:]}")
        r = self.replays[(kernel, name)] = replay(boot.traces[name])
        self.kernels[id(r)] = kernel
        return r

    def kernel_of(self, r: Replay) -> str:
        """The series a replay handed out by :meth:`replay` was booted as."""
        return self.kernels[id(r)]

    def release_of(self, r: Replay) -> str:
        """The exact release the lab booted for ``r`` (the newest installed image of its series)."""
        return release_of(lab_kernel(self.kernel_of(r)))

    def _boot(self, kernel: str, nic: str, topology: str) -> Boot:
        runs = [r for r in self.runs.values()
                if kernel in r.kernels and (r.nic, r.topology) == (nic, topology)]
        reuse = os.environ.get("SKBPATH_LAB_REUSE")
        if reuse:
            return _reused(Path(reuse) / f"{kernel}-{nic}-{topology}", runs)
        _check_lab(kernel)
        out = self.tmp.mktemp(f"lab-{kernel}-{nic}-{topology}")
        cmd = [*SKBPATH, "lab", "--kernel", kernel, "--nic", nic, "--topology", topology,
               "-o", str(out)]
        for r in runs:
            cmd += ["--scenario", r.spec()]
        start = time.monotonic()
        # The lab's own limit ends it first (and kills its guest); this one is a backstop.
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=lab_timeout(None, len(runs)) + 120, check=False)
        seconds = time.monotonic() - start
        traces = {r.name: str(out / f"{r.name}.skbtrace") for r in runs
                  if (out / f"{r.name}.skbtrace").is_file()}
        # A failed boot is kept too: each of its tests fails with its log, none boots again.
        return Boot(traces, f"skbpath lab exited with {proc.returncode}:\n{proc.stderr}",
                    seconds, [r.name for r in runs])


# The lines of skbpath lab's stderr worth a report: the lab's own, the compile
# time, and each tracer's summary and losses.
_REPORTED = re.compile(r"^(lab: (scenario \S+: start|tracer|the tracer|expected|peer|unknown)"
                       r"|skbpath lab|skbpath: (compiled|LOST|lost|[0-9,]+ events)).*")


def boot_report(key: tuple[str, str, str], boot: Boot) -> list[str]:
    """A few lines on one boot: how long, and per scenario its compile, events and losses."""
    lines = [f"lab boot {' '.join(key)}: {boot.seconds:.0f} s, {len(boot.traces)} of "
             f"{len(boot.runs)} traces ({', '.join(boot.runs)})"]
    lines += [f"  {m.group(0)[:200]}" for m in
              (_REPORTED.match(line.strip()) for line in boot.stderr.splitlines()) if m]
    return lines


def _reused(folder: Path, runs: list[LabRun]) -> Boot:
    """Traces an earlier boot wrote (``skbpath lab -o FOLDER --scenario ...``), not booting.

    For working on the assertions: SKBPATH_LAB_REUSE=DIR reads
    DIR/KERNEL-NIC-TOPOLOGY/NAME.skbtrace.  Never set where the lab is required.
    """
    if os.environ.get("SKBPATH_REQUIRE_LAB"):
        pytest.fail("SKBPATH_LAB_REUSE and SKBPATH_REQUIRE_LAB: the lab must run here")
    traces = {r.name: str(folder / f"{r.name}.skbtrace") for r in runs
              if (folder / f"{r.name}.skbtrace").is_file()}
    return Boot(traces, f"(reused {folder}: no trace for this run)", 0.0, [r.name for r in runs])


def _check_lab(kernel: str) -> None:
    """Skip (or fail, where the lab is required) if this machine cannot boot ``kernel``."""
    if os.geteuid() != 0:
        lab_unavailable("the lab needs root")
    for tool in ("qemu-system-x86_64", "busybox"):
        if not shutil.which(tool):
            lab_unavailable(f"{tool} is not installed")
    try:
        lab_kernel(kernel)
    except SkbpathError as exc:
        lab_unavailable(str(exc))


def collect_runs(modules: list[object]) -> list[LabRun]:
    """The ``LAB_RUNS`` of the given test modules, in order, without repeats."""
    out: list[LabRun] = []
    for mod in modules:
        for r in getattr(mod, "LAB_RUNS", ()):
            if r not in out:
                out.append(r)
    return out


def check_nesting(r: Replay) -> int:
    """Assert that no journey step took longer than its enclosing step; return how many pairs."""
    checked = 0
    for j in r.model.journey_list:
        # Per thread (idle tasks per CPU): a journey interleaves the steps of the
        # threads it passes through (a loopback send, and the receiver's read).
        # A softirq on the same thread restarts the depths, so the enclosing
        # step is the latest one a level up whose time contains this one's entry.
        seen: dict[tuple[int, int], dict[int, list[tuple[int, int]]]] = {}
        for s in j.steps:
            levels = seen.setdefault((s.tid, s.cpu if s.tid == 0 else -1), {})
            if s.depth and s.inclusive is not None:
                parent = next((incl for entry, incl in reversed(levels.get(s.depth - 1, []))
                               if entry <= s.entry <= entry + incl), None)
                if parent is not None:
                    assert s.inclusive <= parent, (j.id, s.func)
                    checked += 1
            if s.inclusive is not None:
                levels.setdefault(s.depth, []).append((s.entry, s.inclusive))
    return checked


def assert_chain(r: Replay, path: str, chain: list[str | tuple[str, ...]]) -> None:
    """Assert that some journey on ``path`` (TX, RX) passes through ``chain`` in order."""
    journeys = [j for j in r.model.journey_list if j.path == path]
    assert any(has_subsequence(j.functions(), chain) for j in journeys), [
        j.functions() for j in journeys[:5]]


def has_subsequence(funcs: list[str], chain: list[str | tuple[str, ...]]) -> bool:
    """True if ``chain`` appears in ``funcs`` in order (gaps allowed)."""
    it = iter(funcs)
    for want in chain:
        options = (want,) if isinstance(want, str) else want
        if not any(f in options for f in it):
            return False
    return True

