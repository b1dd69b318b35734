"""A self-contained, interactive flame graph SVG, written from scratch.

The ideas are Brendan Gregg's flamegraph.pl (and inferno's port): stacks
are merged into a tree of frames, each frame as wide as its value, children
stacked on their parent in alphabetical order.  Everything is drawn in the
static SVG (labels and ``<title>`` tooltips), so the graph is fully readable
with JavaScript off; the optional script only adds zoom and search.

The script and the style sheet are files beside this module
(``flamegraph.js``: zoom on click, reset, search with a match percentage,
plain ES5 so that any SVG viewer with scripting runs it; ``__CFG__`` in it
becomes the graph's geometry as JSON; ``flamegraph.css``), copied into each
SVG so that it stays one self-contained file.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources

from skbpath.tracer.model.calltree import CallTree

from .colors import layer_color
from .folded import stack_calls, stack_data
from .text import xml_safe
from .units import fmt_ns

WIDTH = 1200  # px
PAD = 10  # left and right margin
FRAME_H = 16
FONT_SIZE = 12
CHAR_W = 0.59 * FONT_SIZE  # average glyph width of Verdana, as flamegraph.pl assumes
MIN_FRACTION = 0.001  # frames narrower than 0.1 % of the total are not drawn
TOP = 56  # title and controls
BOTTOM = 36  # status lines
ROOT_NAME = "all"
_DIRECTIONS = {"TX": 0, "RX": 1}


class _Frame:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, _Frame] = {}


@cache
def _asset(name: str) -> str:
    """A file shipped beside this module (the graph's script and style), read once."""
    return resources.files("skbpath.render").joinpath(name).read_text(encoding="utf-8")


def _esc(s: str) -> str:
    """Escape text for XML content and double-quoted attributes.

    Characters XML 1.0 does not allow at all (most control characters) are
    replaced rather than escaped (render/text.py).
    """
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return xml_safe(s)


def _fit(name: str, px: float) -> str:
    """The label that fits in ``px``: the name, truncated with "..", or nothing."""
    chars = int((px - 6) / CHAR_W)
    if chars < 3:
        return ""
    if len(name) <= chars:
        return name
    return name[: chars - 2] + ".."


def _fmt_value(value: int, unit: str) -> str:
    return fmt_ns(value) if unit == "ns" else f"{value:,} {unit}"


def _build(stacks: list[tuple[list[str], int]]) -> tuple[_Frame, int]:
    """The merged frame tree and its number of frames."""
    root = _Frame(ROOT_NAME)
    size = 1
    for frames, value in stacks:
        if value <= 0:
            continue
        root.value += value
        node = root
        # One dict lookup per frame: linear in the total stack length.
        for name in frames:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Frame(name)
                size += 1
            child.value += value
            node = child
    return root, size


def _order(node: _Frame, depth: int) -> list[_Frame]:
    # Directions first (TX before RX), then alphabetical as in flamegraph.pl,
    # which also makes the layout independent of input order.
    if depth == 0:
        return sorted(node.children.values(), key=lambda f: (_DIRECTIONS.get(f.name, 2), f.name))
    return [node.children[k] for k in sorted(node.children)]


def layout(
    stacks: list[tuple[list[str], int]],
) -> tuple[list[tuple[_Frame, int, int, tuple[str, ...]]], int, int]:
    """The frames to draw, depth first: (frame, depth, x in value units, path), with the total
    value and the number of frames in the merged tree.

    ``path`` is the frame names below the "all" root.  Frames below
    ``MIN_FRACTION`` of the total are left out (so ``len(drawn) < size``).
    """
    # The frame tree is ~1M small objects for 100k stacks; the cyclic GC
    # re-scanning them while they are built costs more than the build itself.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        root, size = _build(stacks)
    finally:
        if gc_was_enabled:
            gc.enable()
    total = root.value
    min_value = total * MIN_FRACTION
    drawn: list[tuple[_Frame, int, int, tuple[str, ...]]] = []
    if total > 0:
        work: list[tuple[_Frame, int, int, tuple[str, ...]]] = [(root, 0, 0, ())]
        while work:
            frame, depth, x, path = work.pop()
            drawn.append((frame, depth, x, path))
            cx = x
            placed = []
            for child in _order(frame, depth):
                # Children are narrower than their parent: skip the whole subtree.
                if child.value >= min_value:
                    placed.append((child, depth + 1, cx, path + (child.name,)))
                cx += child.value
            work.extend(reversed(placed))
    return drawn, total, size


def flamegraph_svg(
    stacks: list[tuple[list[str], int]],
    *,
    layers: dict[str, str],
    title: str,
    unit: str = "ns",
    details: dict[str, str] | None = None,
    include_script: bool = True,
    calls: Mapping[tuple[str, ...], int] | None = None,
) -> str:
    """Render (frames, value) stacks as one self-contained flame graph SVG.

    ``layers`` maps a function name to its layer (which picks the colour);
    ``details`` adds per-function text to the tooltips; ``calls`` maps a
    frame path (without the "all" root) to its call count.  Frames below
    0.1 % of the total are left out and counted in the footer.  With
    ``include_script`` False the SVG is static (zoom and search need it).
    """
    details = details or {}
    drawn, total, size = layout(stacks)
    inner = WIDTH - 2 * PAD
    max_depth = max((d for _, d, _, _ in drawn), default=0)
    height = TOP + (max_depth + 1) * FRAME_H + BOTTOM
    base_y = TOP + max_depth * FRAME_H  # y of the "all" frame, at the bottom

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'font-family="Verdana, DejaVu Sans, sans-serif" font-size="{FONT_SIZE}">\n',
        f"<style>\n{_asset('flamegraph.css')}</style>\n",
        f'<rect class="bg" x="0" y="0" width="{WIDTH}" height="{height}"/>\n',
        f'<text id="title" x="{WIDTH / 2:.0f}" y="24">{_esc(title)}</text>\n',
    ]
    if total <= 0:
        out.append(f'<text x="{PAD}" y="{TOP}">no samples</text>\n</svg>\n')
        return "".join(out)

    drawn_count = len(drawn)
    omitted = size - drawn_count
    summary = f"total {_fmt_value(total, unit)} · {drawn_count:,} frames"
    if omitted:
        noun = "frame" if omitted == 1 else "frames"
        summary += f" · {omitted:,} {noun} below {MIN_FRACTION:.1%} of the total not drawn"
    out.append(f'<text class="status" x="{PAD}" y="44">{_esc(summary)}</text>\n')
    out.append('<g id="frames">\n')
    scale = inner / total
    for frame, depth, x, path in drawn:
        name = frame.name
        px = PAD + x * scale
        pw = frame.value * scale
        y = base_y - depth * FRAME_H
        layer = layers.get(name, "?")
        tip = [name]
        if depth > 0 and name in layers:
            tip.append(f"layer: {layer}")
        if calls is not None and depth > 0 and path in calls:
            tip.append(f"calls: {calls[path]:,}")
        tip.append(f"{_fmt_value(frame.value, unit)} ({100 * frame.value / total:.2f}% of total)")
        if depth > 0 and name in details:
            tip.append(details[name])
        out.append(
            f'<g class="f" data-n="{_esc(name)}" data-x="{x}" data-w="{frame.value}" '
            f'data-d="{depth}"><title>{_esc(chr(10).join(tip))}</title>'
            f'<rect x="{px:.2f}" y="{y}" width="{pw:.2f}" height="{FRAME_H - 1}" rx="2" '
            f'fill="{layer_color(layer)}"/>'
            f'<text x="{px + 3:.2f}" y="{y + FRAME_H - 4.5:.1f}">{_esc(_fit(name, pw))}</text>'
            "</g>\n"
        )
    out.append("</g>\n")
    # Status line the script fills on hover; empty (and harmless) without it.
    out.append(f'<text id="details" class="status" x="{PAD}" y="{height - 12}"> </text>\n')
    if include_script:
        out.append(interactive(height - 12, total, unit))
    out.append("</svg>\n")
    return "".join(out)


def interactive(status_y: float, total: int, unit: str) -> str:
    """The zoom and search controls and their script (flamegraph.js).

    Any SVG drawn with this module's frame markup can use it: ``g.f``
    frames with ``data-n/x/w/d`` inside ``#frames``, and a ``#details``
    status line; ``status_y`` is where the matched percentage goes.
    """
    cfg = {"total": total, "pad": PAD, "inner": WIDTH - 2 * PAD, "charw": CHAR_W, "unit": unit}
    return (
        f'<text id="unzoom" class="ctl hide" x="{PAD}" y="24">Reset zoom</text>\n'
        f'<text id="search" class="ctl" x="{WIDTH - PAD}" y="24" '
        'text-anchor="end">Search</text>\n'
        f'<text id="matched" class="status" x="{WIDTH - PAD}" y="{status_y}" '
        'text-anchor="end"> </text>\n'
        "<script><![CDATA[\n"
        + _asset("flamegraph.js").replace("__CFG__", json.dumps(cfg, sort_keys=True))
        + "]]></script>\n"
    )


def calltree_flamegraph(
    tree: CallTree,
    *,
    weight: str = "time",
    title: str,
    details: dict[str, str] | None = None,
    include_script: bool = True,
) -> str:
    """A flame graph of a call tree: TX and RX roots side by side, calls in the tooltips.

    ``weight`` is "time" (self time in ns) or "count" (calls ending at each path).
    """
    stacks = stack_data(tree, weight)
    funcs = tree.funcs
    layers = {funcs.name_of(f.id): funcs.colour[f.id] for f in funcs.funcs}
    unit = "ns" if weight == "time" else "calls"
    return flamegraph_svg(
        stacks,
        layers=layers,
        title=title,
        unit=unit,
        details=details,
        include_script=include_script,
        calls=stack_calls(tree),
    )
