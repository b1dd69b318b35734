"""Lab benchmark: iperf3 throughput untraced, under skbpath trace, and under bpftrace.

One lab boot; inside it, rounds of the same TCP transfer run untraced and
then under each tracer mode in turn (``BENCH_MODES``, default
``events aggregate bpftrace``), so drift in the emulator affects every mode
alike:

* ``events``: ``skbpath trace`` (default attach: auto, i.e. fentry);
* ``aggregate``: ``skbpath trace --aggregate`` (call paths counted in the kernel);
* ``bpftrace``: a kprobe and a kretprobe on each symbol the first events
  trace attached, with a latency ``hist()`` per function.

For each mode it reports the median traced/untraced throughput ratio (each
traced run against its own round's untraced run), the events lost, and the
tracer process's CPU seconds (user + sys, from /proc/PID/stat, between its
probes being attached and its stop) per million traced calls.  Needs root
and the lab (``make bench-lab``).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skbpath.tracer.lab.vm import LabOptions, run_lab  # noqa: E402
from skbpath.tracer.traces.tracefile import TraceReader  # noqa: E402

DEFAULT_MODES = "events aggregate bpftrace"
# Mode -> the guest's file prefix (guest.sh's bench branch).
PREFIX = {"events": "traced", "aggregate": "aggregate", "bpftrace": "bpftrace"}
# A bucket line of bpftrace's hist(): "[1K, 2K)   123 |@@@   |" or "[0]   4 |...|".
HIST_LINE = re.compile(r"^\[[^\]]*[\])]\s+(\d+)\s+\|")
BPFTRACE_LOST = re.compile(r"Lost (\d+) events")


def _bps(path: str) -> float:
    with open(path) as fh:
        data = json.load(fh)
    return float(data["end"]["sum_received"]["bits_per_second"])


def bpftrace_script(trace: str) -> str:
    """A bpftrace program timing every symbol ``trace`` attached: kprobe + kretprobe each.

    Entry times are kept per (tid, function), so nested traced functions on
    one thread do not overwrite each other; each return adds to that
    function's ``hist()``, keyed by the function's index (a string literal as
    the key made bpftrace 0.17's kretprobe programs fail to load on 6.1).
    No output per call, as in skbpath's aggregate mode.
    """
    header = TraceReader(trace).read_all().header
    symbols = sorted({s for syms in header.get("attach_by", {}).values() for s in syms})
    if not symbols:
        raise SystemExit(f"{trace}: no attached symbols in its header")
    lines = [f"// bench/lab_throughput.py: {len(symbols)} functions of {os.path.basename(trace)}"]
    for i, sym in enumerate(symbols):
        lines += [
            f"kprobe:{sym} {{ @start[tid, {i}] = nsecs; }}",
            f"kretprobe:{sym} /@start[tid, {i}]/ {{ "
            f"@ns[{i}] = hist(nsecs - @start[tid, {i}]); delete(@start[tid, {i}]); }}  // {sym}",
        ]
    # Entries still open at the end (in flight, or a return missed) are not printed.
    lines.append("END { clear(@start); }")
    return "\n".join(lines) + "\n"


@dataclass
class ModeResult:
    """One mode's rounds: ratios, losses, CPU and calls, summed over rounds."""

    mode: str
    ratios: list[float] = field(default_factory=list)
    mbps: list[float] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    lost_counted: bool = True
    cpu_s: float = 0.0
    calls: int = 0
    comm: str = ""
    notes: list[str] = field(default_factory=list)
    # Rounds whose trace has no END record, so no loss counters.
    lost_unknown: int = 0

    @property
    def median(self) -> float:
        """The median traced/untraced ratio."""
        return statistics.median(self.ratios)

    @property
    def lost_total(self) -> int:
        """Every loss counted, over all rounds."""
        return sum(self.lost.values())

    def lost_text(self) -> str:
        """The losses as ``skbpath info`` names them (non-zero counters), or why there are none."""
        if not self.lost_counted:
            extra = f"; 'Lost' lines: {self.lost_total}" if self.lost_total else ""
            return f"not counted (kprobe/kretprobe misses are not reported{extra})"
        nonzero = {k: v for k, v in sorted(self.lost.items()) if v}
        text = ", ".join(f"{k}={v:,d}" for k, v in nonzero.items()) or "0"
        if self.lost_unknown:
            text += (f" (not known for {self.lost_unknown} of {len(self.ratios)} rounds: "
                     "no END record)")
        return text

    @property
    def lost_ok(self) -> bool:
        """Known to have lost nothing."""
        return self.lost_counted and not self.lost_unknown and self.lost_total == 0

    @property
    def cpu_per_m(self) -> float:
        """Tracer CPU seconds per million traced calls."""
        return self.cpu_s / self.calls * 1e6 if self.calls else float("nan")


def _cpu(path: str) -> tuple[str, float]:
    """(comm, CPU seconds) between the two readings of a guest NAME-N.cpu file."""
    with open(path) as fh:
        rows = [line.split() for line in fh if line.strip()]
    if len(rows) < 2:
        raise SystemExit(f"{path}: expected two readings, found {len(rows)}")
    (comm, t0, hz), (_, t1, _) = rows[0], rows[-1]
    return comm, (int(t1) - int(t0)) / int(hz)


def _skbpath_round(res: ModeResult, trace: str) -> None:
    # Imported here: the model is only needed to report, not to run the lab.
    from skbpath.tracer.model.replay import replay

    contents = TraceReader(trace).read_all()
    name = os.path.basename(trace)
    if contents.end is None:
        res.lost_unknown += 1
    for k, v in (contents.end or {}).get("lost", {}).items():
        if k != "filtered":  # what the filters left out is not lost (skbpath info)
            res.lost[k] = res.lost.get(k, 0) + int(v)
    try:
        res.calls += int(replay(trace, keep_journeys=False).model.summary()["calls"])
    except Exception as exc:  # noqa: BLE001 - a trace the model refuses is reported, not fatal
        # The calls the kernel counted, as skbpath info sums them.
        paths = (contents.aggregate or {}).get("paths", [])
        res.calls += sum(int(p["calls"]) + int(p.get("no_return", 0)) for p in paths)
        res.notes.append(f"{name}: replay failed ({exc}); calls from its AGGREGATE record")


def _bpftrace_round(res: ModeResult, out: str, err: str) -> None:
    res.lost_counted = False
    text = ""
    for path in (out, err):
        if os.path.exists(path):
            with open(path, errors="replace") as fh:
                text += fh.read()
    res.lost["Lost"] = res.lost.get("Lost", 0) + sum(int(n) for n in BPFTRACE_LOST.findall(text))
    # Calls timed = every return counted in the histograms.
    res.calls += sum(int(m.group(1)) for line in text.splitlines()
                     if (m := HIST_LINE.match(line)))


def collect(workdir: str, runs: int, modes: list[str]) -> tuple[list[float], list[ModeResult]]:
    """Untraced Mbit/s per round, and each mode's results, from a bench run's work dir."""
    plain = [_bps(os.path.join(workdir, f"plain-{i}.json")) for i in range(1, runs + 1)]
    results = []
    for mode in modes:
        res = ModeResult(mode)
        for i in range(1, runs + 1):
            base = os.path.join(workdir, f"{PREFIX[mode]}-{i}")
            if not os.path.exists(base + ".json"):
                continue  # this round's tracer did not start: the guest log says why
            bps = _bps(base + ".json")
            res.mbps.append(bps / 1e6)
            res.ratios.append(bps / plain[i - 1])
            res.comm, cpu = _cpu(base + ".cpu")
            res.cpu_s += cpu
            if mode == "bpftrace":
                _bpftrace_round(res, base + ".txt", base + ".err")
            else:
                _skbpath_round(res, base + ".skbtrace")
        results.append(res)
    return [p / 1e6 for p in plain], results


def targets(results: list[ModeResult]) -> list[str]:
    """The targets, each met or missed by how much."""
    by = {r.mode: r for r in results if r.ratios}
    out = []
    ev, agg, bt = by.get("events"), by.get("aggregate"), by.get("bpftrace")
    if ev:
        if bt:
            gap = ev.median - bt.median
            out.append(f"events ratio >= bpftrace's ({ev.median:.3f} vs {bt.median:.3f}): "
                       + ("met" if gap >= 0 else f"MISSED by {-gap:.3f}"))
        out.append(f"events 0 lost: {'met' if ev.lost_ok else 'MISSED: ' + ev.lost_text()}")
    if agg:
        gap = agg.median - 0.90
        out.append(f"aggregate ratio >= 0.90 ({agg.median:.3f}): "
                   + ("met" if gap >= 0 else f"MISSED by {-gap:.3f}"))
        out.append(f"aggregate 0 lost: "
                   f"{'met' if agg.lost_ok else 'MISSED or not known: ' + agg.lost_text()}")
    return out


def main() -> int:
    """Run the benchmark, or with ``--from DIR`` report a finished run's work dir.

    ``--bpftrace-script TRACE`` prints the bpftrace program for TRACE's
    symbols (the guest runs this between rounds).
    """
    if len(sys.argv) == 3 and sys.argv[1] == "--bpftrace-script":
        sys.stdout.write(bpftrace_script(sys.argv[2]))
        return 0
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    seconds = int(os.environ.get("BENCH_SECONDS", "5"))
    modes = os.environ.get("BENCH_MODES", DEFAULT_MODES).split()
    unknown = [m for m in modes if m not in PREFIX]
    if unknown:
        raise SystemExit(f"BENCH_MODES: unknown {unknown} (known: {', '.join(PREFIX)})")
    if len(sys.argv) == 3 and sys.argv[1] == "--from":
        workdir = sys.argv[2]
    else:
        out = os.path.join(tempfile.mkdtemp(prefix="skbpath-bench-"), "bench.skbtrace")
        workdir = run_lab(
            LabOptions(output=out, mode="bench", bench_runs=runs, bench_seconds=seconds,
                       bench_modes=" ".join(modes), keep_dir=True, timeout=3600),
            echo=True,
        )
        print(f"work dir: {workdir}", file=sys.stderr)
    return report(workdir, runs, seconds, modes)


def report(workdir: str, runs: int, seconds: int, modes: list[str]) -> int:
    """Print the results of a bench-mode lab run and append them to bench/results-lab.md."""
    plain, results = collect(workdir, runs, modes)
    lines = [
        f"## Lab throughput by tracer mode, {time.strftime('%Y-%m-%d')}",
        "",
        f"iperf3 -t {seconds}, {runs} alternating rounds (untraced, then "
        f"{', '.join(modes)}), one boot: Debian 6.1 guest under QEMU TCG, two e1000 "
        "NICs on a hub, host with 2 cores. Untraced Mbit/s per round: "
        + ", ".join(f"{p:.1f}" for p in plain) + ".",
        "",
        "| mode | median ratio | per-round ratios | traced Mbit/s | events lost "
        "| tracer CPU s per 1M calls | calls (all rounds) |",
        "|---|---:|---|---|---|---:|---:|",
    ]
    for r in results:
        if not r.ratios:
            lines.append(f"| {r.mode} | - | no run started | | | | |")
            continue
        lines.append(
            f"| {r.mode} | {r.median:.3f} | {', '.join(f'{x:.3f}' for x in r.ratios)} | "
            f"{', '.join(f'{m:.1f}' for m in r.mbps)} | {r.lost_text()} | "
            f"{r.cpu_per_m:.2f} ({r.cpu_s:.2f} s, {r.comm}) | {r.calls:,d} |")
    lines += ["", "Targets:", ""] + [f"- {t}" for t in targets(results)] + [""]
    notes = [f"- {r.mode}: {n}" for r in results for n in r.notes]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(__file__), "results-lab.md"), "a") as fh:
        fh.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
