"""Regenerate the README's pictures from the sample traces: ``make docs``.

The SVGs are written first, then each is opened in headless Chromium (the
browser the tests drive) and saved as the PNG the README shows.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from skbpath.render.changes import Side
from skbpath.render.diff import diff_svg
from skbpath.render.dot import calltree_dot, dot_to_svg
from skbpath.render.flamegraph import calltree_flamegraph
from skbpath.render.terminal import journey_timeline
from skbpath.tracer.kernel.atlas import atlas_details
from skbpath.tracer.model.replay import replay

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The differential flame graph: the rr exchanges traced with kprobes, then with fentry.
DIFF_PAIR = ("sample_traces/tcp_rr.skbtrace", "sample_traces/fentry_rr.skbtrace")
PICTURES = ("calltree", "flamegraph", "diff", "journey")


def write_diff(out: str) -> None:
    """docs/img/diff.svg from DIFF_PAIR, per call, as ``skbpath diff`` draws it."""
    sides = []
    for path in DIFF_PAIR:
        rep = replay(os.path.join(ROOT, path), keep_journeys=False)
        duration = int(float((rep.contents.end or {}).get("duration_s", 0)) * 1e9)
        sides.append(Side(rep.model.calltree, duration))
    names = " → ".join(os.path.basename(p) for p in DIFF_PAIR)
    with open(os.path.join(out, "diff.svg"), "w") as fh:
        fh.write(diff_svg(sides[0], sides[1], metric="per-call", normalize=False,
                          title=f"skbpath diff: {names}",
                          details=atlas_details(sides[1].tree.funcs)))


def screenshots(out: str) -> None:
    """Each picture's SVG as a PNG, taken by headless Chromium."""
    sys.path.insert(0, ROOT)
    from tests.browser.chromium import chromium, missing, screenshot

    why = missing()
    if why:
        sys.exit(f"make docs: {why}")
    with chromium() as driver:
        for name in PICTURES:
            screenshot(driver, os.path.join(out, f"{name}.svg"), os.path.join(out, f"{name}.png"))
            print(os.path.join(out, f"{name}.png"))


def main(trace: str) -> None:
    """Write calltree, flamegraph, diff and journey as SVG and PNG into docs/img/."""
    rep = replay(trace)
    tree = rep.model.calltree
    title = f"skbpath: {os.path.basename(trace)} ({rep.contents.header.get('kernel')})"
    out = os.path.join(HERE, "img")
    details = atlas_details(tree.funcs)  # tooltips say what each function does
    with open(os.path.join(out, "calltree.svg"), "w") as fh:
        fh.write(dot_to_svg(calltree_dot(tree, title=title, details=details)))
    with open(os.path.join(out, "flamegraph.svg"), "w") as fh:
        fh.write(calltree_flamegraph(tree, title=title, details=details))
    # A typical TX journey from the syscall to the driver: the median by duration.
    tx = sorted(
        (
            j for j in rep.model.journey_list
            if j.path == "TX" and j.end == "freed"
            and {"sock_write_iter", "e1000_xmit_frame"} <= set(j.functions())
        ),
        key=lambda j: (j.duration, j.id),
    )
    journey = tx[len(tx) // 2]
    with open(os.devnull, "w") as sink:
        con = Console(record=True, width=120, file=sink)
        con.print(journey_timeline(journey))
    con.save_svg(os.path.join(out, "journey.svg"), title=f"skbpath replay --skb {journey.id}")
    write_diff(out)
    screenshots(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sample_traces/tcp_bulk.skbtrace")
