"""Rich renderables for the terminal: call tree, function table, journey timeline, summary."""

from __future__ import annotations

from collections import Counter

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree
from skbpath.tracer.model.calltree import CallTree, Node
from skbpath.tracer.model.core import JourneyView
from skbpath.tracer.model.routes import Route, decode_route

from .colors import layer_color
from .text import printable
from .units import fmt_ns


def _layer_style(layer: str) -> str:
    return f"bold {layer_color(layer)}"


def _node_label(tree: CallTree, node: Node, explain: dict[str, str]) -> Text:
    name = tree.funcs.name_of(node.func)
    text = Text(printable(name), style=_layer_style(tree.funcs.layer_of(node.func)))
    h = node.hist
    self_pct = 100 * node.self_total / node.total if node.total else 0.0
    stats = f"  calls {node.count:,}  total {fmt_ns(node.total)}"
    if h.count:
        stats += f"  mean {fmt_ns(h.mean)}  p99 {fmt_ns(h.percentile(99))}"
    stats += f"  self {self_pct:.0f}%"
    if node.lost:
        stats += f"  lost {node.lost:,}"
    text.append(stats, style="dim")
    if name in explain:
        text.append(f"  — {explain[name]}", style="italic")
    return text


def calltree_view(
    tree: CallTree, *, explain: dict[str, str] | None = None, max_depth: int | None = None
) -> Tree:
    """The call tree as a rich Tree, roots by direction, children by total time.

    ``explain`` adds a short note after a function's name; ``max_depth``
    (0 = roots only) cuts deeper paths and says how many calls paths were cut.
    """
    explain = explain or {}
    top = Tree(Text("call paths", style="bold"), guide_style="grey50")
    for root in tree.sorted_roots():
        branch = top.add(Text(tree.direction(root), style="bold"))
        # Iterative, parent branches before children, so deep trees are safe.
        work: list[tuple[Tree, Node, int]] = [(branch, root, 0)]
        while work:
            parent, node, depth = work.pop()
            t = parent.add(_node_label(tree, node, explain))
            if not node.children:
                continue
            if max_depth is not None and depth >= max_depth:
                hidden = sum(1 for _ in node.walk()) - 1
                t.add(Text(f"… {hidden:,} deeper call paths", style="dim"))
                continue
            for child in reversed(node.sorted_children()):
                work.append((t, child, depth + 1))
    return top


def function_table(tree: CallTree, sources: dict[str, str] | None = None) -> Table:
    """Functions by total inclusive time: calls, total, self, mean, p50, p99.

    ``sources`` (function name -> "file:line") adds a source column; without
    it the table is unchanged.
    """
    table = Table(title="functions by total time", title_justify="left")
    table.add_column("function")
    table.add_column("layer")
    for col in ("calls", "total", "self", "mean", "p50", "p99"):
        table.add_column(col, justify="right")
    if sources is not None:
        table.add_column("source", style="dim")
    rows = []
    for func, calls in tree.count_by_func.items():
        h = tree.by_func.get(func)
        rows.append((-(h.total if h else 0), tree.funcs.name_of(func), func, calls))
    for _, name, func, calls in sorted(rows):
        h = tree.by_func.get(func)
        layer = tree.funcs.layer_of(func)
        if h is not None and h.count:
            times = [
                fmt_ns(h.total),
                fmt_ns(tree.self_by_func.get(func, 0)),
                fmt_ns(h.mean),
                fmt_ns(h.percentile(50)),
                fmt_ns(h.percentile(99)),
            ]
        else:
            times = ["-"] * 5  # only calls whose return was lost
        extra = [Text(printable(sources.get(name, "")))] if sources is not None else []
        table.add_row(
            Text(printable(name), style=_layer_style(layer)),
            Text(printable(layer), style=layer_color(layer)),
            f"{calls:,}",
            *times,
            *extra,
        )
    return table


def journey_timeline(j: JourneyView, interfaces: dict[int, str] | None = None) -> RenderableType:
    """One row per step of a journey: offset, function indented by depth, times, cpu.

    "Δ prev" is the time from the previous step's entry to this one's, which
    shows where a packet waited between stages.  A step that returned a route
    (fib_table_lookup) shows it; ``interfaces`` names its output device.
    """
    lat = j.stack_latency
    stack = f"stack latency {fmt_ns(lat[0])} (to {lat[1]})" if lat else "no stack latency"
    if j.merged_into is not None:
        stack += f", merged into journey {j.merged_into}"
    if j.segments:
        stack += f", carries {len(j.segments)} merged journeys"
    if j.wire_frames:
        stack += f", {j.wire_frames} wire frames"
    title = (
        f"journey {j.id}  {j.path} → {j.end}  {stack}, lifetime {fmt_ns(j.lifetime)}  "
        f"skbs {', '.join(f'{s:#x}' for s in j.skbs) or '-'}"
    )
    # A Text title: a str one would be read as markup, and the path is the trace's.
    table = Table(title=Text(printable(title)), title_justify="left")
    table.add_column("offset", justify="right")
    table.add_column("function")
    table.add_column("layer")
    table.add_column("incl", justify="right")
    table.add_column("self", justify="right")
    table.add_column("cpu", justify="right")
    table.add_column("Δ prev", justify="right")
    start = j.start
    prev: int | None = None
    for s in j.steps:
        name = Text("  " * s.depth)
        name.append(printable(s.func), style=_layer_style(s.layer))
        if s.lost:
            name.append("  (no return)", style="dim")
        if s.result is not None:
            name.append(f"  → {printable(decode_route(*s.result).text(interfaces))}",
                        style="bold")
        if s.returned:
            name.append(f"  → {printable(s.returned)}", style="bold")
        table.add_row(
            f"+{fmt_ns(s.entry - start)}",
            name,
            Text(printable(s.layer), style=layer_color(s.layer)),
            fmt_ns(s.inclusive) if s.inclusive is not None else "-",
            fmt_ns(s.self_time) if s.self_time is not None else "-",
            str(s.cpu),
            fmt_ns(s.entry - prev) if prev is not None else "",
        )
        prev = s.entry
    return table


def route_table(routes: Counter[Route], interfaces: dict[int, str] | None = None) -> Table:
    """Routes the FIB lookups returned, most frequent first (ties by route)."""
    table = Table(title="routes (fib_table_lookup)", title_justify="left")
    table.add_column("route")
    table.add_column("lookups", justify="right")
    for route, n in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(Text(printable(route.text(interfaces))), f"{n:,d}")
    return table


def return_table(rows: list[tuple[str, str, int]]) -> Table:
    """Recorded return values (:meth:`Model.return_counts`): function, value, calls."""
    table = Table(title="returned (napi_gro_receive: GRO_MERGED_FREE is a segment merged "
                  "into its flow's head)", title_justify="left")
    table.add_column("function")
    table.add_column("returned")
    table.add_column("calls", justify="right")
    for func, value, n in rows:
        table.add_row(Text(printable(func)), Text(printable(value)), f"{n:,d}")
    return table


def summary_table(stats: dict[str, int | str]) -> Table:
    """Counts (e.g. :meth:`tracer.model.Model.summary`) as a two-column table, in given order."""
    table = Table(title="summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(Text(printable(key.replace("_", " "))), Text(printable(shown)))
    return table
