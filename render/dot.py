"""The call tree as a Graphviz DOT graph, and its SVG rendering through ``dot``."""

from __future__ import annotations

import math
import shutil
import subprocess

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.model.calltree import CallTree, Node

from .colors import HOT_COLOR, layer_color
from .text import xml_safe
from .units import fmt_ns

EDGE_COLOR = "#777777"
_CLUSTER_ORDER = {"tx": 0, "rx": 1}


def dot_quote(s: str) -> str:
    """A DOT double-quoted string; newlines become DOT's centred line breaks (``\\n``)."""
    # Graphviz copies label text into its SVG: characters XML forbids must go first.
    s = xml_safe(s).replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return f'"{s}"'


def _attrs(attrs: dict[str, str]) -> str:
    # Quote every value: simpler than knowing which DOT ids may stay bare.
    return "[" + ", ".join(f"{k}={dot_quote(v)}" for k, v in attrs.items()) + "]"


def _penwidth(count: int, max_count: int) -> float:
    """Edge width from 1 to 8 on a log scale of calls, so rare paths stay visible."""
    if max_count <= 1 or count <= 1:
        return 1.0
    return 1.0 + 7.0 * math.log(count) / math.log(max_count)


def _stats_line(node: Node) -> str:
    if not node.hist.count:
        return "no return seen"
    return f"mean {fmt_ns(node.hist.mean)} · p99 {fmt_ns(node.hist.percentile(99))}"


def _tooltip(tree: CallTree, node: Node, details: dict[str, str]) -> str:
    name = tree.funcs.name_of(node.func)
    h = node.hist
    lines = [
        name,
        f"layer: {tree.funcs.layer_of(node.func)}",
        f"calls: {node.count:,}" + (f" ({node.lost:,} without return)" if node.lost else ""),
        f"total: {fmt_ns(node.total)}, self: {fmt_ns(node.self_total)}",
    ]
    if h.count:
        lines.append(
            f"p50 {fmt_ns(h.percentile(50))} · p90 {fmt_ns(h.percentile(90))} · "
            f"p99 {fmt_ns(h.percentile(99))} · max {fmt_ns(h.max)}"
        )
    if name in details:
        lines.append(details[name])
    return "\n".join(lines)


def _visible(tree: CallTree, min_fraction: float) -> tuple[dict[str, list[Node]], int]:
    """Nodes per cluster (by their root's direction), and how many were hidden.

    A subtree is hidden when its time is below ``min_fraction`` of its
    direction's total: a call tree of every rare path is unreadable, and the
    flame graph and the terminal tree still show everything.
    """
    totals: dict[str, int] = {}
    for root in tree.sorted_roots():
        totals[tree.direction(root)] = totals.get(tree.direction(root), 0) + root.total
    clusters: dict[str, list[Node]] = {}
    hidden = 0
    for root in tree.sorted_roots():
        direction = tree.direction(root)
        limit = totals[direction] * min_fraction
        work = [root]
        while work:
            n = work.pop()
            if n.total < limit:
                hidden += sum(1 for _ in n.walk())
                continue
            clusters.setdefault(direction, []).append(n)
            work.extend(reversed(n.sorted_children()))
    return clusters, hidden


def calltree_dot(
    tree: CallTree,
    *,
    title: str,
    details: dict[str, str] | None = None,
    min_fraction: float = 0.005,
) -> str:
    """The call tree as DOT text: one node per call path, coloured by layer.

    Each root's subtree sits in the cluster of the root's direction (TX, RX,
    then others); subtrees under ``min_fraction`` of their direction's time
    are left out and counted in the title.  Ids are n0, n1, ... in cluster
    order, edges are as wide as the log of their calls, and each root's
    hottest path is drawn bold in :data:`~render.colors.HOT_COLOR`.
    """
    details = details or {}
    funcs = tree.funcs
    clusters, hidden = _visible(tree, min_fraction)
    order = sorted(clusters, key=lambda d: (_CLUSTER_ORDER.get(d.lower(), 2), d))
    nodes = [n for d in order for n in clusters[d]]
    ids = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    hot: set[int] = set()
    for root in tree.sorted_roots():
        if root.children:  # a lone node is no path (tracepoint hits never nest)
            hot.update(id(n) for n in tree.hottest_path(root))
    max_count = max((n.count for n in nodes), default=1)
    if hidden:
        title = (
            f"{title}\n{hidden:,} call paths under {min_fraction:.1%} "
            "of their direction's time not shown"
        )

    out = [
        "digraph skbpath {",
        f"  graph {_attrs({'label': title, 'labelloc': 't', 'fontsize': '18', 'rankdir': 'TB', 'fontname': 'Helvetica', 'nodesep': '0.3', 'ranksep': '0.35'})};",  # noqa: E501
        '  node [shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10", '
        'color="#555555", penwidth="1"];',
        f'  edge [color="{EDGE_COLOR}", arrowsize="0.6"];',
    ]
    for ci, direction in enumerate(order):
        label = direction if direction.lower() in _CLUSTER_ORDER else f"{direction} (other)"
        out.append(f"  subgraph cluster_{ci} {{")
        out.append(f"    graph {_attrs({'label': label, 'style': 'dashed', 'color': '#aaaaaa'})};")
        for n in clusters[direction]:
            name = funcs.name_of(n.func)
            layer = funcs.colour_of(n.func)
            attrs = {
                "label": f"{name}\ncalls {n.count:,}\n{_stats_line(n)}",
                "fillcolor": layer_color(layer),
                "tooltip": _tooltip(tree, n, details),
            }
            if id(n) in hot:
                attrs.update({"color": HOT_COLOR, "penwidth": "3", "class": "hot"})
            out.append(f"    {ids[id(n)]} {_attrs(attrs)};")
        out.append("  }")
    for n in nodes:
        for c in n.sorted_children():
            if id(c) not in ids:
                continue
            attrs = {
                "penwidth": f"{_penwidth(c.count, max_count):.2f}",
                "tooltip": f"{funcs.name_of(n.func)} → {funcs.name_of(c.func)}: {c.count:,} calls",
            }
            if id(n) in hot and id(c) in hot:
                attrs.update({"color": HOT_COLOR, "style": "bold", "class": "hot"})
            out.append(f"  {ids[id(n)]} -> {ids[id(c)]} {_attrs(attrs)};")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_to_svg(dot_src: str) -> str:
    """Render DOT text to SVG with the ``dot`` binary.

    Raises SkbpathError if graphviz is not installed or ``dot`` fails.
    """
    exe = shutil.which("dot")
    if exe is None:
        raise SkbpathError("graphviz 'dot' not found: apt-get install graphviz")
    try:
        proc = subprocess.run(
            [exe, "-Tsvg"], input=dot_src.encode(), capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SkbpathError(f"graphviz 'dot' failed: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise SkbpathError(f"graphviz 'dot' failed (exit {proc.returncode}): {err}")
    return proc.stdout.decode()
