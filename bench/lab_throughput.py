"""Lab benchmark: iperf3 throughput untraced vs traced by ``skbpath trace``.

One lab boot; inside it, untraced and traced runs of the same TCP transfer
alternate, so drift in the emulator affects both alike.  Reports the median
traced/untraced throughput ratio, and the events per second the tracer
captured with the events it lost.  Needs root and the lab (make bench-lab).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skbpath.tracer.lab.vm import LabOptions, run_lab  # noqa: E402
from skbpath.tracer.traces.tracefile import TraceReader  # noqa: E402


def _bps(path: str) -> float:
    with open(path) as fh:
        data = json.load(fh)
    return float(data["end"]["sum_received"]["bits_per_second"])


def main() -> int:
    """Run the benchmark (or, with ``--from DIR``, report a finished run's directory)."""
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    seconds = int(os.environ.get("BENCH_SECONDS", "5"))
    if len(sys.argv) == 3 and sys.argv[1] == "--from":
        workdir = sys.argv[2]
    else:
        out = os.path.join(tempfile.mkdtemp(prefix="skbpath-bench-"), "bench.skbtrace")
        workdir = run_lab(
            LabOptions(output=out, mode="bench", bench_runs=runs, bench_seconds=seconds,
                       keep_dir=True, timeout=3600),
            echo=False,
        )
    return report(workdir, runs, seconds)


def report(workdir: str, runs: int, seconds: int) -> int:
    """Print the results of a bench-mode lab run and append them to bench/results-lab.md."""
    rows = []
    for i in range(1, runs + 1):
        plain = _bps(os.path.join(workdir, f"plain-{i}.json"))
        traced = _bps(os.path.join(workdir, f"traced-{i}.json"))
        contents = TraceReader(os.path.join(workdir, f"traced-{i}.skbtrace")).read_all()
        end = contents.end or {}
        lost = end.get("lost", {})
        dropped = int(lost.get("ringbuf_lost", 0)) + int(lost.get("kprobe_missed", 0))
        dur = float(end.get("duration_s") or 1.0)
        rows.append((i, plain, traced, traced / plain, contents.events / dur, dropped / dur))
    ratio = statistics.median(r[3] for r in rows)
    lines = [
        f"## Lab throughput, {time.strftime('%Y-%m-%d')}",
        "",
        f"iperf3 -t {seconds}, {runs} alternating pairs, Debian 6.1 kernel under QEMU TCG, "
        "two e1000 NICs on a hub.",
        "",
        "| run | untraced Mbit/s | traced Mbit/s | ratio | events/s captured | events/s lost |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for i, plain, traced, r, eps, lps in rows:
        lines.append(f"| {i} | {plain / 1e6:.1f} | {traced / 1e6:.1f} | {r:.3f} | "
                     f"{eps:,.0f} | {lps:,.0f} |")
    lines += ["", f"**Median traced/untraced throughput ratio: {ratio:.3f}**", ""]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(__file__), "results-lab.md"), "a") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
