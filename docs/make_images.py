"""Regenerate the README's pictures from a sample trace: ``make docs``."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from render.dot import calltree_dot, dot_to_svg
from render.flamegraph import calltree_flamegraph
from render.terminal import journey_timeline
from tracer.atlas import atlas_details
from tracer.replay import replay

HERE = os.path.dirname(os.path.abspath(__file__))


def main(trace: str) -> None:
    """Write calltree.svg, flamegraph.svg and journey.svg into docs/img/."""
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sample_traces/tcp_bulk.skbtrace")
