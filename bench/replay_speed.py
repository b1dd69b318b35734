"""Replay speed: decode a 1,000,000-event trace, then decode it and run the model.

Not a test: it prints numbers.  The target is decode + model (keep_journeys
False, as ``skbpath render`` runs it) in at most 2 s.

    .venv/bin/python bench/replay_speed.py [--events N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from skbpath.tracer.model.core import Model  # noqa: E402
from skbpath.tracer.model.replay import function_table  # noqa: E402
from skbpath.tracer.traces.events import pack_events  # noqa: E402
from skbpath.tracer.traces.tracefile import TraceReader, TraceWriter  # noqa: E402

from tests.synth import demo_table, tx_rx_stream  # noqa: E402

TARGET_S = 2.0
EVENTS_PER_PACKET = 36  # tx_rx_stream: 9 TX calls + 9 RX/free calls, entry and return each
BATCH = 8192  # events per EVENTS record, about what the live tracer writes per flush


def build_trace(path: str, events: int) -> int:
    """Write a synthetic trace of at least ``events`` events; return the exact count."""
    table = demo_table()
    stream = tx_rx_stream(-(-events // EVENTS_PER_PACKET), table)
    header: dict[str, Any] = {
        "format": "skbpath-trace",
        "version": 1,
        "tool_version": "bench",
        "kernel": "synthetic",
        "host": "bench",
        "attach": "kprobe",
        "functions": table.to_json(),
        "skipped": [],
        "filters": {},
    }
    with open(path, "wb") as fh:
        w = TraceWriter(fh, header, version=1)
        for i in range(0, len(stream), BATCH):
            w.write_events(pack_events(stream[i : i + BATCH]))
        w.close()
    return len(stream)


def decode_only(path: str) -> int:
    """Decode every event of the trace; return how many."""
    n = 0
    for batch in TraceReader(path).event_batches():
        for _ev in batch:
            n += 1
    return n


def decode_and_model(path: str) -> Model:
    """Decode the trace and feed it through a Model, as replay/render do."""
    reader = TraceReader(path)
    model = Model(function_table(reader.contents, path), keep_journeys=False)
    for batch in reader.event_batches():
        model.feed(batch)
    model.finish()
    return model


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    """The fastest of ``runs`` timed calls, in seconds."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(events: int = 1_000_000, runs: int = 3, profile: bool = False) -> dict[str, float]:
    """Build the trace, time both phases and return the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.skbtrace")
        t0 = time.perf_counter()
        n = build_trace(path, events)
        build_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        decode_s = best_of(lambda: decode_only(path), runs)
        model_s = best_of(lambda: decode_and_model(path), runs)
        summary = decode_and_model(path).summary()
        if profile:
            prof = cProfile.Profile()
            prof.runcall(decode_and_model, path)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return {
        "events": float(n),
        "file_mib": size / (1 << 20),
        "build_s": build_s,
        "decode_s": decode_s,
        "decode_events_per_s": n / decode_s,
        "model_s": model_s,
        "model_events_per_s": n / model_s,
        "target_ratio": model_s / TARGET_S,
        "journeys": float(summary["journeys"]),
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one decode+model run")
    args = ap.parse_args()
    r = run(args.events, args.runs, args.profile)
    print(f"events:              {int(r['events']):,d} ({r['file_mib']:.1f} MiB trace, "
          f"built in {r['build_s']:.1f} s)")
    print(f"decode only:         {r['decode_s']:.3f} s  {r['decode_events_per_s']:,.0f} events/s")
    print(f"decode + model:      {r['model_s']:.3f} s  {r['model_events_per_s']:,.0f} events/s")
    verdict = "OK" if r["target_ratio"] <= 1 else "OVER"
    print(f"vs {TARGET_S:.0f} s target:      {r['target_ratio']:.2f}x ({verdict})")
    print(f"journeys:            {int(r['journeys']):,d}")
    print(f"peak RSS:            {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
