"""``replay --latency``: per-packet stack latency by direction, end and layer boundary.

A pure function of the model's :class:`~skbpath.tracer.model.latency.LatencyReport`.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from skbpath.tracer.model.latency import RX_LAYERS, TX_LAYERS, UNTIL_TEXT, LatencyReport
from skbpath.tracer.model.stats import Histogram

from .units import fmt_ns

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(h: Histogram) -> str:
    """One character per power of two of ns from the smallest sample to the largest."""
    if not h.count:
        return ""
    counts: dict[int, int] = {}
    for b, n in h.buckets.items():
        counts[b >> 4] = counts.get(b >> 4, 0) + n
    lo, hi = min(counts), max(counts)
    top = max(counts.values())
    return "".join(BARS[-(-counts.get(i, 0) * (len(BARS) - 1) // top)] for i in range(lo, hi + 1))


def _order(path: str, boundary: str) -> tuple[int, int]:
    # Boundaries in the order a packet crosses them; the ends come last.
    labels = [name for _, name in (RX_LAYERS if path == "RX" else TX_LAYERS)]
    a, _, b = boundary.partition("→")
    pos = {name: i for i, name in enumerate(labels)}
    return pos.get(a, len(labels)), pos.get(b, len(labels))


def _row(table: Table, label: Text | str, h: Histogram) -> None:
    table.add_row(label, f"{h.count:,d}", fmt_ns(h.percentile(50)), fmt_ns(h.percentile(90)),
                  fmt_ns(h.percentile(99)), fmt_ns(h.max),
                  f"{fmt_ns(h.min)} {sparkline(h)} {fmt_ns(h.max)}")


def latency_view(report: LatencyReport, journeys: int) -> RenderableType:
    """The stack latency of each (direction, end), split by layer boundary, and the lifetime."""
    if not report.rows:
        return Text(f"no journey has a stack latency ({journeys:,d} journeys)")
    table = Table(title=Text("per-packet stack latency (first own step → queue, transmit or drop)"),
                  title_justify="left")
    for col in ("path → end, boundary", "packets", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col.startswith("path") else "right")
    table.add_column("histogram (a bar per power of two)")
    for row in report.sorted_rows():
        merged = f" ({row.merged:,d} GRO-merged)" if row.merged else ""
        _row(table, Text(f"{row.path} → {UNTIL_TEXT.get(row.until, row.until)}{merged}",
                         style="bold"), row.stack)
        for name, h in sorted(row.parts.items(), key=lambda p: _order(row.path, p[0])):
            _row(table, f"  {name}", h)
        _row(table, Text("  lifetime (own skb: to its free or merge)", style="dim"), row.life)
    note = Text(f"{report.without:,d} of {journeys:,d} journeys have no stack latency: they "
                "reached no socket queue, transmit or drop whose return was recorded "
                "(in traces without skb_gro_receive, mostly segments GRO merged into another skb)")
    return Group(table, note) if report.without else table
