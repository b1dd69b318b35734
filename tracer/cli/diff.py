"""``skbpath diff BEFORE AFTER``: what changed between two traces."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click
from skbpath.tracer.cli.common import _stdout, _warn
from skbpath.tracer.errors import SkbpathError

if TYPE_CHECKING:
    from skbpath.render.changes import Side
    from skbpath.tracer.model.replay import Replay


def _side(path: str) -> tuple[Side, Replay]:
    """Replay one trace; its Side (call paths, duration, point-only) and the replay."""
    from skbpath.render.changes import Side
    from skbpath.tracer.model.pairing import Call
    from skbpath.tracer.model.replay import POINT_MODES
    from skbpath.tracer.model.replay import replay as run_replay

    span = [0, 0]

    def on_root(call: Call) -> None:
        # The trace's span of closed calls: its duration where END has none.
        end = call.exit if call.exit is not None else call.entry
        if not span[0] or call.entry < span[0]:
            span[0] = call.entry
        span[1] = max(span[1], end)

    rep = run_replay(path, keep_journeys=False, on_root=on_root)
    end = rep.contents.end or {}
    duration = int(float(end.get("duration_s") or 0) * 1e9) or span[1] - span[0]
    side = Side(rep.model.calltree, duration,
                points=rep.contents.header.get("attach") in POINT_MODES)
    if rep.contents.truncated:
        _warn(f"{path}: {rep.contents.truncated}")
    return side, rep


@click.command()
@click.argument("before", metavar="BEFORE", type=click.Path())
@click.argument("after", metavar="AFTER", type=click.Path())
@click.option("-o", "--output", required=True, help="Directory to write diff.svg into.")
@click.option("--weight", type=click.Choice(["auto", "per-call", "total"]), default="auto",
              show_default=True,
              help="What the colour compares: inclusive time per call, or in total (calls, "
                   "when either trace is point-only); auto: per call, or calls for "
                   "tracepoint and tracefs traces.")
@click.option("--normalize", is_flag=True,
              help="Scale totals and calls by each trace's duration (per second).")
@click.option("--top", type=click.IntRange(0), default=20, show_default=True,
              help="Rows in the table of the paths whose p50 and p99 changed most.")
@click.option("--min-calls", type=click.IntRange(1), default=5, show_default=True,
              help="Calls a path needs in each trace to be in the table.")
def diff(before: str, after: str, output: str, weight: str, normalize: bool, top: int,
         min_calls: int) -> None:
    """Compare two traces: a differential flame graph and the paths that changed most.

    diff.svg is drawn on AFTER's call paths; red is slower than BEFORE, blue
    faster (ColorBrewer RdBu, readable with colour blindness), hatched paths
    are only in AFTER, dashed outlines have paths below them only in BEFORE.

    \b
    Examples:
      skbpath diff sample_traces/tcp_rr.skbtrace sample_traces/fentry_rr.skbtrace -o out/
      skbpath diff before.skbtrace after.skbtrace -o out/ --weight total --normalize
    """
    from skbpath.render.changes import change_rows, change_table
    from skbpath.render.diff import diff_svg
    from skbpath.tracer.cli.view import _with_sources
    from skbpath.tracer.kernel.atlas import atlas_details
    from skbpath.tracer.kernel.dwarf import source_details
    from skbpath.tracer.record.session import chown_to_invoker

    b_side, _ = _side(before)
    a_side, a_rep = _side(after)
    points = b_side.points or a_side.points
    metric = "calls" if points else {"auto": "per-call"}.get(weight, weight)
    if points and weight == "per-call":
        raise SkbpathError("--weight per-call needs call durations: a tracepoint or tracefs "
                           "trace has none (use total)")
    names = f"{os.path.basename(before)} → {os.path.basename(after)}"
    details = _with_sources(atlas_details(a_side.tree.funcs),
                            source_details(a_rep.contents.sources))
    svg = diff_svg(b_side, a_side, metric=metric, normalize=normalize,
                   title=f"skbpath diff: {names}", details=details)
    try:
        os.makedirs(output, exist_ok=True)
        path = os.path.join(output, "diff.svg")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(svg)
    except OSError as exc:
        raise SkbpathError(f"cannot write {output}: {exc.strerror}") from exc
    chown_to_invoker(path)
    click.echo(path)
    rows = change_rows(b_side, a_side, top=top, min_calls=min_calls, normalize=normalize)
    _stdout().print(change_table(rows, by_calls=points, before=os.path.basename(before),
                                 after=os.path.basename(after)))
