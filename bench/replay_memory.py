"""Replay memory: peak RSS per MB of trace file, for real traces and hostile ones.

Each trace is replayed (``skbpath replay T``, output to /dev/null) in a child
process whose own peak RSS comes from ``os.wait4``.  The traces are taken in
turn, round after round (alternating, so machine load hits all alike), and
the median of the rounds is reported, with the RSS above a baseline child
(``skbpath info`` of the smallest sample: the interpreter, click, rich and
skbpath imported) divided by the file's size.

The hostile traces are 1 MB files crafted to cost the most memory the
reader accepts: EVENTS records holding only entries on 4096 threads, so
that every event opens a call that stays open until the end, compressed as
far as such events go (each record under the reader's DECOMPRESS_RATIO;
distinct threads limit zlib to about 8x); and a file of zlib bombs, which
the reader refuses.  The issue's bound is about 200 MB for a
1 MB file.

    .venv/bin/python bench/replay_memory.py [--rounds N]   # writes bench/results-memory.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from skbpath.tracer.traces.events import ENTRY, EVENT_STRUCT  # noqa: E402
from skbpath.tracer.traces.tracefile import (  # noqa: E402
    DECOMPRESS_RATIO,
    END,
    EVENTS,
    FLAG_ZLIB,
)

from bench.run import machine  # noqa: E402
from tests.crafted import Crafted, skbpath_child, zlib_bomb  # noqa: E402

MB = 1 << 20


def _entries(n: int, noisy: float, rng: random.Random) -> bytes:
    """``n`` ENTRY events on 4096 threads, a ``noisy`` share with random skbs: never returned.

    4096 threads, so that the pairer's depth cap (256 per thread) keeps them all open.
    """
    pack = EVENT_STRUCT.pack
    return b"".join(
        pack(1000 + i, rng.getrandbits(24) if rng.random() < noisy else 0, 1 + i % 4096, 1,
             i % 18, ENTRY, 0, 0, 0, -1, 0)
        for i in range(n))


def open_calls_trace(path: str, size: int = MB) -> float:
    """A ~``size`` file of entries-only EVENTS records compressing just under the limit."""
    rng = random.Random(12)
    per = 8192
    # The least noise that keeps a record under the reader's ratio (bisection).
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        raw = _entries(per, mid, rng)
        if len(raw) <= 0.95 * DECOMPRESS_RATIO * len(zlib.compress(raw, 9)):
            hi = mid
        else:
            lo = mid
    noisy = hi
    c = Crafted()
    total = 0
    while total < size:
        raw = _entries(per, noisy, rng)
        comp = zlib.compress(raw, 9)
        c.add_raw(EVENTS, comp, FLAG_ZLIB)
        total += len(comp) + 12
    c.add_json(END, {"events": per * len(c.records), "duration_s": 1.0})
    with open(path, "wb") as fh:
        fh.write(c.to_bytes())
    return per * 40 / len(comp)


def bombs_trace(path: str, size: int = MB) -> None:
    """A ~``size`` file whose EVENTS record decompresses to 1000 times its size (refused)."""
    c = Crafted().add_raw(EVENTS, zlib_bomb(1000 * size), FLAG_ZLIB)
    with open(path, "wb") as fh:
        fh.write(c.to_bytes())


def run(rounds: int = 3) -> list[dict[str, object]]:
    samples = sorted(os.path.join(ROOT, "sample_traces", f)
                     for f in os.listdir(os.path.join(ROOT, "sample_traces"))
                     if f.endswith(".skbtrace"))
    tmp = tempfile.mkdtemp(prefix="skbpath-mem-")
    hostile_open = os.path.join(tmp, "open_calls_1mb.skbtrace")
    ratio = open_calls_trace(hostile_open)
    hostile_bomb = os.path.join(tmp, "zlib_bomb_1mb.skbtrace")
    bombs_trace(hostile_bomb)
    traces = [*samples, hostile_open, hostile_bomb]
    smallest = min(samples, key=os.path.getsize)
    peaks: dict[str, list[float]] = {t: [] for t in traces}
    codes: dict[str, int] = {}
    base: list[float] = []
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        base.append(skbpath_child(["info", smallest]).peak_mb)
        for t in traces:
            with open(os.devnull, "w") as null:
                child = skbpath_child(["replay", t], stdout=null, timeout=600)
            peaks[t].append(child.peak_mb)
            codes[t] = child.code
    baseline = statistics.median(base)
    rows: list[dict[str, object]] = []
    for t in traces:
        size_mb = os.path.getsize(t) / MB
        peak = statistics.median(peaks[t])
        rows.append({"trace": os.path.basename(t), "size_mb": size_mb, "peak_mb": peak,
                     "above_mb": peak - baseline, "per_mb": (peak - baseline) / size_mb,
                     "exit": codes[t]})
    rows.append({"trace": "(baseline: skbpath info of the smallest sample)", "size_mb": 0.0,
                 "peak_mb": baseline, "above_mb": 0.0, "per_mb": 0.0, "exit": 0})
    for t in (hostile_open, hostile_bomb):
        os.unlink(t)
    os.rmdir(tmp)
    print(f"open-calls trace: records decompress {ratio:.1f}x (limit {DECOMPRESS_RATIO}x)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = run(args.rounds)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Replay memory: peak RSS per MB of trace",
        "",
        f"Date: {now}  ",
        f"Machine: {machine()}  ",
        f"`skbpath replay TRACE > /dev/null` in a child each, peak RSS from wait4, median of "
        f"{args.rounds} alternating rounds; 'above' is over the baseline child.",
        "",
        "| trace | file MB | exit | peak RSS MB | above baseline MB | MB per MB of trace |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {r['trace']} | {r['size_mb']:.2f} | {r['exit']} | {r['peak_mb']:.0f} | "
          f"{r['above_mb']:.0f} | {r['per_mb']:.0f} |" for r in rows],
        "",
        "open_calls_1mb: crafted, entries only on 4096 threads (no call ever returns), "
        "compressed as far as such events go (each record under the decompression limit): "
        "about the most a 1 MB file can make replay hold.  "
        "zlib_bomb_1mb: one record decompressing to 1000x its size, refused (exit 2).",
        "",
        "Generated by `bench/replay_memory.py`; see bench/README.md.",
        "",
    ]
    text = "\n".join(lines)
    with open(os.path.join(HERE, "results-memory.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
