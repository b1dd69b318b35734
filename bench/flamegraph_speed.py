"""Flame graph speed: parse 100,000 distinct folded stacks, then render them as SVG.

Not a test: it prints numbers.

    .venv/bin/python bench/flamegraph_speed.py [--stacks N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from skbpath.probes.catalog import LAYERS  # noqa: E402
from skbpath.render.flamegraph import flamegraph_svg  # noqa: E402
from skbpath.render.folded import parse_folded  # noqa: E402

SEED = 20240521


def make_folded(stacks: int, seed: int = SEED) -> tuple[str, dict[str, str]]:
    """``stacks`` distinct folded lines over a pool of kernel-like names, and their layers."""
    rng = random.Random(seed)
    names = [f"fn_{i:03d}_{rng.choice(['xmit', 'rcv', 'queue', 'poll', 'free'])}"
             for i in range(400)]
    layers = {n: rng.choice(LAYERS) for n in names}
    seen: set[str] = set()
    lines: list[str] = []
    while len(lines) < stacks:
        depth = rng.randint(2, 24)
        frames = [rng.choice(("TX", "RX"))]
        # Shared prefixes, as in real call trees: the first frames come from a small pool.
        frames += [names[rng.randrange(8 if i < 3 else len(names))] for i in range(depth)]
        key = ";".join(frames)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{key} {rng.randint(1, 100_000)}")
    return "\n".join(lines) + "\n", layers


def run(stacks: int = 100_000) -> dict[str, float]:
    """Time parse_folded and flamegraph_svg (each once; they are deterministic)."""
    text, layers = make_folded(stacks)
    t0 = time.perf_counter()
    parsed = parse_folded(text)
    parse_s = time.perf_counter() - t0
    assert len(parsed) == stacks
    t0 = time.perf_counter()
    svg = flamegraph_svg(parsed, layers=layers, title="bench: 100k stacks")
    render_s = time.perf_counter() - t0
    return {
        "stacks": float(stacks),
        "folded_mib": len(text) / (1 << 20),
        "parse_s": parse_s,
        "render_s": render_s,
        "svg_mib": len(svg) / (1 << 20),
        "svg_frames": float(svg.count("<g class=\"f\"")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=100_000)
    args = ap.parse_args()
    r = run(args.stacks)
    print(f"stacks:          {int(r['stacks']):,d} ({r['folded_mib']:.1f} MiB folded)")
    print(f"parse_folded:    {r['parse_s']:.3f} s")
    print(f"flamegraph_svg:  {r['render_s']:.3f} s ({r['svg_mib']:.1f} MiB SVG, "
          f"{int(r['svg_frames']):,d} frames drawn)")


if __name__ == "__main__":
    main()
