"""The live view of ``skbpath trace --aggregate``: the hottest call paths, once a second.

A pure function from :class:`~skbpath.tracer.model.aggregate.HotPath` rows to
a rich table (the recorder redraws it); the same rows as plain lines for a
terminal that is not one (a log, the lab's console).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from skbpath.tracer.model.aggregate import HotPath
from skbpath.tracer.traces.functions import FuncTable

from .colors import layer_color
from .text import printable
from .units import fmt_ns

PATH_WIDTH = 3  # functions shown of a path: its root, then the last ones


def path_text(funcs: FuncTable, path: Sequence[int], width: int = PATH_WIDTH) -> str:
    """A path as ``DIR root › … › caller › function``, its middle elided."""
    names = [funcs.name_of(f) for f in path]
    shown = names if len(names) <= width + 1 else [names[0], "…", *names[-width:]]
    return f"{funcs.path_of(path[0]).upper()} {' › '.join(shown)}"


def top_table(funcs: FuncTable, hot: Sequence[HotPath], elapsed: float, lost: int,
              paths: int) -> Table:
    """The hottest call paths of the last interval, with calls/s, p50 and p99."""
    title = (f"skbpath --aggregate  {elapsed:6.1f} s  {paths:,d} call paths  "
             f"{'LOST ' if lost else 'lost '}{lost:,d}  (Ctrl-C stops and writes the trace)")
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("call path")
    table.add_column("calls/s", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("time/s", justify="right")
    table.add_column("calls", justify="right")
    for h in hot:
        label = Text(printable(path_text(funcs, h.funcs)),
                     style=layer_color(funcs.layer_of(h.funcs[-1])))
        table.add_row(label, f"{h.per_second:,.0f}", fmt_ns(h.p50), fmt_ns(h.p99),
                      fmt_ns(h.busy),
                      f"{h.calls_so_far:,d}")
    return table


def top_lines(funcs: FuncTable, hot: Sequence[HotPath], elapsed: float, limit: int = 5
              ) -> list[str]:
    """The same as plain lines, for a log: the ``limit`` hottest paths."""
    return [f"  {elapsed:6.1f} s  {h.per_second:>9,.0f}/s  p50 {fmt_ns(h.p50):>8}  "
            f"p99 {fmt_ns(h.p99):>8}  {printable(path_text(funcs, h.funcs))}"
            for h in hot[:limit]]
