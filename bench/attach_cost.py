"""Lab benchmark: what kprobes and fentry/fexit cost per traced exchange.

One lab boot; inside it, the same TCP request/response run (1000 exchanges
of 100 bytes by default, ~100 traced calls each) goes untraced, then under
``skbpath trace --attach kprobe``, then under ``--attach fentry``, and round
again.  Each run's wall time comes from ``skbpath.tracer.lab.rr``.  Reports the median
time per exchange of each, and the traced/untraced ratios.  Needs root and
the lab (``make bench-attach``).  ``--from DIR`` reports a finished run's
work directory instead of booting.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skbpath.tracer.lab.vm import LabOptions, run_lab  # noqa: E402
from skbpath.tracer.traces.tracefile import TraceReader  # noqa: E402

MODES = ("plain", "kprobe", "fentry")
_DONE = re.compile(r"rr: (\d+) exchanges done in ([\d.]+) s")


def _seconds(path: str) -> tuple[int, float]:
    with open(path) as fh:
        m = _DONE.search(fh.read())
    if not m:
        raise SystemExit(f"attach_cost: no rr result in {path}")
    return int(m.group(1)), float(m.group(2))


def main() -> int:
    """Run the benchmark, or report ``--from DIR``."""
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    exchanges = int(os.environ.get("BENCH_EXCHANGES", "1000"))
    if len(sys.argv) == 3 and sys.argv[1] == "--from":
        workdir = sys.argv[2]
    else:
        out = os.path.join(tempfile.mkdtemp(prefix="skbpath-bench-"), "bench.skbtrace")
        workdir = run_lab(
            LabOptions(output=out, traffic="rr", mode="attach-bench", bench_runs=runs,
                       bench_exchanges=exchanges, keep_dir=True, timeout=3600),
            echo=False,
        )
    return report(workdir, runs)


def report(workdir: str, runs: int) -> int:
    """Print the results of an attach-bench lab run and append them to bench/results-attach.md."""
    per_exchange: dict[str, list[float]] = {m: [] for m in MODES}
    lost: dict[str, int] = {m: 0 for m in MODES[1:]}
    events: dict[str, int] = {m: 0 for m in MODES[1:]}
    count = 0
    for i in range(1, runs + 1):
        for mode in MODES:
            count, secs = _seconds(os.path.join(workdir, f"{mode}-{i}.txt"))
            per_exchange[mode].append(secs / count * 1e6)
            if mode != "plain":
                contents = TraceReader(os.path.join(workdir, f"{mode}-{i}.skbtrace")).read_all()
                end_lost = (contents.end or {}).get("lost", {})
                lost[mode] += sum(int(v) for k, v in end_lost.items() if k != "filtered")
                events[mode] += contents.events
    med = {m: statistics.median(v) for m, v in per_exchange.items()}
    lines = [
        f"## Attach cost, {time.strftime('%Y-%m-%d')}",
        "",
        f"{count} TCP request/response exchanges of 100 bytes per run, {runs} rounds of "
        "untraced, kprobe, fentry; Debian 6.1 kernel under QEMU TCG, two e1000 NICs.",
        "",
        "| mode | µs per exchange (each round) | median | ratio to untraced | events | lost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in MODES:
        each = ", ".join(f"{v:.0f}" for v in per_exchange[m])
        extra = f"{events[m]:,d} | {lost[m]:,d}" if m != "plain" else "- | -"
        lines.append(f"| {m} | {each} | {med[m]:.0f} | {med[m] / med['plain']:.2f} | {extra} |")
    lines += [
        "",
        f"**Median cost per exchange: kprobe {med['kprobe'] - med['plain']:.0f} µs, "
        f"fentry {med['fentry'] - med['plain']:.0f} µs over untraced; "
        f"fentry/kprobe time ratio {med['fentry'] / med['kprobe']:.2f}.**",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(__file__), "results-attach.md"), "a") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
